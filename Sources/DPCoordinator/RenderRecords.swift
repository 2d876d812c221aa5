// Frames rendered without a coordinator (`dp-worker render`, e.g. the tasks of a Slurm array) and the
// step that turns such a folder into a coordinator-style output (`dp-coord finalize`).
//
// `dp-worker render --out DIR` writes, beside each `frame_<n>.png`, a record of how it was made in
// `DIR/.dp-render/`: `job.json` (model id, resolved settings, the pose sequence's frame numbers; the
// same for every task of the job, so a task that finds a different one refuses the folder) and one
// `frame_<n>.json` per frame (an `OutputFrameRecord`: who rendered it, how long it took, the PNG's
// SHA-256 and size), written after the PNG. `finalize` checks every expected frame against these and
// then hands the folder to `OutputWriter` (the coordinator's writer) for manifest.json and the video.
import DPFileKit
import Foundation

/// `.dp-render/job.json`: what every task of an array job renders with.
public struct RenderJobRecord: Codable, Equatable, Sendable {
    public static let currentFormat = "dp-render-job/1"
    public var format: String
    public var modelID: String
    public var settings: OutputJobSettings
    /// Every frame number of the pose sequence (what `finalize` expects unless told `--frames`).
    public var poseFrames: [UInt32]

    public init(modelID: String, settings: OutputJobSettings, poseFrames: [UInt32]) {
        format = RenderJobRecord.currentFormat
        self.modelID = modelID
        self.settings = settings
        self.poseFrames = poseFrames
    }

    enum CodingKeys: String, CodingKey {
        case format, modelID = "model_id", settings, poseFrames = "pose_frames"
    }
}

/// Why `finalize` (or a render task's record keeping) refused; names the folder, the frames and what was wrong.
public struct RenderRecordError: Error, CustomStringConvertible {
    public let description: String
    /// Frames that are missing or unusable (empty for other errors), ascending.
    public let missingFrames: [UInt32]
    public init(_ description: String, missingFrames: [UInt32] = []) {
        self.description = description
        self.missingFrames = missingFrames
    }
}

public enum RenderRecords {
    public static let folderName = ".dp-render"

    static func folder(_ out: URL) -> URL { out.appendingPathComponent(folderName, isDirectory: true) }
    static func jobURL(_ out: URL) -> URL { folder(out).appendingPathComponent("job.json") }
    static func frameURL(_ out: URL, frame: UInt32) -> URL {
        folder(out).appendingPathComponent(FrameFileName.name(frame: Int(frame), extension: "json"))
    }

    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return e
    }

    /// Records the job a render task belongs to. The first task writes `job.json` (temp + rename);
    /// later tasks check theirs is the same job and refuse the folder otherwise (two jobs' frames in
    /// one folder cannot be told apart).
    public static func recordJob(_ job: RenderJobRecord, out: URL) throws {
        let url = jobURL(out)
        do {
            try FileManager.default.createDirectory(at: folder(out), withIntermediateDirectories: true)
        } catch {
            throw RenderRecordError("\(folder(out).path): cannot create the render record folder: \(error.localizedDescription)")
        }
        if let data = try? Data(contentsOf: url) {
            let old: RenderJobRecord
            do { old = try JSONDecoder().decode(RenderJobRecord.self, from: data) } catch {
                throw RenderRecordError("\(url.path): not a readable render job record (\(error)); remove it or use another --out")
            }
            guard old == job else {
                throw RenderRecordError("\(url.path): the output folder holds frames of another job (model \(old.modelID), "
                    + "settings \(describe(old.settings)), \(old.poseFrames.count) poses); this task renders model \(job.modelID), "
                    + "settings \(describe(job.settings)), \(job.poseFrames.count) poses. Use another --out")
            }
            return
        }
        do {
            try DurableFile.write(try encoder().encode(job), to: url)
        } catch {
            throw RenderRecordError("\(url.path): cannot write the render job record: \(error)")
        }
    }

    /// Records one frame, after its PNG was written.
    public static func recordFrame(_ record: OutputFrameRecord, out: URL) throws {
        let url = frameURL(out, frame: record.frame)
        do {
            try DurableFile.write(try encoder().encode(record), to: url)
        } catch {
            throw RenderRecordError("\(url.path): cannot write the record of frame \(record.frame): \(error)")
        }
    }

    static func describe(_ s: OutputJobSettings) -> String {
        "\(s.sampler) \(s.steps) steps, s_I \(s.imageGuidance), s_P \(s.poseGuidance), "
            + (s.seed.map { "seed \($0)" } ?? "noise sha256 \(s.noiseSHA256 ?? "?")")
    }

    /// What `finalize` wrote.
    public struct Finalized: Sendable {
        public var manifest: OutputManifest
        public var manifestURL: URL
        public var video: OutputVideoRecord?
    }

    /// Checks that every expected frame of the render folder `out` is there, decodable (`decode`
    /// throws otherwise) and the PNG its record describes; then writes manifest.json (job id 0: no
    /// coordinator) with `OutputWriter`, and the video when `video` is given. `frames` nil = every
    /// frame of the job's pose sequence. Throws `RenderRecordError` naming every missing or unusable
    /// frame; nothing is written then.
    public static func finalize(out: URL, frames: [UInt32]?, video: URL?, fps: Int = 30, ffmpeg: String = "ffmpeg",
                                decode: (URL) throws -> Void) throws -> Finalized {
        let out = out.standardizedFileURL
        let job = try readJob(out)
        let expected = Array(Set(frames ?? job.poseFrames)).sorted()
        guard !expected.isEmpty else { throw RenderRecordError("\(out.path): the job has no frames to finalize") }
        try checkNoStrays(out, expected: expected)

        var records: [OutputFrameRecord] = []
        var problems: [(frame: UInt32, why: String)] = []
        for n in expected {
            switch checkFrame(out, n, job: job, decode: decode) {
            case .success(let record): records.append(record)
            case .failure(let problem): problems.append((n, problem.why))
            }
        }
        guard problems.isEmpty else {
            let missing = problems.map(\.frame)
            var text = "\(out.path): \(missing.count) of \(expected.count) expected frame(s) missing or unusable: "
                + FrameRanges.describe(missing)
            for p in problems.prefix(20) { text += "\n  frame \(p.frame): \(p.why)" }
            if problems.count > 20 { text += "\n  ... and \(problems.count - 20) more" }
            throw RenderRecordError(text, missingFrames: missing)
        }

        let writer = try OutputWriter(directory: out, jobID: 0, modelID: job.modelID, settings: job.settings,
                                      frames: expected, durability: .syncEachFrame, recorded: records)
        if let bad = writer.invalidRecords.first {  // checked above; a file changed under us
            throw RenderRecordError("\(out.path): frame \(bad.frame): \(bad.reason)", missingFrames: writer.invalidRecords.map(\.frame))
        }
        var videoRecord: OutputVideoRecord?
        if let video { videoRecord = try writer.makeVideo(at: video, fps: fps, ffmpeg: ffmpeg) }
        return Finalized(manifest: writer.currentManifest, manifestURL: out.appendingPathComponent("manifest.json"),
                         video: videoRecord)
    }

    /// The render folder's job record (`.dp-render/job.json`), checked.
    static func readJob(_ out: URL) throws -> RenderJobRecord {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: out.path, isDirectory: &isDir), isDir.boolValue else {
            throw RenderRecordError("\(out.path): no such folder (expected the --out folder of dp-worker render)")
        }
        let jobData: Data
        do { jobData = try Data(contentsOf: jobURL(out)) } catch {
            throw RenderRecordError("\(jobURL(out).path) not found: \(out.path) was not written by dp-worker render "
                + "(each render task records its job there)")
        }
        let job: RenderJobRecord
        do { job = try JSONDecoder().decode(RenderJobRecord.self, from: jobData) } catch {
            throw RenderRecordError("\(jobURL(out).path): not a readable render job record: \(error)")
        }
        guard job.format == RenderJobRecord.currentFormat else {
            throw RenderRecordError("\(jobURL(out).path): format \(job.format), expected \(RenderJobRecord.currentFormat)")
        }
        return job
    }

    /// Every frame PNG in the folder must be an expected one: OutputWriter removes the others.
    static func checkNoStrays(_ out: URL, expected: [UInt32]) throws {
        let expectedSet = Set(expected)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: out.path)) ?? []
        let strays = names.filter { name in
            guard name.hasPrefix("frame_"), name.hasSuffix(".png") else { return false }
            guard let n = UInt32(name.dropFirst("frame_".count).dropLast(".png".count)),
                  OutputWriter.fileName(frame: n) == name else { return false }
            return !expectedSet.contains(n)
        }.sorted()
        guard strays.isEmpty else {
            throw RenderRecordError("\(out.path) holds \(strays.count) frame(s) that are not expected "
                + "(\(strays.prefix(5).joined(separator: ", "))\(strays.count > 5 ? ", ..." : "")); expected frames: "
                + "\(FrameRanges.describe(expected)). Name them with --frames or move them away")
        }
    }

    /// Why a frame is missing or unusable.
    struct FrameProblem: Error {
        var why: String
    }

    /// Frame `n` of the folder: present, decodable, the PNG its record describes, rendered with the
    /// job's model and settings; its record, or what is wrong.
    static func checkFrame(_ out: URL, _ n: UInt32, job: RenderJobRecord,
                           decode: (URL) throws -> Void) -> Result<OutputFrameRecord, FrameProblem> {
        let png = out.appendingPathComponent(OutputWriter.fileName(frame: n))
        guard FileManager.default.fileExists(atPath: png.path) else {
            return .failure(FrameProblem(why: "\(png.lastPathComponent) is missing"))
        }
        do { try decode(png) } catch {
            return .failure(FrameProblem(why: "\(png.lastPathComponent) is not a decodable PNG: \(error)"))
        }
        let recordURL = frameURL(out, frame: n)
        guard let recordData = try? Data(contentsOf: recordURL) else {
            return .failure(FrameProblem(why: "\(png.lastPathComponent) has no record \(folderName)/\(recordURL.lastPathComponent) "
                + "(its task stopped between the two writes; run the frame again)"))
        }
        let record: OutputFrameRecord
        do { record = try JSONDecoder().decode(OutputFrameRecord.self, from: recordData) } catch {
            return .failure(FrameProblem(why: "\(recordURL.path) is not a readable frame record: \(error)"))
        }
        let digest: (sha256: String, size: UInt64)
        do { digest = try FileDigest.sha256(ofFile: png.path) } catch {
            return .failure(FrameProblem(why: "\(png.path): cannot read: \(error)"))
        }
        guard record.frame == n, record.pngSHA256 == digest.sha256, record.pngSize == Int(digest.size) else {
            return .failure(FrameProblem(why: "\(png.lastPathComponent) has \(digest.size) bytes, sha256 \(digest.sha256); its record "
                + "says frame \(record.frame), \(record.pngSize) bytes, sha256 \(record.pngSHA256)"))
        }
        guard record.modelID == job.modelID, record.seed == job.settings.seed, record.sampler == job.settings.sampler,
              record.steps == job.settings.steps, record.imageGuidance == job.settings.imageGuidance,
              record.poseGuidance == job.settings.poseGuidance else {
            return .failure(FrameProblem(why: "rendered with model \(record.modelID), \(record.sampler) \(record.steps) steps; "
                + "the job is model \(job.modelID), \(describe(job.settings))"))
        }
        return .success(record)
    }
}

/// Frame numbers as ranges: `0-3, 7, 9-10`.
public enum FrameRanges {
    public static func describe(_ frames: [UInt32]) -> String {
        let sorted = Array(Set(frames)).sorted()
        var parts: [String] = []
        var i = 0
        while i < sorted.count {
            var j = i
            while j + 1 < sorted.count && sorted[j + 1] == sorted[j] + 1 { j += 1 }
            parts.append(i == j ? "\(sorted[i])" : "\(sorted[i])-\(sorted[j])")
            i = j + 1
        }
        return parts.joined(separator: ", ")
    }
}

// A job's output folder: `frame_<n>.png` per finished frame (n = pose frame number, 5-digit
// zero-padded), `manifest.json` describing the job and every frame written, and optionally a video
// made by ffmpeg once every frame is there.
//
// Crash safety, two modes (`Durability`):
// * `.syncEachFrame` (standalone use): each PNG is written to a temp file, fsynced and linked into
//   place (never replacing an existing file); manifest.json is rewritten the same way (temp +
//   rename). The manifest is the record of what was written: on reopening, a frame PNG that the
//   manifest does not list (the crash hit between the PNG and the manifest) is removed so the frame
//   can be written again.
// * `.batched` (the coordinator): PNGs are written temp + link without an fsync each, and the
//   manifest is rewritten only by `flush()` (the coordinator: at most about once a second, and when a
//   job ends or the coordinator stops). The caller's journal is the record: on reopening it passes
//   the frames its journal says are done (`recorded`); each one's PNG is checked against the
//   recorded SHA-256 and size and kept, and a missing or corrupt one is reported in
//   `invalidRecords` (the caller requeues that frame). Every other frame PNG is removed. See
//   DESIGN.md, "Durability and batching".
import CDPSys
import DPFileKit
import Foundation
import Synchronization

/// The rendering settings of a job as written to manifest.json (defaults already resolved from the
/// model's dreampose.json, so the manifest says what was actually used).
public struct OutputJobSettings: Codable, Equatable, Sendable {
    /// The noise seed, or nil when the job's noise came from a file (then `noiseSHA256` is set).
    public var seed: UInt64?
    public var noiseSHA256: String?
    public var sampler: String
    public var steps: Int
    public var imageGuidance: Float
    public var poseGuidance: Float

    public init(seed: UInt64?, noiseSHA256: String? = nil, sampler: String, steps: Int,
                imageGuidance: Float, poseGuidance: Float) {
        self.seed = seed
        self.noiseSHA256 = noiseSHA256
        self.sampler = sampler
        self.steps = steps
        self.imageGuidance = imageGuidance
        self.poseGuidance = poseGuidance
    }

    /// What a resolved render request records: its seed, or the SHA-256 of its noise .npy.
    public init(_ r: ResolvedRenderRequest) {
        self.init(seed: r.noise.seed, noiseSHA256: r.noise.sha256, sampler: r.sampler.rawValue, steps: r.steps,
                  imageGuidance: r.imageGuidance, poseGuidance: r.poseGuidance)
    }

    enum CodingKeys: String, CodingKey {
        case seed, noiseSHA256 = "noise_sha256", sampler, steps
        case imageGuidance = "image_guidance", poseGuidance = "pose_guidance"
    }
}

/// One written frame, as listed in manifest.json.
public struct OutputFrameRecord: Codable, Equatable, Sendable {
    public var frame: UInt32
    public var file: String
    public var attempt: UInt64
    public var worker: String
    public var modelID: String
    public var seed: UInt64?
    public var sampler: String
    public var steps: Int
    public var imageGuidance: Float
    public var poseGuidance: Float
    public var renderSeconds: Double
    public var pngSHA256: String
    public var pngSize: Int

    public init(frame: UInt32, file: String, attempt: UInt64, worker: String, modelID: String, seed: UInt64?,
                sampler: String, steps: Int, imageGuidance: Float, poseGuidance: Float, renderSeconds: Double,
                pngSHA256: String, pngSize: Int) {
        self.frame = frame
        self.file = file
        self.attempt = attempt
        self.worker = worker
        self.modelID = modelID
        self.seed = seed
        self.sampler = sampler
        self.steps = steps
        self.imageGuidance = imageGuidance
        self.poseGuidance = poseGuidance
        self.renderSeconds = renderSeconds
        self.pngSHA256 = pngSHA256
        self.pngSize = pngSize
    }

    enum CodingKeys: String, CodingKey {
        case frame, file, attempt, worker, modelID = "model_id", seed, sampler, steps
        case imageGuidance = "image_guidance", poseGuidance = "pose_guidance"
        case renderSeconds = "render_seconds", pngSHA256 = "png_sha256", pngSize = "png_size"
    }
}

/// The video written once every frame was there.
public struct OutputVideoRecord: Codable, Equatable, Sendable {
    public var path: String
    public var fps: Int
    public var frames: Int
    public var sha256: String
}

/// manifest.json.
public struct OutputManifest: Codable, Equatable, Sendable {
    public static let currentFormat = "dp-farm-output/1"
    public var format: String
    public var jobID: UInt64
    public var modelID: String
    public var settings: OutputJobSettings
    /// Every pose frame number the job renders, ascending.
    public var framesExpected: [UInt32]
    /// Frames written so far, ascending by frame number.
    public var frames: [OutputFrameRecord]
    public var complete: Bool
    public var video: OutputVideoRecord?

    enum CodingKeys: String, CodingKey {
        case format, jobID = "job_id", modelID = "model_id", settings
        case framesExpected = "frames_expected", frames, complete, video
    }
}

/// Why the writer refused; `description` names the job, frame, file and expected vs found.
public enum OutputError: Error, CustomStringConvertible, Equatable {
    case alreadyWritten(jobID: UInt64, frame: UInt32, writtenBy: UInt64, refusedAttempt: UInt64)
    case unexpectedFrame(jobID: UInt64, frame: UInt32)
    case checksumMismatch(jobID: UInt64, frame: UInt32, claimed: String, found: String)
    case manifestMismatch(path: String, message: String)
    case incomplete(jobID: UInt64, missing: [UInt32])
    case ffmpegFailed(status: Int32, command: String, stderr: String)
    case io(path: String, message: String)
    /// A file or folder in the way that this job did not create (confined output): nothing touched.
    case notOwned(path: String, message: String)

    public var description: String {
        switch self {
        case let .alreadyWritten(job, frame, writtenBy, refused):
            return "job \(job): frame \(frame) was already written by attempt \(writtenBy); "
                + "refusing the result of attempt \(refused)"
        case let .unexpectedFrame(job, frame):
            return "job \(job): frame \(frame) is not one of the job's frames"
        case let .checksumMismatch(job, frame, claimed, found):
            return "job \(job): frame \(frame) PNG has sha256 \(found), the worker claimed \(claimed)"
        case let .manifestMismatch(path, message):
            return "\(path): \(message)"
        case let .incomplete(job, missing):
            let shown = missing.prefix(10).map(String.init).joined(separator: ", ")
            return "job \(job): cannot make the video, \(missing.count) frame(s) missing (\(shown)"
                + (missing.count > 10 ? ", ...)" : ")")
        case let .ffmpegFailed(status, command, stderr):
            return "ffmpeg exited with status \(status): \(command)\n\(stderr)"
        case let .io(path, message), let .notOwned(path, message):
            return "\(path): \(message)"
        }
    }
}

public final class OutputWriter: Sendable {
    /// How frame PNGs are made durable (see the file comment).
    public enum Durability: Sendable {
        /// fsync each PNG and its folder; `write(flush: true)` also rewrites manifest.json durably.
        case syncEachFrame
        /// No fsync per PNG (temp + link only); the caller's journal is the record and vouches for
        /// frames through `recorded` when the folder is reopened.
        case batched
    }

    public let directory: URL
    /// The path every file operation goes through: `directory.path`, or for a writer confined to an
    /// output root its folder's `/proc/<pid>/fd/<n>` name (OutputConfinement.swift). The per-frame
    /// writes build paths from strings, not URLs.
    let directoryPath: String
    /// The output root this writer is confined to (nil: `directory` is used as given).
    public let root: URL?
    /// The open output folder of a confined writer (kept open for the writer's lifetime).
    let folder: ConfinedFolder?
    public let durability: Durability
    /// Frames of `recorded` whose PNG was missing or did not match its record when the folder was
    /// opened (frame, what was wrong), ascending; their files were removed and they count as missing.
    public let invalidRecords: [(frame: UInt32, reason: String)]
    /// Serialises manifest rewrites (taken before `state`): a rewrite snapshots the manifest holding
    /// `state` and builds and writes the JSON after releasing it, so frames keep being written
    /// meanwhile; a later rewrite always writes a later snapshot.
    private let rewriteLock = Mutex(())
    private struct State {
        var manifest: OutputManifest
        var written: [UInt32: OutputFrameRecord] = [:]
        var dirty = false
        /// Each written frame's manifest entry, encoded once when it is written (`ManifestJSON`).
        var entryJSON: [UInt32: String] = [:]
    }
    private let state: Mutex<State>
    private let expected: Set<UInt32>
    /// The sorted frame list of manifest.json, encoded once.
    private let expectedJSON: String

    /// The file name of frame `n`: `frame_00042.png` (at least 5 digits).
    public static func fileName(frame: UInt32) -> String {
        FrameFileName.png(frame: Int(frame))
    }

    /// Opens the output folder of a job (created if needed). A manifest.json there of another job
    /// or model is an error. With `recorded` nil, the frames listed by a manifest.json of the same
    /// job (a coordinator restart) are kept; with `recorded` (the frames the caller's journal says
    /// are done), those are kept instead, each only if its PNG matches its record's SHA-256 and
    /// size (the others land in `invalidRecords`). Every other frame PNG is removed (see the file
    /// comment).
    public init(directory: URL, jobID: UInt64, modelID: String, settings: OutputJobSettings,
                frames: [UInt32], durability: Durability = .syncEachFrame,
                recorded: [OutputFrameRecord]? = nil, confinedTo root: URL? = nil) throws {
        self.directory = directory.standardizedFileURL
        self.durability = durability
        self.root = root?.standardizedFileURL
        let fm = FileManager.default
        if let root = self.root {
            // Confined (OutputConfinement.swift): reached from the root without following links, and
            // only a folder this job made (new, empty, or holding its manifest.json) is written to.
            let prefix = root.path + "/"
            guard self.directory.path.hasPrefix(prefix) else {
                throw OutputError.io(path: self.directory.path, message: "is outside the output root \(root.path)")
            }
            let open = try ConfinedFolder(root: root, relative: String(self.directory.path.dropFirst(prefix.count)), create: true)
            folder = open
            directoryPath = open.path
            if !open.created, open.entryType("manifest.json") == nil {
                let names = open.names().sorted()
                if !names.isEmpty {
                    throw OutputError.notOwned(path: self.directory.path, message: "already exists and holds "
                        + "\(names.count) entr\(names.count == 1 ? "y" : "ies") (\(names.prefix(3).joined(separator: ", "))"
                        + (names.count > 3 ? ", ..." : "") + ") but no manifest.json of job \(jobID): it is not this job's "
                        + "output folder; nothing was touched (choose a new output name)")
                }
            }
        } else {
            folder = nil
            directoryPath = self.directory.path
            do {
                try fm.createDirectory(at: self.directory, withIntermediateDirectories: true)
            } catch {
                throw OutputError.io(path: self.directory.path, message: "cannot create output folder: \(error)")
            }
        }
        let work = URL(fileURLWithPath: directoryPath, isDirectory: true)
        let sortedFrames = Array(Set(frames)).sorted()
        let expected = Set(sortedFrames)
        self.expected = expected
        var manifest = OutputManifest(format: OutputManifest.currentFormat, jobID: jobID, modelID: modelID,
                                  settings: settings, framesExpected: sortedFrames, frames: [],
                                  complete: sortedFrames.isEmpty, video: nil)
        let expectedJSON = ManifestJSON.list(sortedFrames)
        self.expectedJSON = expectedJSON
        var written: [UInt32: OutputFrameRecord] = [:]
        var invalid: [(frame: UInt32, reason: String)] = []

        let manifestURL = self.directory.appendingPathComponent("manifest.json")
        let manifestData: Data?
        if let folder {
            manifestData = try folder.read("manifest.json", maxBytes: 1 << 30)
        } else {
            manifestData = try? Data(contentsOf: manifestURL)
        }
        if let data = manifestData {
            let old: OutputManifest
            do {
                old = try JSONDecoder().decode(OutputManifest.self, from: data)
            } catch {
                throw OutputError.manifestMismatch(path: manifestURL.path, message: "not a readable manifest: \(error)")
            }
            guard old.format == OutputManifest.currentFormat, old.jobID == jobID, old.modelID == modelID else {
                throw OutputError.manifestMismatch(
                    path: manifestURL.path,
                    message: "belongs to job \(old.jobID) (model \(old.modelID), format \(old.format)), "
                        + "not job \(jobID) (model \(modelID)); choose another output folder")
            }
            if recorded == nil {
                for record in old.frames where expected.contains(record.frame) {
                    written[record.frame] = record
                }
            }
            manifest.video = old.video
        }
        if let recorded {
            for record in recorded.sorted(by: { $0.frame < $1.frame }) where expected.contains(record.frame) {
                let name = OutputWriter.fileName(frame: record.frame)
                let url = self.directory.appendingPathComponent(name)
                let found = folder.map { (try? $0.read(name)) ?? nil } ?? (try? Data(contentsOf: work.appendingPathComponent(name)))
                guard let data = found else {
                    invalid.append((record.frame, "\(url.path) is missing (journal: done by attempt \(record.attempt))"))
                    continue
                }
                let digest = FileDigest.sha256(data)
                guard digest == record.pngSHA256, data.count == record.pngSize else {
                    invalid.append((record.frame, "\(url.path) has \(data.count) bytes, sha256 \(digest); journal expects "
                        + "\(record.pngSize) bytes, sha256 \(record.pngSHA256) (attempt \(record.attempt))"))
                    continue
                }
                written[record.frame] = record
            }
        }
        invalidRecords = invalid
        // PNGs the manifest does not vouch for.
        let names = folder?.names() ?? (try? fm.contentsOfDirectory(atPath: self.directory.path)) ?? []
        for name in names where name.hasPrefix("frame_") && name.hasSuffix(".png") {
            let number = name.dropFirst("frame_".count).dropLast(".png".count)
            if let n = UInt32(number), OutputWriter.fileName(frame: n) == name, written[n] != nil { continue }
            if folder != nil {
                unlink(directoryPath + "/" + name)  // confined: a file or link only, never a folder's contents
            } else {
                try? fm.removeItem(at: work.appendingPathComponent(name))
            }
        }
        for name in names where name.hasPrefix(".") && name.contains(".tmp-") {
            try? fm.removeItem(at: work.appendingPathComponent(name))
        }
        var entryJSON: [UInt32: String] = [:]
        for (frame, record) in written { entryJSON[frame] = ManifestJSON.entry(record) }
        manifest.complete = written.count == expected.count
        try OutputWriter.writeManifest(manifest, entries: entryJSON, expectedJSON: expectedJSON,
                                       directory: work, durable: true)
        state = Mutex(State(manifest: manifest, written: written, dirty: false, entryJSON: entryJSON))
    }

    /// A snapshot of manifest.json's content.
    public var currentManifest: OutputManifest {
        state.withLock { state in
            var copy = state.manifest
            copy.frames = state.written.values.sorted { $0.frame < $1.frame }
            return copy
        }
    }

    /// The record of frame `n` if it was written.
    public func record(frame: UInt32) -> OutputFrameRecord? {
        state.withLock { $0.written[frame] }
    }

    /// Frames of the job not written yet, ascending.
    public var missingFrames: [UInt32] {
        state.withLock { state in state.manifest.framesExpected.filter { state.written[$0] == nil } }
    }

    public var isComplete: Bool { missingFrames.isEmpty }

    /// Writes frame `frame`'s PNG and records it. Refused (nothing written) when the frame was
    /// already written, is not a frame of the job, or `claimedSHA256` (the worker's hash) does not
    /// match the bytes. With `flush: false` the manifest is only rewritten by `flush()` (a coordinator
    /// loop that receives many results per turn flushes once per turn).
    @discardableResult
    public func write(frame: UInt32, png: Data, attempt: UInt64, worker: String, renderSeconds: Double,
                      claimedSHA256: String? = nil, flush: Bool = true) throws -> OutputFrameRecord {
        let record = try state.withLock { state in
            try writeLocked(frame: frame, png: png, attempt: attempt, worker: worker, renderSeconds: renderSeconds,
                            claimedSHA256: claimedSHA256, &state)
        }
        if flush { try self.flush() }
        return record
    }

    private func writeLocked(frame: UInt32, png: Data, attempt: UInt64, worker: String, renderSeconds: Double,
                             claimedSHA256: String?, _ state: inout State) throws -> OutputFrameRecord {
        let job = state.manifest.jobID
        guard expected.contains(frame) else { throw OutputError.unexpectedFrame(jobID: job, frame: frame) }
        if let previous = state.written[frame] {
            throw OutputError.alreadyWritten(jobID: job, frame: frame, writtenBy: previous.attempt, refusedAttempt: attempt)
        }
        let digest = FileDigest.sha256(png)
        if let claimedSHA256, claimedSHA256 != digest {
            throw OutputError.checksumMismatch(jobID: job, frame: frame, claimed: claimedSHA256, found: digest)
        }
        let name = OutputWriter.fileName(frame: frame)
        let path = directoryPath + "/" + name
        do {
            switch durability {
            case .syncEachFrame: try DurableFile.writeNew(png, to: URL(fileURLWithPath: path))
            case .batched: try OutputWriter.writeNewUnsynced(png, folder: directoryPath, name: name)
            }
        } catch let error as DurableFileError where error.alreadyExists {
            // Only possible if something else writes into the folder: never overwrite it.
            throw OutputError.io(path: path, message: "exists but is not in manifest.json (another writer in this folder?)")
        } catch {
            throw OutputError.io(path: path, message: "\(error)")
        }
        let s = state.manifest.settings
        let record = OutputFrameRecord(frame: frame, file: name, attempt: attempt, worker: worker,
                                       modelID: state.manifest.modelID, seed: s.seed, sampler: s.sampler, steps: s.steps,
                                       imageGuidance: s.imageGuidance, poseGuidance: s.poseGuidance,
                                       renderSeconds: renderSeconds, pngSHA256: digest, pngSize: png.count)
        state.written[frame] = record
        state.entryJSON[frame] = ManifestJSON.entry(record)
        state.dirty = true
        return record
    }

    /// Rewrites manifest.json if frames were written since the last rewrite. `durable: false` (the
    /// coordinator's periodic rewrite of a running job) skips the fsyncs: the journal is the record,
    /// the manifest a report rebuilt from it on reopening; the rewrite when a job ends is durable.
    /// Thread-safe; the JSON is built and written outside the writer's lock (see `rewriteLock`).
    public func flush(durable: Bool = true) throws {
        try rewriteLock.withLock { _ in
            let expectedCount = expected.count
            let snapshot = state.withLock { state -> (OutputManifest, [UInt32: String])? in
                guard state.dirty else { return nil }
                state.manifest.complete = state.written.count == expectedCount
                state.dirty = false
                // entryJSON is copied on write: the next frame written pays for the copy, once.
                return (state.manifest, state.entryJSON)
            }
            guard let (manifest, entries) = snapshot else { return }
            do {
                try OutputWriter.writeManifest(manifest, entries: entries, expectedJSON: expectedJSON,
                                               directory: URL(fileURLWithPath: directoryPath, isDirectory: true),
                                               durable: durable)
            } catch {
                state.withLock { $0.dirty = true }
                throw error
            }
        }
    }

    /// True when frames were written since manifest.json was last rewritten.
    public var needsFlush: Bool {
        state.withLock { $0.dirty }
    }

    /// `.batched` PNG write: on Linux an unnamed O_TMPFILE file linked into place when complete
    /// (`dp_write_new_file_tmpfile`; refuses an existing file, leaves nothing after a crash); where
    /// that is not available, a temp file next to `folder/name` (`.<name>.tmp-<pid>-<random>`, as
    /// DurableFile names them; removed on reopening if a crash leaves it), then link(2) into place,
    /// which refuses an existing file. No fsync: the journal vouches for the frame (see the file
    /// comment). Paths are strings: this runs once per frame on the coordinator's loop thread.
    static func writeNewUnsynced(_ data: Data, folder: String, name: String) throws {
        let path = folder + "/" + name
        // Linux: an unnamed file linked into place (no temp name created and removed: two
        // directory operations fewer per frame); elsewhere, or where it cannot, the temp file below.
        let rc = data.withUnsafeBytes { dp_write_new_file_tmpfile(folder, path, $0.baseAddress, $0.count) }
        switch rc {
        case 0:
            return
        case 1:
            break
        default:
            let why = String(cString: strerror(errno))
            if rc == -3 && errno == EEXIST {
                throw DurableFileError(path: path, message: "already exists (refusing to overwrite)", alreadyExists: true)
            }
            let step = rc == -1 ? "create an unnamed file in \(folder)" : rc == -2 ? "write" : "link into place"
            throw DurableFileError(path: path, message: "\(step): \(why)")
        }
        let tempPath = folder + "/" + DurableFile.temporaryName(besides: name)
        let fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 { throw DurableFileError(path: path, message: "create \(tempPath): \(String(cString: strerror(errno)))") }
        defer { unlink(tempPath) }
        let written = data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> Int in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return -1
                }
                offset += n
            }
            return offset
        }
        let writeError = written < 0 ? String(cString: strerror(errno)) : nil
        if close(fd) != 0, writeError == nil {
            throw DurableFileError(path: path, message: "close \(tempPath): \(String(cString: strerror(errno)))")
        }
        if let writeError { throw DurableFileError(path: path, message: "write \(tempPath): \(writeError)") }
        if link(tempPath, path) != 0 {
            let exists = errno == EEXIST
            throw DurableFileError(path: path, message: exists ? "already exists (refusing to overwrite)"
                                       : "link \(tempPath) -> \(path): \(String(cString: strerror(errno)))",
                                   alreadyExists: exists)
        }
    }

    /// Encodes the whole sequence with ffmpeg into `video` (H.264, yuv420p, `fps` frames per second),
    /// via a temp file in the video's folder that is renamed into place. Refused while any frame is
    /// missing. Frames are fed in ascending frame number: directly with `-start_number` when the
    /// numbers are contiguous, otherwise through numbered symbolic links in a temp folder, so the
    /// video never has a gap or a wrong order. Odd frame sizes are padded to even.
    @discardableResult
    public func makeVideo(at video: URL, fps: Int = 30, ffmpeg: String = "ffmpeg") throws -> OutputVideoRecord {
        precondition(fps > 0, "fps must be positive, got \(fps)")
        flushIgnoringErrors()
        let (frames, job) = state.withLock { ($0.manifest.framesExpected, $0.manifest.jobID) }
        let missing = missingFrames
        guard missing.isEmpty, !frames.isEmpty else {
            throw OutputError.incomplete(jobID: job, missing: frames.isEmpty ? [] : missing)
        }
        let fm = FileManager.default
        // Confined: the video's folder opened beneath the root like the output folder, and an
        // existing file there that manifest.json does not record as this job's video is refused.
        let videoFolder = try confinedVideoFolder(video)
        let work = URL(fileURLWithPath: directoryPath, isDirectory: true)
        let contiguous = zip(frames, frames.dropFirst()).allSatisfy { $1 == $0 + 1 }
        var pattern = work.appendingPathComponent("frame_%05d.png").path
        var startNumber = frames[0]
        var linkFolder: URL?
        defer { if let linkFolder { try? fm.removeItem(at: linkFolder) } }
        if !contiguous {
            let folder = work.appendingPathComponent(".video-frames.tmp-\(UInt32.random(in: 0 ... .max))")
            do {
                try fm.createDirectory(at: folder, withIntermediateDirectories: true)
                linkFolder = folder
                for (index, frame) in frames.enumerated() {
                    try fm.createSymbolicLink(atPath: folder.appendingPathComponent(String(format: "seq_%08d.png", index)).path,
                                              withDestinationPath: work.appendingPathComponent(OutputWriter.fileName(frame: frame)).path)
                }
            } catch {
                throw OutputError.io(path: folder.path, message: "cannot prepare the ordered frame list: \(error)")
            }
            pattern = folder.appendingPathComponent("seq_%08d.png").path
            startNumber = 0
        }
        let logical = video.standardizedFileURL
        let target = videoFolder.map { URL(fileURLWithPath: $0.folder.path).appendingPathComponent($0.name) } ?? logical
        let temp = target.deletingLastPathComponent()
            .appendingPathComponent(".tmp-\(UInt32.random(in: 0 ... .max))-" + target.lastPathComponent)
        defer { try? fm.removeItem(at: temp) }
        let arguments = ["-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                         "-framerate", String(fps), "-start_number", String(startNumber), "-i", pattern,
                         "-frames:v", String(frames.count),
                         "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
                         "-c:v", "libx264", "-pix_fmt", "yuv420p", temp.path]
        try OutputWriter.run(ffmpeg, arguments)
        if let videoFolder, !videoFolder.ours {
            // Not this job's file: link(2) refuses to replace whatever appeared there meanwhile.
            if link(temp.path, target.path) != 0 {
                let why = errno == EEXIST ? "exists and was not written by this job (refusing to replace it)"
                    : "link from \(temp.path) failed: \(String(cString: strerror(errno)))"
                throw OutputError.notOwned(path: logical.path, message: why)
            }
        } else if rename(temp.path, target.path) != 0 {
            throw OutputError.io(path: logical.path, message: "rename from \(temp.path) failed: \(String(cString: strerror(errno)))")
        }
        DurableFile.syncDirectory(target.deletingLastPathComponent().path)
        let digest: String
        do {
            digest = try FileDigest.sha256(ofFile: target.path).sha256
        } catch {
            throw OutputError.io(path: logical.path, message: "\(error)")
        }
        let record = OutputVideoRecord(path: logical.path, fps: fps, frames: frames.count, sha256: digest)
        state.withLock { state in
            state.manifest.video = record
            state.dirty = true
        }
        try flush()
        return record
    }

    private func flushIgnoringErrors() { try? flush() }

    /// For a confined writer: the video's folder (opened beneath the root without following links,
    /// created if missing), its file name, and whether a file already there is this job's own video
    /// (manifest.json records it at this path). Throws `notOwned` for any other existing entry.
    /// nil for a writer that is not confined. The coordinator calls it when it opens a job, so a
    /// video name in the way fails the job before a frame is rendered.
    @discardableResult
    public func checkVideoTarget(_ video: URL) throws -> Bool {
        try confinedVideoFolder(video)?.ours ?? true
    }

    func confinedVideoFolder(_ video: URL) throws -> (folder: ConfinedFolder, name: String, ours: Bool)? {
        guard let root else { return nil }
        let path = video.standardizedFileURL.path
        let prefix = root.path + "/"
        guard path.hasPrefix(prefix) else {
            throw OutputError.io(path: path, message: "video is outside the output root \(root.path)")
        }
        let relative = String(path.dropFirst(prefix.count))
        let parts = relative.split(separator: "/", omittingEmptySubsequences: false)
        let name = String(parts.last ?? "")
        let parent = parts.dropLast().joined(separator: "/")
        let folder = try ConfinedFolder(root: root, relative: parent, create: true)
        guard let type = folder.entryType(name) else { return (folder, name, false) }
        let recorded = state.withLock { $0.manifest.video }
        guard type == S_IFREG, let recorded, recorded.path == path,
              let data = try folder.read(name), FileDigest.sha256(data) == recorded.sha256 else {
            throw OutputError.notOwned(path: path, message: "exists and was not written by this job "
                + "(refusing to replace it; choose another video name)")
        }
        return (folder, name, true)
    }

    private static func writeManifest(_ manifest: OutputManifest, entries entryJSON: [UInt32: String], expectedJSON: String,
                                      directory: URL, durable: Bool) throws {
        let url = directory.appendingPathComponent("manifest.json")
        let entries = manifest.framesExpected.lazy.compactMap { entryJSON[$0] }
        let data = Data(ManifestJSON.manifest(manifest, entries: entries, framesExpected: expectedJSON).utf8)
        do {
            if durable {
                try DurableFile.write(data, to: url)
            } else {
                let temp = DurableFile.temporaryURL(besides: url)
                try data.write(to: temp)
                if rename(temp.path, url.path) != 0 {
                    let why = String(cString: strerror(errno))
                    try? FileManager.default.removeItem(at: temp)
                    throw DurableFileError(path: url.path, message: "rename \(temp.path) -> \(url.path): \(why)")
                }
            }
        } catch {
            throw OutputError.io(path: url.path, message: "cannot write manifest: \(error)")
        }
    }

    /// Runs `tool` (a path, or a name looked up in PATH) and throws with its stderr if it fails.
    static func run(_ tool: String, _ arguments: [String]) throws {
        let process = Process()
        if tool.contains("/") {
            process.executableURL = URL(fileURLWithPath: tool)
            process.arguments = arguments
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [tool] + arguments
        }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        let command = ([tool] + arguments).joined(separator: " ")
        do {
            try process.run()
        } catch {
            throw OutputError.ffmpegFailed(status: -1, command: command, stderr: "cannot start: \(error)")
        }
        let stderr = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            throw OutputError.ffmpegFailed(status: process.terminationStatus, command: command,
                                           stderr: String(decoding: stderr, as: UTF8.self))
        }
    }
}

/// manifest.json's text, written by hand: JSONEncoder re-encoding every frame on each rewrite cost
/// O(frames) Codable work per rewrite. Each frame's entry is encoded once when it is written; a
/// rewrite joins them. Same keys (sorted) and values as `OutputManifest`'s Codable form, which
/// reads it back (OutputWriterTests check the round trip).
enum ManifestJSON {
    /// True when a string's UTF-8 bytes hold something JSON must escape (a control character, a
    /// quote or a backslash); most strings (hex digests, names, file names) do not.
    static func needsEscaping<C: Collection>(_ utf8: C) -> Bool where C.Element == UInt8 {
        utf8.contains { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }
    }

    static func string(_ s: String) -> String {
        if !needsEscaping(s.utf8) { return "\"" + s + "\"" }
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count)
                    + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// A finite number in JSON (Swift's shortest round-trip form); non-finite ones, which JSON
    /// cannot hold, as 0.
    static func number<F: BinaryFloatingPoint & LosslessStringConvertible>(_ v: F) -> String {
        v.isFinite ? v.description : "0"
    }

    static func list(_ frames: [UInt32]) -> String {
        "[" + frames.map(String.init).joined(separator: ", ") + "]"
    }

    /// One frame's entry. Runs on the coordinator's loop for every frame written, so it is built as
    /// bytes into one buffer (2-3 times faster than appending Strings field by field).
    static func entry(_ r: OutputFrameRecord) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(512)
        func key(_ k: StaticString) {
            out.append(contentsOf: out.isEmpty ? "    {\n      \"".utf8 : ",\n      \"".utf8)
            k.withUTF8Buffer { out.append(contentsOf: $0) }
            out.append(contentsOf: "\" : ".utf8)
        }
        func text(_ s: String) {
            var s = s
            if !s.withUTF8({ needsEscaping($0) }) {
                out.append(UInt8(ascii: "\""))
                s.withUTF8 { out.append(contentsOf: $0) }
                out.append(UInt8(ascii: "\""))
            } else {
                out.append(contentsOf: string(s).utf8)
            }
        }
        func raw(_ s: String) { out.append(contentsOf: s.utf8) }
        key("attempt"); raw(String(r.attempt))
        key("file"); text(r.file)
        key("frame"); raw(String(r.frame))
        key("image_guidance"); raw(number(r.imageGuidance))
        key("model_id"); text(r.modelID)
        key("png_sha256"); text(r.pngSHA256)
        key("png_size"); raw(String(r.pngSize))
        key("pose_guidance"); raw(number(r.poseGuidance))
        key("render_seconds"); raw(number(r.renderSeconds))
        key("sampler"); text(r.sampler)
        if let seed = r.seed { key("seed"); raw(String(seed)) }
        key("steps"); raw(String(r.steps))
        key("worker"); text(r.worker)
        out.append(contentsOf: "\n    }".utf8)
        return String(decoding: out, as: UTF8.self)
    }

    static func manifest<S: Sequence>(_ m: OutputManifest, entries: S, framesExpected: String) -> String
    where S.Element == String {
        let s = m.settings
        var settings = ["\"image_guidance\" : \(number(s.imageGuidance))"]
        if let noise = s.noiseSHA256 { settings.append("\"noise_sha256\" : \(string(noise))") }
        settings.append("\"pose_guidance\" : \(number(s.poseGuidance))")
        settings.append("\"sampler\" : \(string(s.sampler))")
        if let seed = s.seed { settings.append("\"seed\" : \(seed)") }
        settings.append("\"steps\" : \(s.steps)")
        let entries = Array(entries)
        // One allocation for the whole text: a 10,000-frame manifest is ~3 MB, and growing it by
        // appends copied it over and over.
        var out = ""
        out.reserveCapacity(entries.reduce(framesExpected.utf8.count + 4096) { $0 + $1.utf8.count + 2 })
        out += "{\n  \"complete\" : \(m.complete),\n  \"format\" : \(string(m.format)),\n  \"frames\" : ["
        var first = true
        for entry in entries {
            out += first ? "\n" : ",\n"
            out += entry
            first = false
        }
        out += first ? "],\n" : "\n  ],\n"
        out += "  \"frames_expected\" : \(framesExpected),\n  \"job_id\" : \(m.jobID),\n"
        out += "  \"model_id\" : \(string(m.modelID)),\n"
        out += "  \"settings\" : {\n    " + settings.joined(separator: ",\n    ") + "\n  }"
        if let v = m.video {
            out += ",\n  \"video\" : {\n    \"fps\" : \(v.fps),\n    \"frames\" : \(v.frames),\n    \"path\" : "
                + "\(string(v.path)),\n    \"sha256\" : \(string(v.sha256))\n  }"
        }
        return out + "\n}\n"
    }
}

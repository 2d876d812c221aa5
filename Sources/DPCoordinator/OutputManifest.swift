// manifest.json: the records it holds (job settings, frames, video), their JSON text (written by hand,
// each frame's entry encoded once) and its rewrite (durable: temp + fsync + rename; periodic: temp + rename).
import DPFileKit
import Foundation

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

extension OutputWriter {
    static func writeManifest(_ manifest: OutputManifest, entries entryJSON: [UInt32: String], expectedJSON: String,
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

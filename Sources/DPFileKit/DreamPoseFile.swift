// dreampose.json (docs/model-format.md), read ONCE here with every value checked, for the pipeline
// (DPPipeline's DreamPoseConfig) and for the coordinator (which has no model code but reports and sends a
// model's defaults). A model folder comes from a client or a peer: a value that cannot be right (steps 1e300,
// a pose window above UInt32.max, a 10^9-pixel frame, a NaN scale) is an error naming the file and the key,
// never a trap and never a huge allocation later.
import Foundation

/// Upper bounds on what a dreampose.json may ask for (SECURITY.md lists them with the other input limits).
public enum DreamPoseLimits {
    /// Largest frame side in pixels (DreamPose renders 640x512; the engine's buffers grow with H x W).
    public static let maxFrameSide = 4096
    /// Largest pose window (DreamPose: 5). The UNet's input has 2 channels per pose.
    public static let maxPoseWindow = 63
    /// Sampling steps (the schedulers' train timesteps are 1000).
    public static let maxSteps = 1000
    /// Largest magnitude of a guidance scale or of vae_scaling_factor.
    public static let maxScale: Double = 1000
    /// Longest name and sampler name, in UTF-8 bytes.
    public static let maxNameBytes = 256
    /// Largest dreampose.json accepted, in bytes.
    public static let maxFileBytes = 64 << 10
}

/// A dreampose.json that cannot be used; `description` names the file and the key.
public struct DreamPoseFileError: Error, CustomStringConvertible {
    public let file: String
    public let message: String
    public init(file: String, message: String) {
        self.file = file
        self.message = message
    }
    public var description: String { "\(file): \(message)" }
}

/// The checked contents of a dreampose.json. Absent optional keys get the format's defaults.
public struct DreamPoseFile: Equatable, Sendable {
    public static let formatName = "dreampose-model/1"

    public var format: String
    public var name: String
    public var height: Int
    public var width: Int
    public var vaeScalingFactor: Float
    public var poseWindow: Int
    public var steps: Int
    public var sampler: SamplerKind
    public var imageGuidance: Float
    public var poseGuidance: Float

    /// Reads and checks `url` (at most `DreamPoseLimits.maxFileBytes`).
    public static func read(_ url: URL) throws -> DreamPoseFile {
        let data: Data
        do {
            data = try FileRead.contents(ofFile: url.path, maxBytes: DreamPoseLimits.maxFileBytes)
        } catch {
            throw DreamPoseFileError(file: url.path, message: "cannot read dreampose.json: \(error)")
        }
        return try parse(data, file: url.path)
    }

    /// Decodes and checks dreampose.json bytes (`file` names them in errors).
    public static func parse(_ data: Data, file: String = "dreampose.json") throws -> DreamPoseFile {
        func fail(_ message: String) -> DreamPoseFileError { DreamPoseFileError(file: file, message: message) }
        guard data.count <= DreamPoseLimits.maxFileBytes else {
            throw fail("\(data.count) bytes, more than the \(DreamPoseLimits.maxFileBytes) a dreampose.json may have")
        }
        let raw: Raw
        do {
            raw = try JSONDecoder().decode(Raw.self, from: data)
        } catch let e as DecodingError {
            throw fail(JSONErrorText.describe(e))
        } catch {
            throw fail("not valid JSON (\(error))")
        }
        guard raw.format == formatName else {
            throw fail("format is \"\(raw.format.prefix(80))\", expected \"\(formatName)\"")
        }
        // Integers are decoded as Double and checked here: Foundation calls 1e300 in an Int field "not valid
        // JSON" without naming the key.
        func integer(_ key: String, _ value: Double?, default fallback: Int, in range: ClosedRange<Int>) throws -> Int {
            guard let value else { return fallback }
            guard value.isFinite, value.rounded() == value, value >= Double(range.lowerBound),
                  value <= Double(range.upperBound) else {
                throw fail("\(key) \(value) must be an integer from \(range.lowerBound) to \(range.upperBound)")
            }
            return Int(value)
        }
        let name = raw.name ?? ""
        guard name.utf8.count <= DreamPoseLimits.maxNameBytes else {
            throw fail("name is \(name.utf8.count) bytes, at most \(DreamPoseLimits.maxNameBytes) allowed")
        }
        // (The pipeline also needs multiples of 64: DreamPoseConfig checks that; the coordinator does not care.)
        let height = try integer("height", raw.height, default: 0, in: 1 ... DreamPoseLimits.maxFrameSide)
        let width = try integer("width", raw.width, default: 0, in: 1 ... DreamPoseLimits.maxFrameSide)
        let window = try integer("pose_window", raw.pose_window, default: 5, in: 1 ... DreamPoseLimits.maxPoseWindow)
        guard window % 2 == 1 else {
            throw fail("pose_window \(window) must be a positive odd number, at most \(DreamPoseLimits.maxPoseWindow)")
        }
        let scaling = raw.vae_scaling_factor ?? 0.18215
        guard scaling.isFinite, scaling > 0, scaling <= DreamPoseLimits.maxScale else {
            throw fail("vae_scaling_factor \(scaling) must be a positive number, at most \(DreamPoseLimits.maxScale)")
        }
        let d = raw.defaults
        let steps = try integer("defaults.steps", d?.steps, default: 100, in: 1 ... DreamPoseLimits.maxSteps)
        let samplerName = d?.sampler ?? SamplerKind.pndm.rawValue
        guard let sampler = SamplerKind(rawValue: samplerName) else {
            throw fail("defaults.sampler: " + SamplerKind.unknownSampler(samplerName))
        }
        var guidance: [Float] = []
        for (key, v) in [("image_guidance", d?.image_guidance ?? 8), ("pose_guidance", d?.pose_guidance ?? 3)] {
            guard v.isFinite, abs(v) <= DreamPoseLimits.maxScale else {
                throw fail("defaults.\(key) \(v) must be a finite number of magnitude at most \(DreamPoseLimits.maxScale)")
            }
            guidance.append(Float(v))
        }
        return DreamPoseFile(format: raw.format, name: name, height: height, width: width,
                             vaeScalingFactor: Float(scaling), poseWindow: window, steps: steps, sampler: sampler,
                             imageGuidance: guidance[0], poseGuidance: guidance[1])
    }

    // Numbers as Double (a JSON number beyond Double, e.g. 1e400, is refused by the decoder); integers are
    // checked by `integer` above.
    private struct Raw: Decodable {
        struct Defaults: Decodable {
            var steps: Double?
            var sampler: String?
            var image_guidance: Double?
            var pose_guidance: Double?
        }
        var format: String
        var name: String?
        var height: Double
        var width: Double
        var vae_scaling_factor: Double?
        var pose_window: Double?
        var defaults: Defaults?
    }
}

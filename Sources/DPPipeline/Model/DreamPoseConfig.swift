import DPFileKit
import Foundation

/// Errors of the DreamPose pipeline. Every case says which file, frame or option was wrong and what was expected.
public struct PipelineError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// `dreampose.json` at the root of a `dreampose-model/1` folder (../shared/docs/model-format.md).
public struct DreamPoseConfig: Codable, Equatable, Sendable {
    public static let formatName = "dreampose-model/1"

    /// Rendering defaults stored with the model.
    public struct Defaults: Codable, Equatable, Sendable {
        public var steps: Int
        public var sampler: String
        public var imageGuidance: Float
        public var poseGuidance: Float

        enum CodingKeys: String, CodingKey {
            case steps, sampler
            case imageGuidance = "image_guidance"
            case poseGuidance = "pose_guidance"
        }

        public init(steps: Int = 100, sampler: String = "pndm", imageGuidance: Float = 8, poseGuidance: Float = 3) {
            self.steps = steps; self.sampler = sampler
            self.imageGuidance = imageGuidance; self.poseGuidance = poseGuidance
        }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let d = Defaults()
            steps = try c.decodeIfPresent(Int.self, forKey: .steps) ?? d.steps
            sampler = try c.decodeIfPresent(String.self, forKey: .sampler) ?? d.sampler
            imageGuidance = try c.decodeIfPresent(Float.self, forKey: .imageGuidance) ?? d.imageGuidance
            poseGuidance = try c.decodeIfPresent(Float.self, forKey: .poseGuidance) ?? d.poseGuidance
        }
    }

    public var format: String
    public var name: String
    /// Output frame height in pixels (DreamPose: 640).
    public var height: Int
    /// Output frame width in pixels (DreamPose: 512).
    public var width: Int
    public var vaeScalingFactor: Float
    /// Number of poses in a window (DreamPose: 5 -> 10 pose channels).
    public var poseWindow: Int
    public var defaults: Defaults

    enum CodingKeys: String, CodingKey {
        case format, name, height, width, defaults
        case vaeScalingFactor = "vae_scaling_factor"
        case poseWindow = "pose_window"
    }

    public init(name: String, height: Int, width: Int, vaeScalingFactor: Float = 0.18215,
                poseWindow: Int = 5, defaults: Defaults = Defaults()) {
        self.format = Self.formatName; self.name = name; self.height = height; self.width = width
        self.vaeScalingFactor = vaeScalingFactor; self.poseWindow = poseWindow; self.defaults = defaults
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        format = try c.decode(String.self, forKey: .format)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        height = try c.decode(Int.self, forKey: .height)
        width = try c.decode(Int.self, forKey: .width)
        vaeScalingFactor = try c.decodeIfPresent(Float.self, forKey: .vaeScalingFactor) ?? 0.18215
        poseWindow = try c.decodeIfPresent(Int.self, forKey: .poseWindow) ?? 5
        defaults = try c.decodeIfPresent(Defaults.self, forKey: .defaults) ?? Defaults()
    }

    /// Reads and validates `dreampose.json`: DPFileKit's `DreamPoseFile` checks every value against
    /// `DreamPoseLimits` (the coordinator reads the same file through it), so a hostile file is an error
    /// naming the file and key, never a trap or a huge allocation.
    public static func load(_ url: URL) throws -> DreamPoseConfig {
        do {
            return try DreamPoseConfig(try DreamPoseFile.read(url), file: url.path)
        } catch let e as DreamPoseFileError {
            throw PipelineError(e.description)
        }
    }

    /// Decodes and validates dreampose.json bytes (`file` names them in errors).
    public static func parse(_ data: Data, file: String = "dreampose.json") throws -> DreamPoseConfig {
        do {
            return try DreamPoseConfig(try DreamPoseFile.parse(data, file: file), file: file)
        } catch let e as DreamPoseFileError {
            throw PipelineError(e.description)
        }
    }

    init(_ f: DreamPoseFile, file: String) throws {
        guard f.height % 64 == 0, f.width % 64 == 0 else {
            throw PipelineError("\(file): height \(f.height) and width \(f.width) must be positive multiples of 64")
        }
        self.init(name: f.name, height: f.height, width: f.width, vaeScalingFactor: f.vaeScalingFactor,
                  poseWindow: f.poseWindow,
                  defaults: Defaults(steps: f.steps, sampler: f.sampler, imageGuidance: f.imageGuidance,
                                     poseGuidance: f.poseGuidance))
    }
}

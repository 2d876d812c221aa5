import DPFileKit
import Foundation

/// Errors of the DreamPose pipeline. Every case says which file, frame or option was wrong and what was expected.
public struct PipelineError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// `dreampose.json` at the root of a `dreampose-model/1` folder (../shared/docs/model-format.md), as the
/// pipeline uses it: DPFileKit's `DreamPoseFile` (the one reader, which the coordinator uses too) plus the
/// pipeline's own requirement that the frame sides are multiples of 64.
public struct DreamPoseConfig: Equatable, Sendable {
    public static let formatName = DreamPoseFile.formatName

    /// The checked file; its `steps`, `sampler`, `imageGuidance` and `poseGuidance` are the model's rendering
    /// defaults (`RenderRequest.resolved(defaults:)`).
    public let file: DreamPoseFile

    public var name: String { file.name }
    /// Output frame height in pixels (DreamPose: 640).
    public var height: Int { file.height }
    /// Output frame width in pixels (DreamPose: 512).
    public var width: Int { file.width }
    public var vaeScalingFactor: Float { file.vaeScalingFactor }
    /// Number of poses in a window (DreamPose: 5 -> 10 pose channels).
    public var poseWindow: Int { file.poseWindow }

    /// A config made in code (benchmarks): the format's defaults for everything not given.
    public init(name: String, height: Int, width: Int, vaeScalingFactor: Float = 0.18215, poseWindow: Int = 5) throws {
        let json: [String: Any] = ["format": Self.formatName, "name": name, "height": height, "width": width,
                                   "vae_scaling_factor": Double(vaeScalingFactor), "pose_window": poseWindow]
        self = try Self.parse(try JSONSerialization.data(withJSONObject: json), file: "dreampose.json of \(name)")
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
        self.file = f
    }
}

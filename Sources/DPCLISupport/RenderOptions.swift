import ArgumentParser
import DPFileKit
import Foundation

/// The rendering options shared by `dp-coord submit` and `dp-worker render`: one declaration of the job's
/// inputs (model, subject, poses, frames) and its render request (steps, sampler, guidance scales, seed or
/// noise file), used by both commands through `@OptionGroup`, so the flags, help and checks cannot drift apart.
///
/// `validate()` holds the checks that need no files, through `RenderRequest.problem()` (the check the
/// coordinator and the workers make too, in the same words). What needs the model (frame size, latent shape
/// for `--noise`, pose frames for `--frames`) is checked by each command when it reads its inputs. `--out` is
/// declared by each command, since where it lives differs (this machine for `render`, the coordinator's
/// machine for `submit`).
public struct RenderOptions: ParsableArguments {
    @Option(help: "Model folder (dreampose-model/1 layout).") public var model: String
    @Option(help: "Subject photo (PNG).") public var subject: String
    @Option(help: "Folder of frame_<n>_densepose.npy files, or one stacked (N, 2, H, W) .npy.") public var poses: String
    @Option(help: "Frames to render: N, A-B, comma-separated (default: every pose frame).") public var frames: String?
    @Option(help: "Denoising steps (default: the model's dreampose.json).") public var steps: Int?
    @Option(help: "Sampler: pndm, ddim or dpm (default: the model's).", transform: { try SamplerKind.named($0) })
    public var sampler: SamplerKind?
    @Option(name: .customLong("image-guidance"), help: "Image guidance scale s_I (default: the model's).")
    public var imageGuidance: Float?
    @Option(name: .customLong("pose-guidance"), help: "Pose guidance scale s_P (default: the model's).")
    public var poseGuidance: Float?
    @Option(help: "Seed of the job's noise (portable generator; default \(NoiseRequest.defaultSeed)).") public var seed: UInt64?
    @Option(help: "Raw little-endian float32 noise file [1, 4, H/8, W/8] instead of --seed.") public var noise: String?

    public init() {}

    public func validate() throws {
        if seed != nil && noise != nil { throw ValidationError("give either --seed or --noise, not both") }
        if let problem = RenderRequest(steps: steps, sampler: sampler, imageGuidance: imageGuidance,
                                       poseGuidance: poseGuidance).problem() {
            throw ValidationError(problem)
        }
    }

    /// The render request these options make for a model whose latent is `latentShape` (the `--noise` file is
    /// read here, against that shape). `url` turns a path given on the command line into a file URL.
    public func request(latentShape: [Int], frames: [Int], order: FrameOrder = .frame,
                        url: (String) -> URL = { URL(fileURLWithPath: $0) }) throws -> RenderRequest {
        let noise = try self.noise.map { try NoiseRequest.rawFile(url($0), latentShape: latentShape) }
            ?? .seed(seed ?? NoiseRequest.defaultSeed)
        return RenderRequest(steps: steps, sampler: sampler, imageGuidance: imageGuidance, poseGuidance: poseGuidance,
                             noise: noise, frames: frames, order: order)
    }
}

extension SamplerKind: ExpressibleByArgument {}
extension FrameOrder: ExpressibleByArgument {}

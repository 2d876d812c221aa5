import ArgumentParser
import DPFileKit
import DPSampling

/// The rendering options shared by `dp-coord submit` and `dp-worker render`: one declaration of the job's
/// inputs (model, subject, poses, frames) and its sampling settings (steps, sampler, guidance scales, seed or
/// noise file), used by both commands through `@OptionGroup`, so the flags, help and checks cannot drift apart.
///
/// `validate()` holds only the checks that need no files: sampler name, step count, finite guidance scales,
/// `--seed` or `--noise`. What needs the model (frame size, latent shape for `--noise`, pose frames for
/// `--frames`) is checked by each command when it reads its inputs. `--out` is declared by each command, since
/// where it lives differs (this machine for `render`, the coordinator's machine for `submit`).
public struct RenderOptions: ParsableArguments {
    @Option(help: "Model folder (dreampose-model/1 layout).") public var model: String
    @Option(help: "Subject photo (PNG).") public var subject: String
    @Option(help: "Folder of frame_<n>_densepose.npy files, or one stacked (N, 2, H, W) .npy.") public var poses: String
    @Option(help: "Frames to render: N, A-B, comma-separated (default: every pose frame).") public var frames: String?
    @Option(help: "Denoising steps (default: the model's dreampose.json).") public var steps: Int?
    @Option(help: "Sampler: pndm, ddim or dpm (default: the model's).") public var sampler: String?
    @Option(name: .customLong("image-guidance"), help: "Image guidance scale s_I (default: the model's).")
    public var imageGuidance: Float?
    @Option(name: .customLong("pose-guidance"), help: "Pose guidance scale s_P (default: the model's).")
    public var poseGuidance: Float?
    @Option(help: "Seed of the job's noise (portable generator; default 0).") public var seed: UInt64?
    @Option(help: "Raw little-endian float32 noise file [1, 4, H/8, W/8] instead of --seed.") public var noise: String?

    public init() {}

    public func validate() throws {
        if seed != nil && noise != nil { throw ValidationError("give either --seed or --noise, not both") }
        // The same check, in the same words, as the coordinator's and the worker's (SamplingRequest).
        if let problem = SamplingRequest.problem(steps: steps, sampler: sampler, imageGuidance: imageGuidance,
                                                 poseGuidance: poseGuidance) {
            throw ValidationError(problem)
        }
    }

    /// `--sampler` as a `SamplerKind` (nil: the model's default). `validate()` has rejected unknown names.
    public var samplerKind: SamplerKind? { sampler.flatMap(SamplerKind.init(rawValue:)) }
}

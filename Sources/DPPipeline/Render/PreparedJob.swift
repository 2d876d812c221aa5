import DPFileKit
import DPModels
import DPSampling
import DPTensor
import Foundation

/// Thrown by `PreparedJob.render` when `isCancelled` turned true between two denoising steps.
public struct RenderCancelled: Error, CustomStringConvertible {
    public let frame: Int
    public let step: Int
    public var description: String { "frame \(frame): cancelled after step \(step)" }
}

/// Progress of one frame: `step` of `totalSteps` UNet evaluations are done.
public struct StepProgress: Sendable {
    public var frame: Int
    public var step: Int
    public var totalSteps: Int
    /// Seconds the last step took.
    public var stepSeconds: Double
}

/// A finished frame.
public struct RenderedFrame: Sendable {
    public var frame: Int
    /// The final 8-bit RGB frame after the reference's min-max stretch.
    public var image: RGBImage
    /// Its PNG encoding.
    public var png: Data
    public var renderSeconds: Double
}

/// A job prepared once (subject conditioning, noise, x_T), whose frames can then be rendered independently,
/// in any order, from any thread (one frame at a time per `PreparedJob` is the intended use; concurrent
/// calls are safe because nothing here is mutated after init).
/// The sampling loop follows ../shared/docs/dreampose-inference.md, "Sampling one frame".
public final class PreparedJob: Sendable {
    public let model: DreamPoseModel
    public let settings: ResolvedRenderRequest
    public let conditioning: SubjectConditioning
    /// The job's noise [1, 4, h, w], shared by every frame.
    public let noise: Tensor
    /// The first latent of every frame: add_noise(z0, noise, first timestep), [1, 4, h, w].
    public let xT: Tensor
    /// Timesteps of one frame (one UNet evaluation each).
    public let timesteps: [Int]
    public let poses: PoseSource?

    /// Prepares a job: runs CLIP, VAE encoder and adapter on the subject; draws or reads the noise.
    public init(model: DreamPoseModel, subject: RGBImage, settings: RenderRequest, poses: PoseSource? = nil,
                intermediates: ((String, Tensor) -> Void)? = nil) throws {
        self.model = model
        self.settings = try settings.resolved(for: model.config)
        self.poses = poses
        let latentShape = [1, model.latentChannels, model.latentHeight, model.latentWidth]
        conditioning = try SubjectConditioning(model: model, subject: subject, intermediates: intermediates)
        noise = try self.settings.noise.tensor(shape: latentShape, what: "job")
        let scheduler = try makeScheduler(self.settings.sampler, config: model.schedulerConfig, steps: self.settings.steps)
        timesteps = scheduler.timesteps
        guard let first = timesteps.first else { throw PipelineError("scheduler produced no timesteps") }
        // x_T = sqrt(abar[t0]) z0 + sqrt(1 - abar[t0]) noise (the reference's add_noise at the first timestep).
        xT = scheduler.addNoise(original: conditioning.z0, noise: noise, timestep: first)
        intermediates?("x_T", xT)
    }

    /// Number of UNet evaluations per frame.
    public var totalSteps: Int { timesteps.count }

    /// Renders frame `n` from this job's `PoseSource`.
    public func render(frame n: Int, progress: ((StepProgress) -> Void)? = nil,
                       isCancelled: (() -> Bool)? = nil,
                       intermediates: ((String, Tensor) -> Void)? = nil) throws -> RenderedFrame {
        guard let poses else { throw PipelineError("frame \(n): this job was prepared without poses") }
        let window = try poses.window(center: n, size: model.config.poseWindow)
        return try render(frame: n, poseWindow: window, progress: progress, isCancelled: isCancelled,
                          intermediates: intermediates)
    }

    /// Renders frame `n` given its window of poses (centre fallback already applied).
    public func render(frame n: Int, poseWindow: [Pose], progress: ((StepProgress) -> Void)? = nil,
                       isCancelled: (() -> Bool)? = nil,
                       intermediates: ((String, Tensor) -> Void)? = nil) throws -> RenderedFrame {
        let start = DispatchTime.now().uptimeNanoseconds
        guard poseWindow.count == model.config.poseWindow else {
            throw PipelineError("frame \(n): pose window has \(poseWindow.count) poses, the model takes \(model.config.poseWindow)")
        }
        let pose = PoseConditioning.window(poseWindow, frameHeight: model.height, frameWidth: model.width,
                                           latentHeight: model.latentHeight, latentWidth: model.latentWidth)
        intermediates?("pose_window", pose)
        let latents = try EngineThreads.reusingFreedMemory {
            try denoise(frame: n, pose: pose, progress: progress, isCancelled: isCancelled, intermediates: intermediates)
        }
        intermediates?("latents_final", latents)
        let decoded = model.vae.decode(scale(latents, by: Float(1.0 / Double(model.config.vaeScalingFactor))))
        intermediates?("decoded", decoded)
        let image = FramePostprocess.stretch(FramePostprocess.toRGB8(decoded))
        let png = try PNGCodec.encode(image)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return RenderedFrame(frame: n, image: image, png: png, renderSeconds: seconds)
    }

    /// The dual-guidance sampling loop: one UNet batch of 3 per timestep.
    /// Rows: 0 = (x, zero pose, c_0), 1 = (x, pose window, c_I), 2 = (x, zero pose, c_I);
    /// e = e0 + s_I (e2 - e0) + s_P (e1 - e2).
    func denoise(frame n: Int, pose: Tensor, progress: ((StepProgress) -> Void)?, isCancelled: (() -> Bool)?,
                 intermediates: ((String, Tensor) -> Void)?) throws -> Tensor {
        var scheduler = try makeScheduler(settings.sampler, config: model.schedulerConfig, steps: settings.steps)
        let zeroPose = Tensor(zeros: pose.shape)                                       // [1, 10, h, w]
        let pose3 = concat([zeroPose, pose, zeroPose], axis: 0)                        // [3, 10, h, w]
        let context3 = concat([conditioning.c0, conditioning.cI, conditioning.cI], axis: 0)  // [3, T, D]
        let sI = settings.imageGuidance, sP = settings.poseGuidance
        var x = xT                                                                     // [1, 4, h, w]
        var trajectory: [Tensor] = [x]
        for (i, t) in scheduler.timesteps.enumerated() {
            if let isCancelled, isCancelled() { throw RenderCancelled(frame: n, step: i) }
            let stepStart = DispatchTime.now().uptimeNanoseconds
            let xIn = scheduler.scaleModelInput(x, timestep: t)
            let latent3 = concat([xIn, xIn, xIn], axis: 0)                             // [3, 4, h, w]
            let unetIn = concat([latent3, pose3], axis: 1)                             // [3, 14, h, w]
            let out = model.unet(unetIn, timestep: Float(t), encoderHiddenStates: context3)  // [3, 4, h, w]
            // Rows: 0 = (c_0, no pose) = uncond, 1 = (c_I, pose) = image+pose, 2 = (c_I, no pose) = image.
            let e = DualGuidance.rows(out)
            let guided = DualGuidance.combine(uncond: e[0], image: e[2], imagePose: e[1], imageScale: sI, poseScale: sP)
            if i == 0, let dump = intermediates {
                dump("unet_in_step0", unetIn)
                dump("unet_out_step0", out)
                dump("eps_guided_step0", guided)
            }
            x = scheduler.step(output: guided, timestep: t, sample: x)
            if intermediates != nil { trajectory.append(x) }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - stepStart) / 1e9
            progress?(StepProgress(frame: n, step: i + 1, totalSteps: scheduler.timesteps.count, stepSeconds: seconds))
        }
        if let dump = intermediates {
            dump("latents", concat(trajectory.map { $0.reshaped([1] + $0.shape) }, axis: 0))
        }
        return x
    }
}

/// The reference's decode post-processing.
public enum FramePostprocess {
    /// decoded [1, 3, H, W] -> RGB8: clamp(x / 2 + 0.5, 0, 1), round(255 * v) half to even (numpy's round).
    public static func toRGB8(_ decoded: Tensor) -> RGBImage {
        let h = decoded.shape[2], w = decoded.shape[3]
        var pixels = [UInt8](repeating: 0, count: h * w * 3)
        decoded.data.withUnsafeBufferPointer { d in
            for c in 0..<3 {
                for y in 0..<h {
                    for x in 0..<w {
                        let v = min(max(d[(c * h + y) * w + x] / 2 + 0.5, 0), 1)
                        pixels[(y * w + x) * 3 + c] = UInt8((255 * v).rounded(.toNearestOrEven))
                    }
                }
            }
        }
        return RGBImage(width: w, height: h, pixels: pixels)
    }

    /// The reference's global min-max stretch over every channel: floor(255 * ((p - min) / (max - min)))
    /// in float64 (numpy), unchanged when max == min.
    public static func stretch(_ image: RGBImage) -> RGBImage {
        guard let lo = image.pixels.min(), let hi = image.pixels.max(), hi > lo else { return image }
        let range = Double(hi - lo)
        var out = image
        for i in out.pixels.indices {
            out.pixels[i] = UInt8((255 * (Double(image.pixels[i] - lo) / range)).rounded(.down))
        }
        return out
    }
}

// The narrow rendering interface the worker loop needs (Flamenco's habit: the consumer declares the
// interface), and its two implementations:
// * `PipelineFrameRenderer`: the real one, over DPPipeline (`DreamPoseModel` + `PreparedJob`).
// * `SyntheticFrameRenderer`: a TEST AND BENCHMARK renderer (constant time, deterministic bytes).
import CDPSys
import DPFileKit
import DPPipeline
import DPSampling
import Foundation

/// What a worker knows about a job once its JobPrep arrived: everything frame-independent.
public struct JobRenderSpec: Sendable, Equatable {
    public var jobID: String
    public var modelID: String
    /// The subject image, PNG bytes as submitted.
    public var subjectPNG: Data
    /// The job's sampling settings and noise (checked when the JobPrep was read; nil settings = the model's
    /// defaults, resolved by the pipeline).
    public var request: RenderRequest

    public init(jobID: String, modelID: String, subjectPNG: Data, request: RenderRequest = RenderRequest()) {
        self.jobID = jobID
        self.modelID = modelID
        self.subjectPNG = subjectPNG
        self.request = request
    }
}

/// Renders jobs: `prepare` once per job (load the model, condition on the subject, draw the noise),
/// then `render` each frame.
public protocol FrameRenderer: AnyObject, Sendable {
    func prepare(job: JobRenderSpec, modelDirectory: URL) throws -> any PreparedFrameRenderer
}

public protocol PreparedFrameRenderer: AnyObject, Sendable {
    /// Denoising steps per frame (Progress.total_steps).
    var totalSteps: Int { get }
    /// Renders frame `frame`. `poseWindow`: the window's .npy files (bytes), centre fallback applied by
    /// the coordinator. `progress(step)` after each finished step (1 ... totalSteps); `isCancelled` is
    /// polled before each step, and a cancel throws `FrameRenderCancelled`.
    func render(frame: Int, poseWindow: [Data], progress: (Int) -> Void,
                isCancelled: () -> Bool) throws -> (png: Data, seconds: Double)
}

/// Thrown by a renderer when `isCancelled` turned true; the worker answers FrameResult{CANCELLED}.
public struct FrameRenderCancelled: Error, CustomStringConvertible, Equatable {
    public let frame: Int
    /// Steps finished before the cancel was seen.
    public let step: Int
    public init(frame: Int, step: Int) {
        self.frame = frame
        self.step = step
    }
    public var description: String { "frame \(frame): cancelled after step \(step)" }
}

/// A job or frame the renderer refused (bad settings, bad pose or noise bytes, model mismatch);
/// `description` names the job/frame and what was expected vs found.
public struct FrameRenderError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

// MARK: - The real renderer

/// Renders with the DreamPose pipeline. Loaded models are kept by model id in a `LoadedModelCache`
/// (capacity `loadedModelCapacity`, least recently used dropped), so consecutive jobs of one model
/// load it once. The model folder passed to `prepare` must hold the job's model (the worker's cache
/// verified it; its id is trusted, not recomputed).
public final class PipelineFrameRenderer: FrameRenderer {
    public let loadedModels: LoadedModelCache<DreamPoseModel>

    public init(loadedModelCapacity: Int = 1) {
        loadedModels = LoadedModelCache(capacity: loadedModelCapacity)
    }

    public func prepare(job: JobRenderSpec, modelDirectory: URL) throws -> any PreparedFrameRenderer {
        let model = try loadedModels.value(for: job.modelID) {
            try DreamPoseModel(directory: modelDirectory, id: job.modelID)
        }
        let subject = try PNGCodec.decode(job.subjectPNG, name: "job \(job.jobID) subject image")
        let prepared = try PreparedJob(model: model, subject: subject, settings: job.request)
        return PipelinePreparedFrames(job: job, prepared: prepared)
    }
}

final class PipelinePreparedFrames: PreparedFrameRenderer {
    let job: JobRenderSpec
    let prepared: PreparedJob

    init(job: JobRenderSpec, prepared: PreparedJob) {
        self.job = job
        self.prepared = prepared
    }

    var totalSteps: Int { prepared.totalSteps }

    func render(frame: Int, poseWindow: [Data], progress: (Int) -> Void,
                isCancelled: () -> Bool) throws -> (png: Data, seconds: Double) {
        let poses = try poseWindow.enumerated().map { index, bytes -> Pose in
            let what = "job \(job.jobID) frame \(frame) pose window entry \(index)"
            let (shape, values) = try NPY.decode(bytes, name: what)
            guard shape.count == 3, shape[0] == 2, shape[1] > 0, shape[2] > 0 else {
                throw FrameRenderError("\(what): shape \(shape), expected (2, H, W) (a DensePose UV map)")
            }
            return Pose(height: shape[1], width: shape[2], values: values)
        }
        do {
            let rendered = try withoutActuallyEscaping(progress) { progress in
                try withoutActuallyEscaping(isCancelled) { isCancelled in
                    try prepared.render(frame: frame, poseWindow: poses, progress: { progress($0.step) },
                                        isCancelled: isCancelled)
                }
            }
            return (rendered.png, rendered.renderSeconds)
        } catch let cancel as RenderCancelled {
            throw FrameRenderCancelled(frame: cancel.frame, step: cancel.step)
        }
    }
}

// MARK: - The synthetic renderer (tests and benchmarks only)

/// FOR TESTS AND THE FARM BENCHMARK ONLY - never a default. Renders no image: each frame is a small
/// PNG whose pixels come from SHA-256 of (model id, subject bytes, steps, sampler, guidance, seed or
/// noise bytes, frame number, pose window bytes), so the bytes depend only on the job's settings, the
/// frame and its poses (not on the job id, the worker, timing or order), which lets farm tests check
/// determinism and exactly-once output. It takes `steps` steps of `stepDelaySeconds` each through the
/// injected `sleeper` (tests pass one that does not sleep, and a `clock` it advances), each step
/// ending at its deadline from the frame's start, reports progress and honours cancel
/// like the real renderer. The model folder is not read.
public final class SyntheticFrameRenderer: FrameRenderer {
    public let steps: Int
    public let stepDelaySeconds: Double
    public let width: Int
    public let height: Int
    let sleeper: @Sendable (Double) -> Void
    /// Monotonic nanoseconds.
    let clock: @Sendable () -> UInt64

    /// - steps: steps per frame when the job does not set `steps` (a job's own `steps` wins).
    /// - stepDelaySeconds: time per step, spent in `sleeper` (default: nanosleep(2)) until the step's
    ///   deadline on `clock` (default: the monotonic clock).
    public init(steps: Int = 4, stepDelaySeconds: Double = 0, width: Int = 8, height: Int = 8,
                sleeper: @escaping @Sendable (Double) -> Void = SyntheticFrameRenderer.nanosleep,
                clock: @escaping @Sendable () -> UInt64 = { DispatchTime.now().uptimeNanoseconds }) {
        precondition(steps > 0 && width > 0 && height > 0 && stepDelaySeconds >= 0)
        self.steps = steps
        self.stepDelaySeconds = stepDelaySeconds
        self.width = width
        self.height = height
        self.sleeper = sleeper
        self.clock = clock
    }

    /// Sleeps `seconds` with nanosleep(2), resuming after signals (a plain syscall: the synthetic
    /// renderer runs thousands of frames a second in the farm benchmark).
    public static func nanosleep(_ seconds: Double) {
        guard seconds > 0 else { return }
        // This thread's timer slack down from the default 50 us to 1 us: a constant-time renderer
        // should wake on time (the farm benchmark's frames are 3 ms).
        _ = dp_set_timer_slack_ns(1000)
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - seconds.rounded(.down)) * 1e9))
        var remaining = timespec()
        while Glibc.nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }

    public func prepare(job: JobRenderSpec, modelDirectory: URL) throws -> any PreparedFrameRenderer {
        let r = job.request
        let steps = r.steps ?? self.steps
        guard steps >= 1 else { throw FrameRenderError("job \(job.jobID): steps must be at least 1, got \(steps)") }
        let noise: Data
        switch r.noise {
        case .seed(let seed): noise = le64(seed)
        case .npy(let bytes): noise = bytes
        }
        // The job's part of the seed: every input that changes a real render (seed64 length-prefixes each).
        let jobSeed = FileDigest.seed64([
            Data("dp-farm synthetic renderer v1".utf8), Data(job.modelID.utf8), job.subjectPNG, le64(UInt64(steps)),
            Data((r.sampler?.rawValue ?? "").utf8),
            le64(r.imageGuidance.map { UInt64($0.bitPattern) } ?? UInt64.max),
            le64(r.poseGuidance.map { UInt64($0.bitPattern) } ?? UInt64.max),
            noise,
        ])
        return SyntheticPreparedFrames(jobSeed: jobSeed, steps: steps, renderer: self)
    }
}

final class SyntheticPreparedFrames: PreparedFrameRenderer {
    /// `FileDigest.seed64` of the job's inputs.
    let jobSeed: UInt64
    let totalSteps: Int
    let renderer: SyntheticFrameRenderer

    init(jobSeed: UInt64, steps: Int, renderer: SyntheticFrameRenderer) {
        self.jobSeed = jobSeed
        totalSteps = steps
        self.renderer = renderer
    }

    func render(frame: Int, poseWindow: [Data], progress: (Int) -> Void,
                isCancelled: () -> Bool) throws -> (png: Data, seconds: Double) {
        let start = renderer.clock()
        // The image first, then the steps, each ending at its deadline (start + k x step time): the
        // frame takes `steps x stepDelaySeconds` however long the image took, and sleeps that
        // overshoot do not add up over the steps.
        // Pixels from a xorshift generator seeded by the job, the frame number and the window's bytes.
        var state = FileDigest.seed64([le64(jobSeed), le64(UInt64(frame))] + poseWindow)
        if state == 0 { state = 1 }
        var image = RGBImage(width: renderer.width, height: renderer.height)
        for i in 0 ..< image.pixels.count {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            image.pixels[i] = UInt8(truncatingIfNeeded: state >> 32)
        }
        let png = PNGCodec.encodeStored(image)
        let stepNs = renderer.stepDelaySeconds * 1e9
        for step in 0 ..< totalSteps {
            if isCancelled() { throw FrameRenderCancelled(frame: frame, step: step) }
            if stepNs > 0 {
                let deadline = Double(start) + stepNs * Double(step + 1)
                let left = deadline - Double(renderer.clock())
                if left > 0 { renderer.sleeper(left / 1e9) }
            }
            progress(step + 1)
        }
        return (png, Double(renderer.clock() - start) / 1e9)
    }
}

/// `value` as 8 little-endian bytes (a part of a `FileDigest.seed64`).
private func le64(_ value: UInt64) -> Data {
    withUnsafeBytes(of: value.littleEndian) { Data($0) }
}

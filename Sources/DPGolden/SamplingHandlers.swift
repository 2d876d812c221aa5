// Handlers for the sampling case kinds of shared/golden/README.md §2.3: scheduler_trajectory (the fake model
// eps = 0.1 x + 1e-5 t driven through PNDM/DDIM) and e2e_dual_cfg (UNet + PNDM + dual guidance + VAE decode).

import DPFileKit
import DPModels
import DPSampling
import DPTensor
import Foundation

extension ParityRunner {
    /// The sampling kinds; registered by `registerSamplingHandlers()`.
    public static let samplingKinds = ["scheduler_trajectory", "e2e_dual_cfg"]

    /// Adds the scheduler_trajectory and e2e_dual_cfg handlers.
    public func registerSamplingHandlers() {
        register(kind: "scheduler_trajectory", handler: Self.schedulerTrajectory)
        register(kind: "e2e_dual_cfg", handler: Self.e2eDualCFG)
    }

    static func samplerKind(_ c: ParityContext) throws -> SamplerKind {
        guard let name = c.entry.fields["scheduler"]?.string else {
            throw GoldenError.missingField(caseName: c.entry.name, field: "scheduler")
        }
        guard let kind = SamplerKind(rawValue: name) else { throw ParitySkip("scheduler \"\(name)\" is not one of ours") }
        return kind
    }

    static func scheduler(_ c: ParityContext) throws -> any Scheduler {
        guard let config = c.entry.fields["config"]?.string else {
            throw GoldenError.missingField(caseName: c.entry.name, field: "config")
        }
        guard let steps = c.entry.fields["num_inference_steps"]?.int else {
            throw GoldenError.missingField(caseName: c.entry.name, field: "num_inference_steps")
        }
        if let eta = c.entry.fields["eta"]?.double, eta != 0 { throw ParitySkip("eta \(eta): only eta 0 is implemented") }
        let s = try makeScheduler(try samplerKind(c), config: SchedulerConfig.load(c.golden.url(config)), steps: steps)
        if let expected = c.entry.fields["timesteps"]?.array?.compactMap(\.int), expected != s.timesteps {
            throw GoldenError.malformed(file: c.entry.name, reason: "timesteps \(s.timesteps), expected \(expected)")
        }
        return s
    }

    static func scheduleTimestepsStacked(_ tensors: [Tensor]) -> Tensor {
        concat(tensors.map { $0.reshaped([1] + $0.shape) }, axis: 0)
    }

    static func schedulerTrajectory(_ c: ParityContext) throws -> [ParityMeasurement] {
        var s = try scheduler(c)
        var x = try c.input("x_init")                                  // [1, 4, h, w]
        var trajectory = [x], eps: [Tensor] = []
        for t in s.timesteps {
            // The fake model of golden/README.md: eps = 0.1 * x + 1e-5 * t.
            let e = Tensor(shape: x.shape, data: x.data.map { 0.1 * $0 + 1e-5 * Float(t) })
            eps.append(e)
            x = s.step(output: e, timestep: t, sample: x)
            trajectory.append(x)
        }
        var ms = [try c.compareOutput("trajectory", scheduleTimestepsStacked(trajectory)),
                  try c.compareOutput("eps", scheduleTimestepsStacked(eps))]
        if c.entry.inputNames("alphas_cumprod") != nil, let config = c.entry.fields["config"]?.string {
            let schedule = try NoiseSchedule(config: SchedulerConfig.load(c.golden.url(config)))
            let ac = Tensor(shape: [schedule.alphasCumprod.count], data: schedule.alphasCumprod)
            ms.append(ParityMeasurement.compare("alphas_cumprod", actual: ac, expected: try c.input("alphas_cumprod")))
        }
        return ms
    }

    static func e2eDualCFG(_ c: ParityContext) throws -> [ParityMeasurement] {
        guard let models = c.golden.manifest["models"],
              let unetConfig = models["unet"]?["config"]?.string, let unetWeights = models["unet"]?["weights"]?.string,
              let vaeConfig = models["vae"]?["config"]?.string, let vaeWeights = models["vae"]?["weights"]?.string else {
            throw GoldenError.missingField(caseName: c.entry.name, field: "manifest models.unet/vae")
        }
        let unet = try c.cached("unet:" + c.golden.url(unetWeights).path) {
            try UNet2DConditionModel(config: .load(c.golden.url(unetConfig)),
                                     weights: SafeTensorsWeights(file: SafeTensorsFile(url: c.golden.url(unetWeights)), keyMap: .unet))
        }
        let vae = try c.cached("vae:" + c.golden.url(vaeWeights).path) {
            try AutoencoderKL(config: .load(c.golden.url(vaeConfig)),
                              weights: SafeTensorsWeights(file: SafeTensorsFile(url: c.golden.url(vaeWeights)), keyMap: .vae))
        }
        let scaling = Float(models["vae"]?["scaling_factor"]?.double ?? Double(vae.config.scalingFactor))
        guard let sI = c.entry.fields["s_image"]?.double, let sP = c.entry.fields["s_pose"]?.double else {
            throw GoldenError.missingField(caseName: c.entry.name, field: "s_image/s_pose")
        }
        var s = try scheduler(c)
        let pose = try c.input("pose")                                  // [1, 10, h, w]
        let context = try c.input("image_context")                      // [1, T, D]
        var latents = scale(try c.input("latents_init_noise"), by: s.initNoiseSigma)   // [1, 4, h, w]
        // Batch order of this case: (null image, null pose), (image, null pose), (image, pose).
        let zeroPose = Tensor(zeros: pose.shape)
        let pose3 = concat([zeroPose, zeroPose, pose], axis: 0)         // [3, 10, h, w]
        let context3 = concat([Tensor(zeros: context.shape), context, context], axis: 0)  // [3, T, D]
        var unetIn0: Tensor?
        var outs: [Tensor] = [], guided: [Tensor] = [], trajectory = [latents]
        for t in s.timesteps {
            let x = s.scaleModelInput(latents, timestep: t)
            let input = concat([concat([x, x, x], axis: 0), pose3], axis: 1)   // [3, 14, h, w]
            if unetIn0 == nil { unetIn0 = input }
            let out = unet(input, timestep: Float(t), encoderHiddenStates: context3)   // [3, 4, h, w]
            let e = DualGuidance.rows(out)
            let eps = DualGuidance.combine(uncond: e[0], image: e[1], imagePose: e[2],
                                           imageScale: Float(sI), poseScale: Float(sP))
            outs.append(out); guided.append(eps)
            latents = s.step(output: eps, timestep: t, sample: latents)
            trajectory.append(latents)
        }
        let image = vae.decode(scale(latents, by: 1 / scaling))        // [1, 3, H, W]
        let image01 = Tensor(shape: image.shape, data: image.data.map { min(max($0 / 2 + 0.5, 0), 1) })
        var ms: [ParityMeasurement] = []
        let produced: [String: Tensor] = [
            "unet_in_step0": unetIn0!, "unet_out": scheduleTimestepsStacked(outs),
            "eps_guided": scheduleTimestepsStacked(guided), "latents": scheduleTimestepsStacked(trajectory),
            "latents_final": latents, "image": image, "image01": image01,
        ]
        for role in c.entry.outputs.keys.sorted() {
            guard let actual = produced[role] else { throw ParitySkip("output role \"\(role)\" is not produced here") }
            ms.append(try c.compareOutput(role, actual))
        }
        return ms
    }
}

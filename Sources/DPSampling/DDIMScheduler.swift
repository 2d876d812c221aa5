import DPTensor

/// This implementation matches diffusers' `DDIMScheduler` (0.42) with `eta = 0` (deterministic DDIM; the
/// stochastic eta > 0 variant is not implemented: DreamPose's reference uses eta 0).
///
/// * Timesteps: "leading" `arange(N) * (T // N) + steps_offset` reversed, "trailing", "linspace" as diffusers.
/// * prev_t = t - T // N (whatever the spacing); prev_t < 0 uses alphas_cumprod[0], or 1 with
///   `set_alpha_to_one` (diffusers' DDIM default when the key is absent: true).
/// * `clip_sample` is honoured as configured; **absent means false** here (diffusers: true). DreamPose
///   builds DDIM from the model's PNDM config, which has no such key, and clipping SD latents to [-1, 1]
///   is the accident shared/docs/dreampose-inference.md tells us not to reproduce.
/// * `thresholding` is not supported (throws).
/// * Coefficients in float32 as diffusers computes them (0-dim float32 tensors).
public struct DDIMScheduler: Scheduler {
    public let config: SchedulerConfig
    public let schedule: NoiseSchedule
    public let numInferenceSteps: Int
    public let timesteps: [Int]
    public let initNoiseSigma: Float = 1
    let finalAlphaCumprod: Float
    let stepRatio: Int
    let clipRange: Float?     // nil: no clipping
    enum Prediction { case epsilon, sample, vPrediction }
    let prediction: Prediction

    public init(config: SchedulerConfig, steps: Int) throws {
        try checkSteps(steps, config, "DDIMScheduler")
        if config.thresholding {
            throw SchedulerError("DDIMScheduler: scheduler config key 'thresholding': only false is supported, found true")
        }
        switch config.predictionType {
        case "epsilon": prediction = .epsilon
        case "sample": prediction = .sample
        case "v_prediction": prediction = .vPrediction
        default:
            throw SchedulerError("DDIMScheduler: scheduler config key 'prediction_type': expected epsilon, sample "
                + "or v_prediction, found '\(config.predictionType)'")
        }
        self.config = config
        schedule = try NoiseSchedule(config: config)
        numInferenceSteps = steps
        let T = config.numTrainTimesteps
        let ratio = T / steps
        stepRatio = ratio
        finalAlphaCumprod = (config.setAlphaToOne ?? true) ? 1 : schedule.alphasCumprod[0]
        clipRange = (config.clipSample ?? false) ? Float(config.clipSampleRange) : nil

        switch try TimestepSpacing(config: config, classDefault: .leading) {
        case .linspace:
            timesteps = NumPy.linspace(0, Double(T - 1), steps).map { Int(NumPy.round($0)) }.reversed()
        case .leading:
            timesteps = (0..<steps).reversed().map { $0 * ratio + config.stepsOffset }
        case .trailing:
            let fratio = Double(T) / Double(steps)
            timesteps = NumPy.arange(Double(T), 0, -fratio).map { Int(NumPy.round($0)) - 1 }
        }
    }

    public func scaleModelInput(_ sample: Tensor, timestep: Int) -> Tensor { sample }

    public mutating func step(output: Tensor, timestep: Int, sample: Tensor) -> Tensor {
        precondition(output.shape == sample.shape, "DDIMScheduler.step: output \(output.shape) vs sample \(sample.shape)")
        let prevT = timestep - stepRatio
        let alphaProdT = schedule.alphasCumprod[timestep]
        let alphaProdTPrev = prevT >= 0 ? schedule.alphasCumprod[prevT] : finalAlphaCumprod
        let betaProdT = 1 - alphaProdT
        let sa = alphaProdT.squareRoot(), sb = betaProdT.squareRoot()
        // eta = 0: std_dev_t = 0, direction coefficient sqrt(1 - alpha_prod_t_prev - 0).
        let dirCoeff = (1 - alphaProdTPrev).squareRoot()
        let prevCoeff = alphaProdTPrev.squareRoot()
        let n = sample.count
        var out = [Float](repeating: 0, count: n)
        let m = output.data, x = sample.data
        for i in 0..<n {
            var x0: Float, eps: Float
            switch prediction {
            case .epsilon:
                x0 = (x[i] - sb * m[i]) / sa
                eps = m[i]
            case .sample:
                x0 = m[i]
                eps = (x[i] - sa * x0) / sb
            case .vPrediction:
                x0 = sa * x[i] - sb * m[i]
                eps = sa * m[i] + sb * x[i]
            }
            if let r = clipRange { x0 = min(max(x0, -r), r) }
            out[i] = prevCoeff * x0 + dirCoeff * eps
        }
        return Tensor(shape: sample.shape, data: out)
    }

    public func addNoise(original: Tensor, noise: Tensor, timestep: Int) -> Tensor {
        ddpmAddNoise(original: original, noise: noise, alphaProd: schedule.alphasCumprod[timestep])
    }
}

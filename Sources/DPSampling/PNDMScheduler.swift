import DPTensor

/// This implementation matches diffusers' `PNDMScheduler` (0.42). With `skip_prk_steps=True` it is the
/// PLMS sampler Stable Diffusion and DreamPose use; with `skip_prk_steps=False` (the class default, e.g. a
/// PNDM built from a DDIM config) the first 12 evaluations are diffusers' Runge-Kutta (PRK) warm-up.
///
/// * N steps are N+1 model evaluations: the second timestep is repeated (`[.., t1, t1, t0]` reversed).
/// * Step 0 (at T0) remembers the sample and eps0 and steps T0 -> T1 with eps0. Step 1 (T1 again) ignores
///   the sample passed in, restarts from the remembered sample at T0 and steps T0 -> T1 with
///   (eps0 + eps1) / 2; eps1 is not kept. From step 2 on each eps is kept (last 4) and combined with the
///   Adams-Bashforth weights (3, -1)/2, (23, -16, 5)/12, (55, -59, 37, -9)/24.
/// * The previous timestep is always `t - T // N` (whatever the spacing); `t < 0` uses
///   alphas_cumprod[0], or 1 with `set_alpha_to_one`.
/// * Step coefficients are computed in float32 exactly as diffusers' 0-dim float32 tensors are.
public struct PNDMScheduler: Scheduler {
    public let config: SchedulerConfig
    public let schedule: NoiseSchedule
    public let numInferenceSteps: Int
    public let timesteps: [Int]
    public let initNoiseSigma: Float = 1
    let finalAlphaCumprod: Float
    let stepRatio: Int          // num_train_timesteps // num_inference_steps
    let epsilonPrediction: Bool // false: v_prediction

    let prkTimesteps: [Int]     // empty with skip_prk_steps

    // Running state (diffusers: counter, ets, cur_sample, cur_model_output).
    private(set) var counter = 0
    private var ets: [[Float]] = []
    private var curSample: [Float]?
    private var curModelOutput: [Float]?

    public init(config: SchedulerConfig, steps: Int) throws {
        try checkSteps(steps, config, "PNDMScheduler")
        if !config.skipPrkSteps && steps < 4 {
            throw SchedulerError("PNDMScheduler: skip_prk_steps false (Runge-Kutta warm-up) needs at least 4 steps, "
                + "found \(steps)")
        }
        switch config.predictionType {
        case "epsilon": epsilonPrediction = true
        case "v_prediction": epsilonPrediction = false
        default:
            throw SchedulerError("PNDMScheduler: scheduler config key 'prediction_type': expected epsilon or "
                + "v_prediction, found '\(config.predictionType)'")
        }
        self.config = config
        schedule = try NoiseSchedule(config: config)
        numInferenceSteps = steps
        let ratio = config.numTrainTimesteps / steps
        stepRatio = ratio
        finalAlphaCumprod = (config.setAlphaToOne ?? false) ? 1 : schedule.alphasCumprod[0]

        let spacing = try TimestepSpacing(config: config, classDefault: .leading)
        let T = config.numTrainTimesteps
        // `_timesteps`, ascending.
        var base: [Int]
        switch spacing {
        case .linspace:
            base = NumPy.linspace(0, Double(T - 1), steps).map { Int(NumPy.round($0)) }
        case .leading:
            base = (0..<steps).map { $0 * ratio + config.stepsOffset }
        case .trailing:
            let fratio = Double(T) / Double(steps)
            base = NumPy.arange(Double(T), 0, -fratio).reversed().map { Int(NumPy.round($0)) - 1 }
        }
        if config.skipPrkSteps {
            // plms_timesteps = concat(_timesteps[:-1], _timesteps[-2:-1], _timesteps[-1:])[::-1]
            var plms = Array(base.dropLast())
            if base.count >= 2 { plms.append(base[base.count - 2]) }
            plms.append(base[base.count - 1])
            prkTimesteps = []
            timesteps = plms.reversed()
        } else {
            // prk = _timesteps[-4:].repeat(2) + tile([0, T // N // 2], 4); prk = prk[:-1].repeat(2)[1:-1][::-1]
            let half = ratio / 2
            let prk0 = base.suffix(4).flatMap { [$0, $0 + half] }
            let prk = Array(prk0.dropLast().flatMap { [$0, $0] }.dropFirst().dropLast().reversed())
            prkTimesteps = prk
            timesteps = prk + base.dropLast(3).reversed()   // plms_timesteps = _timesteps[:-3][::-1]
        }
    }

    public func scaleModelInput(_ sample: Tensor, timestep: Int) -> Tensor { sample }

    public mutating func step(output: Tensor, timestep: Int, sample: Tensor) -> Tensor {
        precondition(output.shape == sample.shape, "PNDMScheduler.step: output \(output.shape) vs sample \(sample.shape)")
        if counter < prkTimesteps.count { return stepPRK(output: output, timestep: timestep, sample: sample) }
        return stepPLMS(output: output, timestep: timestep, sample: sample)
    }

    /// diffusers `step_prk`: 4 evaluations per Runge-Kutta step (t, t - h/2, t - h/2, t - h), all from the
    /// sample stored at the first; the first 3 step with their own eps, the 4th with
    /// (e1 + 2 e2 + 2 e3 + e4) / 6. The first eps of each is kept for PLMS.
    mutating func stepPRK(output: Tensor, timestep: Int, sample: Tensor) -> Tensor {
        let diffToPrev = counter % 2 == 1 ? 0 : stepRatio / 2
        let prevT = timestep - diffToPrev
        let t = prkTimesteps[counter / 4 * 4]
        let n = output.count
        var eps = output.data
        let sixth = Float(1.0 / 6.0), third = Float(1.0 / 3.0)
        switch counter % 4 {
        case 0:
            let acc = curModelOutput ?? [Float](repeating: 0, count: n)
            curModelOutput = (0..<n).map { acc[$0] + sixth * eps[$0] }
            ets.append(output.data)
            curSample = sample.data
        case 1, 2:
            let acc = curModelOutput ?? [Float](repeating: 0, count: n)
            curModelOutput = (0..<n).map { acc[$0] + third * eps[$0] }
        default:
            let acc = curModelOutput ?? [Float](repeating: 0, count: n)
            eps = (0..<n).map { acc[$0] + sixth * eps[$0] }
            curModelOutput = nil
        }
        let prev = prevSample(curSample ?? sample.data, t, prevT, eps)
        counter += 1
        return Tensor(shape: sample.shape, data: prev)
    }

    /// diffusers `step_plms`.
    mutating func stepPLMS(output: Tensor, timestep: Int, sample: Tensor) -> Tensor {
        var t = timestep
        var prevT = timestep - stepRatio
        if counter != 1 {
            if ets.count > 3 { ets.removeFirst(ets.count - 3) }
            ets.append(output.data)
        } else {
            prevT = timestep
            t = timestep + stepRatio
        }

        var x = sample.data
        var eps: [Float]
        let n = output.count
        if ets.count == 1 && counter == 0 {
            eps = output.data
            curSample = sample.data
        } else if ets.count == 1 && counter == 1 {
            guard let stored = curSample else { preconditionFailure("PNDMScheduler: no stored sample at step 1") }
            let e0 = ets[0]
            eps = [Float](repeating: 0, count: n)
            output.data.withUnsafeBufferPointer { e1 in
                for i in 0..<n { eps[i] = (e1[i] + e0[i]) / 2 }
            }
            x = stored
            curSample = nil
        } else if ets.count == 2 {
            let e1 = ets[1], e2 = ets[0]
            eps = (0..<n).map { i in (3 * e1[i] - e2[i]) / 2 }
        } else if ets.count == 3 {
            let e1 = ets[2], e2 = ets[1], e3 = ets[0]
            eps = (0..<n).map { i in (23 * e1[i] - 16 * e2[i] + 5 * e3[i]) / 12 }
        } else {
            let e1 = ets[3], e2 = ets[2], e3 = ets[1], e4 = ets[0]
            eps = (0..<n).map { i in (1 / Float(24)) * (55 * e1[i] - 59 * e2[i] + 37 * e3[i] - 9 * e4[i]) }
        }

        let prev = prevSample(x, t, prevT, eps)
        counter += 1
        return Tensor(shape: sample.shape, data: prev)
    }

    /// diffusers `_get_prev_sample`: formula (9) of the PNDM paper.
    func prevSample(_ sample: [Float], _ t: Int, _ prevT: Int, _ modelOutput: [Float]) -> [Float] {
        let alphaProdT = schedule.alphasCumprod[t]
        let alphaProdTPrev = prevT >= 0 ? schedule.alphasCumprod[prevT] : finalAlphaCumprod
        let betaProdT = 1 - alphaProdT
        let betaProdTPrev = 1 - alphaProdTPrev
        let sampleCoeff = (alphaProdTPrev / alphaProdT).squareRoot()
        let denom = alphaProdT * betaProdTPrev.squareRoot() + (alphaProdT * betaProdT * alphaProdTPrev).squareRoot()
        let diff = alphaProdTPrev - alphaProdT
        let sa = alphaProdT.squareRoot(), sb = betaProdT.squareRoot()
        let n = sample.count
        var out = [Float](repeating: 0, count: n)
        for i in 0..<n {
            var e = modelOutput[i]
            if !epsilonPrediction { e = sa * e + sb * sample[i] }   // v -> epsilon
            out[i] = sampleCoeff * sample[i] - diff * e / denom
        }
        return out
    }

    public func addNoise(original: Tensor, noise: Tensor, timestep: Int) -> Tensor {
        ddpmAddNoise(original: original, noise: noise, alphaProd: schedule.alphasCumprod[timestep])
    }
}

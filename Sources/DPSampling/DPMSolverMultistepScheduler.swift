import DPTensor
import Foundation

/// This implementation matches diffusers' `DPMSolverMultistepScheduler` (0.42) for the deterministic
/// algorithms: "dpmsolver++" (default; data prediction) and "dpmsolver" (noise prediction), solver orders
/// 1-3, "midpoint" (default) or "heun" second-order updates, `lower_order_final` / `euler_at_final`,
/// `final_sigmas_type` "zero" (default) or "sigma_min", `lambda_min_clipped`, and prediction types epsilon,
/// sample and v_prediction.
///
/// Timestep spacing: diffusers' default for this class is "linspace", used when the config has no
/// `timestep_spacing` key. A config that has the key (every SD-1.x PNDM config: "leading", steps_offset 1)
/// keeps it, exactly like `DPMSolverMultistepScheduler.from_config(pndm.config)` in diffusers:
/// "leading" = `arange(N + 1) * (T // (N + 1))` reversed without its last entry, plus steps_offset.
///
/// Not supported (throw): the SDE variants (they need per-step noise), karras / exponential / beta / lu /
/// flow sigma schedules, thresholding, learned variance.
///
/// Numerics as diffusers: sigmas = sqrt((1 - abar) / abar) in float32, and every step coefficient
/// (alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma * alpha_t, lambda = log alpha - log sigma, h, ...) is a
/// float32 scalar; the last sigma is 0, so the last step lands on the data prediction.
public struct DPMSolverMultistepScheduler: Scheduler {
    public let config: SchedulerConfig
    public let schedule: NoiseSchedule
    public let timesteps: [Int]
    public let initNoiseSigma: Float = 1
    /// One sigma per timestep plus the final one ([N + 1], float32).
    public let sigmas: [Float]
    let dataPrediction: Bool          // dpmsolver++ (x0 model outputs) vs dpmsolver (eps model outputs)
    let heun: Bool
    enum Prediction { case epsilon, sample, vPrediction }
    let prediction: Prediction

    // Running state (diffusers: model_outputs, lower_order_nums, step_index).
    private var modelOutputs: [[Float]] = []     // oldest first, at most solver_order
    private var lowerOrderNums = 0
    private(set) var stepIndex: Int?

    public init(config: SchedulerConfig, steps: Int) throws {
        let name = "DPMSolverMultistepScheduler"
        try checkSteps(steps, config, name)
        func unsupported(_ key: String, _ found: String, _ expected: String) -> SchedulerError {
            SchedulerError("\(name): scheduler config key '\(key)': expected \(expected), found \(found)")
        }
        switch config.algorithmType {
        case "dpmsolver++": dataPrediction = true
        case "dpmsolver": dataPrediction = false
        default: throw unsupported("algorithm_type", "'\(config.algorithmType)'", "dpmsolver++ or dpmsolver")
        }
        switch config.solverType {
        case "midpoint": heun = false
        case "heun": heun = true
        default: throw unsupported("solver_type", "'\(config.solverType)'", "midpoint or heun")
        }
        guard (1...3).contains(config.solverOrder) else {
            throw unsupported("solver_order", "\(config.solverOrder)", "1, 2 or 3")
        }
        switch config.predictionType {
        case "epsilon": prediction = .epsilon
        case "sample": prediction = .sample
        case "v_prediction": prediction = .vPrediction
        default: throw unsupported("prediction_type", "'\(config.predictionType)'", "epsilon, sample or v_prediction")
        }
        for (key, on) in [("use_karras_sigmas", config.useKarrasSigmas),
                          ("use_exponential_sigmas", config.useExponentialSigmas),
                          ("use_beta_sigmas", config.useBetaSigmas), ("use_lu_lambdas", config.useLuLambdas),
                          ("use_flow_sigmas", config.useFlowSigmas), ("thresholding", config.thresholding)] where on {
            throw unsupported(key, "true", "false (not supported)")
        }
        if let v = config.varianceType { throw unsupported("variance_type", "'\(v)'", "null (not supported)") }
        if !dataPrediction && config.finalSigmasType == "zero" {
            throw unsupported("final_sigmas_type", "'zero'", "sigma_min for algorithm_type dpmsolver (as diffusers)")
        }

        self.config = config
        schedule = try NoiseSchedule(config: config)
        let T = config.numTrainTimesteps
        let ac = schedule.alphasCumprod

        // last_timestep = T - searchsorted(flip(lambda_t), lambda_min_clipped)
        let lambdaT = ac.map { a -> Float in log(a.squareRoot()) - log((1 - a).squareRoot()) }
        let flipped = Array(lambdaT.reversed())
        let clip = config.lambdaMinClipped
        let clippedIdx = flipped.firstIndex { Double($0) >= clip } ?? flipped.count
        let lastTimestep = T - clippedIdx

        var ts: [Int]
        switch try TimestepSpacing(config: config, classDefault: .linspace) {
        case .linspace:
            ts = NumPy.linspace(0, Double(lastTimestep - 1), steps + 1).map { Int(NumPy.round($0)) }
            ts = Array(ts.reversed().dropLast())
        case .leading:
            let ratio = lastTimestep / (steps + 1)
            ts = (0...steps).reversed().dropLast().map { $0 * ratio + config.stepsOffset }
        case .trailing:
            let ratio = Double(T) / Double(steps)
            ts = NumPy.arange(Double(lastTimestep), 0, -ratio).map { Int(NumPy.round($0)) - 1 }
        }
        if let bad = ts.first(where: { $0 < 0 || $0 >= T }) {
            throw SchedulerError("\(name): \(steps) steps give timestep \(bad) outside 0..<\(T)")
        }
        guard config.finalSigmasType == "zero" || config.finalSigmasType == "sigma_min" else {
            throw unsupported("final_sigmas_type", "'\(config.finalSigmasType)'", "zero or sigma_min")
        }
        timesteps = ts
        // sigmas = sqrt((1 - abar) / abar) (float32), taken at the timesteps, then the final sigma.
        let trainSigmas = ac.map { ((1 - $0) / $0).squareRoot() }
        let last: Float = config.finalSigmasType == "sigma_min" ? trainSigmas[0] : 0
        sigmas = ts.map { trainSigmas[$0] } + [last]
    }

    public func scaleModelInput(_ sample: Tensor, timestep: Int) -> Tensor { sample }

    /// alpha_t, sigma_t of a sigma (diffusers `_sigma_to_alpha_sigma_t`), float32.
    static func alphaSigma(_ sigma: Float) -> (alpha: Float, sigma: Float) {
        let alpha = 1 / (sigma * sigma + 1).squareRoot()
        return (alpha, sigma * alpha)
    }

    /// diffusers `index_for_timestep`: the second match if the timestep occurs twice, the last index if never.
    func indexForTimestep(_ t: Int) -> Int {
        let matches = timesteps.indices.filter { timesteps[$0] == t }
        if matches.isEmpty { return timesteps.count - 1 }
        return matches.count > 1 ? matches[1] : matches[0]
    }

    public mutating func step(output: Tensor, timestep: Int, sample: Tensor) -> Tensor {
        precondition(output.shape == sample.shape,
                     "DPMSolverMultistepScheduler.step: output \(output.shape) vs sample \(sample.shape)")
        let index = stepIndex ?? indexForTimestep(timestep)
        precondition(index < timesteps.count, "DPMSolverMultistepScheduler.step: more steps than timesteps (\(timesteps.count))")
        let count = timesteps.count
        let order = config.solverOrder
        let lowerOrderFinal = index == count - 1
            && (config.eulerAtFinal || (config.lowerOrderFinal && count < 15) || config.finalSigmasType == "zero")
        let lowerOrderSecond = index == count - 2 && config.lowerOrderFinal && count < 15

        // convert_model_output
        let converted = convertModelOutput(output.data, sample: sample.data, sigma: sigmas[index])
        if modelOutputs.count == order { modelOutputs.removeFirst() }
        modelOutputs.append(converted)

        let prev: [Float]
        if order == 1 || lowerOrderNums < 1 || lowerOrderFinal {
            prev = firstOrderUpdate(converted, sample: sample.data, index: index)
        } else if order == 2 || lowerOrderNums < 2 || lowerOrderSecond {
            prev = secondOrderUpdate(sample: sample.data, index: index)
        } else {
            prev = thirdOrderUpdate(sample: sample.data, index: index)
        }
        if lowerOrderNums < order { lowerOrderNums += 1 }
        stepIndex = index + 1
        return Tensor(shape: sample.shape, data: prev)
    }

    /// The model output as x0 (dpmsolver++) or eps (dpmsolver).
    func convertModelOutput(_ m: [Float], sample x: [Float], sigma: Float) -> [Float] {
        let (a, s) = Self.alphaSigma(sigma)
        switch (dataPrediction, prediction) {
        case (true, .epsilon): return (0..<m.count).map { i in (x[i] - s * m[i]) / a }
        case (true, .sample): return m
        case (true, .vPrediction): return (0..<m.count).map { i in a * x[i] - s * m[i] }
        case (false, .epsilon): return m
        case (false, .sample): return (0..<m.count).map { i in (x[i] - a * m[i]) / s }
        case (false, .vPrediction): return (0..<m.count).map { i in a * m[i] + s * x[i] }
        }
    }

    /// (alpha, sigma, lambda) at sigmas[i].
    private func point(_ i: Int) -> (alpha: Float, sigma: Float, lambda: Float) {
        let (a, s) = Self.alphaSigma(sigmas[i])
        return (a, s, log(a) - log(s))
    }

    func firstOrderUpdate(_ m: [Float], sample x: [Float], index: Int) -> [Float] {
        let t = point(index + 1), s0 = point(index)
        let h = t.lambda - s0.lambda
        let c0: Float, c1: Float
        if dataPrediction {
            c0 = t.sigma / s0.sigma
            c1 = t.alpha * (exp(-h) - 1)
        } else {
            c0 = t.alpha / s0.alpha
            c1 = t.sigma * (exp(h) - 1)
        }
        return (0..<x.count).map { i in c0 * x[i] - c1 * m[i] }
    }

    func secondOrderUpdate(sample x: [Float], index: Int) -> [Float] {
        let t = point(index + 1), s0 = point(index), s1 = point(index - 1)
        let m0 = modelOutputs[modelOutputs.count - 1], m1 = modelOutputs[modelOutputs.count - 2]
        let h = t.lambda - s0.lambda, h0 = s0.lambda - s1.lambda
        let r0 = h0 / h
        let invR0 = 1 / r0
        // x_t = c0 * x - cD0 * D0 + cD1 * D1, D0 = m0, D1 = (1 / r0) * (m0 - m1)
        let c0: Float, cD0: Float, cD1: Float
        if dataPrediction {
            c0 = t.sigma / s0.sigma
            cD0 = t.alpha * (exp(-h) - 1)
            cD1 = heun ? t.alpha * ((exp(-h) - 1) / h + 1) : -(0.5 * (t.alpha * (exp(-h) - 1)))
        } else {
            c0 = t.alpha / s0.alpha
            cD0 = t.sigma * (exp(h) - 1)
            cD1 = heun ? -(t.sigma * ((exp(h) - 1) / h - 1)) : -(0.5 * (t.sigma * (exp(h) - 1)))
        }
        return (0..<x.count).map { i in
            let d1 = invR0 * (m0[i] - m1[i])
            return c0 * x[i] - cD0 * m0[i] + cD1 * d1
        }
    }

    func thirdOrderUpdate(sample x: [Float], index: Int) -> [Float] {
        let t = point(index + 1), s0 = point(index), s1 = point(index - 1), s2 = point(index - 2)
        let k = modelOutputs.count
        let m0 = modelOutputs[k - 1], m1 = modelOutputs[k - 2], m2 = modelOutputs[k - 3]
        let h = t.lambda - s0.lambda, h0 = s0.lambda - s1.lambda, h1 = s1.lambda - s2.lambda
        let r0 = h0 / h, r1 = h1 / h
        let invR0 = 1 / r0, invR1 = 1 / r1, w = r0 / (r0 + r1), invR01 = 1 / (r0 + r1)
        // x_t = c0 * x - cD0 * D0 + cD1 * D1 - cD2 * D2
        let c0: Float, cD0: Float, cD1: Float, cD2: Float
        if dataPrediction {
            c0 = t.sigma / s0.sigma
            cD0 = t.alpha * (exp(-h) - 1)
            cD1 = t.alpha * ((exp(-h) - 1) / h + 1)
            cD2 = t.alpha * ((exp(-h) - 1 + h) / (h * h) - 0.5)
        } else {
            c0 = t.alpha / s0.alpha
            cD0 = t.sigma * (exp(h) - 1)
            cD1 = -(t.sigma * ((exp(h) - 1) / h - 1))
            cD2 = t.sigma * ((exp(h) - 1 - h) / (h * h) - 0.5)
        }
        return (0..<x.count).map { i in
            let d10 = invR0 * (m0[i] - m1[i]), d11 = invR1 * (m1[i] - m2[i])
            let d1 = d10 + w * (d10 - d11)
            let d2 = invR01 * (d10 - d11)
            return c0 * x[i] - cD0 * m0[i] + cD1 * d1 - cD2 * d2
        }
    }

    /// diffusers' add_noise for this class: alpha_t * x0 + sigma_t * noise at the sigma of `timestep`'s
    /// index in `timesteps` (before the first step: `index_for_timestep`; afterwards: the current index).
    public func addNoise(original: Tensor, noise: Tensor, timestep: Int) -> Tensor {
        precondition(original.shape == noise.shape, "addNoise: original \(original.shape) vs noise \(noise.shape)")
        let index = stepIndex ?? indexForTimestep(timestep)
        let (a, s) = Self.alphaSigma(sigmas[index])
        return Tensor(shape: original.shape, data: zip(original.data, noise.data).map { a * $0 + s * $1 })
    }
}

import DPFileKit
import DPTensor
import Foundation

/// A diffusion sampler in the style of apple/ml-stable-diffusion: the caller evaluates the model at each
/// of `timesteps` in order and hands the output to `step`, which returns the previous (less noisy) sample.
///
/// ```swift
/// var s = try makeScheduler(.pndm, config: cfg, steps: 50)
/// var x = s.addNoise(original: z0, noise: noise, timestep: s.timesteps[0])   // or noise * initNoiseSigma
/// for t in s.timesteps { x = s.step(output: model(s.scaleModelInput(x, timestep: t), t), timestep: t, sample: x) }
/// ```
/// A scheduler holds per-run state (PNDM's stored model outputs, DPM-Solver's history): make a fresh one
/// (or copy a fresh value) for every frame.
public protocol Scheduler {
    /// One entry per model evaluation, in order (PNDM with skip_prk_steps: N+1 entries for N steps).
    var timesteps: [Int] { get }
    /// Standard deviation of the initial noise (1 for all schedulers here).
    var initNoiseSigma: Float { get }
    /// The model input for this timestep (the identity for all schedulers here).
    func scaleModelInput(_ sample: Tensor, timestep: Int) -> Tensor
    /// One sampler step: `output` is the model's prediction (epsilon for SD) at `timestep` for `sample`.
    /// Returns diffusers' `prev_sample`.
    mutating func step(output: Tensor, timestep: Int, sample: Tensor) -> Tensor
    /// Forward diffusion q(x_t | x_0): the noisy sample at `timestep`.
    func addNoise(original: Tensor, noise: Tensor, timestep: Int) -> Tensor
}

/// A scheduler config that this engine cannot honour (names the key, what was expected and found).
public struct SchedulerError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Builds a scheduler of `kind` from a diffusers scheduler config (any class's config, as diffusers'
/// `from_config`) and runs its `set_timesteps(steps)`.
public func makeScheduler(_ kind: SamplerKind, config: SchedulerConfig, steps: Int) throws -> any Scheduler {
    switch kind {
    case .pndm: return try PNDMScheduler(config: config, steps: steps)
    case .ddim: return try DDIMScheduler(config: config, steps: steps)
    case .dpm: return try DPMSolverMultistepScheduler(config: config, steps: steps)
    }
}

// MARK: - Shared maths

/// The training noise schedule shared by all three schedulers, computed the way diffusers 0.42 /
/// torch 2.13 compute it in float32 (checked bit for bit against golden `sched.alphas_cumprod`).
public struct NoiseSchedule: Sendable {
    /// `betas` [T], float32.
    public let betas: [Float]
    /// `alphas_cumprod` [T], float32.
    public let alphasCumprod: [Float]

    public init(config: SchedulerConfig) throws {
        let n = config.numTrainTimesteps
        guard n >= 2 else {
            throw SchedulerError("scheduler config key 'num_train_timesteps': expected >= 2, found \(n)")
        }
        if config.rescaleBetasZeroSnr {
            throw SchedulerError("scheduler config key 'rescale_betas_zero_snr': only false is supported, found true")
        }
        var betas: [Float]
        if let trained = config.trainedBetas {
            guard trained.count == n else {
                throw SchedulerError("scheduler config key 'trained_betas': expected \(n) values "
                    + "(num_train_timesteps), found \(trained.count)")
            }
            betas = trained.map { Float($0) }
        } else {
            switch config.betaSchedule {
            case "linear":
                betas = NoiseSchedule.torchLinspace(Float(config.betaStart), Float(config.betaEnd), n)
            case "scaled_linear":
                // torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=float32) ** 2
                betas = NoiseSchedule.torchLinspace(Float(config.betaStart.squareRoot()),
                                                    Float(config.betaEnd.squareRoot()), n).map { $0 * $0 }
            case "squaredcos_cap_v2":
                betas = NoiseSchedule.cosineBetas(n)
            default:
                throw SchedulerError("scheduler config key 'beta_schedule': expected linear, scaled_linear or "
                    + "squaredcos_cap_v2, found '\(config.betaSchedule)'")
            }
        }
        self.betas = betas
        // alphas = 1 - betas (float32); torch.cumprod on CPU accumulates float32 in double and stores float32.
        var acc = 1.0
        var cumprod = [Float](repeating: 0, count: n)
        for i in 0..<n {
            acc *= Double(1 - betas[i])
            cumprod[i] = Float(acc)
        }
        alphasCumprod = cumprod
    }

    /// torch.linspace(start, end, n, dtype=float32) on CPU: step = (end - start) / (n - 1) in float32;
    /// the first half counts up from `start`, the second half down from `end`, each element one fused
    /// multiply-add (torch 2.13's kernel rounds once; golden alphas_cumprod confirm it bit for bit).
    static func torchLinspace(_ start: Float, _ end: Float, _ n: Int) -> [Float] {
        if n == 1 { return [start] }
        let step = (end - start) / Float(n - 1)
        let halfway = n / 2
        return (0..<n).map { i in
            i < halfway ? start.addingProduct(step, Float(i)) : end.addingProduct(-step, Float(n - 1 - i))
        }
    }

    /// diffusers `betas_for_alpha_bar(T)` (cosine, max_beta 0.999), computed in double, stored float32.
    static func cosineBetas(_ n: Int) -> [Float] {
        func alphaBar(_ t: Double) -> Double {
            let c = cos((t + 0.008) / 1.008 * Double.pi / 2)
            return c * c
        }
        return (0..<n).map { i in
            let t1 = Double(i) / Double(n), t2 = Double(i + 1) / Double(n)
            return Float(min(1 - alphaBar(t2) / alphaBar(t1), 0.999))
        }
    }
}

/// numpy helpers for timestep grids, reproducing numpy's float64 arithmetic exactly.
enum NumPy {
    /// np.round (half to even) of a float64.
    static func round(_ x: Double) -> Double { x.rounded(.toNearestOrEven) }

    /// np.linspace(start, stop, num) (endpoint true) in float64: i * ((stop - start) / (num - 1)) + start,
    /// last element = stop.
    static func linspace(_ start: Double, _ stop: Double, _ num: Int) -> [Double] {
        if num <= 0 { return [] }
        if num == 1 { return [start] }
        let step = (stop - start) / Double(num - 1)
        var y = (0..<num).map { Double($0) * step + start }
        y[num - 1] = stop
        return y
    }

    /// np.arange(start, stop, step) for float64: length ceil((stop - start) / step); element 0 = start,
    /// element 1 = start + step, element i = start + i * delta with delta = element1 - element0
    /// (numpy's DOUBLE_fill).
    static func arange(_ start: Double, _ stop: Double, _ step: Double) -> [Double] {
        let len = Int(((stop - start) / step).rounded(.up))
        if len <= 0 { return [] }
        let second = start + step
        let delta = second - start
        return (0..<len).map { i in i == 0 ? start : (i == 1 ? second : start + Double(i) * delta) }
    }
}

/// The three timestep spacings of diffusers (Table 2 of "Common Diffusion Noise Schedules and Sample Steps
/// are Flawed").
enum TimestepSpacing: String {
    case leading, trailing, linspace

    init(config: SchedulerConfig, classDefault: TimestepSpacing) throws {
        guard let raw = config.timestepSpacing else { self = classDefault; return }
        guard let v = TimestepSpacing(rawValue: raw) else {
            throw SchedulerError("scheduler config key 'timestep_spacing': expected leading, trailing or "
                + "linspace, found '\(raw)'")
        }
        self = v
    }
}

func checkSteps(_ steps: Int, _ config: SchedulerConfig, _ className: String) throws {
    guard steps >= 1, steps <= config.numTrainTimesteps else {
        throw SchedulerError("\(className): steps must be in 1...\(config.numTrainTimesteps) "
            + "(num_train_timesteps), found \(steps)")
    }
}

/// q(x_t | x_0) = sqrt(abar) * x0 + sqrt(1 - abar) * noise, coefficients in float32 (diffusers' DDPM
/// `add_noise`, shared by PNDM and DDIM).
func ddpmAddNoise(original: Tensor, noise: Tensor, alphaProd: Float) -> Tensor {
    precondition(original.shape == noise.shape, "addNoise: original \(original.shape) vs noise \(noise.shape)")
    let a = alphaProd.squareRoot()
    let b = (1 - alphaProd).squareRoot()
    return Tensor(shape: original.shape, data: zip(original.data, noise.data).map { a * $0 + b * $1 })
}

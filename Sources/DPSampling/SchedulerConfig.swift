import Foundation

/// The keys of a diffusers `scheduler_config.json` (PNDM, DDIM and DPMSolverMultistep share one file
/// format), with diffusers' defaults for absent keys.
///
/// Like diffusers' `SchedulerMixin.from_config`, a key present in the file wins whichever scheduler class
/// is built from it; an absent key takes the default of the class being built. The few keys whose default
/// differs between the classes are optionals here (absent = `nil`) and are resolved by each scheduler:
///
/// | key | PNDM | DDIM | DPMSolverMultistep |
/// | --- | --- | --- | --- |
/// | `set_alpha_to_one` | false | true | (unused) |
/// | `timestep_spacing` | "leading" | "leading" | "linspace" |
/// | `clip_sample` | (unused) | **false** (diffusers: true, see below) | (unused) |
///
/// `clip_sample` absent -> false is a deliberate deviation for our DDIM: DreamPose builds DDIM from the
/// model's PNDM config, which has no `clip_sample` key; diffusers would then clip the predicted x0 to
/// [-1, 1], which damages SD latents (see shared/docs/dreampose-inference.md, "Sampling one frame").
public struct SchedulerConfig: Codable, Equatable, Sendable {
    /// `_class_name`, e.g. "PNDMScheduler" (informational: any kind may be built from any config).
    public var className: String?
    public var numTrainTimesteps: Int = 1000
    public var betaStart: Double = 0.0001
    public var betaEnd: Double = 0.02
    /// "linear", "scaled_linear" or "squaredcos_cap_v2".
    public var betaSchedule: String = "linear"
    /// Explicit betas (overrides the schedule), stored as float32 like diffusers.
    public var trainedBetas: [Double]?
    /// PNDM: skip the Runge-Kutta warm-up (PLMS). Only `true` is supported.
    public var skipPrkSteps: Bool = false
    /// Final step's previous alpha_cumprod is 1 (true) or alphas_cumprod[0] (false). Class default if nil.
    public var setAlphaToOne: Bool?
    public var stepsOffset: Int = 0
    /// "epsilon", "v_prediction" or "sample" (which ones a scheduler accepts depends on the class).
    public var predictionType: String = "epsilon"
    /// "leading", "trailing" or "linspace"; class default if nil.
    public var timestepSpacing: String?
    /// DDIM: clamp the predicted x0 to +-`clip_sample_range`. Absent -> false (see the type's doc).
    public var clipSample: Bool?
    public var clipSampleRange: Double = 1.0
    /// Dynamic thresholding (Imagen). Parsed; not supported (a scheduler throws if it is true).
    public var thresholding: Bool = false
    public var dynamicThresholdingRatio: Double = 0.995
    public var sampleMaxValue: Double = 1.0
    /// Parsed; not supported (throws if true).
    public var rescaleBetasZeroSnr: Bool = false

    // DPMSolverMultistepScheduler keys.
    public var solverOrder: Int = 2
    /// "dpmsolver++" or "dpmsolver" (the SDE variants need per-step noise and are not supported).
    public var algorithmType: String = "dpmsolver++"
    /// "midpoint" or "heun".
    public var solverType: String = "midpoint"
    public var lowerOrderFinal: Bool = true
    public var eulerAtFinal: Bool = false
    /// Parsed; only `false` supported for the four sigma schedules below.
    public var useKarrasSigmas: Bool = false
    public var useExponentialSigmas: Bool = false
    public var useBetaSigmas: Bool = false
    public var useLuLambdas: Bool = false
    public var useFlowSigmas: Bool = false
    /// "zero" or "sigma_min".
    public var finalSigmasType: String = "zero"
    public var lambdaMinClipped: Double = -Double.infinity
    /// nil, "learned" or "learned_range" (only nil supported).
    public var varianceType: String?

    /// All keys at their diffusers defaults.
    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case className = "_class_name"
        case numTrainTimesteps = "num_train_timesteps"
        case betaStart = "beta_start"
        case betaEnd = "beta_end"
        case betaSchedule = "beta_schedule"
        case trainedBetas = "trained_betas"
        case skipPrkSteps = "skip_prk_steps"
        case setAlphaToOne = "set_alpha_to_one"
        case stepsOffset = "steps_offset"
        case predictionType = "prediction_type"
        case timestepSpacing = "timestep_spacing"
        case clipSample = "clip_sample"
        case clipSampleRange = "clip_sample_range"
        case thresholding
        case dynamicThresholdingRatio = "dynamic_thresholding_ratio"
        case sampleMaxValue = "sample_max_value"
        case rescaleBetasZeroSnr = "rescale_betas_zero_snr"
        case solverOrder = "solver_order"
        case algorithmType = "algorithm_type"
        case solverType = "solver_type"
        case lowerOrderFinal = "lower_order_final"
        case eulerAtFinal = "euler_at_final"
        case useKarrasSigmas = "use_karras_sigmas"
        case useExponentialSigmas = "use_exponential_sigmas"
        case useBetaSigmas = "use_beta_sigmas"
        case useLuLambdas = "use_lu_lambdas"
        case useFlowSigmas = "use_flow_sigmas"
        case finalSigmasType = "final_sigmas_type"
        case lambdaMinClipped = "lambda_min_clipped"
        case varianceType = "variance_type"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = SchedulerConfig()
        className = try c.decodeIfPresent(String.self, forKey: .className)
        numTrainTimesteps = try c.decodeIfPresent(Int.self, forKey: .numTrainTimesteps) ?? d.numTrainTimesteps
        betaStart = try c.decodeIfPresent(Double.self, forKey: .betaStart) ?? d.betaStart
        betaEnd = try c.decodeIfPresent(Double.self, forKey: .betaEnd) ?? d.betaEnd
        betaSchedule = try c.decodeIfPresent(String.self, forKey: .betaSchedule) ?? d.betaSchedule
        trainedBetas = try c.decodeIfPresent([Double].self, forKey: .trainedBetas)
        skipPrkSteps = try c.decodeIfPresent(Bool.self, forKey: .skipPrkSteps) ?? d.skipPrkSteps
        setAlphaToOne = try c.decodeIfPresent(Bool.self, forKey: .setAlphaToOne)
        stepsOffset = try c.decodeIfPresent(Int.self, forKey: .stepsOffset) ?? d.stepsOffset
        predictionType = try c.decodeIfPresent(String.self, forKey: .predictionType) ?? d.predictionType
        timestepSpacing = try c.decodeIfPresent(String.self, forKey: .timestepSpacing)
        clipSample = try c.decodeIfPresent(Bool.self, forKey: .clipSample)
        clipSampleRange = try c.decodeIfPresent(Double.self, forKey: .clipSampleRange) ?? d.clipSampleRange
        thresholding = try c.decodeIfPresent(Bool.self, forKey: .thresholding) ?? d.thresholding
        dynamicThresholdingRatio = try c.decodeIfPresent(Double.self, forKey: .dynamicThresholdingRatio)
            ?? d.dynamicThresholdingRatio
        sampleMaxValue = try c.decodeIfPresent(Double.self, forKey: .sampleMaxValue) ?? d.sampleMaxValue
        rescaleBetasZeroSnr = try c.decodeIfPresent(Bool.self, forKey: .rescaleBetasZeroSnr) ?? d.rescaleBetasZeroSnr
        solverOrder = try c.decodeIfPresent(Int.self, forKey: .solverOrder) ?? d.solverOrder
        algorithmType = try c.decodeIfPresent(String.self, forKey: .algorithmType) ?? d.algorithmType
        solverType = try c.decodeIfPresent(String.self, forKey: .solverType) ?? d.solverType
        lowerOrderFinal = try c.decodeIfPresent(Bool.self, forKey: .lowerOrderFinal) ?? d.lowerOrderFinal
        eulerAtFinal = try c.decodeIfPresent(Bool.self, forKey: .eulerAtFinal) ?? d.eulerAtFinal
        useKarrasSigmas = try c.decodeIfPresent(Bool.self, forKey: .useKarrasSigmas) ?? d.useKarrasSigmas
        useExponentialSigmas = try c.decodeIfPresent(Bool.self, forKey: .useExponentialSigmas) ?? d.useExponentialSigmas
        useBetaSigmas = try c.decodeIfPresent(Bool.self, forKey: .useBetaSigmas) ?? d.useBetaSigmas
        useLuLambdas = try c.decodeIfPresent(Bool.self, forKey: .useLuLambdas) ?? d.useLuLambdas
        useFlowSigmas = try c.decodeIfPresent(Bool.self, forKey: .useFlowSigmas) ?? d.useFlowSigmas
        finalSigmasType = try c.decodeIfPresent(String.self, forKey: .finalSigmasType) ?? d.finalSigmasType
        lambdaMinClipped = try c.decodeIfPresent(Double.self, forKey: .lambdaMinClipped) ?? d.lambdaMinClipped
        varianceType = try c.decodeIfPresent(String.self, forKey: .varianceType)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(className, forKey: .className)
        try c.encode(numTrainTimesteps, forKey: .numTrainTimesteps)
        try c.encode(betaStart, forKey: .betaStart)
        try c.encode(betaEnd, forKey: .betaEnd)
        try c.encode(betaSchedule, forKey: .betaSchedule)
        try c.encodeIfPresent(trainedBetas, forKey: .trainedBetas)
        try c.encode(skipPrkSteps, forKey: .skipPrkSteps)
        try c.encodeIfPresent(setAlphaToOne, forKey: .setAlphaToOne)
        try c.encode(stepsOffset, forKey: .stepsOffset)
        try c.encode(predictionType, forKey: .predictionType)
        try c.encodeIfPresent(timestepSpacing, forKey: .timestepSpacing)
        try c.encodeIfPresent(clipSample, forKey: .clipSample)
        try c.encode(clipSampleRange, forKey: .clipSampleRange)
        try c.encode(thresholding, forKey: .thresholding)
        try c.encode(dynamicThresholdingRatio, forKey: .dynamicThresholdingRatio)
        try c.encode(sampleMaxValue, forKey: .sampleMaxValue)
        try c.encode(rescaleBetasZeroSnr, forKey: .rescaleBetasZeroSnr)
        try c.encode(solverOrder, forKey: .solverOrder)
        try c.encode(algorithmType, forKey: .algorithmType)
        try c.encode(solverType, forKey: .solverType)
        try c.encode(lowerOrderFinal, forKey: .lowerOrderFinal)
        try c.encode(eulerAtFinal, forKey: .eulerAtFinal)
        try c.encode(useKarrasSigmas, forKey: .useKarrasSigmas)
        try c.encode(useExponentialSigmas, forKey: .useExponentialSigmas)
        try c.encode(useBetaSigmas, forKey: .useBetaSigmas)
        try c.encode(useLuLambdas, forKey: .useLuLambdas)
        try c.encode(useFlowSigmas, forKey: .useFlowSigmas)
        try c.encode(finalSigmasType, forKey: .finalSigmasType)
        // JSON has no infinity; diffusers writes the non-standard literal -Infinity, which `load` accepts.
        if lambdaMinClipped.isFinite { try c.encode(lambdaMinClipped, forKey: .lambdaMinClipped) }
        try c.encodeIfPresent(varianceType, forKey: .varianceType)
    }

    /// Reads a diffusers `scheduler_config.json`. Unknown keys are ignored (as diffusers does); the
    /// non-standard literals `Infinity`, `-Infinity`, `NaN` that Python's json writes are accepted.
    /// Errors name the file and, for a bad value, the key with what was expected and found.
    public static func load(_ url: URL) throws -> SchedulerConfig {
        let data: Data?
        do {
            let handle = try FileHandle(forReadingFrom: url)
            defer { try? handle.close() }
            data = try handle.read(upToCount: maxFileBytes + 1)
        } catch {
            throw SchedulerConfigError(file: url.path, message: "cannot read: \(error.localizedDescription)")
        }
        guard (data?.count ?? 0) <= maxFileBytes else {
            throw SchedulerConfigError(file: url.path, message: "larger than the \(maxFileBytes) bytes a config may have")
        }
        return try decode(data ?? Data(), file: url.path)
    }

    // Upper bounds (a scheduler config comes with a model from a client or a peer; SECURITY.md lists them).
    /// Largest scheduler_config.json read.
    public static let maxFileBytes = 1 << 20
    /// Most train timesteps (SD: 1000); the schedulers allocate arrays of this length.
    public static let maxTrainTimesteps = 100_000

    /// Range checks on every number (the decoder only checks types): an error names the file and the key.
    public func validate(file: String = "<memory>") throws {
        func fail(_ key: String, _ expected: String, _ found: Any) -> SchedulerConfigError {
            SchedulerConfigError(file: file, message: "key '\(key)': expected \(expected), found \(found)")
        }
        let maxT = Self.maxTrainTimesteps
        guard numTrainTimesteps >= 1, numTrainTimesteps <= maxT else {
            throw fail("num_train_timesteps", "1 to \(maxT)", numTrainTimesteps)
        }
        for (key, v) in [("beta_start", betaStart), ("beta_end", betaEnd)] where !(v.isFinite && v >= 0 && v <= 1) {
            throw fail(key, "a number in [0, 1]", v)
        }
        if let trained = trainedBetas {
            guard trained.count <= maxT else { throw fail("trained_betas", "at most \(maxT) values", trained.count) }
            for v in trained where !(v.isFinite && v >= 0 && v <= 1) {
                throw fail("trained_betas", "values in [0, 1]", v)
            }
        }
        guard stepsOffset >= 0, stepsOffset < numTrainTimesteps else {
            throw fail("steps_offset", "0 to num_train_timesteps - 1 (\(numTrainTimesteps - 1))", stepsOffset)
        }
        guard solverOrder >= 1, solverOrder <= 16 else { throw fail("solver_order", "1 to 16", solverOrder) }
        for (key, v) in [("clip_sample_range", clipSampleRange), ("dynamic_thresholding_ratio", dynamicThresholdingRatio),
                         ("sample_max_value", sampleMaxValue)] where !v.isFinite {
            throw fail(key, "a finite number", v)
        }
        guard !lambdaMinClipped.isNaN else { throw fail("lambda_min_clipped", "a number or -Infinity", lambdaMinClipped) }
    }

    /// Decodes config JSON text; `file` only labels errors.
    public static func decode(_ data: Data, file: String = "<memory>") throws -> SchedulerConfig {
        // Python's json writes the non-standard literals Infinity / -Infinity / NaN. They are quoted here (outside
        // strings only) and read back by the strict JSON parser's string convention. (Foundation's JSON5 mode,
        // used before, traps on some malformed input, e.g. invalid UTF-8 in an unquoted key: found by fuzzing,
        // reproducer Tests/Fuzz/crashes/config/.)
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(
            positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        do {
            let config = try decoder.decode(SchedulerConfig.self, from: quotingPythonFloatLiterals(data))
            try config.validate(file: file)
            return config
        } catch let error as SchedulerConfigError {
            throw error
        } catch let error as DecodingError {
            throw SchedulerConfigError(file: file, message: describe(error))
        } catch {
            throw SchedulerConfigError(file: file, message: "\(error)")
        }
    }

    /// `data` with each `NaN`, `Infinity` and `-Infinity` token outside a JSON string put in quotes.
    static func quotingPythonFloatLiterals(_ data: Data) -> Data {
        let bytes = [UInt8](data)
        let literals: [[UInt8]] = [Array("-Infinity".utf8), Array("Infinity".utf8), Array("NaN".utf8)]
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 16)
        var i = 0, inString = false
        while i < bytes.count {
            let b = bytes[i]
            if inString {
                out.append(b)
                if b == UInt8(ascii: "\\"), i + 1 < bytes.count {
                    out.append(bytes[i + 1])
                    i += 2
                    continue
                }
                if b == UInt8(ascii: "\"") { inString = false }
                i += 1
                continue
            }
            if b == UInt8(ascii: "\"") {
                inString = true
                out.append(b)
                i += 1
                continue
            }
            if let literal = literals.first(where: { i + $0.count <= bytes.count && Array(bytes[i ..< i + $0.count]) == $0 }) {
                out.append(UInt8(ascii: "\""))
                out += literal
                out.append(UInt8(ascii: "\""))
                i += literal.count
                continue
            }
            out.append(b)
            i += 1
        }
        return Data(out)
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ p: [CodingKey]) -> String {
            p.isEmpty ? "<top level>" : p.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case let .typeMismatch(type, ctx):
            return "key '\(path(ctx.codingPath))': expected \(type), \(ctx.debugDescription)"
        case let .valueNotFound(type, ctx):
            return "key '\(path(ctx.codingPath))': expected \(type), found null"
        case let .keyNotFound(key, ctx):
            return "key '\(path(ctx.codingPath + [key]))' missing"
        case let .dataCorrupted(ctx):
            return "not valid JSON at '\(path(ctx.codingPath))': \(ctx.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }

    /// Stable Diffusion 1.x settings (what `runwayml/stable-diffusion-v1-5` ships for PNDM): scaled_linear
    /// betas 0.00085...0.012 over 1000 steps, skip_prk_steps, set_alpha_to_one false, steps_offset 1,
    /// "leading" spacing, epsilon prediction, no `clip_sample` key.
    public static var stableDiffusion: SchedulerConfig {
        var c = SchedulerConfig()
        c.className = "PNDMScheduler"
        c.numTrainTimesteps = 1000
        c.betaStart = 0.00085
        c.betaEnd = 0.012
        c.betaSchedule = "scaled_linear"
        c.skipPrkSteps = true
        c.setAlphaToOne = false
        c.stepsOffset = 1
        c.timestepSpacing = "leading"
        return c
    }
}

/// A scheduler config file that could not be read or decoded.
public struct SchedulerConfigError: Error, CustomStringConvertible {
    public let file: String
    public let message: String
    public init(file: String, message: String) { self.file = file; self.message = message }
    public var description: String { "scheduler config \(file): \(message)" }
}

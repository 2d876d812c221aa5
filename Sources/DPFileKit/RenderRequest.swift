// What a job asks the renderer for: sampling settings, the job's noise, which frames and in what order. One
// value type that `dp-coord submit` and `dp-worker render` build from their flags (DPCLISupport), that travels
// on the wire (DPProtocol converts it, in one place, to and from `RenderSettings`), that the coordinator checks
// before it journals a job, and that the worker's pipeline resolves against the model. A setting is therefore
// defaulted in one place (`resolved(defaults:)`, from dreampose.json) and checked by one function (`problem()`),
// so it is refused everywhere with the same words, and a job the coordinator accepts is one every worker can
// render. (Issue 14: `--steps` used to travel through six types, defaulted three times and checked against
// three ranges.) Lives beside dreampose.json's reader because the limits are the same (`DreamPoseLimits`):
// a value a model may not declare as its default, a job may not ask for either.
import Foundation

/// The samplers the engine has (DPSampling builds each of them: `makeScheduler`).
public enum SamplerKind: String, CaseIterable, Codable, Sendable {
    /// diffusers `PNDMScheduler` (PLMS, skip_prk_steps), DreamPose's reference sampler.
    case pndm
    /// diffusers `DDIMScheduler`, eta 0.
    case ddim
    /// diffusers `DPMSolverMultistepScheduler` (DPM-Solver++(2M) by default).
    case dpm

    /// `name` as a sampler, or the error the CLI, the coordinator and the worker all give for it.
    public static func named(_ name: String) throws -> SamplerKind {
        guard let kind = SamplerKind(rawValue: name) else { throw RenderRequestError(unknownSampler(name)) }
        return kind
    }

    static func unknownSampler(_ name: String) -> String {
        let shown = name.count > 40 ? String(name.prefix(40)) + "..." : name
        let printable = shown.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 ? String($0) : "?" }.joined()
        return "unknown sampler \"\(printable)\" (expected one of: \(allCases.map(\.rawValue).joined(separator: ", ")))"
    }
}

/// The order in which a job's frames are handed out.
public enum FrameOrder: String, CaseIterable, Codable, Sendable {
    /// Frame number order.
    case frame
    /// Coarse to fine (every 8th frame first, then the gaps): a watchable preview early.
    case preview
}

/// Where a job's single Gaussian noise tensor [1, C, H/8, W/8] comes from.
public enum NoiseRequest: Sendable, Equatable {
    /// The portable counter-based generator (DPSampling `JobNoise`): every worker regenerates the same tensor.
    case seed(UInt64)
    /// The values themselves, as the bytes of a float32 .npy of the latent shape (or of the shape without its
    /// leading 1): the one form the noise has on the wire, in the journal and in the manifest's SHA-256.
    case npy(Data)

    /// The seed of a job that names none.
    public static let defaultSeed: UInt64 = 0

    /// A `--noise` file as the CLI reads it: raw little-endian float32 values of `latentShape`, C order (how
    /// results are compared with other tools). Read once, here, into the .npy form; a file of the wrong size
    /// is refused by its size, unread.
    public static func rawFile(_ url: URL, latentShape: [Int]) throws -> NoiseRequest {
        let count = try elementCount(latentShape)
        let data: Data
        do { data = try FileRead.contents(ofFile: url.path, maxBytes: 4 * count) } catch {
            throw RenderRequestError("noise file \(url.path): cannot read: \(error)")
        }
        guard data.count == 4 * count else {
            throw RenderRequestError("noise file \(url.path): \(data.count) bytes, expected \(4 * count) "
                + "(raw little-endian float32 of shape \(latentShape))")
        }
        let values = data.withUnsafeBytes { raw in
            (0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
        return .npy(NPY.encode(shape: latentShape, values: values))
    }

    /// The noise values of a `.npy` request, checked against the model's latent shape (nil for a seed).
    /// `what` names the job in errors.
    public func values(latentShape: [Int], what: String) throws -> [Float]? {
        guard case .npy(let bytes) = self else { return nil }
        let (found, values) = try NPY.decode(bytes, name: "\(what) noise .npy")
        guard found == latentShape || [1] + found == latentShape else {
            throw RenderRequestError("\(what): noise .npy has shape \(found), the model's latent is \(latentShape)")
        }
        return values
    }

    /// The seed, or nil when the noise is given as values.
    public var seed: UInt64? {
        if case .seed(let s) = self { return s }
        return nil
    }

    /// SHA-256 of the .npy bytes (what manifests record for noise given as values), nil for a seed.
    public var sha256: String? {
        if case .npy(let bytes) = self { return FileDigest.sha256(bytes) }
        return nil
    }

    private static func elementCount(_ shape: [Int]) throws -> Int {
        var count = 1
        for d in shape {
            let (p, overflow) = count.multipliedReportingOverflow(by: d)
            guard d > 0, !overflow, p <= NPY.maxElements else {
                throw RenderRequestError("latent shape \(shape) is not a shape the noise can have")
            }
            count = p
        }
        return count
    }
}

/// A setting a job may not have; `description` is what every part of the farm says about it.
public struct RenderRequestError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// One job's render request. nil settings are "the model's default" (dreampose.json `defaults`).
public struct RenderRequest: Sendable, Equatable {
    public var steps: Int?
    public var sampler: SamplerKind?
    public var imageGuidance: Float?
    public var poseGuidance: Float?
    public var noise: NoiseRequest
    /// Frames to render; empty = every pose frame of the job.
    public var frames: [Int]
    public var order: FrameOrder

    public init(steps: Int? = nil, sampler: SamplerKind? = nil, imageGuidance: Float? = nil, poseGuidance: Float? = nil,
                noise: NoiseRequest = .seed(NoiseRequest.defaultSeed), frames: [Int] = [], order: FrameOrder = .frame) {
        self.steps = steps
        self.sampler = sampler
        self.imageGuidance = imageGuidance
        self.poseGuidance = poseGuidance
        self.noise = noise
        self.frames = frames
        self.order = order
    }

    /// What is wrong with the settings given (nil: nothing). The only check of them: the CLI, the coordinator
    /// (before it journals a job) and the worker (through `resolved`) all call it.
    public func problem() -> String? {
        if let steps, !(1...DreamPoseLimits.maxSteps).contains(steps) {
            return "steps must be from 1 to \(DreamPoseLimits.maxSteps) (got \(steps))"
        }
        for (name, value) in [("image guidance", imageGuidance), ("pose guidance", poseGuidance)] {
            if let value, !(value.isFinite && abs(Double(value)) <= DreamPoseLimits.maxScale) {
                return "\(name) must be a finite number of magnitude at most \(Int(DreamPoseLimits.maxScale)) (got \(value))"
            }
        }
        for frame in frames where frame < 0 || frame > Int(UInt32.max) {
            return "frame \(frame) is not a frame number (0 to \(UInt32.max))"
        }
        return nil
    }

    /// The request with every default taken from the model's dreampose.json, checked.
    public func resolved(defaults model: DreamPoseFile) throws -> ResolvedRenderRequest {
        if let problem = problem() { throw RenderRequestError(problem) }
        return ResolvedRenderRequest(steps: steps ?? model.steps, sampler: sampler ?? model.sampler,
                                     imageGuidance: imageGuidance ?? model.imageGuidance,
                                     poseGuidance: poseGuidance ?? model.poseGuidance, noise: noise)
    }
}

/// A request with every sampling value decided (what a frame's pixels depend on, with the model and inputs).
public struct ResolvedRenderRequest: Sendable, Equatable {
    public var steps: Int
    public var sampler: SamplerKind
    public var imageGuidance: Float
    public var poseGuidance: Float
    public var noise: NoiseRequest

    public init(steps: Int, sampler: SamplerKind, imageGuidance: Float, poseGuidance: Float, noise: NoiseRequest) {
        self.steps = steps
        self.sampler = sampler
        self.imageGuidance = imageGuidance
        self.poseGuidance = poseGuidance
        self.noise = noise
    }

    /// One line for logs and summaries: "dpm 15 steps, s_I 1.0, s_P 2.0, seed 0".
    public var summary: String {
        "\(sampler.rawValue) \(steps) steps, s_I \(imageGuidance), s_P \(poseGuidance), "
            + (noise.seed.map { "seed \($0)" } ?? "noise file")
    }
}

import DPFileKit
import DPSampling
import DPTensor
import Foundation

/// Where a job's single Gaussian noise tensor comes from.
public enum NoiseSource: Sendable, Equatable {
    /// `JobNoise.gaussian(seed:shape:)`: portable and counter-based, so every worker regenerates the same tensor.
    case seed(UInt64)
    /// Raw little-endian float32 values in C order, [1, 4, h, w] (how results are compared with other tools).
    case values([Float])

    /// Reads a raw float32 noise file, checking its size against the latent shape.
    public static func file(_ url: URL, shape: [Int]) throws -> NoiseSource {
        let data: Data
        // Read at most the bytes the shape needs: a larger file is refused by its size, unread.
        let (needed, overflow) = shape.reduce((1, false)) { acc, d in
            let (p, o) = acc.0.multipliedReportingOverflow(by: d)
            return (p, acc.1 || o)
        }
        guard !overflow, needed <= NPY.maxElements else {
            throw PipelineError("noise file \(url.path): latent shape \(shape) is too large")
        }
        do { data = try FileRead.contents(ofFile: url.path, maxBytes: 4 * needed) } catch {
            throw PipelineError("noise file \(url.path): cannot read: \(error)")
        }
        return .values(try decodeRaw(data, shape: shape, what: "noise file \(url.path)"))
    }

    /// Decodes raw little-endian float32 bytes of `shape`.
    public static func decodeRaw(_ data: Data, shape: [Int], what: String) throws -> [Float] {
        let count = shape.reduce(1, *)
        guard data.count == 4 * count else {
            throw PipelineError("\(what): \(data.count) bytes, expected \(4 * count) (raw little-endian float32 of shape \(shape))")
        }
        return data.withUnsafeBytes { raw in
            (0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
    }

    /// The noise tensor of `shape`.
    public func tensor(shape: [Int]) throws -> Tensor {
        switch self {
        case .seed(let seed):
            return JobNoise.gaussian(seed: seed, shape: shape)
        case .values(let v):
            guard v.count == shape.reduce(1, *) else {
                throw PipelineError("noise has \(v.count) values, the model's latent \(shape) needs \(shape.reduce(1, *))")
            }
            return Tensor(shape: shape, data: v)
        }
    }
}

/// How a job's frames are sampled. Values left nil take the model's `dreampose.json` defaults.
public struct RenderSettings: Sendable, Equatable {
    public var steps: Int?
    public var sampler: SamplerKind?
    public var imageGuidance: Float?
    public var poseGuidance: Float?
    public var noise: NoiseSource

    public init(steps: Int? = nil, sampler: SamplerKind? = nil, imageGuidance: Float? = nil,
                poseGuidance: Float? = nil, noise: NoiseSource = .seed(0)) {
        self.steps = steps; self.sampler = sampler
        self.imageGuidance = imageGuidance; self.poseGuidance = poseGuidance; self.noise = noise
    }

    /// The settings with every default filled in from the model, checked as `dp-coord submit` and the
    /// coordinator check them (`SamplingRequest`, DPFileKit).
    public func resolved(for config: DreamPoseConfig) throws -> ResolvedRenderSettings {
        let samplerName = sampler?.rawValue ?? config.defaults.sampler
        let steps = steps ?? config.defaults.steps
        let sI = imageGuidance ?? config.defaults.imageGuidance
        let sP = poseGuidance ?? config.defaults.poseGuidance
        if let problem = SamplingRequest.problem(steps: steps, sampler: samplerName, imageGuidance: sI, poseGuidance: sP) {
            throw PipelineError(problem)
        }
        guard let kind = SamplerKind(rawValue: samplerName) else {
            throw PipelineError("unknown sampler \"\(samplerName)\"")   // SamplingRequest has the same names
        }
        return ResolvedRenderSettings(steps: steps, sampler: kind, imageGuidance: sI, poseGuidance: sP, noise: noise)
    }
}

/// Settings with every value decided.
public struct ResolvedRenderSettings: Sendable, Equatable {
    public var steps: Int
    public var sampler: SamplerKind
    public var imageGuidance: Float
    public var poseGuidance: Float
    public var noise: NoiseSource
}

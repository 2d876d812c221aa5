// A job's render request (DPFileKit.RenderRequest) on the wire: `RenderSettings` plus the JobSpec's order and
// frames. The one conversion each way, for the client (submit), the coordinator (check before journalling,
// the manifest's settings) and the worker (the JobPrep it renders).
import DPFileKit

extension FarmRenderSettings {
    /// The wire form of `request`'s sampling settings and noise (0 / "" / has_ false: the model's default).
    public init(_ request: RenderRequest) {
        self.init()
        steps = UInt32(clamping: request.steps ?? 0)
        sampler = request.sampler?.rawValue ?? ""
        if let g = request.imageGuidance {
            hasImageGuidance_p = true
            imageGuidance = g
        }
        if let g = request.poseGuidance {
            hasPoseGuidance_p = true
            poseGuidance = g
        }
        switch request.noise {
        case .seed(let value): seed = value
        case .npy(let bytes): noiseNpy = bytes
        }
    }
}

extension FrameOrder {
    public init(wire: FarmOrderMode) throws {
        switch wire {
        case .frame: self = .frame
        case .preview: self = .preview
        case .UNRECOGNIZED(let n): throw RenderRequestError("unknown frame order \(n) (expected frame or preview)")
        }
    }

    public var wire: FarmOrderMode { self == .preview ? .preview : .frame }
}

extension RenderRequest {
    /// The request a peer sent, checked (`problem()`): an unknown sampler or order, or a setting out of range, is
    /// a `RenderRequestError` in the words the CLI uses for the same flag.
    public init(wire: FarmRenderSettings, frames: [UInt32] = [], order: FarmOrderMode = .frame) throws {
        let noise: NoiseRequest
        switch wire.noise {
        case .noiseNpy(let bytes)?: noise = .npy(bytes)
        case .seed(let value)?: noise = .seed(value)
        case nil: noise = .seed(NoiseRequest.defaultSeed)
        }
        self.init(steps: wire.steps == 0 ? nil : Int(wire.steps),
                  sampler: wire.sampler.isEmpty ? nil : try SamplerKind.named(wire.sampler),
                  imageGuidance: wire.hasImageGuidance_p ? wire.imageGuidance : nil,
                  poseGuidance: wire.hasPoseGuidance_p ? wire.poseGuidance : nil,
                  noise: noise, frames: frames.map { Int($0) }, order: try FrameOrder(wire: order))
        if let problem = problem() { throw RenderRequestError(problem) }
    }

    /// The request of a job spec (its settings, frames and order), checked.
    public init(spec: FarmJobSpec) throws {
        try self.init(wire: spec.settings, frames: spec.frames, order: spec.order)
    }
}

extension FarmJobSpec {
    /// Sets the spec's settings, frames and order from `request`.
    public mutating func set(_ request: RenderRequest) {
        settings = FarmRenderSettings(request)
        frames = request.frames.map { UInt32(clamping: $0) }
        order = request.order.wire
    }
}

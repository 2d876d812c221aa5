import DPFileKit
import DPSampling
import DPTensor
import Foundation

// The pipeline's side of DPFileKit's `RenderRequest`: defaults from the model, and the job's noise tensor.

extension RenderRequest {
    /// The request with the model's dreampose.json defaults filled in, checked as `dp-coord submit` and the
    /// coordinator check it (`RenderRequest.problem`): the same words everywhere.
    public func resolved(for config: DreamPoseConfig) throws -> ResolvedRenderRequest {
        do { return try resolved(defaults: config.file) } catch let e as RenderRequestError {
            throw PipelineError(e.description)
        }
    }
}

extension NoiseRequest {
    /// The job's noise tensor of the latent `shape` [1, C, h, w]: drawn from the seed by `JobNoise` (portable,
    /// counter-based: every worker draws the same), or the request's .npy values checked against `shape`.
    /// `what` names the job in errors.
    public func tensor(shape: [Int], what: String) throws -> Tensor {
        switch self {
        case .seed(let seed):
            return JobNoise.gaussian(seed: seed, shape: shape)
        case .npy:
            do {
                guard let values = try values(latentShape: shape, what: what) else { throw PipelineError("\(what): no noise") }
                return Tensor(shape: shape, data: values)
            } catch let e as RenderRequestError {
                throw PipelineError(e.description)
            }
        }
    }
}

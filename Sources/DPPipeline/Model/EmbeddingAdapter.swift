import DPModels
import DPTensor
import Foundation

/// DreamPose's CLIP + VAE embedding adapter (`Embedding_Adapter` in the authors' models/unet_dual_encoder.py):
/// max-pool the VAE latent, flatten each channel into a token, project it to the CLIP width (`vae2clip`),
/// append those tokens after the CLIP tokens and mix TOKENS with `linear1`.
public final class EmbeddingAdapter: Sendable {
    public let config: AdapterConfig
    let vae2clipWeight: Tensor   // [hidden, vae_features]
    let vae2clipBias: Tensor     // [hidden]
    let linear1Weight: Tensor    // [clip_tokens, clip_tokens + vae_tokens]
    let linear1Bias: Tensor      // [clip_tokens]

    public init(config: AdapterConfig, weights: WeightSource) throws {
        self.config = config
        vae2clipWeight = try weights.take("vae2clip.weight", shape: [config.hidden, config.vaeFeatures])
        vae2clipBias = try weights.take("vae2clip.bias", shape: [config.hidden])
        linear1Weight = try weights.take("linear1.weight", shape: [config.clipTokens, config.clipTokens + config.vaeTokens])
        linear1Bias = try weights.take("linear1.bias", shape: [config.clipTokens])
        try weights.finish()
    }

    /// Loads `adapter/config.json` (DPModels' `AdapterConfig`) and `adapter/adapter.safetensors`.
    public static func load(directory: URL) throws -> EmbeddingAdapter {
        let config = try AdapterConfig.load(directory.appendingPathComponent("config.json"))
        let file = try SafeTensorsFile(url: directory.appendingPathComponent("adapter.safetensors"))
        return try EmbeddingAdapter(config: config, weights: SafeTensorsWeights(file: file, keyMap: .adapter))
    }

    /// The VAE half alone: [1, vae_tokens, h, w] latent -> [1, vae_tokens, hidden] tokens.
    public func vaeTokens(_ latent: Tensor) throws -> Tensor {
        let pooled = maxPool2x2(latent)                                   // [1, 4, h/2, w/2]
        let tokens = pooled.reshaped([pooled.shape[0], pooled.shape[1], -1])  // [1, 4, (h/2)(w/2)]
        guard tokens.shape[1] == config.vaeTokens, tokens.shape[2] == config.vaeFeatures else {
            throw PipelineError("adapter: VAE latent \(latent.shape) pools to \(tokens.shape.dropFirst()) features, "
                + "the adapter expects [\(config.vaeTokens), \(config.vaeFeatures)] (vae_features = (H/16)*(W/16))")
        }
        return linear(tokens, weight: vae2clipWeight, bias: vae2clipBias)  // [1, 4, hidden]
    }

    /// clip [1, clip_tokens, hidden], VAE latent [1, vae_tokens, h, w] -> context [1, clip_tokens, hidden].
    public func callAsFunction(clip: Tensor, vaeLatent: Tensor) throws -> Tensor {
        try combine(clip: clip, vaeTokens: vaeTokens(vaeLatent))
    }

    /// clip [1, clip_tokens, hidden] ++ vae tokens [1, vae_tokens, hidden] -> mixed tokens [1, clip_tokens, hidden].
    public func combine(clip: Tensor, vaeTokens: Tensor) throws -> Tensor {
        guard clip.rank == 3, clip.shape[1] == config.clipTokens, clip.shape[2] == config.hidden else {
            throw PipelineError("adapter: CLIP tokens \(clip.shape), expected [1, \(config.clipTokens), \(config.hidden)]")
        }
        let concatenated = concat([clip, vaeTokens], axis: 1)              // [1, 54, hidden]
        var out = [Tensor]()
        for b in 0..<concatenated.shape[0] {
            let row = slice(concatenated, axis: 0, range: b..<(b + 1)).reshaped(Array(concatenated.shape.dropFirst()))
            // Mix tokens: linear1 acts on the token axis, so transpose: out[c, d] = sum_t W[c, t] x[t, d] + b[c].
            var mixed = matmul(linear1Weight, row)                          // [50, 54] x [54, hidden] -> [50, hidden]
            let hidden = config.hidden
            mixed.data.withUnsafeMutableBufferPointer { m in
                for c in 0..<config.clipTokens {
                    let bc = linear1Bias.data[c]
                    for d in 0..<hidden { m[c * hidden + d] += bc }
                }
            }
            out.append(mixed.reshaped([1, config.clipTokens, hidden]))
        }
        return concat(out, axis: 0)
    }
}

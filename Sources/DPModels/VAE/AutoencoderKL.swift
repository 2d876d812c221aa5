// This implementation matches diffusers' AutoencoderKL (models/autoencoders/autoencoder_kl.py):
// encode = encoder -> quant_conv -> (mean, logvar clamped to [-30, 20]) of the diagonal
// Gaussian posterior; decode = post_quant_conv -> decoder. Latents here are the raw
// posterior values: the pipeline multiplies by scaling_factor after encoding and divides
// before decoding.

import DPTensor
import Foundation

public final class AutoencoderKL: Sendable {
    public let config: AutoencoderKLConfig

    let encoder: VAEEncoder
    let decoder: VAEDecoder
    let quantConv: Conv2d?         // 1x1, 2*latent -> 2*latent
    let postQuantConv: Conv2d?     // 1x1, latent -> latent

    /// Builds the network from `config`, taking every parameter from `weights`, then
    /// `weights.finish()` (unused tensors are an error).
    public init(config: AutoencoderKLConfig, weights: WeightSource) throws {
        self.config = config
        let n = config.blockOutChannels.count
        guard n > 0, config.downBlockTypes.count == n, config.upBlockTypes.count == n else {
            throw ModelError.invalidConfig(model: "AutoencoderKL", file: nil, reason:
                "block_out_channels \(config.blockOutChannels), down_block_types \(config.downBlockTypes.count), up_block_types \(config.upBlockTypes.count) must have the same non-zero length")
        }
        let p = ParameterScope(weights)
        let latent = config.latentChannels
        encoder = try VAEEncoder(p["encoder"], config: config)
        decoder = try VAEDecoder(p["decoder"], config: config)
        quantConv = config.useQuantConv
            ? try Conv2d(p["quant_conv"], inChannels: 2 * latent, outChannels: 2 * latent, kernel: 1) : nil
        postQuantConv = config.usePostQuantConv
            ? try Conv2d(p["post_quant_conv"], inChannels: latent, outChannels: latent, kernel: 1) : nil
        try weights.finish()
    }

    /// Loads `directory/config.json` and `directory/diffusion_pytorch_model.safetensors`.
    public static func load(directory: URL) throws -> AutoencoderKL {
        let config = try AutoencoderKLConfig.load(directory.appendingPathComponent("config.json"))
        let file = try SafeTensorsFile(
            url: directory.appendingPathComponent("diffusion_pytorch_model.safetensors"))
        return try AutoencoderKL(config: config, weights: SafeTensorsWeights(file: file, keyMap: .vae))
    }

    /// x [B, in, H, W] (values in [-1, 1]) -> mean, logvar [B, latent, H/f, W/f] of the posterior
    /// (NOT multiplied by scaling_factor). `intermediates`: `encoder.*`, `quant_conv`.
    public func encode(_ x: Tensor, intermediates: ((String, Tensor) -> Void)? = nil)
        -> (mean: Tensor, logvar: Tensor) {
        precondition(x.rank == 4 && x.shape[1] == config.inChannels,
                     "AutoencoderKL.encode: image must be [B, \(config.inChannels), H, W], got \(x.shape)")
        var moments = encoder(x, intermediates: intermediates)              // [B, 2*latent, h, w]
        if let qc = quantConv {
            moments = qc(moments)
            intermediates?("quant_conv", moments)
        }
        let latent = config.latentChannels
        let mean = slice(moments, axis: 1, range: 0..<latent)               // [B, latent, h, w]
        var logvar = slice(moments, axis: 1, range: latent..<(2 * latent))  // [B, latent, h, w]
        logvar.data.withUnsafeMutableBufferPointer { v in
            for i in v.indices { v[i] = Swift.min(Swift.max(v[i], -30), 20) }
        }
        return (mean, logvar)
    }

    /// z [B, latent, h, w] (already divided by scaling_factor) -> image [B, out, h*f, w*f]
    /// (raw, not clamped). `intermediates`: `post_quant_conv`, `decoder.*`.
    public func decode(_ z: Tensor, intermediates: ((String, Tensor) -> Void)? = nil) -> Tensor {
        precondition(z.rank == 4 && z.shape[1] == config.latentChannels,
                     "AutoencoderKL.decode: latents must be [B, \(config.latentChannels), h, w], got \(z.shape)")
        var h = z
        if let pqc = postQuantConv {
            h = pqc(h)
            intermediates?("post_quant_conv", h)
        }
        return decoder(h, intermediates: intermediates)
    }
}

// The VAE's encoder and decoder. This implementation matches diffusers' Encoder and
// Decoder (models/autoencoders/vae.py) with DownEncoderBlock2D / UpDecoderBlock2D and
// UNetMidBlock2D (one attention, single head over all channels). Every GroupNorm in
// the VAE uses eps 1e-6; there is no time embedding.

import DPTensor

let vaeEps: Float = 1e-6

/// diffusers' Attention as the VAE mid block builds it: GroupNorm -> q/k/v Linear with bias
/// over the [B, H*W, C] tokens -> one head (head_dim = C) -> to_out.0 -> + residual.
struct VAEAttentionBlock {
    let groupNorm: GroupNorm
    let attention: Attention

    init(_ p: ParameterScope, channels: Int, groups: Int) throws {
        groupNorm = try GroupNorm(p["group_norm"], groups: groups, channels: channels, eps: vaeEps)
        attention = try Attention(p, queryDim: channels, heads: 1, headDim: channels,
                                  qkvBias: true, outBias: true)
    }

    /// [B, C, H, W] -> [B, C, H, W]
    func callAsFunction(_ x: Tensor) -> Tensor {
        let (height, width) = (x.shape[2], x.shape[3])
        let tokens = toTokens(groupNorm(x))                                 // [B, H*W, C]
        var out = fromTokens(attention(tokens), height: height, width: width)   // [B, C, H, W]
        addInPlace(&out, x)
        return out
    }
}

/// UNetMidBlock2D without time embedding: resnets.0, (attentions.0, resnets.1).
struct VAEMidBlock {
    let resnets: [ResnetBlock2D]
    let attention: VAEAttentionBlock?

    init(_ p: ParameterScope, channels: Int, groups: Int, addAttention: Bool) throws {
        resnets = try (0..<2).map {
            try ResnetBlock2D(p["resnets", $0], inChannels: channels, outChannels: channels,
                              tembChannels: nil, groups: groups, eps: vaeEps)
        }
        attention = addAttention ? try VAEAttentionBlock(p["attentions.0"], channels: channels,
                                                         groups: groups) : nil
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = resnets[0](x, tembActivated: nil)
        if let attn = attention { h = attn(h) }
        return resnets[1](h, tembActivated: nil)
    }
}

/// diffusers' vae.Encoder (double_z): conv_in -> DownEncoderBlock2D x n -> mid_block ->
/// conv_norm_out -> SiLU -> conv_out (2 * latent channels).
struct VAEEncoder {
    struct DownBlock {
        let resnets: [ResnetBlock2D]
        let downsampler: Downsample2D?
    }
    let convIn: Conv2d
    let downBlocks: [DownBlock]
    let midBlock: VAEMidBlock
    let convNormOut: GroupNorm
    let convOut: Conv2d

    init(_ p: ParameterScope, config: AutoencoderKLConfig) throws {
        let blocks = config.blockOutChannels
        let groups = config.normNumGroups
        convIn = try Conv2d(p["conv_in"], inChannels: config.inChannels, outChannels: blocks[0], kernel: 3)
        var down: [DownBlock] = []
        var outputChannels = blocks[0]
        for (i, type) in config.downBlockTypes.enumerated() {
            guard type == "DownEncoderBlock2D" else {
                throw ModelError.unsupported(model: "AutoencoderKL", what: "down block type \(type)")
            }
            let inputChannels = outputChannels
            outputChannels = blocks[i]
            let b = p["down_blocks", i]
            let resnets = try (0..<config.layersPerBlock).map {
                try ResnetBlock2D(b["resnets", $0], inChannels: $0 == 0 ? inputChannels : outputChannels,
                                  outChannels: outputChannels, tembChannels: nil, groups: groups, eps: vaeEps)
            }
            let downsampler = i < blocks.count - 1
                ? try Downsample2D(b["downsamplers.0"], channels: outputChannels, padding: 0) : nil
            down.append(DownBlock(resnets: resnets, downsampler: downsampler))
        }
        downBlocks = down
        let top = blocks[blocks.count - 1]
        midBlock = try VAEMidBlock(p["mid_block"], channels: top, groups: groups,
                                   addAttention: config.midBlockAddAttention)
        convNormOut = try GroupNorm(p["conv_norm_out"], groups: groups, channels: top, eps: vaeEps)
        convOut = try Conv2d(p["conv_out"], inChannels: top, outChannels: 2 * config.latentChannels,
                             kernel: 3)
    }

    /// [B, in, H, W] -> [B, 2*latent, H/2^(n-1), W/2^(n-1)]
    func callAsFunction(_ x: Tensor, intermediates: ((String, Tensor) -> Void)?) -> Tensor {
        var h = convIn(x)
        intermediates?("encoder.conv_in", h)
        for (i, block) in downBlocks.enumerated() {
            for resnet in block.resnets { h = resnet(h, tembActivated: nil) }
            if let down = block.downsampler { h = down(h) }                 // pad (0,1,0,1), stride 2
            intermediates?("encoder.down_blocks.\(i)", h)
        }
        h = midBlock(h)
        intermediates?("encoder.mid_block", h)
        if let report = intermediates {
            h = convNormOut(h)
            report("encoder.conv_norm_out", h)
            h = silu(h)
        } else {
            h = convNormOut(h, silu: true)
        }
        h = convOut(h)
        intermediates?("encoder.conv_out", h)
        return h
    }
}

/// diffusers' vae.Decoder: conv_in -> mid_block -> UpDecoderBlock2D x n -> conv_norm_out ->
/// SiLU -> conv_out.
struct VAEDecoder {
    struct UpBlock {
        let resnets: [ResnetBlock2D]
        let upsampler: Upsample2D?
    }
    let convIn: Conv2d
    let midBlock: VAEMidBlock
    let upBlocks: [UpBlock]
    let convNormOut: GroupNorm
    let convOut: Conv2d

    init(_ p: ParameterScope, config: AutoencoderKLConfig) throws {
        let blocks = config.blockOutChannels
        let groups = config.normNumGroups
        let top = blocks[blocks.count - 1]
        convIn = try Conv2d(p["conv_in"], inChannels: config.latentChannels, outChannels: top, kernel: 3)
        midBlock = try VAEMidBlock(p["mid_block"], channels: top, groups: groups,
                                   addAttention: config.midBlockAddAttention)
        var up: [UpBlock] = []
        let reversedBlocks = Array(blocks.reversed())
        var outputChannels = reversedBlocks[0]
        for (i, type) in config.upBlockTypes.enumerated() {
            guard type == "UpDecoderBlock2D" else {
                throw ModelError.unsupported(model: "AutoencoderKL", what: "up block type \(type)")
            }
            let prevOutputChannels = outputChannels
            outputChannels = reversedBlocks[i]
            let b = p["up_blocks", i]
            let resnets = try (0..<(config.layersPerBlock + 1)).map {
                try ResnetBlock2D(b["resnets", $0], inChannels: $0 == 0 ? prevOutputChannels : outputChannels,
                                  outChannels: outputChannels, tembChannels: nil, groups: groups, eps: vaeEps)
            }
            let upsampler = i < blocks.count - 1
                ? try Upsample2D(b["upsamplers.0"], channels: outputChannels) : nil
            up.append(UpBlock(resnets: resnets, upsampler: upsampler))
        }
        upBlocks = up
        convNormOut = try GroupNorm(p["conv_norm_out"], groups: groups, channels: blocks[0], eps: vaeEps)
        convOut = try Conv2d(p["conv_out"], inChannels: blocks[0], outChannels: config.outChannels,
                             kernel: 3)
    }

    /// [B, latent, h, w] -> [B, out, h*2^(n-1), w*2^(n-1)]
    func callAsFunction(_ z: Tensor, intermediates: ((String, Tensor) -> Void)?) -> Tensor {
        var h = convIn(z)
        intermediates?("decoder.conv_in", h)
        h = midBlock(h)
        intermediates?("decoder.mid_block", h)
        for (i, block) in upBlocks.enumerated() {
            for resnet in block.resnets { h = resnet(h, tembActivated: nil) }
            if let upsample = block.upsampler { h = upsample(h) }          // nearest x2, conv 3x3
            intermediates?("decoder.up_blocks.\(i)", h)
        }
        if let report = intermediates {
            h = convNormOut(h)
            report("decoder.conv_norm_out", h)
            h = silu(h)
        } else {
            h = convNormOut(h, silu: true)
        }
        h = convOut(h)
        intermediates?("decoder.conv_out", h)
        return h
    }
}

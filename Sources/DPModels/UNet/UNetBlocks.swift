// The UNet's down / mid / up blocks. This implementation matches diffusers'
// CrossAttnDownBlock2D, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D and
// CrossAttnUpBlock2D (models/unets/unet_2d_blocks.py) at inference.

import DPTensor

/// Settings every block of one UNet shares.
struct UNetBlockSettings {
    var tembChannels: Int
    var groups: Int
    var eps: Float
    var crossAttentionDim: Int
    var transformerLayers: Int
    var useLinearProjection: Bool
}

/// CrossAttnDownBlock2D (with `attentions`) or DownBlock2D (without).
struct UNetDownBlock {
    let resnets: [ResnetBlock2D]
    let attentions: [Transformer2DModel]       // empty for DownBlock2D
    let downsampler: Downsample2D?             // downsamplers.0

    init(_ p: ParameterScope, type: String, layers: Int, inChannels: Int, outChannels: Int,
         heads: Int, addDownsample: Bool, downsamplePadding: Int, settings s: UNetBlockSettings) throws {
        let withAttention: Bool
        switch type {
        case "CrossAttnDownBlock2D": withAttention = true
        case "DownBlock2D": withAttention = false
        default: throw ModelError.unsupported(model: "UNet2DConditionModel", what: "down block type \(type)")
        }
        resnets = try (0..<layers).map {
            try ResnetBlock2D(p["resnets", $0], inChannels: $0 == 0 ? inChannels : outChannels,
                              outChannels: outChannels, tembChannels: s.tembChannels,
                              groups: s.groups, eps: s.eps)
        }
        attentions = withAttention ? try (0..<layers).map {
            try Transformer2DModel(p["attentions", $0], channels: outChannels, heads: heads,
                                   headDim: outChannels / heads, layers: s.transformerLayers,
                                   crossAttentionDim: s.crossAttentionDim, groups: s.groups,
                                   useLinearProjection: s.useLinearProjection)
        } : []
        downsampler = addDownsample
            ? try Downsample2D(p["downsamplers.0"], channels: outChannels, padding: downsamplePadding)
            : nil
    }

    /// h [B, Cin, H, W] -> [B, Cout, H', W']; appends every output state to `skips`.
    func callAsFunction(_ x: Tensor, tembActivated: Tensor, context: Tensor,
                        skips: inout [Tensor]) -> Tensor {
        var h = x
        for i in resnets.indices {
            h = resnets[i](h, tembActivated: tembActivated)            // [B, Cout, H, W]
            if !attentions.isEmpty { h = attentions[i](h, context: context) }
            skips.append(h)
        }
        if let down = downsampler {
            h = down(h)                                                // [B, Cout, H/2, W/2]
            skips.append(h)
        }
        return h
    }
}

/// UNetMidBlock2DCrossAttn: resnets.0, then (attentions.i, resnets.i+1) for each layer.
struct UNetMidBlock2DCrossAttn {
    let resnets: [ResnetBlock2D]
    let attentions: [Transformer2DModel]

    init(_ p: ParameterScope, channels: Int, heads: Int, layers: Int = 1, outputScaleFactor: Float,
         settings s: UNetBlockSettings) throws {
        resnets = try (0...layers).map {
            try ResnetBlock2D(p["resnets", $0], inChannels: channels, outChannels: channels,
                              tembChannels: s.tembChannels, groups: s.groups, eps: s.eps,
                              outputScaleFactor: outputScaleFactor)
        }
        attentions = try (0..<layers).map {
            try Transformer2DModel(p["attentions", $0], channels: channels, heads: heads,
                                   headDim: channels / heads, layers: s.transformerLayers,
                                   crossAttentionDim: s.crossAttentionDim, groups: s.groups,
                                   useLinearProjection: s.useLinearProjection)
        }
    }

    /// [B, C, H, W] -> [B, C, H, W]
    func callAsFunction(_ x: Tensor, tembActivated: Tensor, context: Tensor) -> Tensor {
        var h = resnets[0](x, tembActivated: tembActivated)
        for i in attentions.indices {
            h = attentions[i](h, context: context)
            h = resnets[i + 1](h, tembActivated: tembActivated)
        }
        return h
    }
}

/// CrossAttnUpBlock2D (with `attentions`) or UpBlock2D (without).
struct UNetUpBlock {
    let resnets: [ResnetBlock2D]
    let attentions: [Transformer2DModel]
    let upsampler: Upsample2D?                 // upsamplers.0

    /// `prevOutputChannels` = the channels coming from below, `inChannels` = the channels of
    /// the matching down block's input (the last skip of this block), as diffusers names them.
    init(_ p: ParameterScope, type: String, layers: Int, inChannels: Int, prevOutputChannels: Int,
         outChannels: Int, heads: Int, addUpsample: Bool, settings s: UNetBlockSettings) throws {
        let withAttention: Bool
        switch type {
        case "CrossAttnUpBlock2D": withAttention = true
        case "UpBlock2D": withAttention = false
        default: throw ModelError.unsupported(model: "UNet2DConditionModel", what: "up block type \(type)")
        }
        resnets = try (0..<layers).map { i in
            let skipChannels = i == layers - 1 ? inChannels : outChannels
            let resnetIn = i == 0 ? prevOutputChannels : outChannels
            return try ResnetBlock2D(p["resnets", i], inChannels: resnetIn + skipChannels,
                                     outChannels: outChannels, tembChannels: s.tembChannels,
                                     groups: s.groups, eps: s.eps)
        }
        attentions = withAttention ? try (0..<layers).map {
            try Transformer2DModel(p["attentions", $0], channels: outChannels, heads: heads,
                                   headDim: outChannels / heads, layers: s.transformerLayers,
                                   crossAttentionDim: s.crossAttentionDim, groups: s.groups,
                                   useLinearProjection: s.useLinearProjection)
        } : []
        upsampler = addUpsample ? try Upsample2D(p["upsamplers.0"], channels: outChannels) : nil
    }

    /// Pops one skip per resnet (latest first; `cat([h, skip], dim: 1)`), then upsamples to
    /// the spatial size of the next skip left on the stack (2x when the input size divides).
    func callAsFunction(_ x: Tensor, tembActivated: Tensor, context: Tensor,
                        skips: inout [Tensor]) -> Tensor {
        var h = x
        for i in resnets.indices {
            let skip = skips.removeLast()
            h = concat([h, skip], axis: 1)                             // [B, Ch + Cskip, H, W]
            h = resnets[i](h, tembActivated: tembActivated)            // [B, Cout, H, W]
            if !attentions.isEmpty { h = attentions[i](h, context: context) }
        }
        if let up = upsampler {
            let size = skips.last.map { (height: $0.shape[2], width: $0.shape[3]) }
            h = up(h, size: size)                                      // [B, Cout, 2H, 2W]
        }
        return h
    }
}

// This implementation matches diffusers' Transformer2DModel (continuous input,
// models/transformers/transformer_2d.py) and BasicTransformerBlock
// (models/attention.py, norm_type "layer_norm", GEGLU feed-forward) as SD-1.x/2.x use them.

import DPTensor

/// BasicTransformerBlock: [LN -> self-attn -> +res] [LN -> cross-attn(context) -> +res]
/// [LN -> GEGLU FF -> +res]. LayerNorm eps 1e-5, q/k/v without bias.
public struct BasicTransformerBlock: Sendable {
    public let norm1: LayerNorm
    public let attn1: Attention
    public let norm2: LayerNorm
    public let attn2: Attention
    public let norm3: LayerNorm
    public let ff: FeedForward

    public init(_ p: ParameterScope, dim: Int, heads: Int, headDim: Int,
                crossAttentionDim: Int) throws {
        norm1 = try LayerNorm(p["norm1"], features: dim, eps: 1e-5)
        attn1 = try Attention(p["attn1"], queryDim: dim, heads: heads, headDim: headDim)
        norm2 = try LayerNorm(p["norm2"], features: dim, eps: 1e-5)
        attn2 = try Attention(p["attn2"], queryDim: dim, crossAttentionDim: crossAttentionDim,
                              heads: heads, headDim: headDim)
        norm3 = try LayerNorm(p["norm3"], features: dim, eps: 1e-5)
        ff = try FeedForward(p["ff"], dim: dim)
    }

    /// x [B, N, C], context [B, M, D] -> [B, N, C]
    public func callAsFunction(_ x: Tensor, context: Tensor) -> Tensor {
        // Each residual add is done by the sub-layer's last product (its output seeded with h).
        var h = attn1(norm1(x), residual: x)                    // self attention
        h = attn2(norm2(h), context: context, residual: h)      // cross attention
        return ff(norm3(h), residual: h)                        // feed-forward
    }
}

/// Transformer2DModel: GroupNorm(eps 1e-6) -> proj_in -> tokens -> blocks -> proj_out -> + input.
/// proj_in/proj_out are 1x1 convs ([C, C, 1, 1]) or, with `use_linear_projection`, Linear ([C, C]).
public struct Transformer2DModel: Sendable {
    public let norm: GroupNorm
    public let useLinearProjection: Bool
    /// proj_in / proj_out as matrices [inner, C] / [C, inner] (a 1x1 conv is the same product).
    public let projIn: Linear
    public let projOut: Linear
    public let transformerBlocks: [BasicTransformerBlock]

    public init(_ p: ParameterScope, channels: Int, heads: Int, headDim: Int, layers: Int,
                crossAttentionDim: Int, groups: Int, useLinearProjection: Bool) throws {
        let inner = heads * headDim
        norm = try GroupNorm(p["norm"], groups: groups, channels: channels, eps: 1e-6)
        self.useLinearProjection = useLinearProjection
        if useLinearProjection {
            projIn = try Linear(p["proj_in"], inFeatures: channels, outFeatures: inner)
        } else {
            let conv = try Conv2d(p["proj_in"], inChannels: channels, outChannels: inner, kernel: 1)
            projIn = Linear(weight: conv.weight.reshaped([inner, channels]), bias: conv.bias)
        }
        transformerBlocks = try (0..<layers).map {
            try BasicTransformerBlock(p["transformer_blocks", $0], dim: inner, heads: heads,
                                      headDim: headDim, crossAttentionDim: crossAttentionDim)
        }
        if useLinearProjection {
            projOut = try Linear(p["proj_out"], inFeatures: inner, outFeatures: channels)
        } else {
            let conv = try Conv2d(p["proj_out"], inChannels: inner, outChannels: channels, kernel: 1)
            projOut = Linear(weight: conv.weight.reshaped([channels, inner]), bias: conv.bias)
        }
    }

    /// x [B, C, H, W], context [B, M, D] -> [B, C, H, W]
    public func callAsFunction(_ x: Tensor, context: Tensor) -> Tensor {
        let (height, width) = (x.shape[2], x.shape[3])
        // A 1x1 conv on NCHW equals a Linear on the [B, H*W, C] tokens, so both projection kinds run as
        // matrix products that read (proj_in) or write (proj_out, with the residual x) the NCHW layout directly.
        var h = linearFromChannels(norm(x), weight: projIn.weight, bias: projIn.bias)   // [B, H*W, inner]
        FLOPCounter.add(2 * Double(h.count) * Double(projIn.inFeatures))
        for block in transformerBlocks {
            h = block(h, context: context)                    // [B, H*W, inner]
        }
        let out = linearToChannels(h, weight: projOut.weight, bias: projOut.bias, residual: x,
                                   height: height, width: width)   // [B, C, H, W]
        FLOPCounter.add(2 * Double(out.count) * Double(projOut.inFeatures))
        return out
    }
}

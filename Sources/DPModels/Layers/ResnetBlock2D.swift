// This implementation matches diffusers' ResnetBlock2D (models/resnet.py) with
// time_embedding_norm "default", SiLU, no up/down sampling inside the block:
//   h = conv1(SiLU(norm1(x))) [+ time_emb_proj(SiLU(temb))[:, :, None, None]]
//   h = conv2(SiLU(norm2(h)))          (dropout is the identity at inference)
//   out = (shortcut(x) + h) / output_scale_factor, shortcut = 1x1 conv_shortcut when Cin != Cout.

import DPTensor

public struct ResnetBlock2D: Sendable {
    public let norm1: GroupNorm
    public let conv1: Conv2d
    public let timeEmbProj: Linear?
    public let norm2: GroupNorm
    public let conv2: Conv2d
    public let convShortcut: Conv2d?
    public let outputScaleFactor: Float

    /// `temb` = the time embedding width (nil in the VAE, which has no time input).
    public init(_ p: ParameterScope, inChannels: Int, outChannels: Int, tembChannels: Int?,
                groups: Int, eps: Float, outputScaleFactor: Float = 1) throws {
        norm1 = try GroupNorm(p["norm1"], groups: groups, channels: inChannels, eps: eps)
        conv1 = try Conv2d(p["conv1"], inChannels: inChannels, outChannels: outChannels, kernel: 3)
        timeEmbProj = try tembChannels.map {
            try Linear(p["time_emb_proj"], inFeatures: $0, outFeatures: outChannels)
        }
        norm2 = try GroupNorm(p["norm2"], groups: groups, channels: outChannels, eps: eps)
        conv2 = try Conv2d(p["conv2"], inChannels: outChannels, outChannels: outChannels, kernel: 3)
        convShortcut = inChannels == outChannels ? nil :
            try Conv2d(p["conv_shortcut"], inChannels: inChannels, outChannels: outChannels, kernel: 1)
        self.outputScaleFactor = outputScaleFactor
    }

    /// x [N, Cin, H, W], tembActivated = SiLU(temb) [N, T] (or nil) -> [N, Cout, H, W]
    public func callAsFunction(_ x: Tensor, tembActivated: Tensor?) -> Tensor {
        var h = conv1(norm1(x, silu: true))                   // [N, Cout, H, W]
        if let proj = timeEmbProj, let t = tembActivated {
            h = addChannelBias(h, proj(t))                      // + [N, Cout] broadcast over H, W
        }
        h = conv2(norm2(h, silu: true))                       // [N, Cout, H, W]
        if let sc = convShortcut {
            addInPlace(&h, sc(x))
        } else {
            addInPlace(&h, x)
        }
        if outputScaleFactor != 1 { h = scale(h, by: 1 / outputScaleFactor) }
        return h
    }
}

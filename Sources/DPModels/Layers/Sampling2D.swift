// diffusers' Downsample2D and Upsample2D (models/downsampling.py, upsampling.py),
// the "use_conv" variants SD uses.

import DPTensor

/// Downsample2D: 3x3 conv, stride 2. `padding` 1 (UNet) pads symmetrically; padding 0
/// (VAE encoder) first zero-pads right and bottom by 1, like F.pad(x, (0, 1, 0, 1)).
public struct Downsample2D: Sendable {
    public let conv: Conv2d

    public init(_ p: ParameterScope, channels: Int, outChannels: Int? = nil, padding: Int) throws {
        let pad: Padding2D = padding == 0 ? Padding2D(top: 0, bottom: 1, left: 0, right: 1)
                                          : .symmetric(padding)
        conv = try Conv2d(p["conv"], inChannels: channels, outChannels: outChannels ?? channels,
                          kernel: 3, stride: 2, padding: pad)
    }

    /// [N, C, H, W] -> [N, Cout, ceil-ish H/2, W/2]
    public func callAsFunction(_ x: Tensor) -> Tensor { conv(x) }
}

/// Upsample2D: nearest x2 (or to `size` when given), then 3x3 conv pad 1.
public struct Upsample2D: Sendable {
    public let conv: Conv2d

    public init(_ p: ParameterScope, channels: Int, outChannels: Int? = nil) throws {
        conv = try Conv2d(p["conv"], inChannels: channels, outChannels: outChannels ?? channels,
                          kernel: 3)
    }

    /// [N, C, H, W] -> [N, Cout, 2H, 2W] (or [N, Cout, size.h, size.w])
    public func callAsFunction(_ x: Tensor, size: (height: Int, width: Int)? = nil) -> Tensor {
        let up: Tensor
        if let s = size {
            up = resizeNearest(x, height: s.height, width: s.width)
        } else {
            up = upsampleNearest2x(x)
        }
        return conv(up)
    }
}

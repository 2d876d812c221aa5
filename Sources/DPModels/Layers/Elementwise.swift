// Small helpers the models use (residual adds are DPTensor's addInPlace).

import DPTensor

/// Nearest-neighbour resize of [N, C, H, W] to [N, C, outH, outW] as torch's
/// F.interpolate(mode="nearest", size=...) does it: src = min(floor(dst * (in/out)), in-1)
/// with the scale computed in float32. Used by Upsample2D when the UNet input size is
/// not a multiple of 2^upsamplers (diffusers forwards the skip's size then).
func resizeNearest(_ x: Tensor, height outH: Int, width outW: Int) -> Tensor {
    precondition(x.rank == 4, "resizeNearest expects [N, C, H, W], got \(x.shape)")
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    if outH == 2 * h && outW == 2 * w { return upsampleNearest2x(x) }
    let sh = Float(h) / Float(outH), sw = Float(w) / Float(outW)
    let rows = (0..<outH).map { outH == h ? $0 : min(Int((Float($0) * sh).rounded(.down)), h - 1) }
    let cols = (0..<outW).map { outW == w ? $0 : min(Int((Float($0) * sw).rounded(.down)), w - 1) }
    return Tensor(shape: [n, c, outH, outW]) { out in
        x.data.withUnsafeBufferPointer { src in
            for plane in 0..<(n * c) {
                let s = plane * h * w, d = plane * outH * outW
                for i in 0..<outH {
                    let sr = s + rows[i] * w, dr = d + i * outW
                    for j in 0..<outW { out[dr + j] = src[sr + cols[j]] }
                }
            }
        }
    }
}

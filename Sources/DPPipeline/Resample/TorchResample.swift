// torch.nn.functional.interpolate on float32 [N, C, H, W] tensors, reproducing PyTorch's CPU kernels
// (aten/src/ATen/native/UpSample.h, cpu/UpSampleKernel.cpp) including their float32 index arithmetic.
//
// * bilinear, align_corners=False: per axis `scale = (float)in / out`,
//   `src = max(scale * (dst + 0.5) - 0.5, 0)` in float32, `i0 = min(floor(src), in - 1)`,
//   `i1 = i0 + (i0 < in - 1 ? 1 : 0)`, `l1 = clamp(src - i0, 0, 1)`, `l0 = 1 - l1`; out == in copies.
//   out = (x[i0][j0] * w0 + x[i0][j1] * w1) * h0 + (x[i1][j0] * w0 + x[i1][j1] * w1) * h1.
// * nearest (the interpolate default): out == in copies, out == 2 * in takes `dst >> 1`, otherwise
//   `src = min(floorf(dst * ((float)in / out)), in - 1)` in float32 (26 -> 22 gives src 12 at dst 11
//   where exact arithmetic gives 13; golden/README.md §7.4).
import DPTensor

public enum TorchResample {
    /// `F.interpolate(x, (height, width), mode="bilinear", align_corners=False)`.
    /// x [N, C, H, W] -> [N, C, height, width]
    public static func bilinear(_ x: Tensor, height: Int, width: Int) -> Tensor {
        precondition(x.rank == 4, "TorchResample.bilinear expects [N, C, H, W], got \(x.shape)")
        precondition(height > 0 && width > 0, "TorchResample.bilinear: output size \(height)x\(width)")
        let (n, c, inH, inW) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let rows = linearTaps(inSize: inH, outSize: height)  // over H
        let cols = linearTaps(inSize: inW, outSize: width)   // over W
        return Tensor(shape: [n, c, height, width]) { out in
            x.data.withUnsafeBufferPointer { src in
                for plane in 0 ..< n * c {
                    let s = src.baseAddress! + plane * inH * inW
                    let d = out.baseAddress! + plane * height * width
                    for oy in 0 ..< height {
                        let r = rows[oy]
                        let top = s + r.i0 * inW, bottom = s + r.i1 * inW
                        for ox in 0 ..< width {
                            let q = cols[ox]
                            let t0 = top[q.i0] * q.l0 + top[q.i1] * q.l1
                            let t1 = bottom[q.i0] * q.l0 + bottom[q.i1] * q.l1
                            d[oy * width + ox] = t0 * r.l0 + t1 * r.l1
                        }
                    }
                }
            }
        }
    }

    /// `F.interpolate(x, (height, width))` (mode "nearest").
    /// x [N, C, H, W] -> [N, C, height, width]
    public static func nearest(_ x: Tensor, height: Int, width: Int) -> Tensor {
        precondition(x.rank == 4, "TorchResample.nearest expects [N, C, H, W], got \(x.shape)")
        precondition(height > 0 && width > 0, "TorchResample.nearest: output size \(height)x\(width)")
        let (n, c, inH, inW) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let rows = (0 ..< height).map { nearestIndex($0, inSize: inH, outSize: height) }
        let cols = (0 ..< width).map { nearestIndex($0, inSize: inW, outSize: width) }
        return Tensor(shape: [n, c, height, width]) { out in
            x.data.withUnsafeBufferPointer { src in
                for plane in 0 ..< n * c {
                    let s = src.baseAddress! + plane * inH * inW
                    let d = out.baseAddress! + plane * height * width
                    for oy in 0 ..< height {
                        let row = s + rows[oy] * inW
                        for ox in 0 ..< width { d[oy * width + ox] = row[cols[ox]] }
                    }
                }
            }
        }
    }

    /// PyTorch's `nearest_idx` (no scale factor given).
    static func nearestIndex(_ dst: Int, inSize: Int, outSize: Int) -> Int {
        if outSize == inSize { return dst }
        if outSize == 2 * inSize { return dst >> 1 }
        let scale = Float(inSize) / Float(outSize)
        return min(Int((Float(dst) * scale).rounded(.down)), inSize - 1)
    }

    /// Source taps of one output index of a linear pass.
    struct LinearTap {
        var i0: Int, i1: Int
        var l0: Float, l1: Float
    }

    /// PyTorch's `compute_source_index_and_lambda` (align_corners=False, float32 opmath).
    static func linearTaps(inSize: Int, outSize: Int) -> [LinearTap] {
        if inSize == outSize {
            return (0 ..< outSize).map { LinearTap(i0: $0, i1: $0, l0: 1, l1: 0) }
        }
        let scale = Float(inSize) / Float(outSize)
        return (0 ..< outSize).map { dst in
            var src = scale * (Float(dst) + 0.5) - 0.5
            if src < 0 { src = 0 }
            let i0 = min(Int(src.rounded(.down)), inSize - 1)
            let l1 = min(max(src - Float(i0), 0), 1)
            let i1 = i0 + (i0 < inSize - 1 ? 1 : 0)
            return LinearTap(i0: i0, i1: i1, l0: 1 - l1, l1: l1)
        }
    }
}

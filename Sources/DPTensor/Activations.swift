// Pointwise activations (SiLU, exact GELU, QuickGELU, GEGLU) and softmax over the last dimension.

import CDPKernels
import Foundation

/// Applies `f` element by element over `x`, in parallel chunks for large tensors.
@inline(__always)
func mapElements(_ x: Tensor, _ f: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void) -> Tensor {
    let probe = OpProfile.begin(.elementwise)
    defer { probe?.end() }
    return Tensor(overwriting: x.shape) { out in
        guard let po = out.baseAddress else { return }
        x.data.withUnsafeBufferPointer { pxb in
            let px = pxb.baseAddress!
            let blocks = (x.count + 4095) / 4096
            parallelChunks(blocks, work: x.count * 8) { r in
                let lo = r.lowerBound * 4096, hi = min(x.count, r.upperBound * 4096)
                f(px + lo, po + lo, hi - lo)
            }
        }
    }
}

/// SiLU: x * sigmoid(x).
public func silu(_ x: Tensor) -> Tensor {
    mapElements(x) { src, dst, n in dp_silu_scaled(src, dst, n, 1) }
}

/// Exact GELU: 0.5 x (1 + erf(x / sqrt 2)).
public func gelu(_ x: Tensor) -> Tensor {
    mapElements(x) { src, dst, n in geluRow(src, dst, count: n) }
}

@inline(__always)
func geluRow(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, count n: Int) {
    dp_gelu(src, nil, dst, n)
}

/// QuickGELU (CLIP): x * sigmoid(1.702 x).
public func quickGelu(_ x: Tensor) -> Tensor {
    mapElements(x) { src, dst, n in dp_silu_scaled(src, dst, n, 1.702) }
}

/// GEGLU (diffusers `GEGLU` after its projection): x [..., 2H] -> [..., H] = x[..., :H] * gelu(x[..., H:]).
public func geglu(_ x: Tensor) -> Tensor {
    precondition(x.rank >= 1 && x.shape[x.rank - 1] % 2 == 0,
                 "geglu: last dimension must be even, got \(x.shape)")
    let two = x.shape[x.rank - 1], hdim = two / 2
    let rows = two == 0 ? 0 : x.count / two
    var outShape = x.shape
    outShape[outShape.count - 1] = hdim
    let probe = OpProfile.begin(.geglu)
    defer { probe?.end() }
    return Tensor(overwriting: outShape) { out in
        guard let po = out.baseAddress else { return }
        x.data.withUnsafeBufferPointer { pxb in
            let px = pxb.baseAddress!
            parallelFor(rows, work: x.count * 8) { r in
                let src = px + r * two, dst = po + r * hdim
                dp_gelu(src + hdim, src, dst, hdim)   // value (first half) * gelu(gate (second half))
            }
        }
    }
}

/// Softmax over the last dimension (max-subtracted).
public func softmax(_ x: Tensor) -> Tensor {
    precondition(x.rank >= 1, "softmax: input must have rank >= 1")
    let d = x.shape[x.rank - 1]
    let rows = d == 0 ? 0 : x.count / d
    var out = x
    out.data.withUnsafeMutableBufferPointer { pb in
        guard let p = pb.baseAddress else { return }
        parallelFor(rows, work: x.count * 8) { r in softmaxRowInPlace(p + r * d, count: d) }
    }
    return out
}

/// In-place softmax of one row (vectorised in CDPKernels).
@inline(__always)
func softmaxRowInPlace(_ p: UnsafeMutablePointer<Float>, count n: Int) {
    dp_softmax_row(p, n)
}

// Pointwise activations (SiLU, exact GELU, QuickGELU, GEGLU) and softmax over the last dimension.

import Foundation

/// Applies `f` element by element over `x`, in parallel chunks for large tensors.
@inline(__always)
func mapElements(_ x: Tensor, _ f: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void) -> Tensor {
    Tensor(shape: x.shape) { out in
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
    mapElements(x) { src, dst, n in
        var i = 0
        while i + 8 <= n { let v = load8(src + i); store8(v * sigmoid8(v), dst + i); i += 8 }
        while i < n { let v = src[i]; dst[i] = v / (1 + expf(-v)); i += 1 }
    }
}

/// Exact GELU: 0.5 x (1 + erf(x / sqrt 2)).
public func gelu(_ x: Tensor) -> Tensor {
    mapElements(x) { src, dst, n in geluRow(src, dst, count: n) }
}

@inline(__always)
func geluRow(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, count n: Int) {
    let invSqrt2: Float = 0.70710678118654752440
    for i in 0..<n {
        let v = src[i]
        dst[i] = 0.5 * v * (1 + erff(v * invSqrt2))
    }
}

/// QuickGELU (CLIP): x * sigmoid(1.702 x).
public func quickGelu(_ x: Tensor) -> Tensor {
    mapElements(x) { src, dst, n in
        let k = SIMD8<Float>(repeating: 1.702)
        var i = 0
        while i + 8 <= n { let v = load8(src + i); store8(v * sigmoid8(k * v), dst + i); i += 8 }
        while i < n { let v = src[i]; dst[i] = v / (1 + expf(-1.702 * v)); i += 1 }
    }
}

/// GEGLU (diffusers `GEGLU` after its projection): x [..., 2H] -> [..., H] = x[..., :H] * gelu(x[..., H:]).
public func geglu(_ x: Tensor) -> Tensor {
    precondition(x.rank >= 1 && x.shape[x.rank - 1] % 2 == 0,
                 "geglu: last dimension must be even, got \(x.shape)")
    let two = x.shape[x.rank - 1], hdim = two / 2
    let rows = two == 0 ? 0 : x.count / two
    var outShape = x.shape
    outShape[outShape.count - 1] = hdim
    return Tensor(shape: outShape) { out in
        guard let po = out.baseAddress else { return }
        x.data.withUnsafeBufferPointer { pxb in
            let px = pxb.baseAddress!
            parallelFor(rows, work: x.count * 8) { r in
                let src = px + r * two, dst = po + r * hdim
                geluRow(src + hdim, dst, count: hdim)   // gate
                var i = 0
                while i + 8 <= hdim { store8(load8(src + i) * load8(dst + i), dst + i); i += 8 }
                while i < hdim { dst[i] = src[i] * dst[i]; i += 1 }
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

/// In-place softmax of one row.
@inline(__always)
func softmaxRowInPlace(_ p: UnsafeMutablePointer<Float>, count n: Int) {
    if n == 0 { return }
    var m = -Float.infinity
    for i in 0..<n { m = max(m, p[i]) }
    var sum: Float = 0
    let m8 = SIMD8<Float>(repeating: m)
    var acc = SIMD8<Float>()
    var i = 0
    while i + 8 <= n { let e = exp8(load8(p + i) - m8); store8(e, p + i); acc += e; i += 8 }
    sum = acc.sum()
    while i < n { let e = expf(p[i] - m); p[i] = e; sum += e; i += 1 }
    let inv = 1 / sum
    let inv8 = SIMD8<Float>(repeating: inv)
    i = 0
    while i + 8 <= n { store8(load8(p + i) * inv8, p + i); i += 8 }
    while i < n { p[i] *= inv; i += 1 }
}

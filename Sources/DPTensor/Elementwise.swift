// Elementwise arithmetic: add, per-channel bias broadcast, scaling.

/// a + b (same element count; the result has a's shape).
public func add(_ a: Tensor, _ b: Tensor) -> Tensor {
    precondition(a.shape == b.shape, "add: shapes differ: \(a.shape) vs \(b.shape)")
    let probe = OpProfile.begin(.elementwise)
    defer { probe?.end() }
    return Tensor(overwriting: a.shape) { out in
        guard let po = out.baseAddress else { return }
        a.data.withUnsafeBufferPointer { pab in
            b.data.withUnsafeBufferPointer { pbb in
                let pa = pab.baseAddress!, pb = pbb.baseAddress!
                let blocks = (a.count + 4095) / 4096
                parallelChunks(blocks, work: a.count) { r in
                    let lo = r.lowerBound * 4096, hi = min(a.count, r.upperBound * 4096)
                    var i = lo
                    while i + 8 <= hi { store8(load8(pa + i) + load8(pb + i), po + i); i += 8 }
                    while i < hi { po[i] = pa[i] + pb[i]; i += 1 }
                }
            }
        }
    }
}

/// a += b (same element count; a keeps its shape): residual connections without a fresh tensor (an SD-1.5
/// decoder activation at 640x512 is 168 MB).
public func addInPlace(_ a: inout Tensor, _ b: Tensor) {
    precondition(a.count == b.count, "residual add: \(a.shape) vs \(b.shape)")
    let probe = OpProfile.begin(.elementwise)
    defer { probe?.end() }
    let count = a.count
    a.data.withUnsafeMutableBufferPointer { pab in
        b.data.withUnsafeBufferPointer { pbb in
            guard let pa = pab.baseAddress, let pb = pbb.baseAddress else { return }
            let blocks = (count + 4095) / 4096
            parallelChunks(blocks, work: count) { r in
                let lo = r.lowerBound * 4096, hi = min(count, r.upperBound * 4096)
                var i = lo
                while i + 8 <= hi { store8(load8(pa + i) + load8(pb + i), pa + i); i += 8 }
                while i < hi { pa[i] += pb[i]; i += 1 }
            }
        }
    }
}

/// x [N, C, H, W] (any trailing dims) + bias [N, C] broadcast over the spatial dims.
/// A bias of C elements ([C] or [1, C]) is shared by every image.
public func addChannelBias(_ x: Tensor, _ bias: Tensor) -> Tensor {
    precondition(x.rank >= 2, "addChannelBias: input must be [N, C, ...], got \(x.shape)")
    let n = x.shape[0], c = x.shape[1]
    precondition(bias.count == n * c || bias.count == c,
                 "addChannelBias: bias \(bias.shape) must have N*C = \(n * c) or C = \(c) elements (x \(x.shape))")
    let spatial = n * c == 0 ? 0 : x.count / (n * c)
    let shared = bias.count != n * c
    let probe = OpProfile.begin(.elementwise)
    defer { probe?.end() }
    var out = x
    out.data.withUnsafeMutableBufferPointer { pob in
        guard let po = pob.baseAddress else { return }
        bias.data.withUnsafeBufferPointer { pbb in
            parallelFor(n * c, work: x.count) { i in
                let v = pbb[shared ? i % c : i]
                let v8 = SIMD8<Float>(repeating: v)
                let p = po + i * spatial
                var j = 0
                while j + 8 <= spatial { store8(load8(p + j) + v8, p + j); j += 8 }
                while j < spatial { p[j] += v; j += 1 }
            }
        }
    }
    return out
}

/// x * s.
public func scale(_ x: Tensor, by s: Float) -> Tensor {
    mapElements(x) { src, dst, n in
        let s8 = SIMD8<Float>(repeating: s)
        var i = 0
        while i + 8 <= n { store8(load8(src + i) * s8, dst + i); i += 8 }
        while i < n { dst[i] = src[i] * s; i += 1 }
    }
}

// GroupNorm (optionally fused with SiLU) and LayerNorm, matching torch.nn.GroupNorm / LayerNorm
// (biased variance, eps inside the square root).

import CDPKernels
import Foundation

/// Group normalisation: x [N, C, ...] in `groups` groups of C/groups channels, then the per-channel
/// affine `weight` [C], `bias` [C]; `silu` applies SiLU to the result in the same pass.
public func groupNorm(_ x: Tensor, groups: Int, weight: Tensor, bias: Tensor, eps: Float,
                      silu: Bool = false) -> Tensor {
    precondition(x.rank >= 2, "groupNorm: input must be [N, C, ...], got \(x.shape)")
    let n = x.shape[0], c = x.shape[1]
    precondition(groups > 0 && c % groups == 0, "groupNorm: \(c) channels not divisible into \(groups) groups")
    precondition(weight.count == c && bias.count == c,
                 "groupNorm: weight/bias have \(weight.count)/\(bias.count) elements, expected \(c)")
    let spatial = c == 0 || n == 0 ? 0 : x.count / (n * c)
    let cpg = c / groups
    let groupSize = cpg * spatial
    let probe = OpProfile.begin(.groupNorm)
    defer { probe?.end() }
    return Tensor(overwriting: x.shape) { out in
        guard let po = out.baseAddress else { return }
        x.data.withUnsafeBufferPointer { pxb in
            weight.data.withUnsafeBufferPointer { pwb in
                bias.data.withUnsafeBufferPointer { pbb in
                    let px = pxb.baseAddress!
                    parallelFor(n * groups, work: x.count * 4) { ng in
                        let g = ng % groups
                        let base = ng * groupSize
                        let (mean, rstd) = meanAndInvStd(px + base, count: groupSize, eps: eps)
                        for cc in 0..<cpg {
                            let ch = g * cpg + cc
                            let a = rstd * pwb[ch]
                            let b = pbb[ch] - mean * a
                            let off = base + cc * spatial
                            affineRow(px + off, po + off, count: spatial, a: a, b: b, silu: silu)
                        }
                    }
                }
            }
        }
    }
}

/// Layer normalisation over the last dimension with `weight`, `bias` of that size.
public func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float) -> Tensor {
    precondition(x.rank >= 1, "layerNorm: input must have rank >= 1")
    let d = x.shape[x.rank - 1]
    precondition(weight.count == d && bias.count == d,
                 "layerNorm: weight/bias have \(weight.count)/\(bias.count) elements, last dimension is \(d) (x \(x.shape))")
    let rows = d == 0 ? 0 : x.count / d
    let probe = OpProfile.begin(.layerNorm)
    defer { probe?.end() }
    return Tensor(overwriting: x.shape) { out in
        guard let po = out.baseAddress else { return }
        x.data.withUnsafeBufferPointer { pxb in
            weight.data.withUnsafeBufferPointer { pwb in
                bias.data.withUnsafeBufferPointer { pbb in
                    let px = pxb.baseAddress!, pw = pwb.baseAddress!, pb = pbb.baseAddress!
                    parallelFor(rows, work: x.count * 4) { r in
                        let src = px + r * d, dst = po + r * d
                        let (mean, rstd) = meanAndInvStd(src, count: d, eps: eps)
                        var i = 0
                        let m8 = SIMD8<Float>(repeating: mean), s8 = SIMD8<Float>(repeating: rstd)
                        while i + 8 <= d {
                            let v = (load8(src + i) - m8) * s8
                            store8(v * load8(pw + i) + load8(pb + i), dst + i)
                            i += 8
                        }
                        while i < d {
                            dst[i] = (src[i] - mean) * rstd * pw[i] + pb[i]
                            i += 1
                        }
                    }
                }
            }
        }
    }
}

/// Mean and 1/sqrt(biased variance + eps) of `count` floats (two passes, Double accumulation of
/// SIMD partial sums over blocks of 4096; four independent vector accumulators per block, so the adds
/// are not one dependency chain).
@inline(__always)
func meanAndInvStd(_ p: UnsafePointer<Float>, count: Int, eps: Float) -> (Float, Float) {
    if count == 0 { return (0, 1 / eps.squareRoot()) }
    var total: Double = 0
    var i = 0
    while i < count {
        let end = min(count, i + 4096)
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        var j = i
        while j + 32 <= end {
            a0 += load8(p + j); a1 += load8(p + j + 8); a2 += load8(p + j + 16); a3 += load8(p + j + 24)
            j += 32
        }
        while j + 8 <= end { a0 += load8(p + j); j += 8 }
        var s = Double(((a0 + a1) + (a2 + a3)).sum())
        while j < end { s += Double(p[j]); j += 1 }
        total += s
        i = end
    }
    let mean = total / Double(count)
    let mf = Float(mean)
    var sq: Double = 0
    i = 0
    let m8 = SIMD8<Float>(repeating: mf)
    while i < count {
        let end = min(count, i + 4096)
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        var j = i
        while j + 32 <= end {
            let d0 = load8(p + j) - m8, d1 = load8(p + j + 8) - m8
            let d2 = load8(p + j + 16) - m8, d3 = load8(p + j + 24) - m8
            a0 += d0 * d0; a1 += d1 * d1; a2 += d2 * d2; a3 += d3 * d3
            j += 32
        }
        while j + 8 <= end { let d = load8(p + j) - m8; a0 += d * d; j += 8 }
        var s = Double(((a0 + a1) + (a2 + a3)).sum())
        while j < end { let d = Double(p[j]) - mean; s += d * d; j += 1 }
        sq += s
        i = end
    }
    let variance = sq / Double(count)
    return (mf, Float(1 / (variance + Double(eps)).squareRoot()))
}

/// dst = a * src + b, optionally followed by SiLU (vectorised in CDPKernels).
@inline(__always)
func affineRow(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, count: Int,
               a: Float, b: Float, silu: Bool) {
    dp_affine(src, dst, count, a, b, silu ? 1 : 0)
}

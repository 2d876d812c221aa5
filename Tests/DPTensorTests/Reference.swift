// Plain, obviously-correct reference implementations (naive loops in Double) and test helpers.

import Foundation
import XCTest
import DPTensor

/// SplitMix64: a small seeded generator so every test input is reproducible.
struct SeededRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    mutating func uniform(_ lo: Float = -1, _ hi: Float = 1) -> Float {
        lo + (hi - lo) * Float(next() >> 40) / Float(1 << 24)
    }
    mutating func tensor(_ shape: [Int], _ lo: Float = -1, _ hi: Float = 1) -> Tensor {
        let n = shape.reduce(1, *)
        return Tensor(shape: shape, data: (0..<n).map { _ in uniform(lo, hi) })
    }
}

/// Asserts same shape and max |a - b| <= tol * max(1, max|expected|).
func assertClose(_ actual: Tensor, _ expected: Tensor, tol: Float = 1e-5, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.shape, expected.shape, "\(what): shape", file: file, line: line)
    guard actual.shape == expected.shape else { return }
    let diff = actual.maxAbsDifference(expected)
    let bound = tol * max(1, expected.maxAbs)
    XCTAssertLessThanOrEqual(diff, bound, "\(what): max abs difference \(diff) > \(bound)", file: file, line: line)
    XCTAssertFalse(actual.data.contains { !$0.isFinite }, "\(what): non-finite output", file: file, line: line)
}

enum Ref {
    static func matmul(_ a: [Float], _ b: [Float], m: Int, n: Int, k: Int, transA: Bool = false, transB: Bool = false,
                       lda: Int, ldb: Int) -> [Double] {
        var c = [Double](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k {
                    let av = transA ? a[p * lda + i] : a[i * lda + p]
                    let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
                    s += Double(av) * Double(bv)
                }
                c[i * n + j] = s
            }
        }
        return c
    }

    static func conv2d(_ x: Tensor, _ w: Tensor, _ bias: Tensor?, stride: Int, pad: Padding2D) -> Tensor {
        let (n, cin, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (cout, kh, kw) = (w.shape[0], w.shape[2], w.shape[3])
        let ho = (h + pad.top + pad.bottom - kh) / stride + 1
        let wo = (wd + pad.left + pad.right - kw) / stride + 1
        var out = [Float](repeating: 0, count: n * cout * ho * wo)
        for b in 0..<n { for co in 0..<cout { for oy in 0..<ho { for ox in 0..<wo {
            var s = Double(bias?.data[co] ?? 0)
            for ci in 0..<cin { for ky in 0..<kh { for kx in 0..<kw {
                let iy = oy * stride - pad.top + ky, ix = ox * stride - pad.left + kx
                if iy < 0 || iy >= h || ix < 0 || ix >= wd { continue }
                s += Double(x.data[((b * cin + ci) * h + iy) * wd + ix]) * Double(w.data[((co * cin + ci) * kh + ky) * kw + kx])
            } } }
            out[((b * cout + co) * ho + oy) * wo + ox] = Float(s)
        } } } }
        return Tensor(shape: [n, cout, ho, wo], data: out)
    }

    static func groupNorm(_ x: Tensor, groups: Int, w: Tensor, b: Tensor, eps: Float, silu: Bool) -> Tensor {
        let n = x.shape[0], c = x.shape[1], s = x.count / (n * c), cpg = c / groups
        var out = x.data
        for bi in 0..<n { for g in 0..<groups {
            var vals: [Double] = []
            for ch in g * cpg..<(g + 1) * cpg { for i in 0..<s { vals.append(Double(x.data[(bi * c + ch) * s + i])) } }
            let mean = vals.reduce(0, +) / Double(vals.count)
            let v = vals.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(vals.count)
            for ch in g * cpg..<(g + 1) * cpg { for i in 0..<s {
                let idx = (bi * c + ch) * s + i
                var y = (Double(x.data[idx]) - mean) / (v + Double(eps)).squareRoot() * Double(w.data[ch]) + Double(b.data[ch])
                if silu { y = y / (1 + Foundation.exp(-y)) }
                out[idx] = Float(y)
            } }
        } }
        return Tensor(shape: x.shape, data: out)
    }

    static func layerNorm(_ x: Tensor, w: Tensor, b: Tensor, eps: Float) -> Tensor {
        let d = x.shape.last!
        var out = x.data
        for r in 0..<(x.count / d) {
            let row = (0..<d).map { Double(x.data[r * d + $0]) }
            let mean = row.reduce(0, +) / Double(d)
            let v = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(d)
            for i in 0..<d {
                out[r * d + i] = Float((row[i] - mean) / (v + Double(eps)).squareRoot() * Double(w.data[i]) + Double(b.data[i]))
            }
        }
        return Tensor(shape: x.shape, data: out)
    }

    static func map(_ x: Tensor, _ f: (Double) -> Double) -> Tensor {
        Tensor(shape: x.shape, data: x.data.map { Float(f(Double($0))) })
    }

    static func gelu(_ v: Double) -> Double { 0.5 * v * (1 + Foundation.erf(v / 2.0.squareRoot())) }

    static func softmaxRows(_ x: [Double], rows: Int, d: Int) -> [Double] {
        var out = x
        for r in 0..<rows {
            let row = x[r * d..<(r + 1) * d]
            let m = row.max()!
            let e = row.map { Foundation.exp($0 - m) }
            let s = e.reduce(0, +)
            for i in 0..<d { out[r * d + i] = e[i] / s }
        }
        return out
    }

    static func attention(q: Tensor, k: Tensor, v: Tensor, heads: Int, scale: Float) -> Tensor {
        let (b, nq, c) = (q.shape[0], q.shape[1], q.shape[2])
        let nk = k.shape[1], d = c / heads
        var out = [Float](repeating: 0, count: b * nq * c)
        for bi in 0..<b { for h in 0..<heads {
            var s = [Double](repeating: 0, count: nq * nk)
            for i in 0..<nq { for j in 0..<nk {
                var acc = 0.0
                for p in 0..<d { acc += Double(q.data[(bi * nq + i) * c + h * d + p]) * Double(k.data[(bi * nk + j) * c + h * d + p]) }
                s[i * nk + j] = acc * Double(scale)
            } }
            let p = softmaxRows(s, rows: nq, d: nk)
            for i in 0..<nq { for e in 0..<d {
                var acc = 0.0
                for j in 0..<nk { acc += p[i * nk + j] * Double(v.data[(bi * nk + j) * c + h * d + e]) }
                out[(bi * nq + i) * c + h * d + e] = Float(acc)
            } }
        } }
        return Tensor(shape: [b, nq, c], data: out)
    }

    /// Element of a C-order tensor at a multi-index.
    static func at(_ t: Tensor, _ idx: [Int]) -> Float {
        var off = 0
        for (d, i) in idx.enumerated() { off = off * t.shape[d] + i }
        return t.data[off]
    }
}

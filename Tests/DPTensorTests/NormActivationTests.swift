import Foundation
import XCTest
@testable import DPTensor

final class NormActivationTests: XCTestCase {
    func testGroupNormWithAndWithoutSiLU() {
        var rng = SeededRandom(seed: 20)
        // (shape, groups): 4-D with odd spatial sizes, 3-D, spatial size 1, one channel per group.
        let cases: [([Int], Int)] = [([2, 12, 5, 7], 4), ([1, 8, 3, 3], 8), ([2, 6, 13], 3), ([3, 4, 1, 1], 2),
                                     ([1, 64, 17, 9], 32)]
        for (shape, groups) in cases {
            // An offset mean makes a one-pass variance lose precision; the kernel must not.
            let x = add(rng.tensor(shape, -2, 2), Tensor(shape: shape, repeating: 3))
            let c = shape[1]
            let w = rng.tensor([c], 0.5, 1.5), b = rng.tensor([c])
            for eps: Float in [1e-5, 1e-6] {
                for fused in [false, true] {
                    let ref = Ref.groupNorm(x, groups: groups, w: w, b: b, eps: eps, silu: fused)
                    assertClose(groupNorm(x, groups: groups, weight: w, bias: b, eps: eps, silu: fused), ref,
                                tol: 2e-5, "groupNorm \(shape) groups \(groups) silu \(fused)")
                }
            }
        }
    }

    func testLayerNorm() {
        var rng = SeededRandom(seed: 21)
        for shape in [[2, 5, 19], [3, 768], [1, 1, 8], [4, 3]] {
            let x = add(rng.tensor(shape, -3, 3), Tensor(shape: shape, repeating: 1))
            let d = shape.last!
            let w = rng.tensor([d]), b = rng.tensor([d])
            assertClose(layerNorm(x, weight: w, bias: b, eps: 1e-5), Ref.layerNorm(x, w: w, b: b, eps: 1e-5),
                        tol: 2e-5, "layerNorm \(shape)")
        }
    }

    func testPointwiseActivations() {
        var rng = SeededRandom(seed: 22)
        // Odd count (SIMD tail) and a wide range including large |x| (sigmoid/erf saturation).
        var x = rng.tensor([3, 7, 11], -12, 12)
        x.data[0] = 0; x.data[1] = -90; x.data[2] = 90
        assertClose(silu(x), Ref.map(x) { $0 / (1 + Foundation.exp(-$0)) }, tol: 2e-6, "silu")
        assertClose(gelu(x), Ref.map(x, Ref.gelu), tol: 2e-6, "gelu")
        assertClose(quickGelu(x), Ref.map(x) { $0 / (1 + Foundation.exp(-1.702 * $0)) }, tol: 2e-6, "quickGelu")
        let big = rng.tensor([70_001], -8, 8)   // large enough to run in parallel
        assertClose(silu(big), Ref.map(big) { $0 / (1 + Foundation.exp(-$0)) }, tol: 2e-6, "silu parallel")
        assertClose(gelu(big), Ref.map(big, Ref.gelu), tol: 2e-6, "gelu parallel")
    }

    func testGeglu() {
        var rng = SeededRandom(seed: 23)
        let x = rng.tensor([2, 3, 26], -4, 4)
        var ref = [Float]()
        for r in 0..<6 {
            for i in 0..<13 {
                let a = Double(x.data[r * 26 + i]), g = Double(x.data[r * 26 + 13 + i])
                ref.append(Float(a * Ref.gelu(g)))
            }
        }
        assertClose(geglu(x), Tensor(shape: [2, 3, 13], data: ref), tol: 2e-6, "geglu")
    }

    func testSoftmaxIsMaxSubtracted() {
        var rng = SeededRandom(seed: 24)
        var x = rng.tensor([4, 3, 21], -5, 5)
        for i in 0..<21 { x.data[i] += 500 }   // would overflow exp without the max subtraction
        let ref = Ref.softmaxRows(x.data.map(Double.init), rows: 12, d: 21).map(Float.init)
        assertClose(softmax(x), Tensor(shape: x.shape, data: ref), tol: 1e-6, "softmax")
    }

    func testTimestepEmbeddingMatchesDiffusersFormula() {
        for (dim, flip, shift) in [(320, true, Float(0)), (33, false, Float(1)), (8, true, Float(1))] {
            let ts: [Float] = [0, 1, 981, 499.5]
            let e = timestepEmbedding(ts, dim: dim, flipSinToCos: flip, downscaleFreqShift: shift)
            XCTAssertEqual(e.shape, [4, dim])
            let half = dim / 2
            for (b, t) in ts.enumerated() {
                for i in 0..<half {
                    let freq = Foundation.exp(-Foundation.log(10000.0) * Double(i) / (Double(half) - Double(shift)))
                    let arg = Double(t) * freq
                    let (first, second) = flip ? (Foundation.cos(arg), Foundation.sin(arg)) : (Foundation.sin(arg), Foundation.cos(arg))
                    // Float32 argument rounding grows with t: allow |t| * 2^-23 relative slack.
                    let tol = 1e-5 + Double(t) * 2e-7
                    XCTAssertEqual(Double(e.data[b * dim + i]), first, accuracy: tol, "dim \(dim) t \(t) i \(i)")
                    XCTAssertEqual(Double(e.data[b * dim + half + i]), second, accuracy: tol, "dim \(dim) t \(t) i \(half + i)")
                }
                if dim % 2 == 1 { XCTAssertEqual(e.data[b * dim + dim - 1], 0, "odd dim pads with 0") }
            }
        }
    }
}

final class VectorMathTests: XCTestCase {
    /// The kernels' vector exp and erf against Foundation over their whole useful range, including the limits.
    func testVectorExpAndErf() {
        var xs: [Float] = [-200, -100, -88, -87.4, -87.3, -50, -1e-3, 0, 1e-7, 0.5, 1, 10, 88, 88.7, 89, 200, .nan]
        var rng = SeededRandom(seed: 50)
        for _ in 0..<4000 { xs.append(rng.uniform(-87, 88)) }
        for _ in 0..<2000 { xs.append(rng.uniform(-6, 6)) }
        let e = vectorExp(xs), r = vectorErf(xs)
        var maxRelExp: Double = 0, maxAbsErf: Double = 0
        for (j, xf) in xs.enumerated() {
            let x = Double(xf)
            if x.isNaN { XCTAssertTrue(e[j].isNaN, "exp(nan)"); continue }
            let ref = Foundation.exp(x)
            if ref < 1.2e-38 {
                XCTAssertLessThanOrEqual(Double(e[j]), 1.2e-38, "exp(\(x)) underflow")
            } else if ref > Double(Float.greatestFiniteMagnitude) {
                XCTAssertEqual(e[j], .infinity, "exp(\(x)) overflow")
            } else {
                maxRelExp = max(maxRelExp, abs(Double(e[j]) - ref) / ref)
            }
            maxAbsErf = max(maxAbsErf, abs(Double(r[j]) - Foundation.erf(x)))
        }
        XCTAssertLessThan(maxRelExp, 5e-7, "exp relative error")
        XCTAssertLessThan(maxAbsErf, 3e-7, "erf absolute error")
    }
}

import Foundation
import XCTest
@testable import DPTensor

final class GemmTests: XCTestCase {
    func testGemmAllTransposesWithStridesAlphaBeta() {
        var rng = SeededRandom(seed: 1)
        let (m, n, k) = (7, 13, 11)
        for transA in [false, true] {
            for transB in [false, true] {
                // Stored matrices with padded rows (ld > logical width).
                let aRows = transA ? k : m, aCols = transA ? m : k, lda = aCols + 3
                let bRows = transB ? n : k, bCols = transB ? k : n, ldb = bCols + 2
                let ldc = n + 5
                let a = (0..<(aRows * lda)).map { _ in rng.uniform() }
                let b = (0..<(bRows * ldb)).map { _ in rng.uniform() }
                let c0 = (0..<(m * ldc)).map { _ in rng.uniform() }
                var c = c0
                let alpha: Float = 0.75, beta: Float = -0.5
                a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
                    gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: pa.baseAddress!, lda: lda,
                         b: pb.baseAddress!, ldb: ldb, beta: beta, c: pc.baseAddress!, ldc: ldc)
                } } }
                let ref = Ref.matmul(a, b, m: m, n: n, k: k, transA: transA, transB: transB, lda: lda, ldb: ldb)
                for i in 0..<m {
                    for j in 0..<ldc {
                        let expected = j < n ? Double(alpha) * ref[i * n + j] + Double(beta) * Double(c0[i * ldc + j])
                                             : Double(c0[i * ldc + j])   // padding untouched
                        XCTAssertEqual(Double(c[i * ldc + j]), expected, accuracy: 1e-4,
                                       "transA \(transA) transB \(transB) at [\(i), \(j)]")
                    }
                }
            }
        }
    }

    func testMatmulRank2Rank3AndSharedRightOperand() {
        var rng = SeededRandom(seed: 2)
        let a = rng.tensor([5, 9]), b = rng.tensor([9, 6]), bt = rng.tensor([6, 9])
        assertClose(matmul(a, b), Tensor(shape: [5, 6], data: Ref.matmul(a.data, b.data, m: 5, n: 6, k: 9, lda: 9, ldb: 6).map(Float.init)), "matmul 2D")
        assertClose(matmul(a, bt, transposeB: true),
                    Tensor(shape: [5, 6], data: Ref.matmul(a.data, bt.data, m: 5, n: 6, k: 9, transB: true, lda: 9, ldb: 9).map(Float.init)),
                    "matmul 2D transposeB")
        // Batched [3, 4, 7] x [3, 7, 5] and shared [7, 5].
        let a3 = rng.tensor([3, 4, 7]), b3 = rng.tensor([3, 7, 5]), b2 = rng.tensor([7, 5])
        let out3 = matmul(a3, b3), outShared = matmul(a3, b2)
        var ref3: [Float] = [], refShared: [Float] = []
        for i in 0..<3 {
            let ai = Array(a3.data[i * 28..<(i + 1) * 28]), bi = Array(b3.data[i * 35..<(i + 1) * 35])
            ref3 += Ref.matmul(ai, bi, m: 4, n: 5, k: 7, lda: 7, ldb: 5).map(Float.init)
            refShared += Ref.matmul(ai, b2.data, m: 4, n: 5, k: 7, lda: 7, ldb: 5).map(Float.init)
        }
        assertClose(out3, Tensor(shape: [3, 4, 5], data: ref3), "matmul batched")
        assertClose(outShared, Tensor(shape: [3, 4, 5], data: refShared), "matmul shared b")
        let b3t = rng.tensor([3, 5, 7])
        var ref3t: [Float] = []
        for i in 0..<3 {
            ref3t += Ref.matmul(Array(a3.data[i * 28..<(i + 1) * 28]), Array(b3t.data[i * 35..<(i + 1) * 35]),
                                m: 4, n: 5, k: 7, transB: true, lda: 7, ldb: 7).map(Float.init)
        }
        assertClose(matmul(a3, b3t, transposeB: true), Tensor(shape: [3, 4, 5], data: ref3t), "matmul batched transposeB")
    }

    func testLinearWithAndWithoutBias() {
        var rng = SeededRandom(seed: 3)
        let x = rng.tensor([2, 5, 19]), w = rng.tensor([23, 19]), bias = rng.tensor([23])
        let ref = Ref.matmul(x.data, w.data, m: 10, n: 23, k: 19, transB: true, lda: 19, ldb: 19)
        let refBias = (0..<ref.count).map { Float(ref[$0] + Double(bias.data[$0 % 23])) }
        assertClose(linear(x, weight: w, bias: nil), Tensor(shape: [2, 5, 23], data: ref.map(Float.init)), "linear")
        assertClose(linear(x, weight: w, bias: bias), Tensor(shape: [2, 5, 23], data: refBias), "linear + bias")
        let x1 = rng.tensor([19])
        var ref1 = [Float](repeating: 0, count: 23)
        for j in 0..<23 {
            var acc = Double(bias.data[j])
            for p in 0..<19 { acc += Double(x1.data[p]) * Double(w.data[j * 19 + p]) }
            ref1[j] = Float(acc)
        }
        assertClose(linear(x1, weight: w, bias: bias), Tensor(shape: [23], data: ref1), "linear rank 1")
    }

    /// The residual add fused into the product: residual + x W^T (+ bias), with and without bias, on enough rows
    /// (3000 x 37 outputs) that the seeding pass runs on every engine thread, and odd widths for the vector tail.
    func testLinearWithResidual() {
        var rng = SeededRandom(seed: 5)
        for (rows, inF, outF) in [(7, 19, 23), (3000, 13, 37)] {
            let x = rng.tensor([rows, inF]), w = rng.tensor([outF, inF]), bias = rng.tensor([outF])
            let residual = rng.tensor([rows, outF], -3, 3)
            let ref = Ref.matmul(x.data, w.data, m: rows, n: outF, k: inF, transB: true, lda: inF, ldb: inF)
            let refRes = (0..<ref.count).map { Float(ref[$0] + Double(residual.data[$0])) }
            let refBoth = (0..<ref.count).map { Float(ref[$0] + Double(residual.data[$0]) + Double(bias.data[$0 % outF])) }
            assertClose(linear(x, weight: w, bias: nil, residual: residual), Tensor(shape: [rows, outF], data: refRes),
                        "linear + residual, \(rows) rows")
            assertClose(linear(x, weight: w, bias: bias, residual: residual),
                        Tensor(shape: [rows, outF], data: refBoth), "linear + bias + residual, \(rows) rows")
        }
    }

    func testThreadCountDoesNotChangeResults() {
        var rng = SeededRandom(seed: 4)
        let x = rng.tensor([2, 8, 9, 7]), w = rng.tensor([6, 8, 3, 3]), b = rng.tensor([6])
        EngineThreads.configure(1)
        XCTAssertEqual(EngineThreads.count, 1)
        let one = conv2d(x, weight: w, bias: b, padding: .symmetric(1))
        let gn1 = groupNorm(rng.tensor([1, 64, 40, 40]), groups: 8, weight: Tensor(shape: [64], repeating: 1),
                            bias: Tensor(zeros: [64]), eps: 1e-5)
        EngineThreads.configure(0)   // all cores
        XCTAssertEqual(EngineThreads.count, ProcessInfo.processInfo.activeProcessorCount)
        let all = conv2d(x, weight: w, bias: b, padding: .symmetric(1))
        assertClose(all, one, tol: 1e-6, "conv2d 1 thread vs all")
        XCTAssertEqual(gn1.shape, [1, 64, 40, 40])
    }
}

/// proj_in / proj_out straight between NCHW and token rows: the same numbers as the transpose, the linear and
/// the residual add done one after the other, on odd sizes (3 x 5 pixels, 7 channels, 2 images).
final class ProjectionTests: XCTestCase {
    func testProjectionsBetweenChannelsAndTokens() {
        var rng = SeededRandom(seed: 6)
        let x = rng.tensor([2, 7, 3, 5]), wIn = rng.tensor([11, 7]), bIn = rng.tensor([11])
        for bias in [bIn, nil] {
            let expected = linear(toTokens(x), weight: wIn, bias: bias)
            assertClose(linearFromChannels(x, weight: wIn, bias: bias), expected, "proj_in, bias \(bias != nil)")
        }
        let tokens = rng.tensor([2, 15, 11]), wOut = rng.tensor([7, 11]), bOut = rng.tensor([7])
        let residual = rng.tensor([2, 7, 3, 5], -4, 4)
        for (bias, res) in [(bOut, residual), (nil, residual), (bOut, nil), (nil, nil)] as [(Tensor?, Tensor?)] {
            var expected = fromTokens(linear(tokens, weight: wOut, bias: bias), height: 3, width: 5)
            if let res { addInPlace(&expected, res) }
            assertClose(linearToChannels(tokens, weight: wOut, bias: bias, residual: res, height: 3, width: 5),
                        expected, "proj_out, bias \(bias != nil), residual \(res != nil)")
        }
    }
}

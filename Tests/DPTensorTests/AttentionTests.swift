import CDPKernels
import XCTest
@testable import DPTensor

/// Runs `body` with every kernel dispatching at most at `level` (2 AVX-512, 1 AVX2, 0 portable), so each build
/// of the kernels is checked on this machine; gives the level that ran (lower when the CPU lacks it).
func withSIMDLevel(_ level: Int32, _ body: (Int32) throws -> Void) rethrows {
    let used = dp_simd_cap(level)
    defer { dp_simd_cap(2) }
    try body(used)
}

final class AttentionTests: XCTestCase {
    // (B, Nq, Nk, C, heads)
    // Head dims 8, 16, 5, 3, 8, 16, 40, 80, 160, 1, 7 (not multiples of the 5 value columns or the vectors),
    // query counts off the 16/64-query blocks, key counts off the 6-key blocks, and key counts past the 96-key
    // chunk (the online softmax rescales earlier chunks' sums when a later chunk has a larger score).
    static let cases = [(2, 13, 7, 24, 3), (1, 5, 16, 16, 1), (2, 9, 9, 40, 8), (1, 1, 3, 6, 2), (1, 33, 50, 32, 4),
                        (1, 300, 70, 64, 4),   // many (head, block) jobs: runs on all engine threads
                        (2, 17, 33, 80, 2), (1, 7, 65, 160, 2), (1, 12, 31, 320, 2),
                        (1, 70, 97, 40, 1), (1, 65, 300, 80, 2), (2, 129, 1000, 40, 1), (1, 3, 193, 7, 7),
                        (1, 66, 200, 14, 2)]

    func testAttentionSeveralHeadsAndUnequalLengths() {
        for level: Int32 in [2, 1, 0] {
            withSIMDLevel(level) { used in
                var rng = SeededRandom(seed: 30)
                for (b, nq, nk, c, heads) in Self.cases {
                    let q = rng.tensor([b, nq, c], -2, 2), k = rng.tensor([b, nk, c], -2, 2), v = rng.tensor([b, nk, c])
                    let s = 1 / Float(c / heads).squareRoot()
                    let ref = Ref.attention(q: q, k: k, v: v, heads: heads, scale: s)
                    let label = "attention (SIMD level \(used)) B \(b) Nq \(nq) Nk \(nk) C \(c) heads \(heads)"
                    assertClose(attention(query: q, key: k, value: v, heads: heads, scale: s), ref, tol: 1e-5, label)
                }
            }
        }
    }

    /// Scores that grow along the keys (each later chunk holds a new maximum, so every chunk rescales what came
    /// before) and spread over ~150 (terms ~e^-150 of the largest must vanish, not overflow or turn NaN).
    func testScoresRisingAcrossChunksAndWideSpread() {
        for level: Int32 in [2, 1, 0] {
            withSIMDLevel(level) { used in
                var rng = SeededRandom(seed: 31)
                let (nq, nk, c) = (37, 500, 16)
                var qd = [Float](repeating: 0, count: nq * c), kd = [Float](repeating: 0, count: nk * c)
                for i in 0..<nq { qd[i * c] = 1 + Float(i % 5) * 0.1 }      // q = e_0 scaled per row
                for j in 0..<nk {
                    kd[j * c] = -75 + 150 * Float(j) / Float(nk - 1)        // score rises from -75 to 75 (x row scale)
                    for p in 1..<c { kd[j * c + p] = Float(p) }             // other features meet q's zeros
                }
                let q = Tensor(shape: [1, nq, c], data: qd), k = Tensor(shape: [1, nk, c], data: kd)
                let v = rng.tensor([1, nk, c])
                let ref = Ref.attention(q: q, k: k, v: v, heads: 1, scale: 1)
                assertClose(attention(query: q, key: k, value: v, heads: 1, scale: 1), ref, tol: 1e-5,
                            "rising scores (SIMD level \(used))")
            }
        }
    }

    func testNaNInAQueryGivesNaNRowsOnlyThere() {
        for level: Int32 in [2, 1, 0] {
            withSIMDLevel(level) { used in
                var rng = SeededRandom(seed: 32)
                var q = rng.tensor([1, 20, 8], -1, 1)
                let k = rng.tensor([1, 150, 8], -1, 1), v = rng.tensor([1, 150, 8])
                q.data[3 * 8 + 2] = .nan                                    // row 3, head 0 (channels 0..<4)
                let out = attention(query: q, key: k, value: v, heads: 2, scale: 0.5)
                for i in 0..<20 {
                    for ch in 0..<8 {
                        let x = out.data[i * 8 + ch]
                        if i == 3 && ch < 4 {
                            XCTAssertTrue(x.isNaN, "SIMD level \(used): row 3 head 0 must be NaN, got \(x)")
                        } else {
                            XCTAssertTrue(x.isFinite, "SIMD level \(used): row \(i) channel \(ch) = \(x)")
                        }
                    }
                }
            }
        }
    }

    /// The stacked forms read q, k, v (or k, v) side by side in one row: the same numbers as separate tensors.
    func testStackedQKVAndKVMatchSeparateTensors() {
        var rng = SeededRandom(seed: 33)
        for (b, n, m, c, heads) in [(2, 70, 101, 24, 3), (1, 130, 7, 80, 2)] {
            let qkv = rng.tensor([b, n, 3 * c], -2, 2)
            let q = slice(qkv, axis: 2, range: 0..<c), k = slice(qkv, axis: 2, range: c..<2 * c)
            let v = slice(qkv, axis: 2, range: 2 * c..<3 * c)
            let s = 1 / Float(c / heads).squareRoot()
            let expected = Ref.attention(q: q, k: k, v: v, heads: heads, scale: s)
            assertClose(attention(qkv: qkv, heads: heads, scale: s), expected, tol: 1e-5, "qkv B \(b) N \(n) C \(c)")
            let kv = rng.tensor([b, m, 2 * c], -2, 2)
            let expectedCross = Ref.attention(q: q, k: slice(kv, axis: 2, range: 0..<c),
                                              v: slice(kv, axis: 2, range: c..<2 * c), heads: heads, scale: s)
            assertClose(attention(query: q, kv: kv, heads: heads, scale: s), expectedCross, tol: 1e-5,
                        "kv B \(b) Nq \(n) Nk \(m) C \(c)")
        }
    }

    func testNoKeysOrNoQueriesGiveZeros() {
        let q = Tensor(shape: [1, 3, 4], repeating: 1), none = Tensor(zeros: [1, 0, 4])
        XCTAssertEqual(attention(query: q, key: none, value: none, heads: 2, scale: 1), Tensor(zeros: [1, 3, 4]))
        XCTAssertEqual(attention(query: none, key: q, value: q, heads: 2, scale: 1).shape, [1, 0, 4])
    }
}

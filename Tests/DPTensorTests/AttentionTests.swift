import XCTest
@testable import DPTensor

final class AttentionTests: XCTestCase {
    func testAttentionSeveralHeadsAndUnequalLengths() {
        var rng = SeededRandom(seed: 30)
        // (B, Nq, Nk, C, heads)
        let cases = [(2, 13, 7, 24, 3), (1, 5, 16, 16, 1), (2, 9, 9, 40, 8), (1, 1, 3, 6, 2), (1, 33, 50, 32, 4),
                     (1, 300, 70, 64, 4)]   // many (head, tile) jobs: runs on all engine threads
        for (b, nq, nk, c, heads) in cases {
            let q = rng.tensor([b, nq, c], -2, 2), k = rng.tensor([b, nk, c], -2, 2), v = rng.tensor([b, nk, c])
            let s = 1 / Float(c / heads).squareRoot()
            let ref = Ref.attention(q: q, k: k, v: v, heads: heads, scale: s)
            let label = "attention B \(b) Nq \(nq) Nk \(nk) C \(c) heads \(heads)"
            assertClose(attention(query: q, key: k, value: v, heads: heads, scale: s), ref, tol: 1e-5, label)
            // Score tiles of 1 row and of a few rows.
            for tile in [1, 4 * nk] {
                assertClose(attention(query: q, key: k, value: v, heads: heads, scale: s, tileFloats: tile), ref,
                            tol: 1e-5, "\(label) tile \(tile)")
            }
        }
    }
}

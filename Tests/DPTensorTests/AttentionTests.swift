import XCTest
@testable import DPTensor

final class AttentionTests: XCTestCase {
    func testAttentionSeveralHeadsAndUnequalLengths() {
        var rng = SeededRandom(seed: 30)
        // (B, Nq, Nk, C, heads)
        // Head dims 8, 16, 5, 3, 8, 16, 40, 80, 160 (not multiples of the 16-float vectors, several vectors of V,
        // more than the 3 vectors of V kept in registers at once), query counts off the 6-row blocks, key counts
        // off the 32-key padding.
        let cases = [(2, 13, 7, 24, 3), (1, 5, 16, 16, 1), (2, 9, 9, 40, 8), (1, 1, 3, 6, 2), (1, 33, 50, 32, 4),
                     (1, 300, 70, 64, 4),   // many (head, block) jobs: runs on all engine threads
                     (2, 17, 33, 80, 2), (1, 7, 65, 160, 2), (1, 12, 31, 320, 2)]
        for (b, nq, nk, c, heads) in cases {
            let q = rng.tensor([b, nq, c], -2, 2), k = rng.tensor([b, nk, c], -2, 2), v = rng.tensor([b, nk, c])
            let s = 1 / Float(c / heads).squareRoot()
            let ref = Ref.attention(q: q, k: k, v: v, heads: heads, scale: s)
            let label = "attention B \(b) Nq \(nq) Nk \(nk) C \(c) heads \(heads)"
            assertClose(attention(query: q, key: k, value: v, heads: heads, scale: s), ref, tol: 1e-5, label)
        }
    }

    func testNoKeysOrNoQueriesGiveZeros() {
        let q = Tensor(shape: [1, 3, 4], repeating: 1), none = Tensor(zeros: [1, 0, 4])
        XCTAssertEqual(attention(query: q, key: none, value: none, heads: 2, scale: 1), Tensor(zeros: [1, 3, 4]))
        XCTAssertEqual(attention(query: none, key: q, value: q, heads: 2, scale: 1).shape, [1, 0, 4])
    }
}

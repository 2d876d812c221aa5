// Multi-head scaled dot-product attention (diffusers `Attention` core, after the q/k/v projections).

/// Upper bound on one score tile, in floats (64 MB).
let attentionScoreTileFloats = 16 << 20

/// query [B, Nq, C], key/value [B, Nk, C], C = heads * headDim -> [B, Nq, C]:
/// per (batch, head) softmax(scale * Q_h K_h^T) V_h.
///
/// Heads are read in place (row stride C), so nothing is gathered. Scores are computed for a tile of
/// queries at a time ([T, Nk], at most `attentionScoreTileFloats` unless one row needs more), so at most
/// one head's [Nq, Nk] score matrix exists at any time.
public func attention(query: Tensor, key: Tensor, value: Tensor, heads: Int, scale: Float) -> Tensor {
    attention(query: query, key: key, value: value, heads: heads, scale: scale,
              tileFloats: attentionScoreTileFloats)
}

/// `attention` with an explicit score-tile bound (tests use small bounds to exercise the tiling).
func attention(query: Tensor, key: Tensor, value: Tensor, heads: Int, scale: Float, tileFloats: Int) -> Tensor {
    precondition(query.rank == 3 && key.rank == 3 && value.rank == 3,
                 "attention: query/key/value must be [B, N, C], got \(query.shape) \(key.shape) \(value.shape)")
    let b = query.shape[0], nq = query.shape[1], c = query.shape[2]
    let nk = key.shape[1]
    precondition(key.shape[0] == b && value.shape[0] == b && value.shape[1] == nk,
                 "attention: batch/token counts disagree: query \(query.shape), key \(key.shape), value \(value.shape)")
    precondition(key.shape[2] == c && value.shape[2] == c,
                 "attention: channel counts disagree: query \(query.shape), key \(key.shape), value \(value.shape)")
    precondition(heads > 0 && c % heads == 0, "attention: \(c) channels not divisible into \(heads) heads")
    let d = c / heads
    let tile = max(1, min(nq, tileFloats / max(1, nk)))
    return Tensor(shape: [b, nq, c]) { out in
        guard let po = out.baseAddress, nq > 0, nk > 0 else { return }
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: tile * nk)   // [T, Nk]
        defer { scores.deallocate() }
        query.data.withUnsafeBufferPointer { pqb in
            key.data.withUnsafeBufferPointer { pkb in
                value.data.withUnsafeBufferPointer { pvb in
                    let pq = pqb.baseAddress!, pk = pkb.baseAddress!, pv = pvb.baseAddress!
                    for bi in 0..<b {
                        for h in 0..<heads {
                            let qh = pq + bi * nq * c + h * d   // [Nq, d], row stride C
                            let kh = pk + bi * nk * c + h * d   // [Nk, d], row stride C
                            let vh = pv + bi * nk * c + h * d   // [Nk, d], row stride C
                            let oh = po + bi * nq * c + h * d   // [Nq, d], row stride C
                            var q0 = 0
                            while q0 < nq {
                                let t = min(tile, nq - q0)
                                // scores [T, Nk] = scale * Q_h[q0..<q0+T] K_h^T
                                gemm(transB: true, m: t, n: nk, k: d, alpha: scale, a: qh + q0 * c, lda: c,
                                     b: kh, ldb: c, c: scores, ldc: nk)
                                parallelFor(t, work: t * nk * 8) { r in softmaxRowInPlace(scores + r * nk, count: nk) }
                                // out[q0..<q0+T, head] = P [T, Nk] x V_h [Nk, d]
                                gemm(m: t, n: d, k: nk, a: scores, lda: nk, b: vh, ldb: c,
                                     c: oh + q0 * c, ldc: c)
                                q0 += t
                            }
                        }
                    }
                }
            }
        }
    }
}

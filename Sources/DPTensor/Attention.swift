// Multi-head scaled dot-product attention (diffusers `Attention` core, after the q/k/v projections).

import CDPKernels
import Synchronization

/// Upper bound on one score tile, in floats (4 MB: 256 queries against 4096 keys; measured fastest here).
let attentionScoreTileFloats = 1 << 20

/// query [B, Nq, C], key/value [B, Nk, C], C = heads * headDim -> [B, Nq, C]:
/// per (batch, head) softmax(scale * Q_h K_h^T) V_h.
///
/// Heads are read in place (row stride C), so nothing is gathered. The work is split into jobs of
/// (batch, head, tile of T queries); each engine thread runs whole jobs with its own score buffer
/// [T, Nk] (T = `attentionScoreTileFloats` / Nk, at least 1) and single-threaded BLAS:
/// scores = scale * Q_tile K_h^T, exp(scores - row max) in place, out_tile = exp V_h / row sum. So at most one tile per
/// thread exists at a time, never a full [Nq, Nk] score matrix per head.
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
    let tilesPerHead = nq == 0 ? 0 : (nq + tile - 1) / tile
    let jobs = b * heads * tilesPerHead
    let profiling = OpProfile.isOn
    let phases = AttentionPhaseTimes()
    let wallStart = profiling ? monotonicSeconds() : 0
    defer {
        if profiling {
            let productFLOPs = 2 * Double(b * heads) * Double(nq) * Double(nk) * Double(d)
            phases.attribute(wall: monotonicSeconds() - wallStart, scoresFLOPs: productFLOPs,
                             valuesFLOPs: productFLOPs)
        }
    }
    return Tensor(shape: [b, nq, c]) { out in
        guard let po = out.baseAddress, nq > 0, nk > 0 else { return }
        query.data.withUnsafeBufferPointer { pqb in
            key.data.withUnsafeBufferPointer { pkb in
                value.data.withUnsafeBufferPointer { pvb in
                    let pq = pqb.baseAddress!, pk = pkb.baseAddress!, pv = pvb.baseAddress!
                    EngineThreads.withSingleThreadedBLAS {
                        parallelChunks(jobs, work: jobs * tile * nk * d) { range in
                            let scores = UnsafeMutablePointer<Float>.allocate(capacity: tile * nk)   // [T, Nk]
                            let inverseSums = UnsafeMutablePointer<Float>.allocate(capacity: tile)   // [T]
                            defer { scores.deallocate(); inverseSums.deallocate() }
                            for job in range {
                                let q0 = (job % tilesPerHead) * tile
                                let h = (job / tilesPerHead) % heads
                                let bi = job / (tilesPerHead * heads)
                                let t = min(tile, nq - q0)
                                let qh = pq + (bi * nq + q0) * c + h * d   // [T, d], row stride C
                                let kh = pk + bi * nk * c + h * d          // [Nk, d], row stride C
                                let vh = pv + bi * nk * c + h * d          // [Nk, d], row stride C
                                let oh = po + (bi * nq + q0) * c + h * d   // [T, d], row stride C
                                let t0 = profiling ? monotonicSeconds() : 0
                                // scores [T, Nk] = scale * Q_tile K_h^T
                                gemm(transB: true, m: t, n: nk, k: d, alpha: scale, a: qh, lda: c,
                                     b: kh, ldb: c, c: scores, ldc: nk)
                                let t1 = profiling ? monotonicSeconds() : 0
                                // exp(s - max) per row; the division by the row sum is applied to the
                                // [T, d] output row instead of the [T, Nk] probabilities (one pass less).
                                for r in 0..<t { inverseSums[r] = dp_softmax_row_unnormalized(scores + r * nk, nk) }
                                let t2 = profiling ? monotonicSeconds() : 0
                                // out_tile [T, d] = exp [T, Nk] x V_h [Nk, d], then row r / sum_r
                                gemm(m: t, n: d, k: nk, a: scores, lda: nk, b: vh, ldb: c, c: oh, ldc: c)
                                for r in 0..<t {
                                    let row = oh + r * c, inv = inverseSums[r]
                                    for j in 0..<d { row[j] *= inv }
                                }
                                if profiling { phases.add(scores: t1 - t0, softmax: t2 - t1, values: monotonicSeconds() - t2) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Thread time spent in attention's three phases during one call, summed over the engine threads; the
/// call's wall time is split between the phases in proportion (the profile's attention lines).
final class AttentionPhaseTimes: Sendable {
    private let seconds = Mutex<(scores: Double, softmax: Double, values: Double)>((0, 0, 0))

    func add(scores: Double, softmax: Double, values: Double) {
        seconds.withLock { $0.scores += scores; $0.softmax += softmax; $0.values += values }
    }

    func attribute(wall: Double, scoresFLOPs: Double, valuesFLOPs: Double) {
        let s = seconds.withLock { $0 }
        let total = s.scores + s.softmax + s.values
        let share = total > 0 ? wall / total : 0
        OpProfile.record(.attentionScores, seconds: s.scores * share, flops: scoresFLOPs)
        OpProfile.record(.softmax, seconds: s.softmax * share, flops: 0)
        OpProfile.record(.attentionValues, seconds: s.values * share, flops: valuesFLOPs)
    }
}

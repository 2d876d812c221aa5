// Multi-head scaled dot-product attention (diffusers `Attention` core, after the q/k/v projections).

import CDPKernels

/// query [B, Nq, C], key/value [B, Nk, C], C = heads * headDim -> [B, Nq, C]:
/// per (batch, head) softmax(scale * Q_h K_h^T) V_h.
///
/// Fused (CDPKernels attention.c): each head's keys and values are packed once (K^T [d, Nk] and V [Nk, d],
/// padded to whole vectors); then every block of 48 query rows computes its scores, softmax and product with
/// the values, key chunk by key chunk with everything in cache, so no [Nq, Nk] score matrix, no score tile
/// through BLAS and no packing per tile. Blocks are spread over the engine threads in contiguous runs (a thread
/// stays on one head's packed keys).
public func attention(query: Tensor, key: Tensor, value: Tensor, heads: Int, scale: Float) -> Tensor {
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
    let probe = OpProfile.begin(.attention, flops: 4 * Double(b * heads) * Double(nq) * Double(nk) * Double(d))
    defer { probe?.end() }
    guard b > 0, nq > 0, nk > 0, d > 0 else { return Tensor(zeros: [b, nq, c]) }
    let keyPad = dp_attention_key_padding()
    let nkp = (nk + keyPad - 1) / keyPad * keyPad   // keys padded to whole register blocks
    let dp = (d + 15) / 16 * 16                 // value columns padded to whole vectors
    let headFloats = d * nkp + nk * dp          // K^T [d, nkp] then V [nk, dp]
    let rowsPerCall = dp_attention_rows_per_call()
    let blocks = (nq + rowsPerCall - 1) / rowsPerCall
    let jobs = b * heads * blocks
    return Tensor(overwriting: [b, nq, c]) { out in
        guard let po = out.baseAddress else { return }
        query.data.withUnsafeBufferPointer { pqb in
        key.data.withUnsafeBufferPointer { pkb in
        value.data.withUnsafeBufferPointer { pvb in
        engineScratch.withBuffer(floats: b * heads * headFloats) { packed in
            let pq = pqb.baseAddress!, pk = pkb.baseAddress!, pv = pvb.baseAddress!
            parallelFor(b * heads, work: b * heads * headFloats) { bh in
                let bi = bh / heads, h = bh % heads
                let kt = packed + bh * headFloats
                dp_attention_pack_head(pk + bi * nk * c + h * d, pv + bi * nk * c + h * d, nk, c, d,
                                       kt, nkp, kt + d * nkp, dp)
            }
            parallelChunks(jobs, work: jobs * rowsPerCall * nk * d * 4) { range in
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: dp_attention_scratch_floats(nkp, d))
                defer { scratch.deallocate() }
                for job in range {
                    let bh = job / blocks, q0 = (job % blocks) * rowsPerCall
                    let bi = bh / heads, h = bh % heads
                    let kt = packed + bh * headFloats
                    let row = (bi * nq + q0) * c + h * d       // [rows, d] at row stride C
                    dp_attention_rows(pq + row, c, min(rowsPerCall, nq - q0), kt, nkp, kt + d * nkp, dp, nk, d, scale,
                                      scratch, po + row, c)
                }
            }
        }
        }
        }
        }
    }
}

// Multi-head scaled dot-product attention (diffusers `Attention` core, after the q/k/v projections).

import CDPKernels

/// query [B, Nq, C], key/value [B, Nk, C], C = heads * headDim -> [B, Nq, C]:
/// per (batch, head) softmax(scale * Q_h K_h^T) V_h.
///
/// Fused, flash style (CDPKernels attention.c): each head's keys and values are packed once (K [Nk, d] and
/// V [Nk, d], dense); then every block of query rows (64 on AVX-512, 16 on AVX2) computes its scores, an online
/// softmax and the product with the values key chunk by key chunk with everything in cache, so no [Nq, Nk]
/// score matrix, no score row through L2 and no packing per tile. Blocks are spread over the engine threads in contiguous runs (a thread
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
    let nkp = (nk + keyPad - 1) / keyPad * keyPad   // keys padded to whole register blocks (zero rows)
    let headFloats = nkp * d + nk * d               // K [nkp, d] then V [nk, d]
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
                let kp = packed + bh * headFloats
                dp_attention_pack_head(pk + bi * nk * c + h * d, pv + bi * nk * c + h * d, nk, c, d,
                                       kp, nkp, kp + nkp * d)
            }
            parallelChunks(jobs, work: jobs * rowsPerCall * nk * d * 4) { range in
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: dp_attention_scratch_floats(d))
                defer { scratch.deallocate() }
                for job in range {
                    let bh = job / blocks, q0 = (job % blocks) * rowsPerCall
                    let bi = bh / heads, h = bh % heads
                    let kp = packed + bh * headFloats
                    let row = (bi * nq + q0) * c + h * d       // [rows, d] at row stride C
                    dp_attention_rows(pq + row, c, min(rowsPerCall, nq - q0), kp, kp + nkp * d, nk, d, scale,
                                      scratch, po + row, c)
                }
            }
        }
        }
        }
        }
    }
}

// Multi-head scaled dot-product attention (diffusers `Attention` core, after the q/k/v projections).

import CDPKernels

/// query [B, Nq, C], key/value [B, Nk, C], C = heads * headDim -> [B, Nq, C]:
/// per (batch, head) softmax(scale * Q_h K_h^T) V_h.
///
/// Fused, flash style (CDPKernels attention.c): each head's keys and values are packed once (K [Nk, d] and
/// V [Nk, d], dense); then every block of query rows (64 on AVX-512, 16 on AVX2) computes its scores, an online
/// softmax and the product with the values key chunk by key chunk with everything in cache, so no [Nq, Nk]
/// score matrix, no score row through L2 and no packing per tile. Blocks are spread over the engine threads in
/// contiguous runs (a thread stays on one head's packed keys).
public func attention(query: Tensor, key: Tensor, value: Tensor, heads: Int, scale: Float) -> Tensor {
    precondition(query.rank == 3 && key.rank == 3 && value.rank == 3,
                 "attention: query/key/value must be [B, N, C], got \(query.shape) \(key.shape) \(value.shape)")
    let c = query.shape[2]
    precondition(key.shape[0] == query.shape[0] && value.shape[0] == query.shape[0] && value.shape[1] == key.shape[1],
                 "attention: batch/token counts disagree: query \(query.shape), key \(key.shape), value \(value.shape)")
    precondition(key.shape[2] == c && value.shape[2] == c,
                 "attention: channel counts disagree: query \(query.shape), key \(key.shape), value \(value.shape)")
    return query.data.withUnsafeBufferPointer { pq in
        key.data.withUnsafeBufferPointer { pk in
            value.data.withUnsafeBufferPointer { pv in
                attentionCore(q: AttentionOperand(pq, tokens: query.shape[1], stride: c),
                              k: AttentionOperand(pk, tokens: key.shape[1], stride: c),
                              v: AttentionOperand(pv, tokens: key.shape[1], stride: c),
                              batch: query.shape[0], channels: c, heads: heads, scale: scale)
            }
        }
    }
}

/// Self-attention over one stacked projection: qkv [B, N, 3C] holds q, k and v side by side in each token's row
/// (to_q, to_k and to_v computed as one product) -> [B, N, C].
public func attention(qkv: Tensor, heads: Int, scale: Float) -> Tensor {
    precondition(qkv.rank == 3 && qkv.shape[2] % 3 == 0, "attention: qkv must be [B, N, 3C], got \(qkv.shape)")
    let c = qkv.shape[2] / 3, n = qkv.shape[1]
    return qkv.data.withUnsafeBufferPointer { p in
        attentionCore(q: AttentionOperand(p, tokens: n, stride: 3 * c), k: AttentionOperand(p, tokens: n, stride: 3 * c, offset: c),
                      v: AttentionOperand(p, tokens: n, stride: 3 * c, offset: 2 * c),
                      batch: qkv.shape[0], channels: c, heads: heads, scale: scale)
    }
}

/// Cross-attention with keys and values from one stacked projection: query [B, Nq, C], kv [B, Nk, 2C] (k then v
/// in each context token's row) -> [B, Nq, C].
public func attention(query: Tensor, kv: Tensor, heads: Int, scale: Float) -> Tensor {
    precondition(query.rank == 3 && kv.rank == 3 && kv.shape[0] == query.shape[0] && kv.shape[2] == 2 * query.shape[2],
                 "attention: kv must be [B, Nk, 2C] for query [B, Nq, C], got query \(query.shape), kv \(kv.shape)")
    let c = query.shape[2], nk = kv.shape[1]
    return query.data.withUnsafeBufferPointer { pq in
        kv.data.withUnsafeBufferPointer { pkv in
            attentionCore(q: AttentionOperand(pq, tokens: query.shape[1], stride: c),
                          k: AttentionOperand(pkv, tokens: nk, stride: 2 * c),
                          v: AttentionOperand(pkv, tokens: nk, stride: 2 * c, offset: c),
                          batch: query.shape[0], channels: c, heads: heads, scale: scale)
        }
    }
}

/// C channels of `tokens` rows per batch element, `stride` floats apart, starting `offset` floats into each row.
struct AttentionOperand {
    let base: UnsafePointer<Float>?
    let tokens: Int
    let stride: Int
    let offset: Int

    init(_ buffer: UnsafeBufferPointer<Float>, tokens: Int, stride: Int, offset: Int = 0) {
        base = buffer.baseAddress
        self.tokens = tokens
        self.stride = stride
        self.offset = offset
    }

    /// Row `token` of batch element `batch`, channel `channel`.
    func at(batch: Int, token: Int, channel: Int) -> UnsafePointer<Float> {
        base! + (batch * tokens + token) * stride + offset + channel
    }
}

private func attentionCore(q: AttentionOperand, k: AttentionOperand, v: AttentionOperand, batch b: Int, channels c: Int,
                           heads: Int, scale: Float) -> Tensor {
    precondition(heads > 0 && c % heads == 0, "attention: \(c) channels not divisible into \(heads) heads")
    let nq = q.tokens, nk = k.tokens, d = c / heads
    let probe = OpProfile.begin(.attention, flops: 4 * Double(b * heads) * Double(nq) * Double(nk) * Double(d))
    defer { probe?.end() }
    guard b > 0, nq > 0, nk > 0, d > 0 else { return Tensor(zeros: [b, nq, c]) }
    let keyPad = dp_attention_key_padding()
    let nkp = (nk + keyPad - 1) / keyPad * keyPad   // keys padded to whole register blocks (zero rows)
    let headFloats = nkp * d + nk * d               // K [nkp, d] then V [nk, d]
    let rowsPerCall = dp_attention_rows_per_call()
    let blocks = (nq + rowsPerCall - 1) / rowsPerCall
    let jobs = b * heads * blocks
    precondition(k.stride == v.stride, "attention: keys and values must share a row stride")
    return Tensor(overwriting: [b, nq, c]) { out in
        guard let po = out.baseAddress else { return }
        engineScratch.withBuffer(floats: b * heads * headFloats) { packed in
            parallelFor(b * heads, work: b * heads * headFloats) { bh in
                let bi = bh / heads, h = bh % heads
                let kp = packed + bh * headFloats
                dp_attention_pack_head(k.at(batch: bi, token: 0, channel: h * d), v.at(batch: bi, token: 0, channel: h * d),
                                       nk, k.stride, d, kp, nkp, kp + nkp * d)
            }
            parallelChunks(jobs, work: jobs * rowsPerCall * nk * d * 4) { range in
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: dp_attention_scratch_floats(d))
                defer { scratch.deallocate() }
                for job in range {
                    let bh = job / blocks, q0 = (job % blocks) * rowsPerCall
                    let bi = bh / heads, h = bh % heads
                    let kp = packed + bh * headFloats
                    dp_attention_rows(q.at(batch: bi, token: q0, channel: h * d), q.stride, min(rowsPerCall, nq - q0),
                                      kp, kp + nkp * d, nk, d, scale, scratch,
                                      po + (bi * nq + q0) * c + h * d, c)     // [rows, d] at row stride C
                }
            }
        }
    }
}

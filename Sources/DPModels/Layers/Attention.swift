// This implementation matches diffusers' Attention with AttnProcessor2_0
// (models/attention_processor.py) for the cases SD-1.x uses: to_q / to_k / to_v
// (bias optional), scaled dot-product attention over `heads` heads with scale
// 1/sqrt(head_dim), then to_out.0 (with bias). No masks, no norms inside.

import DPTensor

public struct Attention: Sendable {
    public let heads: Int
    public let headDim: Int
    /// The input projections, stacked so one product reads its input once (and runs with 3x or 2x the columns):
    /// self-attention: to_q, to_k, to_v as one [3*inner, queryDim] (rows in that order); cross-attention: to_q
    /// alone and to_k, to_v as one [2*inner, kvDim] over the context. Only the stacked weights are kept.
    public let projections: Projections
    public let toOut: Linear

    public enum Projections: Sendable {
        case selfAttention(toQKV: Linear)
        case crossAttention(toQ: Linear, toKV: Linear)
    }

    /// `crossAttentionDim` nil = self-attention (keys/values from the query input).
    public init(_ p: ParameterScope, queryDim: Int, crossAttentionDim: Int? = nil, heads: Int,
                headDim: Int, qkvBias: Bool = false, outBias: Bool = true) throws {
        let inner = heads * headDim
        let kvDim = crossAttentionDim ?? queryDim
        self.heads = heads
        self.headDim = headDim
        let toQ = try Linear(p["to_q"], inFeatures: queryDim, outFeatures: inner, bias: qkvBias)
        let toK = try Linear(p["to_k"], inFeatures: kvDim, outFeatures: inner, bias: qkvBias)
        let toV = try Linear(p["to_v"], inFeatures: kvDim, outFeatures: inner, bias: qkvBias)
        projections = crossAttentionDim == nil
            ? .selfAttention(toQKV: Linear(stacking: [toQ, toK, toV]))
            : .crossAttention(toQ: toQ, toKV: Linear(stacking: [toK, toV]))
        toOut = try Linear(p["to_out.0"], inFeatures: inner, outFeatures: queryDim, bias: outBias)
    }

    /// x [B, N, C], context [B, M, Cc] (nil: self-attention) -> [B, N, C]; with `residual` [B, N, C] the
    /// result is residual + attention (added by the output projection).
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil, residual: Tensor? = nil) -> Tensor {
        let scale = 1 / Float(headDim).squareRoot()
        let o: Tensor
        switch projections {
        case .selfAttention(let toQKV):
            precondition(context == nil, "Attention: a self-attention layer was given a context")
            let qkv = toQKV(x)                                  // [B, N, 3*inner]: q | k | v
            countAttentionFLOPs(batch: qkv.shape[0], queries: qkv.shape[1], keys: qkv.shape[1],
                                channels: qkv.shape[2] / 3)
            o = attention(qkv: qkv, heads: heads, scale: scale) // [B, N, inner]
        case .crossAttention(let toQ, let toKV):
            guard let context else { preconditionFailure("Attention: a cross-attention layer needs a context") }
            let q = toQ(x)                                      // [B, N, inner]
            let kv = toKV(context)                              // [B, M, 2*inner]: k | v
            countAttentionFLOPs(batch: q.shape[0], queries: q.shape[1], keys: kv.shape[1], channels: q.shape[2])
            o = attention(query: q, kv: kv, heads: heads, scale: scale)
        }
        return toOut(o, residual: residual)                     // [B, N, C]
    }
}

/// diffusers' FeedForward with activation "geglu": net.0 = GEGLU (proj: C -> 2*inner),
/// net.1 = dropout, net.2 = Linear(inner -> C). GEGLU = first half * gelu(second half).
public struct FeedForward: Sendable {
    public let proj: Linear     // ff.net.0.proj
    public let out: Linear      // ff.net.2

    public init(_ p: ParameterScope, dim: Int, mult: Int = 4) throws {
        let inner = dim * mult
        proj = try Linear(p["net.0.proj"], inFeatures: dim, outFeatures: 2 * inner)
        out = try Linear(p["net.2"], inFeatures: inner, outFeatures: dim)
    }

    /// Token rows per pass: the [rows, 2*inner] projection and [rows, inner] GEGLU of a chunk instead of the
    /// whole sequence's (at SD-1.5's 80 x 64 latent, batch 3: 31 MB instead of 236 MB alive at once).
    static let rowsPerChunk = 2048

    /// [B, N, C] -> [B, N, C]; with `residual` [B, N, C] the result is residual + FF(x) (added by net.2).
    public func callAsFunction(_ x: Tensor, residual: Tensor? = nil) -> Tensor {
        let c = x.shape[x.rank - 1]
        let rows = c == 0 ? 0 : x.count / c
        if rows <= Self.rowsPerChunk {
            return out(geglu(proj(x)), residual: residual)   // [B, N, 2*inner] -> [B, N, inner] -> [B, N, C]
        }
        if let residual { precondition(residual.shape == x.shape, "FeedForward: residual \(residual.shape) vs \(x.shape)") }
        // Every row is independent: the same products, chunk by chunk of rows, each chunk's rows read from x and
        // written into the one [rows, C] output in place (no slice or concat copies).
        let inner = out.inFeatures
        func run(_ pr: UnsafePointer<Float>?, _ py: UnsafeMutablePointer<Float>) {
            x.data.withUnsafeBufferPointer { pxb in
                let px = pxb.baseAddress!
                var r0 = 0
                while r0 < rows {
                    let r1 = min(rows, r0 + Self.rowsPerChunk)
                    let projected = Tensor(overwriting: [r1 - r0, 2 * inner]) { pp in     // [r, 2*inner]
                        linearRows(px + r0 * c, rows: r1 - r0, weight: proj.weight, bias: proj.bias, residual: nil,
                                   into: pp.baseAddress!)
                    }
                    let gated = geglu(projected)                                          // [r, inner]
                    gated.data.withUnsafeBufferPointer { pg in
                        linearRows(pg.baseAddress!, rows: r1 - r0, weight: out.weight, bias: out.bias,
                                   residual: pr.map { $0 + r0 * c }, into: py + r0 * c)   // [r, C]
                    }
                    r0 = r1
                }
            }
        }
        let y = Tensor(overwriting: x.shape) { po in
            if let residual {
                residual.data.withUnsafeBufferPointer { run($0.baseAddress, po.baseAddress!) }
            } else {
                run(nil, po.baseAddress!)
            }
        }
        FLOPCounter.add(2 * Double(rows) * Double(c) * Double(3 * inner))
        return y
    }
}

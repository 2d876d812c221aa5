// This implementation matches diffusers' Attention with AttnProcessor2_0
// (models/attention_processor.py) for the cases SD-1.x uses: to_q / to_k / to_v
// (bias optional), scaled dot-product attention over `heads` heads with scale
// 1/sqrt(head_dim), then to_out.0 (with bias). No masks, no norms inside.

import DPTensor

public struct Attention: Sendable {
    public let heads: Int
    public let headDim: Int
    public let toQ: Linear
    public let toK: Linear
    public let toV: Linear
    public let toOut: Linear

    /// `crossAttentionDim` nil = self-attention (keys/values from the query input).
    public init(_ p: ParameterScope, queryDim: Int, crossAttentionDim: Int? = nil, heads: Int,
                headDim: Int, qkvBias: Bool = false, outBias: Bool = true) throws {
        let inner = heads * headDim
        let kvDim = crossAttentionDim ?? queryDim
        self.heads = heads
        self.headDim = headDim
        toQ = try Linear(p["to_q"], inFeatures: queryDim, outFeatures: inner, bias: qkvBias)
        toK = try Linear(p["to_k"], inFeatures: kvDim, outFeatures: inner, bias: qkvBias)
        toV = try Linear(p["to_v"], inFeatures: kvDim, outFeatures: inner, bias: qkvBias)
        toOut = try Linear(p["to_out.0"], inFeatures: inner, outFeatures: queryDim, bias: outBias)
    }

    /// x [B, N, C], context [B, M, Cc] (nil: self-attention) -> [B, N, C]; with `residual` [B, N, C] the
    /// result is residual + attention (added by the output projection).
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil, residual: Tensor? = nil) -> Tensor {
        let kv = context ?? x
        let q = toQ(x)                                          // [B, N, inner]
        let k = toK(kv)                                         // [B, M, inner]
        let v = toV(kv)                                         // [B, M, inner]
        countAttentionFLOPs(batch: q.shape[0], queries: q.shape[1], keys: k.shape[1],
                            channels: q.shape[2])
        let o = attention(query: q, key: k, value: v, heads: heads,
                          scale: 1 / Float(headDim).squareRoot())  // [B, N, inner]
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

// The 1x1 projections at a transformer's borders (diffusers Transformer2DModel's proj_in / proj_out, as conv or
// linear), computed straight between the NCHW layout and token rows: the product reads or writes the
// transposed layout itself, so no [N, H*W, C] <-> [N, C, H, W] copy and no separate residual pass.

/// proj_in: x [N, C, H, W] -> tokens [N, H*W, Out] = toTokens(x) weight^T + bias (weight [Out, C]).
public func linearFromChannels(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
    precondition(x.rank == 4, "linearFromChannels: input must be [N, C, H, W], got \(x.shape)")
    precondition(weight.rank == 2 && weight.shape[1] == x.shape[1],
                 "linearFromChannels: weight \(weight.shape) does not take \(x.shape[1]) channels")
    let n = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3], outF = weight.shape[0]
    if let bias { precondition(bias.count == outF, "linearFromChannels: bias has \(bias.count) elements, expected \(outF)") }
    let probe = OpProfile.begin(.linear, flops: 2 * Double(n * hw) * Double(c) * Double(outF))
    defer { probe?.end() }
    return Tensor(overwriting: [n, hw, outF]) { out in
        guard let po = out.baseAddress, hw > 0, outF > 0 else { return }
        if bias != nil { seedRows(po, rows: n * hw, width: outF, bias: bias, residual: nil) }
        x.data.withUnsafeBufferPointer { px in
        weight.data.withUnsafeBufferPointer { pw in
            for b in 0..<n {   // [H*W, Out] = (x_b [C, H*W])^T (weight [Out, C])^T
                gemm(transA: true, transB: true, m: hw, n: outF, k: c, a: px.baseAddress! + b * c * hw, lda: hw,
                     b: pw.baseAddress!, ldb: c, beta: bias == nil ? 0 : 1, c: po + b * hw * outF, ldc: outF)
            }
        }
        }
    }
}

/// proj_out and the transformer's residual: tokens [N, H*W, In] -> [N, Out, H, W] =
/// fromTokens(tokens weight^T + bias) + residual (weight [Out, In], residual [N, Out, H, W]).
public func linearToChannels(_ tokens: Tensor, weight: Tensor, bias: Tensor?, residual: Tensor?,
                             height: Int, width: Int) -> Tensor {
    precondition(tokens.rank == 3 && tokens.shape[1] == height * width,
                 "linearToChannels: input must be [N, \(height)*\(width), C], got \(tokens.shape)")
    precondition(weight.rank == 2 && weight.shape[1] == tokens.shape[2],
                 "linearToChannels: weight \(weight.shape) does not take \(tokens.shape[2]) features")
    let n = tokens.shape[0], hw = height * width, inF = tokens.shape[2], outF = weight.shape[0]
    let outShape = [n, outF, height, width]
    if let bias { precondition(bias.count == outF, "linearToChannels: bias has \(bias.count) elements, expected \(outF)") }
    if let residual { precondition(residual.shape == outShape, "linearToChannels: residual \(residual.shape) is not \(outShape)") }
    let probe = OpProfile.begin(.linear, flops: 2 * Double(n * hw) * Double(inF) * Double(outF))
    defer { probe?.end() }
    return Tensor(overwriting: outShape) { out in
        guard let po = out.baseAddress, hw > 0 else { return }
        let seeded = bias != nil || residual != nil
        if seeded {
            // out[b, o, :] = residual[b, o, :] + bias[o], one channel plane per job
            withOptionalPointer(bias) { pb in
            withOptionalPointer(residual) { pr in
                parallelFor(n * outF, work: n * outF * hw) { plane in
                    let dst = po + plane * hw, b = pb?[plane % outF] ?? 0
                    if let pr {
                        let src = pr + plane * hw
                        var i = 0
                        let bv = SIMD8<Float>(repeating: b)
                        while i + 8 <= hw { store8(load8(src + i) + bv, dst + i); i += 8 }
                        while i < hw { dst[i] = src[i] + b; i += 1 }
                    } else {
                        dst.update(repeating: b, count: hw)
                    }
                }
            }
            }
        }
        tokens.data.withUnsafeBufferPointer { pt in
        weight.data.withUnsafeBufferPointer { pw in
            for b in 0..<n {   // [Out, H*W] = weight [Out, In] (tokens_b [H*W, In])^T
                gemm(transB: true, m: outF, n: hw, k: inF, a: pw.baseAddress!, lda: inF,
                     b: pt.baseAddress! + b * hw * inF, ldb: inF, beta: seeded ? 1 : 0, c: po + b * outF * hw, ldc: hw)
            }
        }
        }
    }
}

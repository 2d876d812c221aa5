// Matrix products: the one path into BLAS (OpenBLAS sgemm through CDPKernels dp_sgemm), and matmul / linear
// on tensors.

import CDPKernels

/// Row-major sgemm through OpenBLAS: C = alpha * op(A) * op(B) + beta * C.
/// op(A) is [m, k], op(B) is [k, n], C is [m, n]; lda/ldb/ldc are the row strides of the stored matrices.
public func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                 a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                 beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    if m == 0 || n == 0 { return }
    if k == 0 {
        // BLAS semantics: C = beta * C.
        for i in 0..<m {
            let row = c + i * ldc
            for j in 0..<n { row[j] = beta == 0 ? 0 : beta * row[j] }
        }
        return
    }
    dp_sgemm(transA ? 1 : 0, transB ? 1 : 0, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb),
             beta, c, Int32(ldc))
}

/// Matrix product. `a` [M, K] x `b` [K, N] -> [M, N] (`transposeB`: `b` is [N, K]).
/// Rank 3: `a` [B, M, K] x `b` [B, K, N] -> [B, M, N]; a rank-2 `b` is shared by every batch.
public func matmul(_ a: Tensor, _ b: Tensor, transposeB: Bool = false) -> Tensor {
    precondition(a.rank == 2 || a.rank == 3, "matmul: a must be rank 2 or 3, got \(a.shape)")
    precondition(b.rank == 2 || b.rank == 3, "matmul: b must be rank 2 or 3, got \(b.shape)")
    precondition(b.rank <= a.rank, "matmul: batched b \(b.shape) needs batched a, got \(a.shape)")
    let batch = a.rank == 3 ? a.shape[0] : 1
    let m = a.shape[a.rank - 2], k = a.shape[a.rank - 1]
    let bk = transposeB ? b.shape[b.rank - 1] : b.shape[b.rank - 2]
    let n = transposeB ? b.shape[b.rank - 2] : b.shape[b.rank - 1]
    precondition(bk == k, "matmul: inner dimensions differ: a \(a.shape), b \(b.shape), transposeB \(transposeB)")
    if b.rank == 3 {
        precondition(b.shape[0] == batch, "matmul: batch sizes differ: a \(a.shape), b \(b.shape)")
    }
    let outShape = a.rank == 3 ? [batch, m, n] : [m, n]
    return Tensor(shape: outShape) { out in
        a.data.withUnsafeBufferPointer { pa in
            b.data.withUnsafeBufferPointer { pb in
                guard let pa = pa.baseAddress, let pb = pb.baseAddress, let pc = out.baseAddress else { return }
                if b.rank == 2 {
                    // Shared right operand: one product over all batch rows. [B*M, K] x [K, N]
                    gemm(transB: transposeB, m: batch * m, n: n, k: k, a: pa, lda: k,
                         b: pb, ldb: transposeB ? k : n, c: pc, ldc: n)
                } else {
                    for i in 0..<batch {
                        gemm(transB: transposeB, m: m, n: n, k: k, a: pa + i * m * k, lda: k,
                             b: pb + i * k * n, ldb: transposeB ? k : n, c: pc + i * m * n, ldc: n)
                    }
                }
            }
        }
    }
}

/// Fully connected layer (torch.nn.Linear): x [..., In] x weight [Out, In]^T + bias [Out] -> [..., Out];
/// with `residual` (the shape of the output) the result is residual + linear(x), the residual add of a
/// transformer block fused into the product (the output is seeded with residual + bias, then accumulated).
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?, residual: Tensor? = nil) -> Tensor {
    precondition(weight.rank == 2, "linear: weight must be [Out, In], got \(weight.shape)")
    precondition(x.rank >= 1, "linear: input must have rank >= 1")
    let inF = weight.shape[1], outF = weight.shape[0]
    precondition(x.shape[x.rank - 1] == inF,
                 "linear: input last dimension \(x.shape[x.rank - 1]) != weight In \(inF) (x \(x.shape), weight \(weight.shape))")
    let rows = x.count / max(inF, 1)
    var outShape = x.shape
    outShape[outShape.count - 1] = outF
    if let residual {
        precondition(residual.shape == outShape, "linear: residual \(residual.shape) is not the output's \(outShape)")
    }
    return Tensor(overwriting: outShape) { out in
        guard let pc = out.baseAddress else { return }
        x.data.withUnsafeBufferPointer { px in
            withOptionalPointer(residual) { pr in
                linearRows(px.baseAddress!, rows: rows, weight: weight, bias: bias, residual: pr, into: pc)
            }
        }
    }
}

/// out [rows, Out] = x [rows, In] weight^T + bias (+ residual [rows, Out] when given), on raw rows: the
/// chunked feed-forward writes each chunk's rows straight into the whole output. out must not overlap x.
public func linearRows(_ x: UnsafePointer<Float>, rows: Int, weight: Tensor, bias: Tensor?,
                       residual: UnsafePointer<Float>?, into out: UnsafeMutablePointer<Float>) {
    let inF = weight.shape[1], outF = weight.shape[0]
    if let bias { precondition(bias.count == outF, "linear: bias has \(bias.count) elements, expected \(outF)") }
    let probe = OpProfile.begin(.linear, flops: 2 * Double(rows) * Double(inF) * Double(outF))
    defer { probe?.end() }
    guard rows > 0, outF > 0 else { return }
    let seeded = bias != nil || residual != nil
    if seeded { seedRows(out, rows: rows, width: outF, bias: bias, residual: residual) }
    weight.data.withUnsafeBufferPointer { pw in
        gemm(transB: true, m: rows, n: outF, k: inF, a: x, lda: inF, b: pw.baseAddress!, ldb: inF,
             beta: seeded ? 1 : 0, c: out, ldc: outF)
    }
}

/// out [rows, width] = residual (when given) + bias broadcast over the rows (when given), in row blocks over the
/// engine threads: the start of a product that then accumulates into out (beta 1).
func seedRows(_ out: UnsafeMutablePointer<Float>, rows: Int, width: Int, bias: Tensor?, residual: UnsafePointer<Float>?) {
    withOptionalPointer(bias) { pb in
        let blockRows = max(1, 16_384 / max(width, 1))
        let blocks = (rows + blockRows - 1) / blockRows
        parallelChunks(blocks, work: rows * width) { range in
            for r in range.lowerBound * blockRows..<min(rows, range.upperBound * blockRows) {
                seedRow(out + r * width, count: width, bias: pb, residual: residual.map { $0 + r * width })
            }
        }
    }
}

/// dst[i] = (residual?[i] ?? 0) + (bias?[i] ?? 0).
@inline(__always)
private func seedRow(_ dst: UnsafeMutablePointer<Float>, count: Int, bias: UnsafePointer<Float>?,
                     residual: UnsafePointer<Float>?) {
    var i = 0
    switch (bias, residual) {
    case let (b?, r?):
        while i + 8 <= count { store8(load8(b + i) + load8(r + i), dst + i); i += 8 }
        while i < count { dst[i] = b[i] + r[i]; i += 1 }
    case let (b?, nil):
        dst.update(from: b, count: count)
    case let (nil, r?):
        dst.update(from: r, count: count)
    case (nil, nil):
        dst.update(repeating: 0, count: count)
    }
}

// Layout operations: concatenation, slicing, and the image <-> token-sequence transposes.

import CDPKernels

/// Concatenates tensors along `axis`; every other dimension must agree.
public func concat(_ tensors: [Tensor], axis: Int) -> Tensor {
    precondition(!tensors.isEmpty, "concat: no tensors")
    let first = tensors[0]
    let rank = first.rank
    precondition(axis >= 0 && axis < rank, "concat: axis \(axis) out of range for rank \(rank)")
    for (i, t) in tensors.enumerated() {
        precondition(t.rank == rank, "concat: tensor \(i) has shape \(t.shape), expected rank \(rank) like \(first.shape)")
        for dim in 0..<rank where dim != axis {
            precondition(t.shape[dim] == first.shape[dim],
                         "concat: tensor \(i) has shape \(t.shape), dimension \(dim) differs from \(first.shape)")
        }
    }
    let outer = first.shape[..<axis].reduce(1, *)
    let inner = first.shape[(axis + 1)...].reduce(1, *)
    let total = tensors.reduce(0) { $0 + $1.shape[axis] }
    var outShape = first.shape
    outShape[axis] = total
    let rowOut = total * inner
    let probe = OpProfile.begin(.layout)
    defer { probe?.end() }
    return Tensor(shape: outShape) { out in
        guard let po = out.baseAddress else { return }
        var offset = 0
        for t in tensors {
            let chunk = t.shape[axis] * inner
            t.data.withUnsafeBufferPointer { pt in
                if chunk > 0, let src = pt.baseAddress {
                    for o in 0..<outer {
                        (po + o * rowOut + offset).update(from: src + o * chunk, count: chunk)
                    }
                }
            }
            offset += chunk
        }
    }
}

/// Elements `range` along `axis`.
public func slice(_ x: Tensor, axis: Int, range: Range<Int>) -> Tensor {
    precondition(axis >= 0 && axis < x.rank, "slice: axis \(axis) out of range for shape \(x.shape)")
    precondition(range.lowerBound >= 0 && range.upperBound <= x.shape[axis],
                 "slice: range \(range) out of bounds for dimension \(axis) of \(x.shape)")
    let outer = x.shape[..<axis].reduce(1, *)
    let inner = x.shape[(axis + 1)...].reduce(1, *)
    let rowIn = x.shape[axis] * inner
    let chunk = range.count * inner
    var outShape = x.shape
    outShape[axis] = range.count
    let probe = OpProfile.begin(.layout)
    defer { probe?.end() }
    return Tensor(shape: outShape) { out in
        guard let po = out.baseAddress, chunk > 0 else { return }
        x.data.withUnsafeBufferPointer { px in
            let src = px.baseAddress! + range.lowerBound * inner
            for o in 0..<outer { (po + o * chunk).update(from: src + o * rowIn, count: chunk) }
        }
    }
}

/// [N, C, H, W] -> [N, H*W, C].
public func toTokens(_ x: Tensor) -> Tensor {
    precondition(x.rank == 4, "toTokens: input must be [N, C, H, W], got \(x.shape)")
    let n = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3]
    let probe = OpProfile.begin(.layout)
    defer { probe?.end() }
    return Tensor(overwriting: [n, hw, c]) { out in
        guard let po = out.baseAddress else { return }
        x.data.withUnsafeBufferPointer { px in
            transposeBatched(px.baseAddress!, po, batch: n, rows: c, cols: hw)
        }
    }
}

/// [N, H*W, C] -> [N, C, H, W].
public func fromTokens(_ x: Tensor, height: Int, width: Int) -> Tensor {
    precondition(x.rank == 3 && x.shape[1] == height * width,
                 "fromTokens: input must be [N, \(height)*\(width), C], got \(x.shape)")
    let n = x.shape[0], c = x.shape[2], hw = height * width
    let probe = OpProfile.begin(.layout)
    defer { probe?.end() }
    return Tensor(overwriting: [n, c, height, width]) { out in
        guard let po = out.baseAddress else { return }
        x.data.withUnsafeBufferPointer { px in
            transposeBatched(px.baseAddress!, po, batch: n, rows: hw, cols: c)
        }
    }
}

/// For each batch, dst [cols, rows] = transpose of src [rows, cols], in blocks of 32 rows per job (CDPKernels
/// dp_transpose: 8x8 register transposes).
func transposeBatched(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>,
                      batch: Int, rows: Int, cols: Int) {
    let bs = 32
    let rowBlocks = (rows + bs - 1) / bs
    let per = rows * cols
    parallelFor(batch * rowBlocks, work: batch * per) { job in
        let b = job / rowBlocks, r0 = (job % rowBlocks) * bs
        let r1 = min(rows, r0 + bs)
        dp_transpose(src + b * per + r0 * cols, cols, r1 - r0, cols, dst + b * per + r0, rows)
    }
}

// 2-D convolution (torch.nn.functional.conv2d, groups = 1, dilation = 1) as tiled im2col + sgemm.

/// Zero padding on each side of a 2-D image.
public struct Padding2D: Equatable, Sendable {
    public var top: Int, bottom: Int, left: Int, right: Int
    public init(top: Int, bottom: Int, left: Int, right: Int) {
        self.top = top; self.bottom = bottom; self.left = left; self.right = right
    }
    /// The same padding `p` on all four sides.
    public static func symmetric(_ p: Int) -> Padding2D { Padding2D(top: p, bottom: p, left: p, right: p) }
}

/// Upper bound on the im2col scratch buffer, in floats (16 MB).
let conv2dScratchFloats = 4 << 20

/// Convolution: x [N, Cin, H, W], weight [Cout, Cin, kh, kw], bias [Cout] -> [N, Cout, Ho, Wo],
/// Ho = (H + top + bottom - kh) / stride + 1 (floor), likewise Wo.
///
/// 1x1 stride-1 unpadded convolutions are one GEMM per image with no copy. Otherwise the output rows
/// are processed in tiles: the tile's im2col columns ([Cin*kh*kw, rows*Wo], at most `conv2dScratchFloats`
/// unless a single output row needs more) are gathered into a scratch buffer and multiplied by the
/// weight matrix [Cout, Cin*kh*kw] straight into the output.
public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1,
                   padding: Padding2D = .symmetric(0)) -> Tensor {
    let kind: OpKind = weight.rank == 4 && weight.shape[2] == 3 && weight.shape[3] == 3
        ? (stride == 1 ? .conv3x3 : .conv3x3Strided) : .convOther
    let probe = OpProfile.begin(kind, flops: conv2dFLOPs(x, weight: weight, stride: stride, padding: padding))
    defer { probe?.end() }
    return conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, scratchFloats: conv2dScratchFloats)
}

/// 2 x N x Cout x Ho x Wo x Cin x kh x kw (the direct product's multiply-adds).
func conv2dFLOPs(_ x: Tensor, weight: Tensor, stride: Int, padding: Padding2D) -> Double {
    guard x.rank == 4, weight.rank == 4, stride >= 1 else { return 0 }
    let ho = (x.shape[2] + padding.top + padding.bottom - weight.shape[2]) / stride + 1
    let wo = (x.shape[3] + padding.left + padding.right - weight.shape[3]) / stride + 1
    return 2 * Double(x.shape[0]) * Double(weight.shape[0]) * Double(max(0, ho) * max(0, wo))
        * Double(weight.shape[1] * weight.shape[2] * weight.shape[3])
}

/// `conv2d` with an explicit im2col scratch bound (tests use small bounds to exercise the tiling).
func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Padding2D,
            scratchFloats: Int) -> Tensor {
    precondition(x.rank == 4, "conv2d: input must be [N, Cin, H, W], got \(x.shape)")
    precondition(weight.rank == 4, "conv2d: weight must be [Cout, Cin, kh, kw], got \(weight.shape)")
    precondition(stride >= 1, "conv2d: stride must be >= 1, got \(stride)")
    precondition(padding.top >= 0 && padding.bottom >= 0 && padding.left >= 0 && padding.right >= 0,
                 "conv2d: negative padding \(padding)")
    let n = x.shape[0], cin = x.shape[1], h = x.shape[2], w = x.shape[3]
    let cout = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    precondition(weight.shape[1] == cin,
                 "conv2d: weight expects \(weight.shape[1]) input channels, input \(x.shape) has \(cin)")
    if let bias { precondition(bias.count == cout, "conv2d: bias has \(bias.count) elements, expected \(cout)") }
    let hp = h + padding.top + padding.bottom, wp = w + padding.left + padding.right
    precondition(hp >= kh && wp >= kw, "conv2d: kernel \(kh)x\(kw) larger than padded input \(hp)x\(wp)")
    let ho = (hp - kh) / stride + 1, wo = (wp - kw) / stride + 1
    let hwo = ho * wo, hwi = h * w
    let kdim = cin * kh * kw   // rows of the im2col matrix

    return Tensor(shape: [n, cout, ho, wo]) { out in
        guard let po = out.baseAddress else { return }
        var beta: Float = 0
        if let bias {
            // [N, Cout, Ho*Wo] seeded with the bias; the GEMM accumulates on top (beta = 1).
            bias.data.withUnsafeBufferPointer { pb in
                parallelFor(n * cout, work: n * cout * hwo) { i in
                    (po + i * hwo).initialize(repeating: pb[i % cout], count: hwo)
                }
            }
            beta = 1
        }
        x.data.withUnsafeBufferPointer { pxb in
            weight.data.withUnsafeBufferPointer { pwb in
                let px = pxb.baseAddress!, pw = pwb.baseAddress!
                let direct = kh == 1 && kw == 1 && stride == 1 && padding == .symmetric(0)
                if direct {
                    // [Cout, Cin] x [Cin, H*W] per image.
                    for b in 0..<n {
                        gemm(m: cout, n: hwo, k: cin, a: pw, lda: cin, b: px + b * cin * hwi, ldb: hwi,
                             beta: beta, c: po + b * cout * hwo, ldc: hwo)
                    }
                    return
                }
                let rowsPerTile = max(1, min(ho, scratchFloats / max(1, kdim * wo)))
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: kdim * rowsPerTile * wo)
                defer { scratch.deallocate() }
                for b in 0..<n {
                    let xb = px + b * cin * hwi
                    var oy0 = 0
                    while oy0 < ho {
                        let rows = min(rowsPerTile, ho - oy0)
                        let cols = rows * wo
                        // im2col: scratch [Cin*kh*kw, rows*Wo]
                        im2colTile(xb, cin: cin, h: h, w: w, kh: kh, kw: kw, stride: stride, padding: padding,
                                   oy0: oy0, rows: rows, wo: wo, into: scratch)
                        // out[b][:, oy0*Wo ..< (oy0+rows)*Wo] (+)= weight [Cout, K] x scratch [K, cols]
                        gemm(m: cout, n: cols, k: kdim, a: pw, lda: kdim, b: scratch, ldb: cols,
                             beta: beta, c: po + b * cout * hwo + oy0 * wo, ldc: hwo)
                        oy0 += rows
                    }
                }
            }
        }
    }
}

/// Gathers the im2col rows for output rows `oy0 ..< oy0+rows` of one image into `dst` [Cin*kh*kw, rows*wo].
/// Row (ci*kh + ky)*kw + kx holds x[ci, oy*stride - top + ky, ox*stride - left + kx] (0 outside).
func im2colTile(_ x: UnsafePointer<Float>, cin: Int, h: Int, w: Int, kh: Int, kw: Int, stride: Int,
                padding: Padding2D, oy0: Int, rows: Int, wo: Int, into dst: UnsafeMutablePointer<Float>) {
    let cols = rows * wo
    // The range of ox for which ix = ox*stride - left + kx lies inside [0, w), per kx.
    parallelFor(cin, work: cin * kh * kw * cols) { ci in
        let xc = x + ci * h * w
        for ky in 0..<kh {
            for kx in 0..<kw {
                let d = dst + ((ci * kh + ky) * kw + kx) * cols
                let shift = kx - padding.left
                // ox valid iff 0 <= ox*stride + shift < w
                let oxLo = shift >= 0 ? 0 : min(wo, (-shift + stride - 1) / stride)
                let oxHi = w - shift <= 0 ? 0 : min(wo, (w - shift + stride - 1) / stride)
                for r in 0..<rows {
                    let iy = (oy0 + r) * stride - padding.top + ky
                    let drow = d + r * wo
                    if iy < 0 || iy >= h || oxLo >= oxHi {
                        drow.initialize(repeating: 0, count: wo)
                        continue
                    }
                    let src = xc + iy * w + shift
                    if oxLo > 0 { drow.initialize(repeating: 0, count: oxLo) }
                    if stride == 1 {
                        (drow + oxLo).initialize(from: src + oxLo, count: oxHi - oxLo)
                    } else {
                        var ox = oxLo
                        while ox < oxHi { drow[ox] = src[ox * stride]; ox += 1 }
                    }
                    if oxHi < wo { (drow + oxHi).initialize(repeating: 0, count: wo - oxHi) }
                }
            }
        }
    }
}

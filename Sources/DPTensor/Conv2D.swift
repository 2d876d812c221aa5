// 2-D convolution (torch.nn.functional.conv2d, groups = 1, dilation = 1) as tiled im2col + sgemm; 3x3
// convolutions with a prepared filter, and Winograd F(4x4, 3x3) / F(2x2, 3x3) where it applies (Winograd.swift).

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
    let probe = OpProfile.begin(kind, flops: weight.rank == 4 ? conv2dFLOPs(x, cout: weight.shape[0], cin: weight.shape[1],
        kh: weight.shape[2], kw: weight.shape[3], stride: stride, padding: padding) : 0)
    defer { probe?.end() }
    return conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, scratchFloats: conv2dScratchFloats)
}

/// 2 x N x Cout x Ho x Wo x Cin x kh x kw (the direct product's multiply-adds).
func conv2dFLOPs(_ x: Tensor, cout: Int, cin: Int, kh: Int, kw: Int, stride: Int, padding: Padding2D) -> Double {
    guard x.rank == 4, stride >= 1 else { return 0 }
    let ho = (x.shape[2] + padding.top + padding.bottom - kh) / stride + 1
    let wo = (x.shape[3] + padding.left + padding.right - kw) / stride + 1
    return 2 * Double(x.shape[0]) * Double(cout) * Double(max(0, ho) * max(0, wo)) * Double(cin * kh * kw)
}

/// `conv2d` with an explicit im2col scratch bound (tests use small bounds to exercise the tiling).
func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Padding2D,
            scratchFloats: Int) -> Tensor {
    precondition(weight.rank == 4, "conv2d: weight must be [Cout, Cin, kh, kw], got \(weight.shape)")
    if weight.shape[2] == 3 && weight.shape[3] == 3 {
        return conv2d(x, filter: Conv3x3Filter(weight), bias: bias, stride: stride, padding: padding,
                      algorithm: .default, scratchFloats: scratchFloats)
    }
    return weight.data.withUnsafeBufferPointer { pw in
        im2colConv(x, weights: pw.baseAddress!, transposed: false, cout: weight.shape[0], cin: weight.shape[1],
                   kh: weight.shape[2], kw: weight.shape[3], bias: bias, stride: stride, padding: padding,
                   scratchFloats: scratchFloats)
    }
}

/// 3x3 convolution with a prepared filter: x [N, Cin, H, W] -> [N, Cout, Ho, Wo] (+ bias [Cout]).
/// Winograd F(4x4, 3x3) or F(2x2, 3x3) where it applies (stride 1, padding 1, enough tiles and input
/// channels: `winogradTileSide`), otherwise tiled im2col + sgemm.
public func conv2d(_ x: Tensor, filter: Conv3x3Filter, bias: Tensor?, stride: Int = 1,
                   padding: Padding2D = .symmetric(1), algorithm: Conv3x3Algorithm = .default) -> Tensor {
    let probe = OpProfile.begin(stride == 1 ? .conv3x3 : .conv3x3Strided,
                                flops: conv2dFLOPs(x, cout: filter.outChannels, cin: filter.inChannels, kh: 3, kw: 3,
                                                   stride: stride, padding: padding))
    defer { probe?.end() }
    return conv2d(x, filter: filter, bias: bias, stride: stride, padding: padding, algorithm: algorithm,
                  scratchFloats: conv2dScratchFloats)
}

func conv2d(_ x: Tensor, filter: Conv3x3Filter, bias: Tensor?, stride: Int, padding: Padding2D,
            algorithm: Conv3x3Algorithm, scratchFloats: Int) -> Tensor {
    precondition(x.rank == 4, "conv2d: input must be [N, Cin, H, W], got \(x.shape)")
    precondition(x.shape[1] == filter.inChannels,
                 "conv2d: weight expects \(filter.inChannels) input channels, input \(x.shape) has \(x.shape[1])")
    switch conv3x3Path(x, filter: filter, stride: stride, padding: padding, algorithm: algorithm) {
    case "winograd": return winogradConv3x3(x, filter: filter, bias: bias, tileSide: 4)
    case "winograd2x2": return winogradConv3x3(x, filter: filter, bias: bias, tileSide: 2)
    default: break
    }
    return filter.taps.data.withUnsafeBufferPointer { pt in
        // taps [Cin*9, Cout] is the transposed weight matrix.
        im2colConv(x, weights: pt.baseAddress!, transposed: true, cout: filter.outChannels, cin: filter.inChannels,
                   kh: 3, kw: 3, bias: bias, stride: stride, padding: padding, scratchFloats: scratchFloats)
    }
}

/// Which kernel `conv2d(_:filter:...)` runs for this convolution: "winograd" or "im2col" (benchmarks print it).
public func conv3x3Path(_ x: Tensor, filter: Conv3x3Filter, stride: Int, padding: Padding2D,
                        algorithm: Conv3x3Algorithm) -> String {
    switch algorithm {
    case .im2col: return "im2col"
    case .automatic:
        switch winogradTileSide(x, filter: filter, stride: stride, padding: padding) {
        case 4: return "winograd"
        case 2: return "winograd2x2"
        default: return "im2col"
        }
    case .winograd: return stride == 1 && padding == .symmetric(1) ? "winograd" : "im2col"
    case .winograd2x2: return stride == 1 && padding == .symmetric(1) ? "winograd2x2" : "im2col"
    }
}

/// Tiled im2col + sgemm. `weights` is the weight matrix [Cout, Cin*kh*kw] (or, `transposed`, [Cin*kh*kw, Cout]).
func im2colConv(_ x: Tensor, weights pw: UnsafePointer<Float>, transposed: Bool, cout: Int, cin wcin: Int,
                kh: Int, kw: Int, bias: Tensor?, stride: Int, padding: Padding2D, scratchFloats: Int) -> Tensor {
    precondition(x.rank == 4, "conv2d: input must be [N, Cin, H, W], got \(x.shape)")
    precondition(stride >= 1, "conv2d: stride must be >= 1, got \(stride)")
    precondition(padding.top >= 0 && padding.bottom >= 0 && padding.left >= 0 && padding.right >= 0,
                 "conv2d: negative padding \(padding)")
    let n = x.shape[0], cin = x.shape[1], h = x.shape[2], w = x.shape[3]
    precondition(wcin == cin,
                 "conv2d: weight expects \(wcin) input channels, input \(x.shape) has \(cin)")
    if let bias { precondition(bias.count == cout, "conv2d: bias has \(bias.count) elements, expected \(cout)") }
    let hp = h + padding.top + padding.bottom, wp = w + padding.left + padding.right
    precondition(hp >= kh && wp >= kw, "conv2d: kernel \(kh)x\(kw) larger than padded input \(hp)x\(wp)")
    let ho = (hp - kh) / stride + 1, wo = (wp - kw) / stride + 1
    let hwo = ho * wo, hwi = h * w
    let kdim = cin * kh * kw   // rows of the im2col matrix
    let lda = transposed ? cout : kdim

    // Every element is written: seeded with the bias, or by the products with beta = 0.
    return Tensor(overwriting: [n, cout, ho, wo]) { out in
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
            let px = pxb.baseAddress!
            let direct = kh == 1 && kw == 1 && stride == 1 && padding == .symmetric(0)
            if direct {
                // [Cout, Cin] x [Cin, H*W] per image.
                for b in 0..<n {
                    gemm(transA: transposed, m: cout, n: hwo, k: cin, a: pw, lda: lda, b: px + b * cin * hwi,
                         ldb: hwi, beta: beta, c: po + b * cout * hwo, ldc: hwo)
                }
                return
            }
            let rowsPerTile = max(1, min(ho, scratchFloats / max(1, kdim * wo)))
            engineScratch.withBuffer(floats: kdim * rowsPerTile * wo) { scratch in
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
                        gemm(transA: transposed, m: cout, n: cols, k: kdim, a: pw, lda: lda, b: scratch, ldb: cols,
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

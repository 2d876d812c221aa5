// 3x3 convolutions: the filter prepared once at load (Conv3x3Filter), and the Winograd F(4x4, 3x3)
// algorithm for stride-1 "same" convolutions (CDPKernels winograd.c has the transforms and their matrices).
//
// Winograd computes each 4x4 output tile from a 6x6 input patch with 36 multiplications per (Cin, Cout)
// pair instead of 144: the products are 36 GEMMs [tiles x Cin] x [Cin x Cout], one per position of the
// transformed 6x6 tile, between the transformed input tiles V and the transformed filter U. Activations are
// turned into zero-padded NHWC bands of whole tile rows (so the transforms read runs of channels), and the
// scratch (band, V, M = V U, output band) is bounded by `winogradScratchFloats`: large images go band by band.

import CDPKernels
import Foundation

/// A 3x3 convolution's filter, laid out once for the engine's kernels: `taps` [Cin, 9, Cout] holds
/// g[co, ci, ky, kx] at [ci, ky * 3 + kx, co]. The im2col product reads it as the transposed weight matrix
/// (its rows ci * 9 + tap are the im2col rows); the Winograd weight transform reads runs of Cout.
public struct Conv3x3Filter: Sendable {
    public let outChannels: Int
    public let inChannels: Int
    /// [Cin, 9, Cout]
    public let taps: Tensor

    /// From a torch weight [Cout, Cin, 3, 3].
    public init(_ weight: Tensor) {
        precondition(weight.rank == 4 && weight.shape[2] == 3 && weight.shape[3] == 3,
                     "Conv3x3Filter: weight must be [Cout, Cin, 3, 3], got \(weight.shape)")
        let cout = weight.shape[0], cin = weight.shape[1]
        outChannels = cout
        inChannels = cin
        taps = Tensor(shape: [cin, 9, cout]) { out in
            weight.data.withUnsafeBufferPointer { pw in
                guard let src = pw.baseAddress, let dst = out.baseAddress else { return }
                // [Cout, Cin*9] -> [Cin*9, Cout]
                dp_transpose(src, cin * 9, cout, cin * 9, dst, cout)
            }
        }
    }

    /// The torch layout [Cout, Cin, 3, 3] again (for inspection and tests; the kernels never need it).
    public var weight: Tensor {
        Tensor(shape: [outChannels, inChannels, 3, 3]) { out in
            taps.data.withUnsafeBufferPointer { pt in
                guard let src = pt.baseAddress, let dst = out.baseAddress else { return }
                dp_transpose(src, outChannels, inChannels * 9, outChannels, dst, inChannels * 9)
            }
        }
    }
}

/// Which algorithm runs a 3x3 convolution. `automatic` uses Winograd for stride-1, padding-1 convolutions
/// with at least `winogradMinTiles` output tiles, im2col otherwise. DP_CONV3X3=im2col|winograd|automatic sets the process default (for A/B benchmarks).
public enum Conv3x3Algorithm: String, Sendable {
    case automatic, im2col, winograd

    /// The process default, read once from DP_CONV3X3.
    public static let `default`: Conv3x3Algorithm = {
        guard let raw = getenv("DP_CONV3X3") else { return .automatic }
        let value = String(cString: raw)
        guard let algorithm = Conv3x3Algorithm(rawValue: value) else {
            FileHandle.standardError.write(Data(
                "dp-farm: DP_CONV3X3=\(value) is not im2col, winograd or automatic; using automatic\n".utf8))
            return .automatic
        }
        return algorithm
    }()
}

/// Below this many 4x4 output tiles (all images together) a 3x3 convolution runs as im2col: the per-call
/// filter transform and the short products (M = tiles) then cost more than the multiplications saved.
/// Measured on the quiet 2-core AVX-512 machine (`dp-bench conv`): 1280 -> 1280 at 20 x 16, batch 3
/// (60 tiles): im2col 0.109 s, Winograd 0.119 s; 640 -> 640 at 40 x 32, batch 1 (80 tiles): Winograd 2.2x faster.
let winogradMinTiles = 64
/// Bound on one block of the transformed filter (36 x Cin x a block of Cout), in floats (8 MB): the filter is
/// transformed per call, block by block of output channels, so it never exists whole (a 2560 -> 1280
/// filter would be 472 MB transformed).
let winogradFilterBlockFloats = 2 << 20
/// Bound on the per-band scratch (input band, V, M, output band), in floats (32 MB: an 80 x 64 image at
/// 320 channels in two bands).
let winogradScratchFloats = 8 << 20

/// Whether `automatic` picks Winograd for this convolution.
func winogradApplies(_ x: Tensor, filter: Conv3x3Filter, stride: Int, padding: Padding2D) -> Bool {
    guard stride == 1, padding == .symmetric(1), x.rank == 4 else { return false }
    let tiles = x.shape[0] * ((x.shape[2] + 3) / 4) * ((x.shape[3] + 3) / 4)
    return tiles >= winogradMinTiles
}

/// 3x3 convolution, stride 1, padding 1 on every side, by Winograd F(4x4, 3x3):
/// x [N, Cin, H, W] -> [N, Cout, H, W] (+ bias [Cout]).
func winogradConv3x3(_ x: Tensor, filter: Conv3x3Filter, bias: Tensor?,
                     scratchFloats: Int = winogradScratchFloats,
                     filterBlockFloats: Int = winogradFilterBlockFloats) -> Tensor {
    precondition(x.rank == 4 && x.shape[1] == filter.inChannels,
                 "winogradConv3x3: input \(x.shape) does not match the filter's \(filter.inChannels) input channels")
    let n = x.shape[0], cin = filter.inChannels, h = x.shape[2], w = x.shape[3]
    let cout = filter.outChannels
    if let bias { precondition(bias.count == cout, "conv2d: bias has \(bias.count) elements, expected \(cout)") }
    let th = (h + 3) / 4, tw = (w + 3) / 4      // tile rows, tiles per row
    let wp = 4 * tw + 2                         // padded band width (1 left, >= 1 right)
    // Floats per band of R tile rows: input band (4R + 2) x wp x Cin, V 36 R tw Cin, M 36 R tw Cout,
    // output band 4R x 4tw x Cout.
    let perRow = 4 * wp * cin + 36 * tw * (cin + cout) + 16 * tw * cout
    let bandRows = max(1, min(th, (scratchFloats - 2 * wp * cin) / max(1, perRow)))
    let maxTiles = bandRows * tw
    let xbFloats = (4 * bandRows + 2) * wp * cin
    let vFloats = 36 * maxTiles * cin, mFloats = 36 * maxTiles * cout
    let ybFloats = 16 * maxTiles * cout
    let hw = h * w
    // Output channels per transformed-filter block (a multiple of 16 when there is more than one block).
    var coutBlock = min(cout, max(1, filterBlockFloats / max(1, 36 * cin)))
    if coutBlock < cout { coutBlock = max(16, coutBlock / 16 * 16) }
    let singleBlock = coutBlock >= cout

    return Tensor(overwriting: [n, cout, h, w]) { out in
        guard let po = out.baseAddress, n > 0, h > 0, w > 0 else { return }
        x.data.withUnsafeBufferPointer { pxb in
        filter.taps.data.withUnsafeBufferPointer { ptb in
        engineScratch.withBuffer(floats: 36 * cin * min(coutBlock, cout)) { u in
        engineScratch.withBuffer(floats: xbFloats + vFloats + mFloats + ybFloats) { scratch in
        withOptionalPointer(bias) { pbias in
            let px = pxb.baseAddress!, taps = ptb.baseAddress!
            // U [36][Cin][cb] for output channels [co0, co0 + cb)
            func transformFilter(_ co0: Int, _ cb: Int) {
                parallelChunks(cin, work: 36 * cin * cb) { r in
                    dp_wino43_weights(taps, cin, cout, r.lowerBound, r.upperBound, co0, co0 + cb, u)
                }
            }
            if singleBlock { transformFilter(0, cout) }
            let xb = scratch, v = xb + xbFloats, m = v + vFloats, yb = m + mFloats
            for b in 0..<n {
                let xImage = px + b * cin * hw, oImage = po + b * cout * hw
                var ty0 = 0
                while ty0 < th {
                    let rows = min(bandRows, th - ty0)
                    let tiles = rows * tw
                    let bandH = 4 * rows + 2
                    let y0 = 4 * ty0 - 1                // image row of band row 0
                    // 1. Input band, NHWC with a zero border: band row r holds image row y0 + r.
                    parallelFor(bandH, work: bandH * wp * cin) { r in
                        let row = xb + r * wp * cin
                        let y = y0 + r
                        guard y >= 0 && y < h else {
                            row.initialize(repeating: 0, count: wp * cin)
                            return
                        }
                        row.initialize(repeating: 0, count: cin)                       // column 0
                        (row + (w + 1) * cin).initialize(repeating: 0, count: (wp - w - 1) * cin)
                        // [Cin][W] (row stride H*W) -> [W][Cin]
                        dp_transpose(xImage + y * w, hw, cin, w, row + cin, cin)
                    }
                    // 2. V [36][tiles][Cin]
                    parallelChunks(tiles, work: tiles * 36 * cin * 8) { r in
                        dp_wino43_input(xb, wp, cin, tw, r.lowerBound, r.upperBound, v, tiles * cin)
                    }
                    // 3. M[p] [tiles x Cout] = V[p] [tiles x Cin] x U[p] [Cin x Cout], 36 independent products
                    //    per block of output channels.
                    var co0 = 0
                    while co0 < cout {
                        let cb = min(coutBlock, cout - co0)
                        if !singleBlock { transformFilter(co0, cb) }
                        EngineThreads.withSingleThreadedBLAS {
                            parallelFor(36, work: Int.max) { p in
                                gemm(m: tiles, n: cb, k: cin, a: v + p * tiles * cin, lda: cin,
                                     b: u + p * cin * cb, ldb: cb, c: m + p * tiles * cout + co0, ldc: cout)
                            }
                        }
                        co0 += cb
                    }
                    // 4. Output band [4 rows][4 tw][Cout] (NHWC), with the bias.
                    parallelChunks(tiles, work: tiles * 36 * cout * 8) { r in
                        dp_wino43_output(m, tiles * cout, cout, tw, r.lowerBound, r.upperBound, pbias, yb)
                    }
                    // 5. Back to NCHW: the band's output rows that lie in the image.
                    let oy0 = 4 * ty0, oy1 = min(h, 4 * (ty0 + rows))
                    parallelFor(oy1 - oy0, work: (oy1 - oy0) * w * cout) { i in
                        let oy = oy0 + i
                        // [W][Cout] (row stride Cout) -> [Cout][W] (row stride H*W)
                        dp_transpose(yb + (oy - oy0) * 4 * tw * cout, cout, w, cout, oImage + oy * w, hw)
                    }
                    ty0 += rows
                }
            }
        }
        }
        }
        }
        }
    }
}

/// Runs `body` with the tensor's element pointer, or nil for no tensor.
func withOptionalPointer<T>(_ t: Tensor?, _ body: (UnsafePointer<Float>?) -> T) -> T {
    guard let t else { return body(nil) }
    return t.data.withUnsafeBufferPointer { body($0.baseAddress) }
}

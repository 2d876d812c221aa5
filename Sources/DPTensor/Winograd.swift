// 3x3 convolutions: the filter prepared once at load (Conv3x3Filter), and the Winograd F(4x4, 3x3) and
// F(2x2, 3x3) algorithms for stride-1 "same" convolutions (CDPKernels winograd.c has the transforms and
// their matrices).
//
// Winograd F(4x4, 3x3) computes each 4x4 output tile from a 6x6 input patch with 36 multiplications per
// (Cin, Cout) pair instead of 144 (F(2x2, 3x3): a 2x2 tile from a 4x4 patch with 16 instead of 36): the
// products are 36 (16) GEMMs [tiles x Cin] x [Cin x Cout], one per position of the transformed tile, between
// the transformed input tiles V and the transformed filter U. Activations are staged as zero-padded NHWC
// rows (so the transforms read runs of channels); the tiles of all images are processed in groups of tile
// rows bounded by `winogradScratchFloats` (the whole batch at once where it fits), and the filter is
// transformed per call, per group, in blocks bounded by `winogradFilterBlockFloats` (F(4x4) for large
// images, F(2x2) for the small ones where F(4x4)'s few tiles cannot pay for its filter transform).

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

/// Which algorithm runs a 3x3 convolution. `automatic` uses Winograd F(4x4, 3x3) or F(2x2, 3x3) for
/// stride-1, padding-1 convolutions with enough output tiles (`winogradTileSide`), im2col otherwise.
/// DP_CONV3X3=im2col|winograd|winograd2x2|automatic sets the process default (for A/B benchmarks).
public enum Conv3x3Algorithm: String, Sendable {
    /// Winograd F(4x4, 3x3) or F(2x2, 3x3) where it applies (`winogradTileSide`), else im2col.
    case automatic, im2col
    /// Winograd F(4x4, 3x3) (stride-1, padding-1 convolutions; others run as im2col).
    case winograd
    /// Winograd F(2x2, 3x3) (likewise).
    case winograd2x2

    /// The process default, read once from DP_CONV3X3.
    public static let `default`: Conv3x3Algorithm = {
        guard let raw = getenv("DP_CONV3X3") else { return .automatic }
        let value = String(cString: raw)
        guard let algorithm = Conv3x3Algorithm(rawValue: value) else {
            FileHandle.standardError.write(Data(
                "dp-farm: DP_CONV3X3=\(value) is not im2col, winograd, winograd2x2 or automatic; using automatic\n".utf8))
            return .automatic
        }
        return algorithm
    }()
}

/// `automatic`'s choice (`winogradTileSide`): F(4x4, 3x3) from this many 4x4 output tiles (all images
/// together), F(2x2, 3x3) below that from `winograd2x2MinTiles` 2x2 tiles, im2col below that and for
/// fewer than `winogradMinInputChannels` input channels (the transforms then cost more than the products
/// they save). Measured on the 2-core AVX-512 machine (`dp-bench conv`, 1280 -> 1280, seconds im2col /
/// F(4x4) / F(2x2)): 20 x 16 batch 3 (60 4x4 tiles) 0.106 / 0.061 / 0.060, caches flushed 0.218 / 0.097 /
/// 0.128; 40-48 4x4 tiles: F(4x4) and F(2x2) within 10%; 24 x 20 batch 1 (30 4x4 tiles) F(2x2) 15% ahead;
/// 10 x 8 batch 3 (60 2x2 tiles) 0.041 / 0.043 / 0.025; 10 x 8 batch 2 (40) 0.054 / 0.051 / 0.038;
/// 12 x 12 batch 1 (36) 0.039 / 0.055 / 0.035; 10 x 8 batch 1 (20) 0.0275 / 0.051 / 0.029. 14 -> 320 at
/// 80 x 64 batch 3 (the UNet's conv_in): 0.0054 / 0.0120 / 0.0155.
let winogradMinTiles = 48
let winograd2x2MinTiles = 32
let winogradMinInputChannels = 32
/// Bound on one block of the transformed filter (positions x a block of Cin x a block of Cout), in floats
/// (8 MB): the filter is transformed per call, block by block, so it never exists whole (a 2560 -> 1280
/// filter would be 472 MB transformed).
let winogradFilterBlockFloats = 2 << 20
/// Output channels per block of the transformed filter (and of the products M = V U).
let winogradCoutBlock = 256
/// Bound on the per-group scratch (V for the group's tiles, then one output-channel block of M and of the
/// NHWC output, whose space first holds the NHWC input staging rows), in floats (32 MB).
let winogradScratchFloats = 8 << 20

/// The Winograd tile side `automatic` picks for this convolution (4: F(4x4, 3x3), 2: F(2x2, 3x3)), or nil
/// for im2col.
func winogradTileSide(_ x: Tensor, filter: Conv3x3Filter, stride: Int, padding: Padding2D) -> Int? {
    guard stride == 1, padding == .symmetric(1), x.rank == 4, filter.inChannels >= winogradMinInputChannels
    else { return nil }
    let n = x.shape[0], h = x.shape[2], w = x.shape[3]
    if n * ((h + 3) / 4) * ((w + 3) / 4) >= winogradMinTiles { return 4 }
    if n * ((h + 1) / 2) * ((w + 1) / 2) >= winograd2x2MinTiles { return 2 }
    return nil
}

/// Whether `automatic` picks Winograd (either tile size) for this convolution.
func winogradApplies(_ x: Tensor, filter: Conv3x3Filter, stride: Int, padding: Padding2D) -> Bool {
    winogradTileSide(x, filter: filter, stride: stride, padding: padding) != nil
}

/// 3x3 convolution, stride 1, padding 1 on every side, by Winograd F(m x m, 3x3), m = `tileSide` (4 or 2):
/// x [N, Cin, H, W] -> [N, Cout, H, W] (+ bias [Cout]).
///
/// The tiles of all images are numbered in one sequence of tile rows (image-major) and processed in groups
/// of whole tile rows, as many as `scratchFloats` holds (a whole batch of small images in one group, large
/// images in bands). Per group: V [P][tiles][Cin] (P = (m+2)^2 positions), then per block of output
/// channels: the filter block transformed (in blocks of input channels, the products accumulating over
/// them), P products M[p] [tiles x cb] = V[p] U[p], the output transform with the bias into an NHWC band
/// and back to NCHW. The filter is transformed once per group, so once per call when the group is the batch.
func winogradConv3x3(_ x: Tensor, filter: Conv3x3Filter, bias: Tensor?, tileSide: Int = 4,
                     scratchFloats: Int = winogradScratchFloats,
                     filterBlockFloats: Int = winogradFilterBlockFloats,
                     coutBlock: Int = winogradCoutBlock,
                     groupRowsLimit: Int = .max, stagingRowsLimit: Int = .max) -> Tensor {
    precondition(x.rank == 4 && x.shape[1] == filter.inChannels,
                 "winogradConv3x3: input \(x.shape) does not match the filter's \(filter.inChannels) input channels")
    precondition(tileSide == 4 || tileSide == 2, "winogradConv3x3: tile side \(tileSide) is not 4 or 2")
    let n = x.shape[0], cin = filter.inChannels, h = x.shape[2], w = x.shape[3]
    let cout = filter.outChannels
    if let bias { precondition(bias.count == cout, "conv2d: bias has \(bias.count) elements, expected \(cout)") }
    let mt = tileSide, positions = (mt + 2) * (mt + 2)
    let th = (h + mt - 1) / mt, tw = (w + mt - 1) / mt     // tile rows, tiles per row (per image)
    let wp = mt * tw + 2                                   // padded staging width (1 left, >= 1 right)
    let totalRows = n * th                                 // tile rows of all images
    let hw = h * w

    // Output-channel blocks of cb (balanced, a multiple of 16 when there is more than one), input-channel
    // blocks of kb so that one transformed block [P][kb][cb] stays within filterBlockFloats.
    var cb = min(cout, max(1, coutBlock))
    if cb < cout {
        let blocks = (cout + cb - 1) / cb
        cb = min(cout, ((cout + blocks - 1) / blocks + 15) / 16 * 16)
    }
    var kb = min(cin, max(16, filterBlockFloats / max(1, positions * cb)))
    if kb < cin {
        let blocks = (cin + kb - 1) / kb
        kb = min(cin, ((cin + blocks - 1) / blocks + 15) / 16 * 16)
    }
    let uFloats = positions * kb * cb
    // Group: R tile rows; V P R tw Cin, M P R tw cb, output band m^2 R tw cb.
    let minStagingFloats = (mt + 2) * wp * cin               // one tile row's input rows
    let perRow = tw * (positions * cin + positions * cb + mt * mt * cb)
    var groupRows = max(1, min(totalRows, groupRowsLimit, (scratchFloats - minStagingFloats) / max(1, perRow)))
    let groups = (totalRows + groupRows - 1) / groupRows
    groupRows = (totalRows + groups - 1) / groups
    let maxTiles = groupRows * tw
    let vFloats = positions * maxTiles * cin, mFloats = positions * maxTiles * cb
    let ybFloats = mt * mt * maxTiles * cb
    // Staging (NHWC input rows, (m S + 2) x wp x Cin for S tile rows of one image) is only live while V is
    // built, M and the output band only after: it shares their space, so S is as large as that space allows.
    let sharedFloats = max(mFloats + ybFloats, minStagingFloats)
    let stagingRows = max(1, min(th, stagingRowsLimit, (sharedFloats / max(1, wp * cin) - 2) / mt))
    // One filter block for the whole filter: transformed once per call, before the groups.
    let wholeFilter = kb == cin && cb == cout
    let weights = mt == 4 ? dp_wino43_weights : dp_wino23_weights
    let inputTransform = mt == 4 ? dp_wino43_input : dp_wino23_input
    let outputTransform = mt == 4 ? dp_wino43_output : dp_wino23_output

    return Tensor(overwriting: [n, cout, h, w]) { out in
        guard let po = out.baseAddress, n > 0, h > 0, w > 0 else { return }
        x.data.withUnsafeBufferPointer { pxb in
        filter.taps.data.withUnsafeBufferPointer { ptb in
        // Every call asks for the full bounds (when its needs fit them), so the pool hands the same two
        // buffers to every convolution instead of keeping one of each size (pages never touched stay unmapped).
        engineScratch.withBuffer(floats: max(uFloats, filterBlockFloats)) { u in
        engineScratch.withBuffer(floats: max(vFloats + sharedFloats, scratchFloats)) { scratch in
        withOptionalPointer(bias) { pbias in
            let px = pxb.baseAddress!, taps = ptb.baseAddress!
            let v = scratch, m = v + vFloats, yb = m + mFloats, xb = m
            // U [P][kbb][cbb] for input channels [ci0, ci0 + kbb), output channels [co0, co0 + cbb)
            func transformFilter(_ ci0: Int, _ kbb: Int, _ co0: Int, _ cbb: Int) {
                parallelChunks(kbb, work: positions * kbb * cbb) { r in
                    weights(taps, cout, ci0 + r.lowerBound, ci0 + r.upperBound, co0, co0 + cbb,
                            u + r.lowerBound * cbb, kbb * cbb)
                }
            }
            if wholeFilter { transformFilter(0, cin, 0, cout) }
            // The products run one per engine thread (OpenBLAS single-threaded inside them); the rest of the
            // loop is our own kernels.
            EngineThreads.withSingleThreadedBLAS {
            var g0 = 0
            while g0 < totalRows {
                let rows = min(groupRows, totalRows - g0)      // global tile rows g0 ..< g0 + rows
                let tiles = rows * tw
                // 1. V [P][tiles][Cin], staged S tile rows of one image at a time.
                var gr = g0
                while gr < g0 + rows {
                    let b = gr / th, ty = gr % th
                    let sRows = min(stagingRows, g0 + rows - gr, th - ty)
                    let bandH = mt * sRows + 2
                    let y0 = mt * ty - 1                        // image row of staging row 0
                    let xImage = px + b * cin * hw
                    // NHWC with a zero border: staging row r holds image row y0 + r.
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
                    let sTiles = sRows * tw, vOffset = (gr - g0) * tw * cin
                    parallelChunks(sTiles, work: sTiles * positions * cin * 8) { r in
                        inputTransform(xb, wp, cin, tw, r.lowerBound, r.upperBound, v + vOffset, tiles * cin)
                    }
                    gr += sRows
                }
                // 2. Per block of output channels [co0, co0 + cbb).
                var co0 = 0
                while co0 < cout {
                    let cbb = min(cb, cout - co0)
                    var ci0 = 0
                    while ci0 < cin {
                        let kbb = min(kb, cin - ci0)
                        if !wholeFilter { transformFilter(ci0, kbb, co0, cbb) }
                        // M[p] [tiles x cbb] (+)= V[p][:, ci0 ..< ci0 + kbb] x U[p], P independent products.
                        let beta: Float = ci0 == 0 ? 0 : 1
                        parallelFor(positions, work: Int.max) { p in
                            gemm(m: tiles, n: cbb, k: kbb, a: v + p * tiles * cin + ci0, lda: cin,
                                 b: u + p * kbb * cbb, ldb: cbb, beta: beta, c: m + p * tiles * cbb, ldc: cbb)
                        }
                        ci0 += kbb
                    }
                    // 3. Output band [m rows][m tw][cbb] (NHWC), with the bias.
                    let blockBias = pbias.map { $0 + co0 }
                    parallelChunks(tiles, work: tiles * positions * cbb * 8) { r in
                        outputTransform(m, tiles * cbb, cbb, tw, r.lowerBound, r.upperBound, blockBias, yb)
                    }
                    // 4. Back to NCHW: the band's output rows that lie in their image.
                    let bandRows = mt * rows
                    parallelFor(bandRows, work: bandRows * w * cbb) { lr in
                        let grow = g0 + lr / mt
                        let b = grow / th, oy = mt * (grow % th) + lr % mt
                        guard oy < h else { return }
                        // [W][cbb] (row stride cbb) -> [cbb][W] (row stride H*W)
                        dp_transpose(yb + lr * mt * tw * cbb, cbb, w, cbb, po + (b * cout + co0) * hw + oy * w, hw)
                    }
                    co0 += cbb
                }
                g0 += rows
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

import CDPKernels
import XCTest
@testable import DPTensor

/// Winograd F(4x4, 3x3) and F(2x2, 3x3) against the naive reference convolution, on shapes that hit every
/// edge: sizes that are not multiples of the tile (and smaller than one tile), channel counts that are not
/// multiples of the 8 / 16-float vectors, several images, groups of tile rows that start and end inside an
/// image and span images (small group limits), staging in several pieces, blocks of output and input channels
/// of the transformed filter (small block bounds, the products accumulating over input-channel blocks), with
/// and without bias.
final class WinogradTests: XCTestCase {
    struct Case { var n, cin, h, w, cout: Int; var bias: Bool }

    let cases: [Case] = [
        Case(n: 1, cin: 1, h: 1, w: 1, cout: 1, bias: true),        // smaller than one tile
        Case(n: 1, cin: 3, h: 5, w: 7, cout: 2, bias: false),       // partial tiles on both sides
        Case(n: 2, cin: 17, h: 9, w: 6, cout: 33, bias: true),      // channels off the vector widths
        Case(n: 1, cin: 8, h: 4, w: 4, cout: 16, bias: true),       // exactly one tile, full vectors
        Case(n: 3, cin: 20, h: 13, w: 11, cout: 24, bias: true),
        Case(n: 1, cin: 35, h: 16, w: 20, cout: 19, bias: false),
        Case(n: 2, cin: 48, h: 10, w: 3, cout: 40, bias: true),     // narrower than a tile row
        Case(n: 3, cin: 37, h: 7, w: 9, cout: 50, bias: true),      // odd sizes, groups across images
    ]

    func testMatchesReferenceOnAwkwardShapes() {
        var rng = SeededRandom(seed: 41)
        for (i, cs) in cases.enumerated() {
            let x = rng.tensor([cs.n, cs.cin, cs.h, cs.w])
            let w = rng.tensor([cs.cout, cs.cin, 3, 3])
            let b = cs.bias ? rng.tensor([cs.cout]) : nil
            let ref = Ref.conv2d(x, w, b, stride: 1, pad: .symmetric(1))
            let filter = Conv3x3Filter(w)
            for side in [4, 2] {
                let tag = "case \(i) \(cs) F(\(side)x\(side))"
                assertClose(winogradConv3x3(x, filter: filter, bias: b, tileSide: side), ref, tol: 2e-5, tag)
                // One tile row per group, filter blocks of 16 output and 16 input channels (several blocks
                // where the channel counts exceed 16; the products accumulate over the input blocks).
                assertClose(winogradConv3x3(x, filter: filter, bias: b, tileSide: side, scratchFloats: 1,
                                            filterBlockFloats: 1, coutBlock: 16),
                            ref, tol: 2e-5, "\(tag) one row per group, blocked")
                // Groups of 3 tile rows (starting inside an image and running into the next), staged one or two
                // tile rows at a time.
                for staging in [1, 2] {
                    assertClose(winogradConv3x3(x, filter: filter, bias: b, tileSide: side, groupRowsLimit: 3,
                                                stagingRowsLimit: staging),
                                ref, tol: 2e-5, "\(tag) groups of 3 rows, staging \(staging)")
                }
            }
            // Through the public entry point, forced.
            assertClose(conv2d(x, filter: filter, bias: b, algorithm: .winograd), ref, tol: 2e-5, "case \(i) public")
            assertClose(conv2d(x, filter: filter, bias: b, algorithm: .winograd2x2), ref, tol: 2e-5,
                        "case \(i) public 2x2")
        }
    }

    /// The transforms' AVX-512, AVX2 and portable builds (vector bodies and float tails: 37 channels are two
    /// 16-float vectors and a 5-float tail, or four 8-float vectors and a 5-float tail), both tile sizes.
    func testEverySIMDBuild() {
        var rng = SeededRandom(seed: 17)
        let x = rng.tensor([2, 37, 9, 7])
        let w = rng.tensor([21, 37, 3, 3])
        let b = rng.tensor([21])
        let ref = Ref.conv2d(x, w, b, stride: 1, pad: .symmetric(1))
        let filter = Conv3x3Filter(w)
        for level: Int32 in [2, 1, 0] {
            withSIMDLevel(level) { used in
                for side in [4, 2] {
                    assertClose(winogradConv3x3(x, filter: filter, bias: b, tileSide: side, coutBlock: 16), ref,
                                tol: 2e-5, "SIMD level \(used), F(\(side)x\(side))")
                }
            }
        }
    }

    /// Large inputs (where the error of the transforms grows with the channel count) stay within 2e-5 of the
    /// output's scale (measured 1.1e-5 here), five times inside the golden tolerance.
    func testAccuracyAtUNetChannelCounts() {
        var rng = SeededRandom(seed: 7)
        let x = rng.tensor([1, 320, 12, 12])
        let w = rng.tensor([64, 320, 3, 3], -0.05, 0.05)     // torch's default init scale for 320 x 9 fan-in
        let ref = Ref.conv2d(x, w, nil, stride: 1, pad: .symmetric(1))
        for side in [4, 2] {
            let y = winogradConv3x3(x, filter: Conv3x3Filter(w), bias: nil, tileSide: side)
            XCTAssertLessThanOrEqual(y.maxAbsDifference(ref), 2e-5 * ref.maxAbs, "F(\(side)x\(side))")
        }
    }

    func testAutomaticChoice() {
        let filter = Conv3x3Filter(Tensor(zeros: [4, 32, 3, 3]))
        func side(_ shape: [Int], stride: Int = 1, padding: Int = 1, _ f: Conv3x3Filter? = nil) -> Int? {
            winogradTileSide(Tensor(zeros: shape), filter: f ?? filter, stride: stride, padding: .symmetric(padding))
        }
        XCTAssertEqual(side([1, 32, 32, 32]), 4, "64 4x4 tiles: F(4x4)")
        XCTAssertEqual(side([3, 32, 20, 16]), 4, "60 4x4 tiles (the UNet's 20 x 16 level): F(4x4)")
        XCTAssertEqual(side([3, 32, 10, 8]), 2, "18 4x4 tiles, 60 2x2 tiles (the 10 x 8 level): F(2x2)")
        XCTAssertEqual(side([1, 32, 12, 12]), 2, "36 2x2 tiles: F(2x2)")
        XCTAssertNil(side([1, 32, 10, 10]), "25 2x2 tiles: im2col")
        XCTAssertNil(side([1, 4, 32, 32], Conv3x3Filter(Tensor(zeros: [4, 4, 3, 3]))), "4 input channels: im2col")
        XCTAssertNil(side([1, 32, 32, 32], stride: 2))
        XCTAssertNil(side([1, 32, 32, 32], padding: 0))
        XCTAssertTrue(winogradApplies(Tensor(zeros: [1, 32, 32, 32]), filter: filter, stride: 1, padding: .symmetric(1)))
        XCTAssertEqual(conv3x3Path(Tensor(zeros: [3, 32, 10, 8]), filter: filter, stride: 1, padding: .symmetric(1),
                                   algorithm: .automatic), "winograd2x2")
        XCTAssertEqual(conv3x3Path(Tensor(zeros: [3, 32, 10, 8]), filter: filter, stride: 1, padding: .symmetric(1),
                                   algorithm: .im2col), "im2col")
        // A strided or unpadded convolution asked for Winograd still runs (as im2col) and is right.
        var rng = SeededRandom(seed: 3)
        let x = rng.tensor([1, 4, 9, 9]), w = rng.tensor([5, 4, 3, 3])
        assertClose(conv2d(x, filter: Conv3x3Filter(w), bias: nil, stride: 2, padding: .symmetric(1), algorithm: .winograd),
                    Ref.conv2d(x, w, nil, stride: 2, pad: .symmetric(1)), tol: 1e-5, "strided")
        assertClose(conv2d(x, filter: Conv3x3Filter(w), bias: nil, stride: 2, padding: .symmetric(1), algorithm: .winograd2x2),
                    Ref.conv2d(x, w, nil, stride: 2, pad: .symmetric(1)), tol: 1e-5, "strided, 2x2 asked")
    }

    func testFilterLayoutRoundTrips() {
        var rng = SeededRandom(seed: 5)
        let w = rng.tensor([7, 5, 3, 3])
        let filter = Conv3x3Filter(w)
        XCTAssertEqual(filter.taps.shape, [5, 9, 7])
        XCTAssertEqual(filter.weight, w)
        // g[co=2, ci=3, ky=1, kx=2] sits at [ci, ky*3+kx, co].
        XCTAssertEqual(filter.taps.data[(3 * 9 + 5) * 7 + 2], w.data[((2 * 5 + 3) * 3 + 1) * 3 + 2])
    }

    func testTransposeOnOddSizes() {
        var rng = SeededRandom(seed: 9)
        for (rows, cols) in [(1, 1), (3, 17), (8, 8), (19, 9), (16, 33), (40, 5)] {
            let lds = cols + 3, ldd = rows + 2
            let src = rng.tensor([rows * lds])
            var dst = [Float](repeating: -7, count: cols * ldd)
            src.data.withUnsafeBufferPointer { ps in
                dst.withUnsafeMutableBufferPointer { pd in
                    dp_transpose(ps.baseAddress!, lds, rows, cols, pd.baseAddress!, ldd)
                }
            }
            for i in 0..<rows {
                for j in 0..<cols { XCTAssertEqual(dst[j * ldd + i], src.data[i * lds + j], "\(rows)x\(cols) [\(i), \(j)]") }
            }
            for j in 0..<cols {
                for i in rows..<ldd { XCTAssertEqual(dst[j * ldd + i], -7, "\(rows)x\(cols): wrote outside the block") }
            }
        }
    }

    func testScratchPoolReusesAndBoundsWhatItKeeps() {
        let pool = ScratchPool(maxRetainedFloats: 1000)
        let first = pool.withBuffer(floats: 600) { UInt(bitPattern: $0) }
        XCTAssertEqual(pool.withBuffer(floats: 500) { UInt(bitPattern: $0) }, first, "a free buffer that fits is reused")
        // Two buffers held at once: the second is new; on return only what fits in 1000 floats is kept.
        pool.withBuffer(floats: 600) { outer in
            pool.withBuffer(floats: 700) { inner in XCTAssertNotEqual(UInt(bitPattern: inner), UInt(bitPattern: outer)) }
        }
        let kept = pool.withBuffer(floats: 650) { UInt(bitPattern: $0) }
        let again = pool.withBuffer(floats: 100) { UInt(bitPattern: $0) }
        XCTAssertEqual(kept, again, "only one buffer (the 700) is kept")
    }
}

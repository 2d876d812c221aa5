import CDPKernels
import XCTest
@testable import DPTensor

/// Winograd F(4x4, 3x3) against the naive reference convolution, on shapes that hit every edge: sizes that
/// are not multiples of the 4x4 tile (and smaller than one tile), channel counts that are not multiples of
/// the 8 / 16-float vectors, several images, bands (a small scratch bound), output-channel blocks of the
/// transformed filter (a small block bound), with and without bias.
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
    ]

    func testMatchesReferenceOnAwkwardShapes() {
        var rng = SeededRandom(seed: 41)
        for (i, cs) in cases.enumerated() {
            let x = rng.tensor([cs.n, cs.cin, cs.h, cs.w])
            let w = rng.tensor([cs.cout, cs.cin, 3, 3])
            let b = cs.bias ? rng.tensor([cs.cout]) : nil
            let ref = Ref.conv2d(x, w, b, stride: 1, pad: .symmetric(1))
            let filter = Conv3x3Filter(w)
            assertClose(winogradConv3x3(x, filter: filter, bias: b), ref, tol: 2e-5, "case \(i) \(cs)")
            // One tile row per band, and a filter block of 16 output channels (several blocks where Cout > 16).
            assertClose(winogradConv3x3(x, filter: filter, bias: b, scratchFloats: 1, filterBlockFloats: 1),
                        ref, tol: 2e-5, "case \(i) banded, blocked")
            // Through the public entry point, forced.
            assertClose(conv2d(x, filter: filter, bias: b, algorithm: .winograd), ref, tol: 2e-5, "case \(i) public")
        }
    }

    /// Large inputs (where the error of the transforms grows with the channel count) stay within 2e-5 of the
    /// output's scale (measured 1.1e-5 here), five times inside the golden tolerance.
    func testAccuracyAtUNetChannelCounts() {
        var rng = SeededRandom(seed: 7)
        let x = rng.tensor([1, 320, 12, 12])
        let w = rng.tensor([64, 320, 3, 3], -0.05, 0.05)     // torch's default init scale for 320 x 9 fan-in
        let ref = Ref.conv2d(x, w, nil, stride: 1, pad: .symmetric(1))
        let y = winogradConv3x3(x, filter: Conv3x3Filter(w), bias: nil)
        XCTAssertLessThanOrEqual(y.maxAbsDifference(ref), 2e-5 * ref.maxAbs)
    }

    func testAutomaticChoice() {
        let filter = Conv3x3Filter(Tensor(zeros: [4, 4, 3, 3]))
        XCTAssertTrue(winogradApplies(Tensor(zeros: [1, 4, 32, 32]), filter: filter, stride: 1, padding: .symmetric(1)))
        XCTAssertFalse(winogradApplies(Tensor(zeros: [1, 4, 8, 8]), filter: filter, stride: 1, padding: .symmetric(1)),
                       "4 tiles: im2col")
        XCTAssertFalse(winogradApplies(Tensor(zeros: [1, 4, 32, 32]), filter: filter, stride: 2, padding: .symmetric(1)))
        XCTAssertFalse(winogradApplies(Tensor(zeros: [1, 4, 32, 32]), filter: filter, stride: 1, padding: .symmetric(0)))
        // A strided or unpadded convolution asked for Winograd still runs (as im2col) and is right.
        var rng = SeededRandom(seed: 3)
        let x = rng.tensor([1, 4, 9, 9]), w = rng.tensor([5, 4, 3, 3])
        assertClose(conv2d(x, filter: Conv3x3Filter(w), bias: nil, stride: 2, padding: .symmetric(1), algorithm: .winograd),
                    Ref.conv2d(x, w, nil, stride: 2, pad: .symmetric(1)), tol: 1e-5, "strided")
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

import XCTest
@testable import DPTensor

final class ConvTests: XCTestCase {
    struct Case { var n, cin, h, w, cout, kh, kw, stride: Int; var pad: Padding2D; var bias: Bool }

    let cases: [Case] = [
        Case(n: 1, cin: 4, h: 6, w: 5, cout: 3, kh: 1, kw: 1, stride: 1, pad: .symmetric(0), bias: true),   // direct GEMM
        Case(n: 2, cin: 5, h: 7, w: 9, cout: 6, kh: 1, kw: 1, stride: 1, pad: .symmetric(0), bias: false),
        Case(n: 2, cin: 3, h: 7, w: 8, cout: 4, kh: 1, kw: 1, stride: 2, pad: .symmetric(0), bias: true),   // 1x1 strided
        Case(n: 1, cin: 3, h: 5, w: 5, cout: 2, kh: 1, kw: 1, stride: 1, pad: .symmetric(1), bias: true),   // 1x1 padded
        Case(n: 2, cin: 3, h: 9, w: 11, cout: 5, kh: 3, kw: 3, stride: 1, pad: .symmetric(1), bias: true),
        Case(n: 1, cin: 4, h: 10, w: 7, cout: 3, kh: 3, kw: 3, stride: 2, pad: .symmetric(1), bias: true),
        Case(n: 2, cin: 4, h: 9, w: 8, cout: 3, kh: 3, kw: 3, stride: 2,
             pad: Padding2D(top: 0, bottom: 1, left: 0, right: 1), bias: true),                              // VAE downsample
        Case(n: 1, cin: 2, h: 8, w: 6, cout: 3, kh: 3, kw: 3, stride: 1, pad: .symmetric(0), bias: false),
        Case(n: 1, cin: 3, h: 9, w: 10, cout: 4, kh: 5, kw: 3, stride: 1,
             pad: Padding2D(top: 2, bottom: 1, left: 1, right: 0), bias: true),                              // non-square kernel
        Case(n: 2, cin: 2, h: 12, w: 13, cout: 3, kh: 4, kw: 4, stride: 3, pad: .symmetric(2), bias: true),
        Case(n: 1, cin: 1, h: 3, w: 3, cout: 1, kh: 3, kw: 3, stride: 1, pad: .symmetric(3), bias: true),    // mostly padding
        Case(n: 1, cin: 16, h: 24, w: 20, cout: 8, kh: 3, kw: 3, stride: 1, pad: .symmetric(1), bias: true), // parallel im2col
    ]

    func testConv2dMatchesReference() {
        var rng = SeededRandom(seed: 10)
        for (i, cs) in cases.enumerated() {
            let x = rng.tensor([cs.n, cs.cin, cs.h, cs.w])
            let w = rng.tensor([cs.cout, cs.cin, cs.kh, cs.kw])
            let b = cs.bias ? rng.tensor([cs.cout]) : nil
            let ref = Ref.conv2d(x, w, b, stride: cs.stride, pad: cs.pad)
            assertClose(conv2d(x, weight: w, bias: b, stride: cs.stride, padding: cs.pad), ref, tol: 1e-5, "case \(i) \(cs)")
            // Tiny scratch bounds force one output row per tile, then a few rows per tile.
            for scratch in [1, cs.cin * cs.kh * cs.kw * ref.shape[3] * 2 + 1] {
                assertClose(conv2d(x, weight: w, bias: b, stride: cs.stride, padding: cs.pad, scratchFloats: scratch),
                            ref, tol: 1e-5, "case \(i) scratch \(scratch)")
            }
        }
    }

    func testConv2dOutputShapeFloorsLikeTorch() {
        let x = Tensor(zeros: [1, 1, 8, 8]), w = Tensor(zeros: [2, 1, 3, 3])
        XCTAssertEqual(conv2d(x, weight: w, bias: nil, stride: 2, padding: Padding2D(top: 0, bottom: 1, left: 0, right: 1)).shape,
                       [1, 2, 4, 4])
        XCTAssertEqual(conv2d(x, weight: w, bias: nil, stride: 2, padding: .symmetric(1)).shape, [1, 2, 4, 4])
        XCTAssertEqual(conv2d(Tensor(zeros: [1, 1, 7, 7]), weight: w, bias: nil, stride: 2, padding: .symmetric(1)).shape,
                       [1, 2, 4, 4])
    }
}

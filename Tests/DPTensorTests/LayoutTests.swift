import XCTest
@testable import DPTensor

final class LayoutTests: XCTestCase {
    func testAddScaleAndChannelBias() {
        var rng = SeededRandom(seed: 40)
        let a = rng.tensor([2, 3, 5, 7]), b = rng.tensor([2, 3, 5, 7])
        assertClose(add(a, b), Tensor(shape: a.shape, data: zip(a.data, b.data).map { $0 + $1 }), tol: 0, "add")
        assertClose(scale(a, by: -0.18215), Ref.map(a) { $0 * Double(Float(-0.18215)) }, tol: 1e-7, "scale")
        let bias = rng.tensor([2, 3]), shared = rng.tensor([3])
        var ref = a.data, refShared = a.data
        for n in 0..<2 { for c in 0..<3 { for i in 0..<35 {
            ref[(n * 3 + c) * 35 + i] += bias.data[n * 3 + c]
            refShared[(n * 3 + c) * 35 + i] += shared.data[c]
        } } }
        assertClose(addChannelBias(a, bias), Tensor(shape: a.shape, data: ref), tol: 0, "addChannelBias [N, C]")
        assertClose(addChannelBias(a, shared), Tensor(shape: a.shape, data: refShared), tol: 0, "addChannelBias [C]")
        let big = rng.tensor([1, 4, 100, 101]), big2 = rng.tensor([1, 4, 100, 101])
        assertClose(add(big, big2), Tensor(shape: big.shape, data: zip(big.data, big2.data).map { $0 + $1 }), tol: 0, "add parallel")
    }

    func testConcatAndSliceEveryAxis() {
        var rng = SeededRandom(seed: 41)
        let a = rng.tensor([2, 3, 4, 5])
        for axis in 0..<4 {
            var bShape = a.shape; bShape[axis] = 2
            var cShape = a.shape; cShape[axis] = 1
            let b = rng.tensor(bShape), c = rng.tensor(cShape)
            let cat = concat([a, b, c], axis: axis)
            var expShape = a.shape; expShape[axis] += 3
            XCTAssertEqual(cat.shape, expShape)
            // Element check via multi-indices.
            for flat in 0..<cat.count {
                var idx = [Int](repeating: 0, count: 4), r = flat
                for d in (0..<4).reversed() { idx[d] = r % expShape[d]; r /= expShape[d] }
                let pos = idx[axis]
                let expected: Float
                if pos < a.shape[axis] { expected = Ref.at(a, idx) }
                else if pos < a.shape[axis] + 2 { var j = idx; j[axis] -= a.shape[axis]; expected = Ref.at(b, j) }
                else { var j = idx; j[axis] -= a.shape[axis] + 2; expected = Ref.at(c, j) }
                XCTAssertEqual(cat.data[flat], expected, "concat axis \(axis) at \(idx)")
            }
            // Slicing the pieces back out recovers them.
            XCTAssertEqual(slice(cat, axis: axis, range: 0..<a.shape[axis]), a, "slice a, axis \(axis)")
            XCTAssertEqual(slice(cat, axis: axis, range: a.shape[axis]..<(a.shape[axis] + 2)), b, "slice b, axis \(axis)")
            XCTAssertEqual(slice(cat, axis: axis, range: (a.shape[axis] + 2)..<expShape[axis]), c, "slice c, axis \(axis)")
        }
        XCTAssertEqual(slice(a, axis: 2, range: 1..<1).shape, [2, 3, 0, 5])
    }

    func testTokensRoundTripAndLayout() {
        var rng = SeededRandom(seed: 42)
        for (n, c, h, w) in [(2, 5, 3, 7), (1, 70, 9, 40), (1, 1, 1, 1)] {
            let x = rng.tensor([n, c, h, w])
            let t = toTokens(x)
            XCTAssertEqual(t.shape, [n, h * w, c])
            for b in 0..<n { for ch in 0..<c { for p in 0..<(h * w) {
                XCTAssertEqual(t.data[(b * h * w + p) * c + ch], x.data[(b * c + ch) * h * w + p])
            } } }
            XCTAssertEqual(fromTokens(t, height: h, width: w), x, "round trip \(x.shape)")
        }
    }

    func testUpsampleAndMaxPool() {
        var rng = SeededRandom(seed: 43)
        let x = rng.tensor([2, 3, 5, 7])
        let up = upsampleNearest2x(x)
        XCTAssertEqual(up.shape, [2, 3, 10, 14])
        for p in 0..<6 { for y in 0..<10 { for xx in 0..<14 {
            XCTAssertEqual(up.data[(p * 10 + y) * 14 + xx], x.data[(p * 5 + y / 2) * 7 + xx / 2])
        } } }
        let pooled = maxPool2x2(x)   // odd H, W: the last row/column is dropped (floor)
        XCTAssertEqual(pooled.shape, [2, 3, 2, 3])
        for p in 0..<6 { for y in 0..<2 { for xx in 0..<3 {
            let vals = [(0, 0), (0, 1), (1, 0), (1, 1)].map { x.data[(p * 5 + 2 * y + $0.0) * 7 + 2 * xx + $0.1] }
            XCTAssertEqual(pooled.data[(p * 2 + y) * 3 + xx], vals.max()!)
        } } }
    }
}

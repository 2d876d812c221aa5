// Pillow's 8-bit BICUBIC resize, bit for bit (src/libImaging/Resample.c, `Image.resize(size, BICUBIC)`
// with no box and no reducing_gap). See docs/dreampose-inference.md "Pillow's BICUBIC resize".
//
// Separable: the horizontal pass runs first and is clipped to uint8; the vertical pass then runs on
// that 8-bit intermediate. A pass whose size does not change is skipped. Per pass, for output index
// `i`: `scale = in/out`, `filterscale = max(scale, 1)`, `support = 2 * filterscale`,
// `center = (i + 0.5) * scale`, taps `xmin = max(int(center - support + 0.5), 0)` ..<
// `min(int(center + support + 0.5), in)`, weights `k((j - center + 0.5) / filterscale)` (cubic kernel,
// a = -0.5) normalised to sum 1 in double, then fixed point with 22 fractional bits rounded half away
// from zero. Output = clip8((2^21 + sum(w_j * p_j)) >> 22).

public enum PillowResize {
    /// Fractional bits of the fixed-point weights (Pillow: 32 - 8 - 2).
    static let precisionBits = 22

    /// Resizes `img` to `width` x `height` exactly as Pillow's `img.resize((width, height), BICUBIC)`.
    public static func bicubic(_ img: RGBImage, width: Int, height: Int) -> RGBImage {
        precondition(width > 0 && height > 0, "PillowResize.bicubic: output size \(width)x\(height)")
        precondition(img.width > 0 && img.height > 0, "PillowResize.bicubic: empty input")
        var current = img
        if width != img.width {
            current = horizontal(current, width: width)
        }
        if height != img.height {
            current = vertical(current, height: height)
        }
        return current
    }

    /// Pillow's bicubic kernel (a = -0.5), evaluated in double.
    @inline(__always)
    static func bicubicFilter(_ t: Double) -> Double {
        let a = -0.5
        let x = t < 0 ? -t : t
        if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
        if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
        return 0
    }

    /// Fixed-point taps of one pass: output `i` reads inputs `start[i] ..< start[i] + count[i]` with
    /// weights `weights[i * ksize ..< i * ksize + count[i]]`.
    struct Coefficients {
        var ksize: Int
        var start: [Int]
        var count: [Int]
        var weights: [Int32]
    }

    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for a pass from `inSize` to `outSize`.
    static func coefficients(inSize: Int, outSize: Int) -> Coefficients {
        // Pillow: scale = (double)(in1 - in0) / outSize with in0 = 0, in1 = inSize as float (exact).
        let scale = Double(inSize) / Double(outSize)
        let filterscale = max(scale, 1.0)
        let support = 2.0 * filterscale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        var start = [Int](repeating: 0, count: outSize)
        var count = [Int](repeating: 0, count: outSize)
        var weights = [Int32](repeating: 0, count: outSize * ksize)
        var k = [Double](repeating: 0, count: ksize)
        let ss = 1.0 / filterscale
        let one = Double(1 << precisionBits)
        for i in 0 ..< outSize {
            let center = (Double(i) + 0.5) * scale
            // C's (int) cast truncates toward zero.
            let xmin = max(Int((center - support + 0.5).rounded(.towardZero)), 0)
            let xmax = min(Int((center + support + 0.5).rounded(.towardZero)), inSize)
            let n = xmax - xmin
            var ww = 0.0
            for x in 0 ..< n {
                let w = bicubicFilter((Double(x + xmin) - center + 0.5) * ss)
                k[x] = w
                ww += w
            }
            for x in 0 ..< n {
                let w = ww != 0 ? k[x] / ww : k[x]
                let fixed = w < 0 ? -0.5 + w * one : 0.5 + w * one
                weights[i * ksize + x] = Int32(fixed.rounded(.towardZero))
            }
            start[i] = xmin
            count[i] = n
        }
        return Coefficients(ksize: ksize, start: start, count: count, weights: weights)
    }

    /// (2^21 + acc) >> 22, clipped to 0...255 (Pillow's clip8).
    @inline(__always)
    static func clip8(_ acc: Int) -> UInt8 {
        let v = acc >> precisionBits  // arithmetic shift = floor division, as in C for int
        return UInt8(clamping: v)
    }

    /// Horizontal pass: [H, W, 3] -> [H, width, 3].
    static func horizontal(_ img: RGBImage, width outWidth: Int) -> RGBImage {
        let c = coefficients(inSize: img.width, outSize: outWidth)
        let inWidth = img.width, height = img.height
        var out = [UInt8](repeating: 0, count: height * outWidth * 3)
        let half = 1 << (precisionBits - 1)
        img.pixels.withUnsafeBufferPointer { src in
            c.weights.withUnsafeBufferPointer { w in
                out.withUnsafeMutableBufferPointer { dst in
                    for y in 0 ..< height {
                        let row = y * inWidth * 3
                        for xx in 0 ..< outWidth {
                            let kBase = xx * c.ksize
                            var s0 = half, s1 = half, s2 = half
                            var p = row + c.start[xx] * 3
                            for t in 0 ..< c.count[xx] {
                                let wt = Int(w[kBase + t])
                                s0 += Int(src[p]) * wt
                                s1 += Int(src[p + 1]) * wt
                                s2 += Int(src[p + 2]) * wt
                                p += 3
                            }
                            let o = (y * outWidth + xx) * 3
                            dst[o] = clip8(s0)
                            dst[o + 1] = clip8(s1)
                            dst[o + 2] = clip8(s2)
                        }
                    }
                }
            }
        }
        return RGBImage(width: outWidth, height: height, pixels: out)
    }

    /// Vertical pass: [H, W, 3] -> [height, W, 3].
    static func vertical(_ img: RGBImage, height outHeight: Int) -> RGBImage {
        let c = coefficients(inSize: img.height, outSize: outHeight)
        let rowLength = img.width * 3
        var out = [UInt8](repeating: 0, count: outHeight * rowLength)
        let half = 1 << (precisionBits - 1)
        var acc = [Int](repeating: 0, count: rowLength)
        img.pixels.withUnsafeBufferPointer { src in
            c.weights.withUnsafeBufferPointer { w in
                out.withUnsafeMutableBufferPointer { dst in
                    acc.withUnsafeMutableBufferPointer { acc in
                        for yy in 0 ..< outHeight {
                            for j in 0 ..< rowLength { acc[j] = half }
                            let kBase = yy * c.ksize
                            for t in 0 ..< c.count[yy] {
                                let wt = Int(w[kBase + t])
                                let row = (c.start[yy] + t) * rowLength
                                for j in 0 ..< rowLength { acc[j] += Int(src[row + j]) * wt }
                            }
                            let o = yy * rowLength
                            for j in 0 ..< rowLength { dst[o + j] = clip8(acc[j]) }
                        }
                    }
                }
            }
        }
        return RGBImage(width: img.width, height: outHeight, pixels: out)
    }
}

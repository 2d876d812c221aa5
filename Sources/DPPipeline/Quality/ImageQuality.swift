import Foundation

/// Image-quality figures of rendered frames against known truth frames (the synthetic demo world,
/// Scripts/demo/synth.py): PSNR, SSIM and a temporal-consistency figure. `dp-bench quality` and the quality
/// regression test share these definitions, and Scripts/demo/train.py computes the same ones in NumPy.
public enum ImageQuality {
    /// Peak signal-to-noise ratio in dB over all pixels and channels, peak 255. Identical images give +infinity.
    public static func psnr(_ a: RGBImage, _ b: RGBImage) throws -> Double {
        try checkSameSize(a, b)
        var sum = 0.0
        for i in 0..<a.pixels.count {
            let d = Double(a.pixels[i]) - Double(b.pixels[i])
            sum += d * d
        }
        let mse = sum / Double(max(a.pixels.count, 1))
        return mse == 0 ? .infinity : 10 * log10(255 * 255 / mse)
    }

    /// Mean structural similarity, averaged over the three channels: 7 x 7 uniform windows (only those wholly
    /// inside the image), K1 = 0.01, K2 = 0.03, dynamic range 255, sample (n - 1) variances - the definition of
    /// scikit-image's `structural_similarity(a, b, channel_axis=2, data_range=255)`.
    public static func ssim(_ a: RGBImage, _ b: RGBImage) throws -> Double {
        try checkSameSize(a, b)
        let win = 7
        guard a.width >= win, a.height >= win else {
            throw PipelineError("SSIM needs images of at least \(win)x\(win) pixels, got \(a.width)x\(a.height)")
        }
        let c1 = (0.01 * 255.0) * (0.01 * 255.0), c2 = (0.03 * 255.0) * (0.03 * 255.0)
        let n = Double(win * win)
        let w = a.width, h = a.height
        var total = 0.0
        for ch in 0..<3 {
            // Summed-area tables of x, y, x^2, y^2, xy for O(1) window sums.
            let stride = w + 1
            var sx = [Double](repeating: 0, count: (h + 1) * stride)
            var sy = sx, sxx = sx, syy = sx, sxy = sx
            for yy in 0..<h {
                var rx = 0.0, ry = 0.0, rxx = 0.0, ryy = 0.0, rxy = 0.0
                for xx in 0..<w {
                    let x = Double(a.pixels[(yy * w + xx) * 3 + ch]), y = Double(b.pixels[(yy * w + xx) * 3 + ch])
                    rx += x; ry += y; rxx += x * x; ryy += y * y; rxy += x * y
                    let o = (yy + 1) * stride + xx + 1, up = yy * stride + xx + 1
                    sx[o] = sx[up] + rx; sy[o] = sy[up] + ry
                    sxx[o] = sxx[up] + rxx; syy[o] = syy[up] + ryy; sxy[o] = sxy[up] + rxy
                }
            }
            func box(_ t: [Double], _ y0: Int, _ x0: Int) -> Double {
                let y1 = y0 + win, x1 = x0 + win
                return t[y1 * stride + x1] - t[y0 * stride + x1] - t[y1 * stride + x0] + t[y0 * stride + x0]
            }
            var sum = 0.0
            var count = 0
            for y0 in 0...(h - win) {
                for x0 in 0...(w - win) {
                    let mx = box(sx, y0, x0) / n, my = box(sy, y0, x0) / n
                    let vx = (box(sxx, y0, x0) / n - mx * mx) * n / (n - 1)
                    let vy = (box(syy, y0, x0) / n - my * my) * n / (n - 1)
                    let cxy = (box(sxy, y0, x0) / n - mx * my) * n / (n - 1)
                    sum += ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
                    count += 1
                }
            }
            total += sum / Double(count)
        }
        return total / 3
    }

    /// Mean absolute difference per channel value (0...255) between two frames.
    public static func meanAbsoluteDifference(_ a: RGBImage, _ b: RGBImage) throws -> Double {
        try checkSameSize(a, b)
        var sum = 0
        for i in 0..<a.pixels.count { sum += abs(Int(a.pixels[i]) - Int(b.pixels[i])) }
        return Double(sum) / Double(max(a.pixels.count, 1))
    }

    static func checkSameSize(_ a: RGBImage, _ b: RGBImage) throws {
        guard a.width == b.width, a.height == b.height else {
            throw PipelineError("cannot compare a \(a.width)x\(a.height) image with a \(b.width)x\(b.height) one")
        }
    }
}

/// A synthetic quality case as `Scripts/demo/synth.py` writes it: `subject.png`, `poses/frame_<n>_densepose.npy`
/// and `truth/frame_<nnnnn>.png` (the frame the model should render for pose n).
public struct QualityCase {
    public let directory: URL
    public let subject: RGBImage
    public let poses: PoseSource
    /// Frame numbers that have both a pose and a truth frame, ascending.
    public let frames: [Int]

    public init(directory: URL) throws {
        self.directory = directory
        let subjectURL = directory.appendingPathComponent("subject.png")
        guard FileManager.default.fileExists(atPath: subjectURL.path) else {
            throw PipelineError("quality case \(directory.path): no subject.png (expected a Scripts/demo/synth.py case)")
        }
        subject = try PNGCodec.read(subjectURL)
        poses = try PoseSource(url: directory.appendingPathComponent("poses"))
        let withTruth = poses.frameNumbers.filter {
            FileManager.default.fileExists(atPath: Self.truthURL(directory, $0).path)
        }
        guard !withTruth.isEmpty else {
            throw PipelineError("quality case \(directory.path): no truth/frame_<nnnnn>.png matches a pose in poses/")
        }
        frames = withTruth.sorted()
    }

    static func truthURL(_ dir: URL, _ n: Int) -> URL {
        dir.appendingPathComponent("truth").appendingPathComponent(String(format: "frame_%05d.png", n))
    }

    /// The truth frame for pose `n`.
    public func truth(_ n: Int) throws -> RGBImage {
        let url = Self.truthURL(directory, n)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw PipelineError("quality case \(directory.path): frame \(n) has no truth (\(url.path) is missing)")
        }
        return try PNGCodec.read(url)
    }
}

// `dp-bench conv`: one 3x3 convolution, im2col vs Winograd, seconds and effective GFLOP/s (direct FLOPs).

import DPTensor
import Dispatch

func benchConv3x3(batch: Int, cin: Int, cout: Int, height: Int, width: Int, repeats: Int,
                  only: Conv3x3Algorithm? = nil) {
    var s: UInt32 = 12345
    func noise(_ shape: [Int]) -> Tensor {
        Tensor(shape: shape) { out in
            for i in out.indices { s = s &* 1_664_525 &+ 1_013_904_223; out[i] = Float(s >> 8) / Float(1 << 23) - 1 }
        }
    }
    let x = noise([batch, cin, height, width])
    let filter = Conv3x3Filter(noise([cout, cin, 3, 3]))
    let bias = noise([cout])
    let flops = 2.0 * Double(batch * cout * height * width) * Double(cin * 9)
    print("conv3x3 \(batch)x\(cin)x\(height)x\(width) -> \(cout), threads \(EngineThreads.count), \(EngineThreads.blasDescription)")
    var outputs: [Tensor] = []
    for algorithm in only.map({ [$0] }) ?? [Conv3x3Algorithm.im2col, .winograd, .winograd2x2] {
        var times: [Double] = []
        var y = Tensor(zeros: [0])
        for _ in 0..<max(1, repeats) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            y = conv2d(x, filter: filter, bias: bias, algorithm: algorithm)
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        let best = times.min()!
        print(String(format: "  %-8@ best %.4f s  %.1f GFLOP/s effective", algorithm.rawValue, best, flops / best / 1e9))
        outputs.append(y)
    }
    guard outputs.count == 3 else { return }
    let scale = outputs[0].maxAbs
    for (i, name) in [(1, "winograd"), (2, "winograd2x2")] {
        let diff = outputs[0].maxAbsDifference(outputs[i])
        print(String(format: "  max |%@ - im2col| = %.3g (%.3g relative to max |y|)", name, diff, diff / max(scale, 1e-30)))
    }
}

/// One distinct stride-1 3x3 convolution of the SD-1.5 UNet forward and how often a forward runs it.
struct UNetConvShape {
    let cin: Int, cout: Int, height: Int, width: Int, count: Int, role: String
}

/// The 49 stride-1 3x3 convolutions of one SD-1.5 (DreamPose, 14 input channels) UNet forward at a
/// `height` x `width` latent, grouped by shape. Levels: the latent size, then halved (ceil) three times.
func unetConv3x3Shapes(height: Int, width: Int) -> [UNetConvShape] {
    let h0 = height, w0 = width, h1 = (h0 + 1) / 2, w1 = (w0 + 1) / 2
    let h2 = (h1 + 1) / 2, w2 = (w1 + 1) / 2, h3 = (h2 + 1) / 2, w3 = (w2 + 1) / 2
    return [
        UNetConvShape(cin: 14, cout: 320, height: h0, width: w0, count: 1, role: "conv_in"),
        UNetConvShape(cin: 320, cout: 320, height: h0, width: w0, count: 7, role: "down0 x4, up3 conv2 x3"),
        UNetConvShape(cin: 960, cout: 320, height: h0, width: w0, count: 1, role: "up3 conv1"),
        UNetConvShape(cin: 640, cout: 320, height: h0, width: w0, count: 2, role: "up3 conv1"),
        UNetConvShape(cin: 640, cout: 640, height: h0, width: w0, count: 1, role: "up2 upsampler"),
        UNetConvShape(cin: 320, cout: 4, height: h0, width: w0, count: 1, role: "conv_out"),
        UNetConvShape(cin: 320, cout: 640, height: h1, width: w1, count: 1, role: "down1 conv1"),
        UNetConvShape(cin: 640, cout: 640, height: h1, width: w1, count: 6, role: "down1 x3, up2 conv2 x3"),
        UNetConvShape(cin: 1920, cout: 640, height: h1, width: w1, count: 1, role: "up2 conv1"),
        UNetConvShape(cin: 1280, cout: 640, height: h1, width: w1, count: 1, role: "up2 conv1"),
        UNetConvShape(cin: 960, cout: 640, height: h1, width: w1, count: 1, role: "up2 conv1"),
        UNetConvShape(cin: 1280, cout: 1280, height: h1, width: w1, count: 1, role: "up1 upsampler"),
        UNetConvShape(cin: 640, cout: 1280, height: h2, width: w2, count: 1, role: "down2 conv1"),
        UNetConvShape(cin: 1280, cout: 1280, height: h2, width: w2, count: 7, role: "down2 x3, up1 conv2 x3, up0 upsampler"),
        UNetConvShape(cin: 2560, cout: 1280, height: h2, width: w2, count: 2, role: "up1 conv1"),
        UNetConvShape(cin: 1920, cout: 1280, height: h2, width: w2, count: 1, role: "up1 conv1"),
        UNetConvShape(cin: 1280, cout: 1280, height: h3, width: w3, count: 11, role: "down3 x4, mid x4, up0 conv2 x3"),
        UNetConvShape(cin: 2560, cout: 1280, height: h3, width: w3, count: 3, role: "up0 conv1"),
    ]
}

/// `dp-bench conv --unet-shapes`: every distinct stride-1 3x3 convolution of a UNet forward, timed with the
/// engine's automatic choice (and, with `compare`, forced im2col and forced Winograd), best of `repeats`;
/// per shape the forward's share (count x seconds) and effective GFLOP/s (direct FLOPs).
/// With `cold`, a 512 MB buffer is written before every timed call, so the filter comes from memory as in a
/// forward (where each weight is read once per call) rather than from the 260 MB L3 of a repeated call.
func benchUNetConvShapes(batch: Int, height: Int, width: Int, repeats: Int, compare: Bool, cold: Bool = false) {
    let flushFloats = cold ? 128 << 20 : 0
    let flush = UnsafeMutablePointer<Float>.allocate(capacity: max(1, flushFloats))
    defer { flush.deallocate() }
    var flushRound: Float = 0
    var s: UInt32 = 12345
    func noise(_ shape: [Int]) -> Tensor {
        Tensor(shape: shape) { out in
            for i in out.indices { s = s &* 1_664_525 &+ 1_013_904_223; out[i] = Float(s >> 8) / Float(1 << 23) - 1 }
        }
    }
    let algorithms: [Conv3x3Algorithm] = compare ? [.automatic, .im2col, .winograd, .winograd2x2] : [.automatic]
    print("UNet 3x3 convolutions (stride 1) at a \(height) x \(width) latent, batch \(batch), threads \(EngineThreads.count), "
          + "DP_CONV3X3 default \(Conv3x3Algorithm.default.rawValue), best of \(repeats)\(cold ? ", caches flushed before each call" : "")")
    var header = "  cin -> cout @ HxW    n  tiles  GFLOP/call  path         s/call   GFLOP/s  s/forward"
    if compare { header += "   im2col s   wino s  wino2x2 s" }
    print(header)
    var totalSeconds = 0.0, totalFLOPs = 0.0
    for shape in unetConv3x3Shapes(height: height, width: width) {
        let x = noise([batch, shape.cin, shape.height, shape.width])
        let filter = Conv3x3Filter(noise([shape.cout, shape.cin, 3, 3]))
        let bias = noise([shape.cout])
        let flops = 2.0 * Double(batch * shape.cout * shape.height * shape.width) * Double(shape.cin * 9)
        var best: [Double] = []
        for algorithm in algorithms {
            var times: [Double] = []
            for _ in 0..<max(1, repeats) {
                if cold {
                    flushRound += 1
                    flush.initialize(repeating: flushRound, count: flushFloats)
                }
                let t0 = DispatchTime.now().uptimeNanoseconds
                let y = conv2d(x, filter: filter, bias: bias, algorithm: algorithm)
                times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
                precondition(y.count == batch * shape.cout * shape.height * shape.width)
            }
            best.append(times.min()!)
        }
        let tiles = batch * ((shape.height + 3) / 4) * ((shape.width + 3) / 4)
        let path = conv3x3Path(x, filter: filter, stride: 1, padding: .symmetric(1), algorithm: .default)
        totalSeconds += Double(shape.count) * best[0]
        totalFLOPs += Double(shape.count) * flops
        var line = String(format: "  %4d -> %4d @ %2dx%-2d %3d  %5d  %9.2f  %-11@ %7.4f  %7.1f  %8.3f",
                          shape.cin, shape.cout, shape.height, shape.width, shape.count, tiles, flops / 1e9,
                          path, best[0], flops / best[0] / 1e9, Double(shape.count) * best[0])
        if compare { line += String(format: "   %8.4f  %7.4f  %8.4f", best[1], best[2], best[3]) }
        print(line)
    }
    print(String(format: "  all 3x3 stride-1 convolutions of one forward: %.3f s, %.1f GFLOP, %.1f GFLOP/s effective",
                 totalSeconds, totalFLOPs / 1e9, totalFLOPs / totalSeconds / 1e9))
}

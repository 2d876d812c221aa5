// `dp-bench conv`: one 3x3 convolution, im2col vs Winograd, seconds and effective GFLOP/s (direct FLOPs).

import DPTensor
import Dispatch

func benchConv3x3(batch: Int, cin: Int, cout: Int, height: Int, width: Int, repeats: Int) {
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
    for algorithm in [Conv3x3Algorithm.im2col, .winograd] {
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
    let diff = outputs[0].maxAbsDifference(outputs[1]), scale = outputs[0].maxAbs
    print(String(format: "  max |winograd - im2col| = %.3g (%.3g relative to max |y|)", diff, diff / max(scale, 1e-30)))
}

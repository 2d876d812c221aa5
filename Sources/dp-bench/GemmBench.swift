// `dp-bench gemm`: cblas_sgemm throughput on the matrix products an SD-1.5 UNet runs at a 64x64 latent
// (convolutions as GEMMs, attention, feed-forward), per thread count.

import DPTensor
import Dispatch

/// One benchmarked product: C [m, n] = op(A) [m, k] x op(B) [k, n].
struct GemmShape: Sendable {
    var name: String
    var m: Int, n: Int, k: Int
    var transB: Bool = false
    var flops: Double { 2 * Double(m) * Double(n) * Double(k) }
}

/// UNet-shaped products at a 64x64 latent (4096 tokens).
let unetGemmShapes: [GemmShape] = [
    GemmShape(name: "conv3x3 320ch @64x64 (320x4096x2880)", m: 320, n: 4096, k: 2880),
    GemmShape(name: "conv3x3 640ch @32x32 (640x1024x5760)", m: 640, n: 1024, k: 5760),
    GemmShape(name: "conv3x3 1280ch @16x16 (1280x256x11520)", m: 1280, n: 256, k: 11520),
    GemmShape(name: "conv1x1 320ch @64x64 (320x4096x320)", m: 320, n: 4096, k: 320),
    GemmShape(name: "attn QK^T head 40 (4096x4096x40)", m: 4096, n: 4096, k: 40, transB: true),
    GemmShape(name: "attn PV head 40 (4096x40x4096)", m: 4096, n: 40, k: 4096),
    GemmShape(name: "FF geglu proj (4096x2560x320)", m: 4096, n: 2560, k: 320, transB: true),
    GemmShape(name: "FF out (4096x320x1280)", m: 4096, n: 320, k: 1280, transB: true),
]

/// Times `gemm` on each shape for each thread count (median of `repeats` runs after one warm-up) and
/// returns a table of milliseconds and GFLOP/s. Leaves the engine at the last thread count.
func runGemmBenchmark(threads: [Int] = [1, 2], repeats: Int = 5, shapes: [GemmShape] = unetGemmShapes) -> String {
    var lines = ["threads  ms(median)  GFLOP/s  shape"]
    var seed: UInt32 = 12345
    func fill(_ count: Int) -> [Float] {
        (0..<count).map { _ in
            seed = seed &* 1_664_525 &+ 1_013_904_223
            return Float(seed >> 8) / Float(1 << 24) - 0.5
        }
    }
    for t in threads {
        EngineThreads.configure(t)
        for s in shapes {
            let a = fill(s.m * s.k), b = fill(s.k * s.n)
            var c = [Float](repeating: 0, count: s.m * s.n)
            var times: [Double] = []
            a.withUnsafeBufferPointer { pa in
                b.withUnsafeBufferPointer { pb in
                    c.withUnsafeMutableBufferPointer { pc in
                        for run in 0...max(1, repeats) {
                            let start = DispatchTime.now().uptimeNanoseconds
                            gemm(transB: s.transB, m: s.m, n: s.n, k: s.k, a: pa.baseAddress!, lda: s.k,
                                 b: pb.baseAddress!, ldb: s.transB ? s.k : s.n, c: pc.baseAddress!, ldc: s.n)
                            let ns = DispatchTime.now().uptimeNanoseconds - start
                            if run > 0 { times.append(Double(ns) / 1e6) }   // run 0 warms up
                        }
                    }
                }
            }
            times.sort()
            let ms = times[times.count / 2]
            let gflops = s.flops / (ms * 1e6)
            lines.append(pad(String(t), 7) + "  " + pad(fixed(ms, 2), 10) + "  " + pad(fixed(gflops, 1), 7) + "  " + s.name)
        }
    }
    return lines.joined(separator: "\n")
}

private func fixed(_ v: Double, _ digits: Int) -> String {
    var p: Double = 1
    for _ in 0..<digits { p *= 10 }
    let r = (v * p).rounded() / p
    var s = String(r)
    if let dot = s.firstIndex(of: ".") {
        let decimals = s.distance(from: dot, to: s.endIndex) - 1
        if decimals < digits { s += String(repeating: "0", count: digits - decimals) }
    }
    return s
}

private func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
}

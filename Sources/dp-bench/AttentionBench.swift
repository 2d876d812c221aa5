// `dp-bench attention`: the fused attention op alone on the SD-1.5 UNet's shapes at a latent size (batch 3,
// 8 heads): self-attention at each level and the cross-attention over a 50-token context. Best seconds of the
// repeats and GFLOP/s (4 B Nq Nk C FLOPs: the two products).

import DPTensor
import Dispatch

func benchAttention(height: Int, width: Int, batch: Int, repeats: Int) {
    var s: UInt32 = 777
    func noise(_ shape: [Int]) -> Tensor {
        Tensor(shape: shape) { out in
            for i in out.indices { s = s &* 1_664_525 &+ 1_013_904_223; out[i] = Float(s >> 8) / Float(1 << 23) - 1 }
        }
    }
    print("attention batch \(batch), 8 heads, latent \(height)x\(width), threads \(EngineThreads.count)")
    var total = 0.0
    // (query tokens, key tokens, channels) per level: 320, 640, 1280 channels at 1, 1/2, 1/4 of the latent.
    for level in 0..<3 {
        let tokens = (height >> level) * (width >> level), channels = 320 << level
        for keys in [tokens, 50] {
            let q = noise([batch, tokens, channels]), k = noise([batch, keys, channels])
            let v = noise([batch, keys, channels])
            let scale = 1 / Float(channels / 8).squareRoot()
            var best = Double.infinity
            for _ in 0..<max(1, repeats) {
                let t0 = DispatchTime.now().uptimeNanoseconds
                _ = attention(query: q, key: k, value: v, heads: 8, scale: scale)
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            }
            let flops = 4.0 * Double(batch * tokens * keys * channels)
            total += best
            print(String(format: "  %5d x %5d keys, d %3d: %.4f s  %6.1f GFLOP/s", tokens, keys, channels / 8, best,
                         flops / best / 1e9))
        }
    }
    print(String(format: "  sum of the best times: %.4f s", total))
}

// Sinusoidal timestep embedding. This implementation matches diffusers' `get_timestep_embedding`
// (embeddings.py), computed in Float32 as torch does.

import Foundation

/// [B, dim]: for i < half = dim/2, freq_i = exp(-ln(maxPeriod) * i / (half - downscaleFreqShift)),
/// arg = t * freq_i; [sin(arg), cos(arg)] (or [cos, sin] with `flipSinToCos`), zero-padded when dim is odd.
public func timestepEmbedding(_ timesteps: [Float], dim: Int, flipSinToCos: Bool,
                              downscaleFreqShift: Float, maxPeriod: Float = 10000) -> Tensor {
    precondition(dim >= 0, "timestepEmbedding: negative dim \(dim)")
    let half = dim / 2
    let logPeriod = -Float(log(Double(maxPeriod)))
    let denom = Float(half) - downscaleFreqShift
    var freqs = [Float](repeating: 0, count: half)
    for i in 0..<half { freqs[i] = expf(logPeriod * Float(i) / denom) }
    return Tensor(shape: [timesteps.count, dim]) { out in
        for (b, t) in timesteps.enumerated() {
            let row = out.baseAddress! + b * dim
            for i in 0..<half {
                let arg = t * freqs[i]
                let s = sinf(arg), c = cosf(arg)
                row[i] = flipSinToCos ? c : s
                row[half + i] = flipSinToCos ? s : c
            }
        }
    }
}

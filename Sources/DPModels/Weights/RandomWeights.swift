// Deterministic random parameters, for benchmarks and the demo model (no checkpoint needed).

import DPTensor
import Dispatch
import Foundation

/// Hands out seeded random parameters and records them, so the same network can be saved as a
/// safetensors file (`write(to:)`) and loaded back through `SafeTensorsWeights`.
///
/// Initialisation rule (by `ParameterRole(key:)`, see KeyMaps.swift):
/// * biases (`*.bias`): 0;
/// * norm scales (`*norm*.weight`, `*layer_norm*`, `ln*.weight`): 1;
/// * embedding tables and learned vectors (`position_embedding`, `token_embedding`,
///   `class_embedding`): N(0, std);
/// * Linear [Out, In] and Conv [Out, In, kh, kw] weights: N(0, 1/sqrt(fan_in)) with
///   fan_in = In * kh * kw, so that each layer keeps the variance of its input (activations of a
///   deep random net stay O(1); the norms of the UNet/VAE/CLIP renormalise between blocks);
/// * other weights (rank 0 or 1): N(0, std).
///
/// Determinism: the values of a tensor depend only on (seed, key, shape), not on the order of
/// requests nor on the thread count. The tensor is cut into chunks of 65536 elements; chunk c draws
/// from SplitMix64 started at `mix(seed ^ fnv1a64(key)) + c * 0xD1B54A32D192ED03`, two uniforms
/// (53-bit) per pair of elements, Box-Muller in Double, rounded to Float.
public final class RandomWeights: WeightSource {
    public let seed: UInt64
    public let std: Float
    /// Keep what was handed out in `recorded` (turn off for very large benchmark models that are
    /// not going to be saved, to avoid holding a second copy of re-packed weights).
    public var recording = true
    /// Everything handed out, in order of first request.
    public private(set) var recorded: [(key: String, tensor: Tensor)] = []
    private var shapes: [String: [Int]] = [:]
    private var recordedIndex: [String: Int] = [:]

    /// Names this source in errors.
    public var sourceName: String { "RandomWeights(seed: \(seed))" }

    public init(seed: UInt64, std: Float = 0.02) {
        self.seed = seed
        self.std = std
    }

    /// The standard deviation used for `key` with `shape` (0 for constant-initialised roles).
    public static func standardDeviation(key: String, shape: [Int], std: Float) -> Float {
        switch ParameterRole(key: key) {
        case .bias, .normScale: return 0
        case .embedding: return std
        case .weight:
            guard shape.count >= 2 else { return std }
            let fanIn = shape.dropFirst().reduce(1, *)
            return fanIn > 0 ? 1 / Float(fanIn).squareRoot() : std
        }
    }

    public func take(_ key: String, shape: [Int]) throws -> Tensor {
        if let previous = shapes[key] {
            guard previous == shape else {
                throw WeightsError.shapeMismatch(file: sourceName, key: key, expected: shape, actual: previous)
            }
            if let i = recordedIndex[key] { return recorded[i].tensor }
        }
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw WeightsError.malformed(file: sourceName, reason: "tensor '\(key)' requested with negative shape \(shape)")
        }
        let t = Self.generate(key: key, shape: shape, seed: seed, std: std)
        shapes[key] = shape
        if recording {
            recordedIndex[key] = recorded.count
            recorded.append((key: key, tensor: t))
        }
        return t
    }

    /// Nothing is ever unused in a random source.
    public func finish() throws {}

    /// Saves everything recorded so far as an F32 safetensors file (atomic).
    public func write(to url: URL, metadata: [String: String] = [:]) throws {
        try SafeTensorsWriter.write(recorded.map { ($0.key, $0.tensor) }, to: url, metadata: metadata)
    }

    /// The tensor `RandomWeights(seed:std:)` hands out for `key` with `shape`.
    public static func generate(key: String, shape: [Int], seed: UInt64, std: Float) -> Tensor {
        switch ParameterRole(key: key) {
        case .bias: return Tensor(zeros: shape)
        case .normScale: return Tensor(shape: shape, repeating: 1)
        case .embedding, .weight: break
        }
        let sigma = Double(standardDeviation(key: key, shape: shape, std: std))
        let count = shape.reduce(1, *)
        let keySeed = splitMix64Mix(seed ^ fnv1a64(key))
        let chunk = 1 << 16
        let chunks = (count + chunk - 1) / chunk
        let data = [Float](unsafeUninitializedCapacity: count) { out, initialized in
            let base = out.baseAddress!
            let fill = { (c: Int) in
                var rng = SplitMix64(state: keySeed &+ UInt64(c) &* 0xD1B5_4A32_D192_ED03)
                var i = c * chunk
                let end = min(i + chunk, count)
                while i < end {
                    let (z0, z1) = rng.nextGaussianPair()
                    base[i] = Float(z0 * sigma)
                    if i + 1 < end { base[i + 1] = Float(z1 * sigma) }
                    i += 2
                }
            }
            if chunks > 1 {
                concurrentForEach(iterations: chunks, fill)
            } else if chunks == 1 {
                fill(0)
            }
            initialized = count
        }
        return Tensor(shape: shape, data: data)
    }
}

// MARK: - PRNG

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, portable, statistically fine for initialisation.
private struct SplitMix64 {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return splitMix64Mix(state)
    }

    /// Two independent N(0, 1) samples (Box-Muller).
    mutating func nextGaussianPair() -> (Double, Double) {
        let u1 = Double((next() >> 11) + 1) * 0x1p-53   // (0, 1]
        let u2 = Double(next() >> 11) * 0x1p-53         // [0, 1)
        let r = (-2 * Foundation.log(u1)).squareRoot()
        let theta = 2 * Double.pi * u2
        return (r * Foundation.cos(theta), r * Foundation.sin(theta))
    }
}

/// The SplitMix64 output function.
private func splitMix64Mix(_ x: UInt64) -> UInt64 {
    var z = x
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// FNV-1a over the key's UTF-8 bytes.
private func fnv1a64(_ s: String) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in s.utf8 {
        h ^= UInt64(b)
        h = h &* 0x0000_0100_0000_01B3
    }
    return h
}

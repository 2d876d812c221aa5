// Behaviour of the networks beyond the golden cases: batches (one context and timestep per
// row), the linear-projection variant of Transformer2DModel, latent sizes that are not a
// multiple of 2^upsamplers, the VAE in batches, and the torch-nearest resize used there.
// Models come from the golden directories' manifests; shapes are chosen here.

@testable import DPModels
import DPGolden
import DPTensor
import Foundation
import XCTest

/// Deterministic N(0, 1) samples (SplitMix64 + Box-Muller).
func gaussian(_ shape: [Int], seed: UInt64) -> Tensor {
    var state = seed &+ 0x9E3779B97F4A7C15
    func next() -> Double {
        state = state &+ 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        z ^= z >> 31
        return (Double(z >> 11) + 0.5) / Double(1 << 53)
    }
    let n = shape.reduce(1, *)
    var data = [Float](repeating: 0, count: n)
    for i in 0..<n {
        let u1 = next(), u2 = next()
        data[i] = Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
    return Tensor(shape: shape, data: data)
}

/// Row `i` of a tensor, keeping a batch dimension of 1.
func row(_ t: Tensor, _ i: Int) -> Tensor { slice(t, axis: 0, range: i..<(i + 1)) }

func relativeError(_ a: Tensor, _ b: Tensor) -> Float {
    precondition(a.shape == b.shape, "\(a.shape) vs \(b.shape)")
    return a.maxAbsDifference(b) / max(b.maxAbs, 1e-30)
}

/// Serves fixed tensors by canonical key (and checks the shape), for building a second network
/// from the parameters another one was given.
final class TensorDictionaryWeights: WeightSource {
    var tensors: [String: Tensor]
    var used: Set<String> = []
    init(_ tensors: [String: Tensor]) { self.tensors = tensors }
    func take(_ key: String, shape: [Int]) throws -> Tensor {
        guard let t = tensors[key] else {
            throw WeightsError.missingKey(file: "dictionary", key: key, expectedShape: shape)
        }
        guard t.count == shape.reduce(1, *) else {
            throw WeightsError.shapeMismatch(file: "dictionary", key: key, expected: shape, actual: t.shape)
        }
        used.insert(key)
        return t.reshaped(shape)
    }
    func finish() throws {
        let unused = Set(tensors.keys).subtracting(used)
        if !unused.isEmpty { throw WeightsError.unexpectedKeys(file: "dictionary", keys: unused.sorted()) }
    }
}

/// The model directories named by the first golden manifest that has a case of `kind`.
func goldenModelDirectory(kind: String) throws -> URL {
    for dir in try goldenCaseDirectories() {
        let golden = try GoldenCase(directory: dir)
        if let entry = golden.entries.first(where: { $0.kind == kind }) {
            return try golden.modelFiles(for: entry).config.deletingLastPathComponent()
        }
    }
    throw XCTSkip("no golden case of kind \(kind) under \(goldenRoot().path)")
}

/// A UNet config in diffusers' config.json form with the tiny golden topology, varied per test.
func tinyUNetConfig(useLinearProjection: Bool, heads: String = "2", transformerLayers: Int = 1,
                    crossAttentionDim: Int = 24) throws -> UNet2DConditionConfig {
    let json = """
    {"in_channels": 14, "out_channels": 4, "block_out_channels": [8, 16, 32, 32],
     "layers_per_block": 2, "norm_num_groups": 4, "norm_eps": 1e-5,
     "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
     "mid_block_type": "UNetMidBlock2DCrossAttn",
     "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
     "cross_attention_dim": \(crossAttentionDim), "attention_head_dim": \(heads),
     "use_linear_projection": \(useLinearProjection), "transformer_layers_per_block": \(transformerLayers),
     "flip_sin_to_cos": true, "freq_shift": 0, "downsample_padding": 1}
    """
    return try JSONDecoder().decode(UNet2DConditionConfig.self, from: Data(json.utf8))
}

final class UNetBehaviourTests: XCTestCase {
    func testBatchRowsWithTheirOwnContextAndTimestepMatchSingleRuns() throws {
        let unet = try UNet2DConditionModel.load(directory: goldenModelDirectory(kind: "unet_forward"))
        let c = unet.config
        let sample = gaussian([3, c.inChannels, 16, 8], seed: 1)
        let context = gaussian([3, 7, c.crossAttentionDim], seed: 2)
        let timesteps: [Float] = [981, 500, 1]
        let batched = unet.forward(sample, timesteps: timesteps, encoderHiddenStates: context)
        XCTAssertEqual(batched.shape, [3, c.outChannels, 16, 8])
        for i in 0..<3 {
            let single = unet(row(sample, i), timestep: timesteps[i], encoderHiddenStates: row(context, i))
            XCTAssertLessThan(relativeError(row(batched, i), single), 1e-5, "row \(i)")
        }
        // The rows really differ (context and timestep matter).
        XCTAssertGreaterThan(relativeError(row(batched, 0), row(batched, 1)), 1e-2)
        // A single timestep applies to every row.
        let shared = unet(sample, timestep: 500, encoderHiddenStates: context)
        XCTAssertLessThan(relativeError(row(shared, 1), row(batched, 1)), 1e-5)
        XCTAssertGreaterThan(relativeError(row(shared, 0), row(batched, 0)), 1e-3)
    }

    func testOneContextRowIsUsedForEveryBatchRow() throws {
        let unet = try UNet2DConditionModel.load(directory: goldenModelDirectory(kind: "unet_forward"))
        let c = unet.config
        let sample = gaussian([2, c.inChannels, 8, 16], seed: 3)
        let context = gaussian([1, 5, c.crossAttentionDim], seed: 4)
        let a = unet(sample, timestep: 301, encoderHiddenStates: context)
        let b = unet(sample, timestep: 301, encoderHiddenStates: concat([context, context], axis: 0))
        XCTAssertLessThan(relativeError(a, b), 1e-6)
    }

    func testLatentSizesNotDivisibleByTheUpsamplingFactorKeepTheirSize() throws {
        // 12 x 10 -> 6 x 5 -> 3 x 3 -> 2 x 2 on the way down; the up path resizes to the skips.
        let unet = try UNet2DConditionModel.load(directory: goldenModelDirectory(kind: "unet_forward"))
        let c = unet.config
        var names: [String: [Int]] = [:]
        let out = unet.forward(gaussian([1, c.inChannels, 12, 10], seed: 5), timesteps: [11],
                               encoderHiddenStates: gaussian([1, 4, c.crossAttentionDim], seed: 6),
                               intermediates: { names[$0] = $1.shape })
        XCTAssertEqual(out.shape, [1, c.outChannels, 12, 10])
        XCTAssertTrue(out.data.allSatisfy { $0.isFinite })
        XCTAssertEqual(names["down_blocks.0"], [1, c.blockOutChannels[0], 6, 5])
        let n = c.blockOutChannels.count
        XCTAssertEqual(names["up_blocks.\(n - 2)"], [1, c.blockOutChannels[1], 12, 10])
    }

    func testLinearProjectionVariantComputesTheSameAsTheConvVariant() throws {
        // SD-2 style proj_in/proj_out (Linear [C, C]) with heads per block and 2 transformer
        // layers; its parameters are the conv variant's with the 1x1 kernels flattened.
        let convConfig = try tinyUNetConfig(useLinearProjection: false, heads: "[1, 2, 4, 4]",
                                            transformerLayers: 2, crossAttentionDim: 12)
        let random = RandomWeights(seed: 42)
        let convNet = try UNet2DConditionModel(config: convConfig, weights: random)
        var tensors: [String: Tensor] = [:]
        var flattened = 0
        for (key, t) in random.recorded {
            if key.contains(".proj_in.weight") || key.contains(".proj_out.weight") {
                XCTAssertEqual(Array(t.shape.suffix(2)), [1, 1], key)
                tensors[key] = t.reshaped([t.shape[0], t.shape[1]])
                flattened += 1
            } else {
                tensors[key] = t
            }
        }
        // 3 cross-attention down blocks x 2 layers + 1 mid + 3 cross-attention up blocks x 3 layers
        XCTAssertEqual(flattened, 2 * 16, "proj_in/proj_out of the 16 Transformer2DModels")
        let linearConfig = try tinyUNetConfig(useLinearProjection: true, heads: "[1, 2, 4, 4]",
                                              transformerLayers: 2, crossAttentionDim: 12)
        let strict = TensorDictionaryWeights(tensors)
        let linearNet = try UNet2DConditionModel(config: linearConfig, weights: strict)
        let sample = gaussian([2, 14, 8, 8], seed: 7)
        let context = gaussian([2, 3, 12], seed: 8)
        let a = convNet.forward(sample, timesteps: [700, 20], encoderHiddenStates: context)
        let b = linearNet.forward(sample, timesteps: [700, 20], encoderHiddenStates: context)
        XCTAssertLessThan(relativeError(b, a), 1e-6)
        XCTAssertGreaterThan(a.maxAbs, 0)
        // Both variants asked for exactly the same parameter names.
        XCTAssertEqual(Set(random.recorded.map(\.key)), strict.used)
    }

    func testParameterNamesAndShapesAreExactlyTheCheckpointsOwn() throws {
        // Built from the golden config with random weights, the UNet asks for every tensor of the
        // golden checkpoint with the checkpoint's shape, and for nothing else.
        let dir = try goldenModelDirectory(kind: "unet_forward")
        let config = try UNet2DConditionConfig.load(dir.appendingPathComponent("config.json"))
        let random = RandomWeights(seed: 1)
        _ = try UNet2DConditionModel(config: config, weights: random)
        let file = try SafeTensorsFile(url: dir.appendingPathComponent("diffusion_pytorch_model.safetensors"))
        XCTAssertEqual(Set(random.recorded.map(\.key)), Set(file.names))
        for (key, t) in random.recorded {
            XCTAssertEqual(file.shape(of: key), t.shape, key)
        }
    }
}

final class VAEAndCLIPBehaviourTests: XCTestCase {
    func testVAEEncodesAndDecodesBatchesRowByRow() throws {
        let vae = try AutoencoderKL.load(directory: goldenModelDirectory(kind: "vae_decode"))
        let image = gaussian([2, vae.config.inChannels, 24, 40], seed: 9)
        let (mean, logvar) = vae.encode(image)
        let f = 1 << (vae.config.blockOutChannels.count - 1)
        XCTAssertEqual(mean.shape, [2, vae.config.latentChannels, 24 / f, 40 / f])
        XCTAssertTrue(logvar.data.allSatisfy { $0 >= -30 && $0 <= 20 })
        let z = gaussian([2, vae.config.latentChannels, 3, 5], seed: 10)
        let decoded = vae.decode(z)
        XCTAssertEqual(decoded.shape, [2, vae.config.outChannels, 3 * f, 5 * f])
        for i in 0..<2 {
            let single = vae.encode(row(image, i))
            XCTAssertLessThan(relativeError(row(mean, i), single.mean), 1e-5)
            XCTAssertLessThan(relativeError(row(logvar, i), single.logvar), 1e-5)
            XCTAssertLessThan(relativeError(row(decoded, i), vae.decode(row(z, i))), 1e-5)
        }
    }

    func testCLIPPoolerIsThePostLayerNormOfTheClassToken() throws {
        let clip = try CLIPVisionModel.load(directory: goldenModelDirectory(kind: "clip_vision"))
        let c = clip.config
        let pixels = gaussian([2, c.numChannels, c.imageSize, c.imageSize], seed: 11)
        let out = clip(pixels)
        let tokens = (c.imageSize / c.patchSize) * (c.imageSize / c.patchSize) + 1
        XCTAssertEqual(out.lastHiddenState.shape, [2, tokens, c.hiddenSize])
        let cls = Tensor(shape: [2, c.hiddenSize], data:
            (0..<2).flatMap { b in out.lastHiddenState.data[(b * tokens * c.hiddenSize)..<(b * tokens * c.hiddenSize + c.hiddenSize)] })
        let pooled = clip.postLayernorm(cls)
        XCTAssertEqual(out.poolerOutput, pooled)
        let single = clip(row(pixels, 1))
        XCTAssertLessThan(relativeError(row(out.lastHiddenState, 1), single.lastHiddenState), 1e-5)
    }
}

final class ResizeNearestTests: XCTestCase {
    /// Against torch's F.interpolate(mode="nearest") vectors of the pipeline golden
    /// (`resample.torch.<input>.nearest.<h>x<w>`, float32 scale arithmetic included).
    func testMatchesTorchNearestVectors() throws {
        var checked = 0
        for dir in try goldenCaseDirectories() {
            let golden = try GoldenCase(directory: dir)
            for name in golden.tensors.keys.sorted() where name.hasPrefix("resample.torch.") && name.contains(".nearest.") {
                let parts = name.components(separatedBy: ".nearest.")
                let input = try golden.tensor(parts[0] + ".in")                // [C, h, w]
                let expected = try golden.tensor(name)                         // [C, H, W]
                let x = input.reshaped([1] + input.shape)
                let y = resizeNearest(x, height: expected.shape[1], width: expected.shape[2])
                XCTAssertEqual(y.reshaped(expected.shape), expected, name)
                checked += 1
            }
        }
        if checked == 0 { throw XCTSkip("no resample.torch.*.nearest.* vectors in the golden directories") }
    }
}

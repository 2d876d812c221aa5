// Every safetensors file under ../shared/golden (written by diffusers/transformers
// save_pretrained and by the golden generator, see shared/golden/README.md) parses, converts and
// binds strictly; its config.json agrees with the tensor shapes. Nothing here assumes the sizes of
// a particular golden case: shapes are derived from the configs found next to the weights.

import DPModels
import DPTensor
import Foundation
import XCTest

final class WeightsGoldenFilesTests: XCTestCase {

    private enum Kind { case unet, vae, clip, adapter, unknown }

    private func kind(ofConfig url: URL) throws -> Kind {
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any] ?? [:]
        switch object["_class_name"] as? String {
        case "UNet2DConditionModel"?: return .unet
        case "AutoencoderKL"?: return .vae
        default: break
        }
        if let mt = object["model_type"] as? String, mt.hasPrefix("clip") { return .clip }
        if object["clip_tokens"] != nil { return .adapter }
        return .unknown
    }

    private func keyMap(_ k: Kind) -> KeyMap {
        switch k {
        case .unet: return .unet
        case .vae: return .vae
        case .clip: return .clipVision
        case .adapter: return .adapter
        case .unknown: return .exact
        }
    }

    func testAllGoldenSafetensorsParseConvertAndBindStrictly() throws {
        let root = try wtGoldenRoot()
        let files = wtFilesUnder(root, endingWith: ".safetensors")
        XCTAssertFalse(files.isEmpty, "no .safetensors under \(root.path)")
        var tensorsSeen = 0
        for url in files {
            let f = try SafeTensorsFile(url: url)
            XCTAssertFalse(f.names.isEmpty, url.path)
            let configURL = url.deletingLastPathComponent().appendingPathComponent("config.json")
            let k = FileManager.default.fileExists(atPath: configURL.path) ? try kind(ofConfig: configURL) : .unknown
            let w = try SafeTensorsWeights(file: f, keyMap: keyMap(k))
            for key in w.canonicalKeys {
                let name = f.names.first { keyMap(k).canonical($0).key == key }!
                let shape = try XCTUnwrap(f.shape(of: name))
                let t = try w.take(key, shape: shape)
                XCTAssertEqual(t.shape, shape)
                XCTAssertEqual(t.count, shape.reduce(1, *))
                XCTAssertTrue(t.data.allSatisfy { $0.isFinite }, "\(url.path): \(key) has non-finite values")
                tensorsSeen += 1
            }
            XCTAssertNoThrow(try w.finish(), url.path)
        }
        XCTAssertGreaterThan(tensorsSeen, 0)
    }

    func testGoldenConfigsAgreeWithTheirWeights() throws {
        let root = try wtGoldenRoot()
        var checked = 0
        for configURL in wtFilesUnder(root, endingWith: "config.json") where configURL.lastPathComponent == "config.json" {
            let dir = configURL.deletingLastPathComponent()
            switch try kind(ofConfig: configURL) {
            case .unet:
                let c = try UNet2DConditionConfig.load(configURL)
                try checkUNet(c, SafeTensorsFile(url: dir.appendingPathComponent("diffusion_pytorch_model.safetensors")))
            case .vae:
                let c = try AutoencoderKLConfig.load(configURL)
                try checkVAE(c, SafeTensorsFile(url: dir.appendingPathComponent("diffusion_pytorch_model.safetensors")))
            case .clip:
                let c = try CLIPVisionConfig.load(configURL)
                try checkCLIP(c, SafeTensorsFile(url: dir.appendingPathComponent("model.safetensors")))
            case .adapter:
                let c = try AdapterConfig.load(configURL)
                let f = try SafeTensorsFile(url: dir.appendingPathComponent("adapter.safetensors"))
                XCTAssertEqual(f.shape(of: "vae2clip.weight"), [c.hidden, c.vaeFeatures])
                XCTAssertEqual(f.shape(of: "vae2clip.bias"), [c.hidden])
                XCTAssertEqual(f.shape(of: "linear1.weight"), [c.clipTokens, c.clipTokens + c.vaeTokens])
                XCTAssertEqual(f.shape(of: "linear1.bias"), [c.clipTokens])
            case .unknown:
                continue
            }
            checked += 1
        }
        XCTAssertGreaterThanOrEqual(checked, 3, "expected at least a UNet, a VAE and a CLIP config under \(root.path)")
    }

    /// Indices N of `prefix.N.` keys.
    private func indices(_ f: SafeTensorsFile, _ prefix: String) -> Set<Int> {
        Set(f.names.compactMap { name -> Int? in
            guard name.hasPrefix(prefix) else { return nil }
            return Int(name.dropFirst(prefix.count).prefix { $0 != "." })
        })
    }

    private func checkUNet(_ c: UNet2DConditionConfig, _ f: SafeTensorsFile) {
        let b = c.blockOutChannels, n = b.count
        XCTAssertEqual(f.shape(of: "conv_in.weight"), [b[0], c.inChannels, c.convInKernel, c.convInKernel])
        XCTAssertEqual(f.shape(of: "conv_out.weight"), [c.outChannels, b[0], c.convOutKernel, c.convOutKernel])
        XCTAssertEqual(f.shape(of: "time_embedding.linear_1.weight"), [c.timeEmbedDim, c.timeProjectionDim])
        XCTAssertEqual(f.shape(of: "conv_norm_out.weight"), [b[0]])
        XCTAssertEqual(indices(f, "down_blocks."), Set(0..<n))
        XCTAssertEqual(indices(f, "up_blocks."), Set(0..<n))
        XCTAssertEqual(c.headsPerBlock.count, n)
        XCTAssertTrue(c.featuresBeyondSD1.isEmpty, "\(c.featuresBeyondSD1)")
        for i in 0..<n {
            XCTAssertEqual(indices(f, "down_blocks.\(i).resnets."), Set(0..<c.layersPerBlock))
            XCTAssertEqual(indices(f, "up_blocks.\(i).resnets."), Set(0..<(c.layersPerBlock + 1)))
            if c.downBlockTypes[i].contains("CrossAttn") {
                let p = "down_blocks.\(i).attentions.0."
                XCTAssertEqual(f.shape(of: p + "transformer_blocks.0.attn2.to_k.weight"), [b[i], c.crossAttentionDim])
                XCTAssertEqual(f.shape(of: p + "proj_in.weight"),
                               c.useLinearProjection ? [b[i], b[i]] : [b[i], b[i], 1, 1])
                XCTAssertEqual(b[i] % c.headsPerBlock[i], 0, "heads \(c.headsPerBlock[i]) must divide \(b[i])")
                XCTAssertEqual(indices(f, p + "transformer_blocks."), Set(0..<c.transformerLayersPerBlock))
            } else {
                XCTAssertTrue(indices(f, "down_blocks.\(i).attentions.").isEmpty)
            }
        }
        if c.midBlockType != nil {
            XCTAssertEqual(f.shape(of: "mid_block.attentions.0.transformer_blocks.0.attn2.to_v.weight"),
                           [b[n - 1], c.crossAttentionDim])
        }
    }

    private func checkVAE(_ c: AutoencoderKLConfig, _ f: SafeTensorsFile) {
        let b = c.blockOutChannels, n = b.count, l = c.latentChannels
        XCTAssertEqual(f.shape(of: "encoder.conv_in.weight"), [b[0], c.inChannels, 3, 3])
        XCTAssertEqual(f.shape(of: "encoder.conv_out.weight"), [2 * l, b[n - 1], 3, 3])
        XCTAssertEqual(f.shape(of: "decoder.conv_in.weight"), [b[n - 1], l, 3, 3])
        XCTAssertEqual(f.shape(of: "decoder.conv_out.weight"), [c.outChannels, b[0], 3, 3])
        XCTAssertEqual(f.shape(of: "quant_conv.weight"), c.useQuantConv ? [2 * l, 2 * l, 1, 1] : nil)
        XCTAssertEqual(f.shape(of: "post_quant_conv.weight"), c.usePostQuantConv ? [l, l, 1, 1] : nil)
        XCTAssertEqual(indices(f, "encoder.down_blocks."), Set(0..<n))
        XCTAssertEqual(indices(f, "decoder.up_blocks."), Set(0..<n))
        for i in 0..<n {
            XCTAssertEqual(indices(f, "encoder.down_blocks.\(i).resnets."), Set(0..<c.layersPerBlock))
            XCTAssertEqual(indices(f, "decoder.up_blocks.\(i).resnets."), Set(0..<(c.layersPerBlock + 1)))
        }
        let attention = f.names.contains { $0.hasPrefix("encoder.mid_block.attentions.0.") }
        XCTAssertEqual(attention, c.midBlockAddAttention)
        XCTAssertEqual(b.allSatisfy { $0 % c.normNumGroups == 0 }, true)
    }

    private func checkCLIP(_ c: CLIPVisionConfig, _ f: SafeTensorsFile) {
        let strip = { (name: String) in KeyMap.clipVision.canonical(name).key }
        var shapes: [String: [Int]] = [:]
        for name in f.names { shapes[strip(name)] = f.shape(of: name) }
        let d = c.hiddenSize
        XCTAssertEqual(shapes["embeddings.patch_embedding.weight"], [d, c.numChannels, c.patchSize, c.patchSize])
        XCTAssertEqual(shapes["embeddings.position_embedding.weight"], [c.numPositions, d])
        XCTAssertEqual(shapes["embeddings.class_embedding"], [d])
        let layers = Set(shapes.keys.compactMap { k -> Int? in
            guard k.hasPrefix("encoder.layers.") else { return nil }
            return Int(k.dropFirst("encoder.layers.".count).prefix { $0 != "." })
        })
        XCTAssertEqual(layers, Set(0..<c.numHiddenLayers))
        XCTAssertEqual(shapes["encoder.layers.0.mlp.fc1.weight"], [c.intermediateSize, d])
        XCTAssertEqual(shapes["encoder.layers.0.self_attn.q_proj.weight"], [d, d])
        XCTAssertEqual(d % c.numAttentionHeads, 0)
    }
}

// Config readers: diffusers/transformers keys, defaults, int-or-list keys, errors naming the file.

import DPModels
import Foundation
import XCTest

final class ConfigTests: XCTestCase {

    private func file(_ json: String, name: String = "config.json") throws -> URL {
        let url = try weightsTempDir(self).appendingPathComponent(name)
        try Data(json.utf8).write(to: url)
        return url
    }

    private func expectConfigError(_ body: @autoclosure () throws -> Any, _ url: URL, _ fragments: [String],
                                   file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try body()
            XCTFail("expected a ConfigError", file: file, line: line)
        } catch let e as ConfigError {
            XCTAssertEqual(e.file, url.path, file: file, line: line)
            let text = "\(e)"
            XCTAssertTrue(text.contains(url.path), text, file: file, line: line)
            for f in fragments { XCTAssertTrue(text.contains(f), "'\(f)' not in: \(text)", file: file, line: line) }
        } catch {
            XCTFail("expected a ConfigError, got \(error)", file: file, line: line)
        }
    }

    func testUNetSD1StyleConfig() throws {
        // As SD-1.x ships it: attention_head_dim an int (= heads), num_attention_heads null, extra keys.
        let url = try file("""
        {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0",
         "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
         "center_input_sample": false, "cross_attention_dim": 768,
         "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
         "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
         "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
         "num_attention_heads": null, "out_channels": 4, "sample_size": 64,
         "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
         "some_future_key": {"nested": [1, 2]}}
        """)
        let c = try UNet2DConditionConfig.load(url)
        XCTAssertEqual(c.attentionHeadDim, [8, 8, 8, 8])
        XCTAssertNil(c.numAttentionHeads)
        XCTAssertEqual(c.headsPerBlock, [8, 8, 8, 8])
        XCTAssertEqual(c.crossAttentionDim, 768)
        XCTAssertEqual(c.normEps, 1e-5)
        XCTAssertEqual(c.sampleSize, 64)
        XCTAssertEqual(c.midBlockType, "UNetMidBlock2DCrossAttn")          // absent -> diffusers default
        XCTAssertEqual(c.transformerLayersPerBlock, 1)
        XCTAssertFalse(c.useLinearProjection)
        XCTAssertEqual(c.timeEmbedDim, 1280)
        XCTAssertEqual(c.timeProjectionDim, 320)
        XCTAssertTrue(c.featuresBeyondSD1.isEmpty)
        XCTAssertEqual(c, .stableDiffusion15)
    }

    func testUNetListsNullsAndDefaults() throws {
        let url = try file("""
        {"block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
         "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "attention_head_dim": [2, 4],
         "num_attention_heads": 4, "mid_block_type": null, "layers_per_block": [1, 1],
         "cross_attention_dim": [16, 16], "transformer_layers_per_block": 2, "only_cross_attention": false,
         "norm_num_groups": 8, "use_linear_projection": true, "sample_size": [32, 48],
         "class_embed_type": "timestep", "resnet_time_scale_shift": "scale_shift"}
        """)
        let c = try UNet2DConditionConfig.load(url)
        XCTAssertEqual(c.attentionHeadDim, [2, 4])
        XCTAssertEqual(c.numAttentionHeads, [4, 4])
        XCTAssertEqual(c.headsPerBlock, [4, 4])
        XCTAssertNil(c.midBlockType)
        XCTAssertEqual(c.layersPerBlock, 1)
        XCTAssertEqual(c.crossAttentionDim, 16)
        XCTAssertEqual(c.transformerLayersPerBlock, 2)
        XCTAssertEqual(c.onlyCrossAttention, [false, false])
        XCTAssertEqual(c.sampleSize, 32)
        XCTAssertTrue(c.useLinearProjection)
        XCTAssertEqual(c.inChannels, 4)          // default
        XCTAssertEqual(c.normEps, 1e-5)          // default
        XCTAssertEqual(c.featuresBeyondSD1, ["class_embed_type = timestep", "resnet_time_scale_shift = scale_shift"])

        // Encoding writes diffusers keys; decoding that gives the same config (incl. mid_block_type null).
        let data = try JSONEncoder().encode(c)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertNotNil(object["block_out_channels"])
        XCTAssertTrue(object["mid_block_type"] is NSNull)
        XCTAssertEqual(try JSONDecoder().decode(UNet2DConditionConfig.self, from: data), c)
    }

    func testUNetErrorsNameTheFileAndKey() throws {
        let bad = try file(#"{"block_out_channels": [32, "x"]}"#)
        expectConfigError(try UNet2DConditionConfig.load(bad), bad, ["block_out_channels[1]"])
        let uneven = try file(#"{"layers_per_block": [1, 2, 2, 2]}"#)
        expectConfigError(try UNet2DConditionConfig.load(uneven), uneven, ["layers_per_block", "[1, 2, 2, 2]"])
        let counts = try file(#"{"block_out_channels": [32, 64]}"#)
        expectConfigError(try UNet2DConditionConfig.load(counts), counts, ["down_block_types", "4", "2"])
        let groups = try file(#"{"norm_num_groups": 48}"#)
        expectConfigError(try UNet2DConditionConfig.load(groups), groups, ["norm_num_groups 48"])
        let nullGroups = try file(#"{"norm_num_groups": null}"#)
        expectConfigError(try UNet2DConditionConfig.load(nullGroups), nullGroups, ["norm_num_groups"])
        let notJSON = try file("{ not json")
        expectConfigError(try UNet2DConditionConfig.load(notJSON), notJSON, ["not valid JSON"])
        let missing = try weightsTempDir(self).appendingPathComponent("absent.json")
        expectConfigError(try UNet2DConditionConfig.load(missing), missing, ["cannot read"])
    }

    func testVAEConfig() throws {
        let url = try file("""
        {"_class_name": "AutoencoderKL", "block_out_channels": [128, 256, 512, 512],
         "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
         "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
         "layers_per_block": 2, "sample_size": 512, "latents_mean": null, "unknown": true}
        """)
        let c = try AutoencoderKLConfig.load(url)
        XCTAssertEqual(c, .stableDiffusion15)
        XCTAssertEqual(c.scalingFactor, 0.18215)
        XCTAssertEqual(c.normNumGroups, 32)
        XCTAssertTrue(c.useQuantConv && c.usePostQuantConv && c.midBlockAddAttention)
        XCTAssertEqual(c.downsampleFactor, 8)
        let bad = try file(#"{"scaling_factor": "big"}"#)
        expectConfigError(try AutoencoderKLConfig.load(bad), bad, ["scaling_factor"])
    }

    func testCLIPVisionConfigBareAndNested() throws {
        let bare = try file(#"{"model_type": "clip_vision_model", "hidden_size": 24, "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "num_hidden_layers": 2, "intermediate_size": 48}"#)
        let c = try CLIPVisionConfig.load(bare)
        XCTAssertEqual(c.hiddenSize, 24)
        XCTAssertEqual(c.numPositions, 17)
        XCTAssertEqual(c.headDim, 12)
        XCTAssertEqual(c.hiddenAct, "quick_gelu")     // default
        XCTAssertEqual(c.layerNormEps, 1e-5)

        // A full CLIPConfig: the text settings must not leak into the vision config.
        let nested = try file("""
        {"model_type": "clip", "hidden_size": 999, "projection_dim": 512,
         "text_config": {"hidden_size": 512, "num_hidden_layers": 12},
         "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                           "num_hidden_layers": 12, "patch_size": 32, "image_size": 224}}
        """)
        let v = try CLIPVisionConfig.load(nested)
        XCTAssertEqual(v, CLIPVisionConfig())
        XCTAssertEqual(v.numPositions, 50)

        let bad = try file(#"{"hidden_size": 25, "num_attention_heads": 2}"#)
        expectConfigError(try CLIPVisionConfig.load(bad), bad, ["hidden_size 25", "num_attention_heads 2"])
    }

    func testAdapterConfig() throws {
        let url = try file(#"{"clip_tokens": 50, "vae_tokens": 4, "vae_features": 1280, "hidden": 768}"#)
        XCTAssertEqual(try AdapterConfig.load(url), AdapterConfig(clipTokens: 50, vaeTokens: 4, vaeFeatures: 1280, hidden: 768))
        let missing = try file(#"{"clip_tokens": 50, "vae_tokens": 4, "hidden": 768}"#)
        expectConfigError(try AdapterConfig.load(missing), missing, ["vae_features"])
    }

    func testGoldenConfigsLoad() throws {
        let root = try wtGoldenRoot()
        var loaded = 0
        for url in wtFilesUnder(root, endingWith: "config.json") where url.lastPathComponent == "config.json" {
            let object = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any] ?? [:]
            switch object["_class_name"] as? String {
            case "UNet2DConditionModel"?:
                let c = try UNet2DConditionConfig.load(url)
                // Every UNet key of the file was read into the struct: re-encoding keeps the values.
                let again = try JSONSerialization.jsonObject(with: JSONEncoder().encode(c)) as? [String: Any] ?? [:]
                for key in ["in_channels", "out_channels", "block_out_channels", "layers_per_block",
                            "cross_attention_dim", "norm_num_groups", "down_block_types", "up_block_types",
                            "mid_block_type", "flip_sin_to_cos", "freq_shift", "use_linear_projection"] {
                    XCTAssertEqual("\(again[key] ?? "nil")", "\(object[key] ?? "nil")", "\(url.path): \(key)")
                }
                if let heads = object["attention_head_dim"] as? Int {
                    XCTAssertEqual(c.attentionHeadDim, Array(repeating: heads, count: c.downBlockTypes.count))
                }
                loaded += 1
            case "AutoencoderKL"?:
                let c = try AutoencoderKLConfig.load(url)
                XCTAssertEqual(Double(c.scalingFactor), object["scaling_factor"] as? Double ?? 0.18215, accuracy: 1e-7)
                loaded += 1
            default:
                if let mt = object["model_type"] as? String, mt.hasPrefix("clip") {
                    let c = try CLIPVisionConfig.load(url)
                    XCTAssertEqual(c.hiddenSize, object["hidden_size"] as? Int)
                    loaded += 1
                } else if object["clip_tokens"] != nil {
                    _ = try AdapterConfig.load(url)
                    loaded += 1
                }
            }
        }
        XCTAssertGreaterThanOrEqual(loaded, 3)
    }
}

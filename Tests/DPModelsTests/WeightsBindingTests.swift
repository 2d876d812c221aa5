// SafeTensorsWeights: strict binding through the key maps of shared/docs/model-format.md.

import DPModels
import DPTensor
import Foundation
import XCTest

final class WeightsBindingTests: XCTestCase {

    private func file(_ tensors: [(String, Tensor)]) throws -> URL {
        let url = try weightsTempDir(self).appendingPathComponent("w.safetensors")
        try SafeTensorsWriter.write(tensors, to: url)
        return url
    }

    private func ramp(_ shape: [Int], from start: Float = 0) -> Tensor {
        let n = shape.reduce(1, *)
        return Tensor(shape: shape, data: (0..<n).map { start + Float($0) })
    }

    func testExactBindingAndFinish() throws {
        let url = try file([("conv_in.weight", ramp([2, 1, 3, 3])), ("conv_in.bias", ramp([2]))])
        let w = try SafeTensorsWeights(url: url, keyMap: .unet)
        XCTAssertEqual(try w.take("conv_in.weight", shape: [2, 1, 3, 3]), ramp([2, 1, 3, 3]))
        XCTAssertEqual(try w.take("conv_in.bias", shape: [2]).data, [0, 1])
        XCTAssertNoThrow(try w.finish())
    }

    func testWrongShapeNamesFileKeyAndShapes() throws {
        let url = try file([("conv_in.weight", ramp([2, 1, 3, 3]))])
        let w = try SafeTensorsWeights(url: url, keyMap: .unet)
        let e = assertWeightsError(try w.take("conv_in.weight", shape: [2, 4, 3, 3]))
        guard case .shapeMismatch(let f, let key, let expected, let actual)? = e else {
            return XCTFail("expected .shapeMismatch, got \(String(describing: e))")
        }
        XCTAssertEqual(f, url.path)
        XCTAssertEqual(key, "conv_in.weight")
        XCTAssertEqual(expected, [2, 4, 3, 3])
        XCTAssertEqual(actual, [2, 1, 3, 3])
        let text = "\(e!)"
        for frag in [url.path, "conv_in.weight", "[2, 4, 3, 3]", "[2, 1, 3, 3]"] {
            XCTAssertTrue(text.contains(frag), "'\(frag)' not in: \(text)")
        }
    }

    func testMissingKeyNamesFileKeyAndShape() throws {
        let url = try file([("conv_in.weight", ramp([2, 1, 3, 3]))])
        let w = try SafeTensorsWeights(url: url, keyMap: .unet)
        let e = assertWeightsError(try w.take("conv_out.weight", shape: [4, 2, 3, 3]))
        guard case .missingKey(let f, let key, let shape)? = e else {
            return XCTFail("expected .missingKey, got \(String(describing: e))")
        }
        XCTAssertEqual(f, url.path)
        XCTAssertEqual(key, "conv_out.weight")
        XCTAssertEqual(shape, [4, 2, 3, 3])
        XCTAssertTrue("\(e!)".contains(url.path) && "\(e!)".contains("conv_out.weight") && "\(e!)".contains("[4, 2, 3, 3]"))
    }

    func testUnexpectedKeysListsEveryUnusedTensor() throws {
        let url = try file([("a.weight", ramp([1])), ("b.weight", ramp([1])), ("c.bias", ramp([1]))])
        let w = try SafeTensorsWeights(url: url, keyMap: .adapter)
        _ = try w.take("b.weight", shape: [1])
        let e = assertWeightsError(try w.finish())
        guard case .unexpectedKeys(let f, let keys)? = e else {
            return XCTFail("expected .unexpectedKeys, got \(String(describing: e))")
        }
        XCTAssertEqual(f, url.path)
        XCTAssertEqual(keys, ["a.weight", "c.bias"])
        XCTAssertTrue("\(e!)".contains("'a.weight'") && "\(e!)".contains("'c.bias'") && "\(e!)".contains(url.path))
    }

    func testModulePrefixIsAccepted() throws {
        let url = try file([("module.conv_in.weight", ramp([2, 1, 1, 1])), ("module.conv_in.bias", ramp([2]))])
        let w = try SafeTensorsWeights(url: url, keyMap: .unet)
        XCTAssertEqual(try w.take("conv_in.weight", shape: [2, 1, 1, 1]).data, [0, 1])
        XCTAssertEqual(try w.take("conv_in.bias", shape: [2]).data, [0, 1])
        XCTAssertNoThrow(try w.finish())
        // The unprefixed key of the file is not available under the prefixed name.
        let e = assertWeightsError(try w.take("module.conv_in.weight", shape: [2, 1, 1, 1]))
        guard case .missingKey? = e else { return XCTFail("\(String(describing: e))") }
    }

    func testOldVAEAttentionNamesLinearAndConv1x1() throws {
        let c = 3
        let p = "decoder.mid_block.attentions.0."
        let q = "encoder.mid_block.attentions.0."
        let url = try file([
            (p + "group_norm.weight", ramp([c])), (p + "group_norm.bias", ramp([c])),
            (p + "query.weight", ramp([c, c], from: 10)), (p + "query.bias", ramp([c])),
            (p + "key.weight", ramp([c, c], from: 20)), (p + "key.bias", ramp([c])),
            (p + "value.weight", ramp([c, c], from: 30)), (p + "value.bias", ramp([c])),
            (p + "proj_attn.weight", ramp([c, c], from: 40)), (p + "proj_attn.bias", ramp([c])),
            // the encoder side stored as 1x1 convolutions (original LDM checkpoints)
            (q + "query.weight", ramp([c, c, 1, 1], from: 50)), (q + "to_k.weight", ramp([c, c, 1, 1], from: 60)),
            (q + "proj_attn.weight", ramp([c, c, 1, 1], from: 70)),
        ])
        let w = try SafeTensorsWeights(url: url, keyMap: .vae)
        XCTAssertEqual(try w.take(p + "group_norm.weight", shape: [c]).data, [0, 1, 2])
        _ = try w.take(p + "group_norm.bias", shape: [c])
        XCTAssertEqual(try w.take(p + "to_q.weight", shape: [c, c]), ramp([c, c], from: 10))
        XCTAssertEqual(try w.take(p + "to_k.weight", shape: [c, c]), ramp([c, c], from: 20))
        XCTAssertEqual(try w.take(p + "to_v.weight", shape: [c, c]), ramp([c, c], from: 30))
        XCTAssertEqual(try w.take(p + "to_out.0.weight", shape: [c, c]), ramp([c, c], from: 40))
        for k in ["to_q", "to_k", "to_v", "to_out.0"] { _ = try w.take(p + k + ".bias", shape: [c]) }
        XCTAssertEqual(try w.take(q + "to_q.weight", shape: [c, c]), ramp([c, c], from: 50))
        XCTAssertEqual(try w.take(q + "to_k.weight", shape: [c, c]), ramp([c, c], from: 60))
        XCTAssertEqual(try w.take(q + "to_out.0.weight", shape: [c, c]), ramp([c, c], from: 70))
        XCTAssertNoThrow(try w.finish())
    }

    func testConv1x1IsOnlyAcceptedForAttentionProjections() throws {
        let url = try file([("decoder.conv_in.weight", ramp([3, 3, 1, 1]))])
        let w = try SafeTensorsWeights(url: url, keyMap: .vae)
        let e = assertWeightsError(try w.take("decoder.conv_in.weight", shape: [3, 3]))
        guard case .shapeMismatch(_, _, [3, 3], [3, 3, 1, 1])? = e else { return XCTFail("\(String(describing: e))") }
    }

    func testAliasCollisionIsAnError() throws {
        let p = "encoder.mid_block.attentions.0."
        let url = try file([(p + "query.weight", ramp([2, 2])), (p + "to_q.weight", ramp([2, 2]))])
        let e = assertWeightsError(try SafeTensorsWeights(url: url, keyMap: .vae))
        guard case .malformed(let f, let reason)? = e else { return XCTFail("\(String(describing: e))") }
        XCTAssertEqual(f, url.path)
        XCTAssertTrue(reason.contains(p + "query.weight") && reason.contains(p + "to_q.weight"), reason)
    }

    func testCLIPWithVisionModelPrefixAndIgnoredFamilies() throws {
        let url = try weightsTempDir(self).appendingPathComponent("clip.safetensors")
        // A full CLIPModel checkpoint as older transformers saved it: I64 position_ids buffers,
        // the text tower, both projections and logit_scale.
        try wtWrite(rawSafeTensors([
            WTRawTensor(name: "vision_model.embeddings.class_embedding", dtype: "F32", shape: [2], bytes: wtF32Bytes([1, 2])),
            WTRawTensor(name: "vision_model.embeddings.position_ids", dtype: "I64", shape: [1, 2], bytes: Array(repeating: 0, count: 16)),
            WTRawTensor(name: "vision_model.post_layernorm.weight", dtype: "F16", shape: [2], bytes: wtU16Bytes([0x3C00, 0x4000])),
            WTRawTensor(name: "text_model.embeddings.position_ids", dtype: "I64", shape: [1, 2], bytes: Array(repeating: 0, count: 16)),
            WTRawTensor(name: "text_model.final_layer_norm.weight", dtype: "F32", shape: [2], bytes: wtF32Bytes([1, 1])),
            WTRawTensor(name: "visual_projection.weight", dtype: "F32", shape: [1, 2], bytes: wtF32Bytes([1, 1])),
            WTRawTensor(name: "text_projection.weight", dtype: "F32", shape: [1, 2], bytes: wtF32Bytes([1, 1])),
            WTRawTensor(name: "logit_scale", dtype: "F32", shape: [], bytes: wtF32Bytes([2.6592])),
        ]), to: url)
        let w = try SafeTensorsWeights(url: url, keyMap: .clipVision)
        XCTAssertEqual(w.canonicalKeys, ["embeddings.class_embedding", "post_layernorm.weight"])
        XCTAssertEqual(try w.take("embeddings.class_embedding", shape: [2]).data, [1, 2])
        XCTAssertEqual(try w.take("post_layernorm.weight", shape: [2]).data, [1, 2])
        XCTAssertNoThrow(try w.finish())

        // Without the prefix (transformers 5 CLIPVisionModel.save_pretrained) the same keys bind.
        let bare = try weightsTempDir(self).appendingPathComponent("bare.safetensors")
        try SafeTensorsWriter.write([("embeddings.class_embedding", Tensor(shape: [2], data: [3, 4]))], to: bare)
        let w2 = try SafeTensorsWeights(url: bare, keyMap: .clipVision)
        XCTAssertEqual(try w2.take("embeddings.class_embedding", shape: [2]).data, [3, 4])
        XCTAssertNoThrow(try w2.finish())

        // The text tower is NOT ignored by the UNet's map: there it is an unexpected key.
        let w3 = try SafeTensorsWeights(url: bare, keyMap: .unet)
        guard case .unexpectedKeys(_, ["embeddings.class_embedding"])? = assertWeightsError(try w3.finish()) else {
            return XCTFail("expected unexpectedKeys")
        }
    }

    func testNonFloatDtypeOutsideIgnoredFamiliesIsAnError() throws {
        let url = try weightsTempDir(self).appendingPathComponent("i64.safetensors")
        try wtWrite(rawSafeTensors([
            WTRawTensor(name: "conv_in.weight", dtype: "I64", shape: [1], bytes: Array(repeating: 0, count: 8)),
        ]), to: url)
        let e = assertWeightsError(try SafeTensorsWeights(url: url, keyMap: .unet))
        guard case .malformed(let f, let reason)? = e else { return XCTFail("\(String(describing: e))") }
        XCTAssertEqual(f, url.path)
        XCTAssertTrue(reason.contains("conv_in.weight") && reason.contains("I64"), reason)
    }

    func testKeyMapCanonicalNames() {
        XCTAssertEqual(KeyMap.vae.canonical("module.encoder.mid_block.attentions.0.value.bias").key,
                       "encoder.mid_block.attentions.0.to_v.bias")
        XCTAssertEqual(KeyMap.clipVision.canonical("module.vision_model.encoder.layers.0.mlp.fc1.weight").key,
                       "encoder.layers.0.mlp.fc1.weight")
        XCTAssertTrue(KeyMap.clipVision.canonical("vision_model.embeddings.position_ids").ignored)
        XCTAssertFalse(KeyMap.unet.canonical("down_blocks.0.attentions.0.proj_in.weight").ignored)
        // The UNet map does not rename attention keys.
        XCTAssertEqual(KeyMap.unet.canonical("mid_block.attentions.0.query.weight").key, "mid_block.attentions.0.query.weight")
    }
}

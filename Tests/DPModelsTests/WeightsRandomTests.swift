// RandomWeights: determinism, initialisation rule, recording and saving.

import DPModels
import DPTensor
import Foundation
import XCTest

final class WeightsRandomTests: XCTestCase {

    func testDeterministicAndOrderIndependent() throws {
        let a = RandomWeights(seed: 42)
        let b = RandomWeights(seed: 42)
        let x1 = try a.take("down_blocks.0.resnets.0.conv1.weight", shape: [8, 4, 3, 3])
        let y1 = try a.take("time_embedding.linear_1.weight", shape: [32, 8])
        // Other order, other source object.
        let y2 = try b.take("time_embedding.linear_1.weight", shape: [32, 8])
        let x2 = try b.take("down_blocks.0.resnets.0.conv1.weight", shape: [8, 4, 3, 3])
        XCTAssertEqual(x1, x2)
        XCTAssertEqual(y1, y2)
        let c = RandomWeights(seed: 43)
        XCTAssertNotEqual(try c.take("time_embedding.linear_1.weight", shape: [32, 8]), y1)
        XCTAssertNotEqual(x1.data.prefix(32).map { $0 }, y1.data.prefix(32).map { $0 })   // keys get different streams
        // Asking again returns the same tensor; another shape for the same key is an error.
        XCTAssertEqual(try a.take("time_embedding.linear_1.weight", shape: [32, 8]), y1)
        let e = assertWeightsError(try a.take("time_embedding.linear_1.weight", shape: [8, 32]))
        guard case .shapeMismatch(let f, _, [8, 32], [32, 8])? = e else { return XCTFail("\(String(describing: e))") }
        XCTAssertEqual(f, "RandomWeights(seed: 42)")
    }

    func testMultiChunkTensorIsDeterministicAcrossThreads() throws {
        // > 65536 elements: filled in parallel chunks; must not depend on scheduling.
        let shape = [64, 64, 3, 3]   // 36864 elements, one chunk
        let big = [160, 80, 3, 3]    // 115200 elements, two chunks
        let t1 = RandomWeights.generate(key: "k.weight", shape: big, seed: 1, std: 0.02)
        let t2 = RandomWeights.generate(key: "k.weight", shape: big, seed: 1, std: 0.02)
        XCTAssertEqual(t1, t2)
        XCTAssertEqual(RandomWeights.generate(key: "k.weight", shape: shape, seed: 1, std: 0.02).count, 36864)
        XCTAssertTrue(t1.data.allSatisfy { $0.isFinite })
    }

    func testInitialisationRule() throws {
        let w = RandomWeights(seed: 7, std: 0.05)
        let ones: [(String, [Int])] = [
            ("down_blocks.0.resnets.0.norm1.weight", [32]), ("conv_norm_out.weight", [32]),
            ("encoder.mid_block.attentions.0.group_norm.weight", [32]),
            ("down_blocks.1.attentions.0.norm.weight", [32]),
            ("encoder.layers.0.layer_norm1.weight", [24]), ("pre_layrnorm.weight", [24]),
            ("post_layernorm.weight", [24]), ("ln_1.weight", [24]),
        ]
        for (k, s) in ones {
            XCTAssertEqual(ParameterRole(key: k), .normScale, k)
            XCTAssertTrue(try w.take(k, shape: s).data.allSatisfy { $0 == 1 }, k)
        }
        for (k, s) in [("conv_in.bias", [8]), ("down_blocks.0.resnets.0.norm1.bias", [8]), ("vae2clip.bias", [24])] {
            XCTAssertEqual(ParameterRole(key: k), .bias, k)
            XCTAssertTrue(try w.take(k, shape: s).data.allSatisfy { $0 == 0 }, k)
        }
        XCTAssertEqual(ParameterRole(key: "embeddings.class_embedding"), .embedding)
        XCTAssertEqual(ParameterRole(key: "embeddings.position_embedding.weight"), .embedding)
        XCTAssertEqual(ParameterRole(key: "embeddings.patch_embedding.weight"), .weight)
        XCTAssertEqual(ParameterRole(key: "time_embedding.linear_1.weight"), .weight)
        XCTAssertEqual(ParameterRole(key: "linear1.weight"), .weight)

        // Standard deviations: conv/linear 1/sqrt(fan_in), embeddings and vectors `std`.
        func sampleStd(_ t: Tensor) -> Double {
            let n = Double(t.count)
            let mean = t.data.reduce(0) { $0 + Double($1) } / n
            return (t.data.reduce(0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / n).squareRoot()
        }
        let conv = try w.take("down_blocks.0.resnets.0.conv1.weight", shape: [64, 32, 3, 3])   // fan_in 288
        XCTAssertEqual(sampleStd(conv), 1 / 288.0.squareRoot(), accuracy: 0.03 / 288.0.squareRoot())
        let lin = try w.take("ff.net.2.weight", shape: [128, 512])                             // fan_in 512
        XCTAssertEqual(sampleStd(lin), 1 / 512.0.squareRoot(), accuracy: 0.03 / 512.0.squareRoot())
        let pos = try w.take("embeddings.position_embedding.weight", shape: [50, 768])
        XCTAssertEqual(sampleStd(pos), 0.05, accuracy: 0.001)
        let cls = try w.take("embeddings.class_embedding", shape: [4096])
        XCTAssertEqual(sampleStd(cls), 0.05, accuracy: 0.00175)
        let mean = conv.data.reduce(0) { $0 + Double($1) } / Double(conv.count)
        XCTAssertEqual(mean, 0, accuracy: 4 / (288.0.squareRoot() * Double(conv.count).squareRoot()))   // 4 sigma
    }

    func testRecordedTensorsRoundTripThroughAFile() throws {
        let w = RandomWeights(seed: 3)
        let shapes: [(String, [Int])] = [
            ("conv_in.weight", [8, 14, 3, 3]), ("conv_in.bias", [8]),
            ("down_blocks.0.resnets.0.norm1.weight", [8]), ("time_embedding.linear_1.weight", [32, 8]),
        ]
        for (k, s) in shapes { _ = try w.take(k, shape: s) }
        _ = try w.take("conv_in.bias", shape: [8])   // repeated: recorded once
        XCTAssertEqual(w.recorded.map(\.key), shapes.map(\.0))

        let url = try weightsTempDir(self).appendingPathComponent("random.safetensors")
        try w.write(to: url, metadata: ["seed": "3"])
        let back = try SafeTensorsWeights(url: url, keyMap: .unet)
        XCTAssertEqual(back.file.metadata["seed"], "3")
        for (k, t) in w.recorded {
            XCTAssertEqual(try back.take(k, shape: t.shape), t, k)
        }
        XCTAssertNoThrow(try back.finish())

        // With recording off nothing is kept, values are the same.
        let quiet = RandomWeights(seed: 3)
        quiet.recording = false
        XCTAssertEqual(try quiet.take("conv_in.weight", shape: [8, 14, 3, 3]), w.recorded[0].tensor)
        XCTAssertTrue(quiet.recorded.isEmpty)
    }
}

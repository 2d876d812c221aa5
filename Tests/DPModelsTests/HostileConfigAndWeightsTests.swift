// Issue 12: every count and size a model file declares is bounded and checked; each hostile input here is
// an error naming the file and the key (never a trap, an abort or a huge allocation).
@testable import DPModels
import Foundation
import XCTest

final class HostileConfigAndWeightsTests: XCTestCase {
    func write(_ text: String, _ name: String = "config.json") throws -> URL {
        let url = try weightsTempDir(self).appendingPathComponent(name)
        try Data(text.utf8).write(to: url)
        return url
    }

    func assertConfigError(_ body: @autoclosure () throws -> Any, file url: URL, says: String,
                           line: UInt = #line) {
        XCTAssertThrowsError(try body(), line: line) { error in
            guard let e = error as? ConfigError else { return XCTFail("not a ConfigError: \(error)", line: line) }
            XCTAssertEqual(e.file, url.path, line: line)
            XCTAssertTrue(e.reason.contains(says), "\(e)", line: line)
        }
    }

    /// `layers_per_block: 2147483647` aborted the process while the UNet was built.
    func testAbsurdUNetCountsAreRefused() throws {
        let base: [String: Any] = ["block_out_channels": [32, 64], "norm_num_groups": 32,
                                   "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                                   "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]]
        let valid = try write(String(decoding: try JSONSerialization.data(withJSONObject: base), as: UTF8.self))
        XCTAssertNoThrow(try UNet2DConditionConfig.load(valid))
        let cases: [(String, Any, String)] = [
            ("layers_per_block", 2147483647, "layers_per_block is 2147483647, expected 1 to 64"),
            ("transformer_layers_per_block", 100000, "transformer_layers_per_block is 100000"),
            ("block_out_channels", [1 << 40, 1 << 40], "block_out_channels"),
            ("in_channels", Int.max, "in_channels is \(Int.max)"),
            ("attention_head_dim", 4096, "attention_head_dim"),
            ("cross_attention_dim", 99999999, "cross_attention_dim is 99999999"),
            ("conv_in_kernel", 1001, "conv_in_kernel is 1001"),
            ("norm_eps", -1, "norm_eps"),
        ]
        for (key, value, says) in cases {
            var json = base
            json[key] = value
            let url = try write(String(decoding: try JSONSerialization.data(withJSONObject: json), as: UTF8.self))
            assertConfigError(try UNet2DConditionConfig.load(url), file: url, says: says)
        }
    }

    func testAbsurdVAEAndCLIPAndAdapterCountsAreRefused() throws {
        let vae = try write(#"{"block_out_channels": [128], "down_block_types": ["DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D"], "layers_per_block": 2147483648}"#)
        assertConfigError(try AutoencoderKLConfig.load(vae), file: vae, says: "layers_per_block is 2147483648")
        let clip = try write(#"{"num_hidden_layers": 1073741824}"#)
        assertConfigError(try CLIPVisionConfig.load(clip), file: clip, says: "num_hidden_layers is 1073741824")
        let grid = try write(#"{"image_size": 8192, "patch_size": 1}"#)
        assertConfigError(try CLIPVisionConfig.load(grid), file: grid, says: "image_size / patch_size")
        let adapter = try write(#"{"clip_tokens": 1099511627776, "vae_tokens": 4, "vae_features": 1280, "hidden": 768}"#)
        assertConfigError(try AdapterConfig.load(adapter), file: adapter, says: "clip_tokens is 1099511627776")
    }

    /// A config file is read only up to its limit.
    func testHugeConfigFileIsRefusedWithoutReadingIt() throws {
        let url = try write("{\"a\": \"" + String(repeating: "x", count: ConfigLimits.maxFileBytes) + "\"}")
        assertConfigError(try UNet2DConditionConfig.load(url), file: url, says: "larger than the")
    }

    /// Safetensors headers: a huge header length, offsets out of the file, overlapping tensors, a shape whose
    /// product overflows (hidden behind a zero dimension), too many dimensions.
    func testHostileSafeTensorsHeadersAreRefused() throws {
        let dir = try weightsTempDir(self)
        func check(_ bytes: [UInt8], _ says: String, line: UInt = #line) throws {
            let url = dir.appendingPathComponent("w\(line).safetensors")
            try wtWrite(bytes, to: url)
            XCTAssertThrowsError(try SafeTensorsFile(url: url), line: line) { error in
                XCTAssertTrue("\(error)".contains(url.path) && "\(error)".contains(says), "\(error)", line: line)
            }
            XCTAssertThrowsError(try SafeTensorsFile.validateHeader(Data(bytes)), line: line)
        }
        try check(rawSafeTensors(header: "{}", data: [], headerLengthOverride: UInt64(1) << 63 + 5), "header length")
        try check(rawSafeTensors(header: #"{"a": {"dtype": "F32", "shape": [1099511627776], "data_offsets": [0, 4398046511104]}}"#,
                                 data: [UInt8](repeating: 0, count: 8)), "past the end of the data section")
        try check(rawSafeTensors(header: #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#,
                                 data: [UInt8](repeating: 0, count: 12)), "overlap")
        try check(rawSafeTensors(header: #"{"a": {"dtype": "F32", "shape": [4611686018427387904, 4611686018427387904, 0], "data_offsets": [0, 0]}}"#,
                                 data: []), "elements allowed")
        try check(rawSafeTensors(header: #"{"a": {"dtype": "F32", "shape": [1, 1, 1, 1, 1, 1, 1, 1, 1], "data_offsets": [0, 4]}}"#,
                                 data: [0, 0, 0, 0]), "dimensions")
    }
}

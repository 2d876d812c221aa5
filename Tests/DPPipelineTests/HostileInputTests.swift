// Issue 12: hostile pose maps, images, dreampose.json files, model manifests and scheduler configs. Each is
// an error naming the file and what was wrong, checked before anything is allocated for it.
import DPFileKit
import DPPipeline
import DPSampling
import Foundation
import XCTest

final class HostileInputTests: XCTestCase {
    func npyHeader(_ descr: String, _ shape: String, version: UInt8 = 1, payload: [UInt8] = []) -> Data {
        var h = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape), }"
        h += String(repeating: " ", count: (64 - (10 + h.utf8.count + 1) % 64) % 64) + "\n"
        var out: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, version, 0]
        let n = h.utf8.count
        out += version == 1 ? [UInt8(n & 0xFF), UInt8(n >> 8)] : [UInt8(n & 0xFF), UInt8(n >> 8 & 0xFF), 0, 0]
        return Data(out + Array(h.utf8) + payload)
    }

    func assertNPYError(_ data: Data, says: String, line: UInt = #line) {
        XCTAssertThrowsError(try NPY.decode(data, name: "hostile.npy"), line: line) { error in
            XCTAssertTrue("\(error)".contains("hostile.npy") && "\(error)".contains(says), "\(error)", line: line)
        }
    }

    /// 2^61 float64 elements are 2^64 bytes: the byte count wrapped to 0 in the -Ounchecked build, the data
    /// check passed and the copy wrote past its buffer (SIGSEGV).
    func testNPYShapeMultiplyingPast2To64IsRefused() {
        assertNPYError(npyHeader("<f8", "(2305843009213693952,)"), says: "elements allowed")
        assertNPYError(npyHeader("<f4", "(4294967296, 4294967296, 4)"), says: "elements allowed")
        assertNPYError(npyHeader("<f4", "(\(NPY.maxElements + 1),)"), says: "elements allowed")
        assertNPYError(npyHeader("<f4", "(" + String(repeating: "1, ", count: NPY.maxDimensions + 1) + ")", payload: [0, 0, 0, 0]),
                       says: "dimensions")
        // Largest allowed count: refused only because the data is missing (no allocation of 2^26 floats first).
        assertNPYError(npyHeader("<f4", "(\(NPY.maxElements),)"), says: "truncated data")
    }

    func testNPYHugeHeaderLengthIsRefused() {
        let data = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 2, 0, 0xF0, 0xFF, 0xFF, 0xFF]) + Data("{}".utf8)
        assertNPYError(data, says: "header length 4294967280")
    }

    /// A 69-byte PNG declaring 2^31-1 x 2^31-1 made a worker allocate gigabytes; the IHDR is now checked
    /// against `PNGCodec.maxPixels` before libpng sees the file.
    func testPNGHeaderDeclaringAHugeImageIsRefusedBeforeDecoding() throws {
        func png(width: UInt32, height: UInt32) -> Data {
            let ihdr = TinyPNG.be32(width) + TinyPNG.be32(height) + [8, 2, 0, 0, 0]
            return Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + TinyPNG.chunk("IHDR", ihdr)
                        + TinyPNG.chunk("IDAT", TinyPNG.zlibStored([0, 0, 0, 0])) + TinyPNG.chunk("IEND", []))
        }
        for (w, h) in [(UInt32(0x7FFF_FFFF), UInt32(0x7FFF_FFFF)), (1_000_000, 1), (4097, 4097), (0, 5)] {
            XCTAssertThrowsError(try PNGCodec.decode(png(width: w, height: h), name: "hostile.png")) { error in
                XCTAssertTrue("\(error)".contains("hostile.png") && "\(error)".contains("\(w)x\(h)"), "\(error)")
            }
        }
        let dir = try IOGolden.temporaryDirectory(self)
        let url = dir.appendingPathComponent("huge.png")
        try png(width: 0x7FFF_FFFF, height: 0x7FFF_FFFF).write(to: url)
        XCTAssertThrowsError(try PNGCodec.read(url)) { XCTAssertTrue("\($0)".contains("larger than allowed"), "\($0)") }
        // At the limit the header passes (the image data is then what fails here).
        XCTAssertEqual(try PNGCodec.checkHeader(png(width: 4096, height: 4096)).width, 4096)
    }

    func dreampose(_ edit: (inout String) -> Void) -> Data {
        var text = #"{"format": "dreampose-model/1", "name": "t", "height": 640, "width": 512, "vae_scaling_factor": 0.18215, "pose_window": 5, "defaults": {"steps": 100, "sampler": "pndm", "image_guidance": 8.0, "pose_guidance": 3.0}}"#
        edit(&text)
        return Data(text.utf8)
    }

    /// `defaults.steps: 1e300` and a pose_window above UInt32.max crashed the coordinator at start-up (every
    /// restart again). The coordinator and the pipeline read dreampose.json through the same DreamPoseFile.
    func testDreamPoseJSONOutOfRangeValuesAreRefused() throws {
        XCTAssertEqual(try DreamPoseFile.parse(dreampose { _ in }).steps, 100)
        XCTAssertEqual(try DreamPoseConfig.parse(dreampose { _ in }).poseWindow, 5)
        let cases: [(String, String, String)] = [
            (#""steps": 100"#, #""steps": 1e300"#, "defaults.steps"),
            (#""steps": 100"#, #""steps": 2.5"#, "defaults.steps"),
            (#""steps": 100"#, #""steps": 1001"#, "defaults.steps"),
            (#""steps": 100"#, #""steps": 1e400"#, "not valid JSON"),
            (#""pose_window": 5"#, #""pose_window": 4294967297"#, "pose_window"),
            (#""pose_window": 5"#, #""pose_window": 4"#, "pose_window"),
            (#""height": 640"#, #""height": 1048576"#, "height"),
            (#""image_guidance": 8.0"#, #""image_guidance": 1e39"#, "defaults.image_guidance"),
            (#""vae_scaling_factor": 0.18215"#, #""vae_scaling_factor": -1"#, "vae_scaling_factor"),
        ]
        let dir = try IOGolden.temporaryDirectory(self)
        let url = dir.appendingPathComponent("dreampose.json")
        for (from, to, says) in cases {
            let data = dreampose { $0 = $0.replacingOccurrences(of: from, with: to) }
            XCTAssertThrowsError(try DreamPoseFile.parse(data, file: "m/dreampose.json"), to) {
                XCTAssertTrue("\($0)".contains("m/dreampose.json") && "\($0)".contains(says), "\($0)")
            }
            try data.write(to: url)
            XCTAssertThrowsError(try DreamPoseConfig.load(url), to) {
                XCTAssertTrue("\($0)".contains(url.path) && "\($0)".contains(says), "\($0)")
            }
        }
    }

    /// A manifest declaring 2^62-byte files passed and overflowed sums of sizes.
    func testManifestDeclaringHugeFilesIsRefused() {
        let digest = String(repeating: "ab", count: 32)
        func manifest(_ sizes: [UInt64]) -> ModelManifest {
            ModelManifest(files: sizes.enumerated().map { ModelFileEntry(path: "f\($0.offset)", size: $0.element, sha256: digest) })
        }
        XCTAssertNoThrow(try manifest([1, 2]).validate())
        XCTAssertThrowsError(try manifest([1 << 62]).validate()) {
            XCTAssertTrue("\($0)".contains("f0") && "\($0)".contains("bytes a model file may have"), "\($0)")
        }
        let many = manifest(Array(repeating: ModelManifest.maxFileBytes, count: 5))
        XCTAssertThrowsError(try many.validate()) { XCTAssertTrue("\($0)".contains("add up to more than"), "\($0)") }
        XCTAssertEqual(manifest([.max, .max]).totalBytes, .max)  // saturates instead of trapping
        let crowded = manifest(Array(repeating: 1, count: ModelManifest.maxFiles + 1))
        XCTAssertThrowsError(try crowded.validate()) { XCTAssertTrue("\($0)".contains("files, at most"), "\($0)") }
    }

    func testSchedulerConfigOutOfRangeValuesAreRefused() {
        for (json, key) in [(#"{"num_train_timesteps": 4611686018427387904}"#, "num_train_timesteps"),
                            (#"{"beta_start": NaN}"#, "beta_start"),
                            (#"{"beta_end": Infinity}"#, "beta_end"),
                            (#"{"num_train_timesteps": 10, "steps_offset": 10}"#, "steps_offset"),
                            (#"{"trained_betas": [0.1, -Infinity]}"#, "trained_betas"),
                            (#"{"solver_order": 1000000}"#, "solver_order")] {
            XCTAssertThrowsError(try SchedulerConfig.decode(Data(json.utf8), file: "s.json"), json) {
                XCTAssertTrue("\($0)".contains("s.json") && "\($0)".contains(key), "\($0)")
            }
        }
        XCTAssertNoThrow(try SchedulerConfig.decode(Data(#"{"lambda_min_clipped": -Infinity}"#.utf8)))
        // The Python literals are recognised outside strings only.
        let named = try? SchedulerConfig.decode(Data(#"{"_class_name": "a \"NaN\" Infinity", "lambda_min_clipped": -Infinity}"#.utf8))
        XCTAssertEqual(named?.className, #"a "NaN" Infinity"#)
        XCTAssertEqual(named?.lambdaMinClipped, -.infinity)
        // Found by fuzzing: Foundation's JSON5 mode (used before) trapped on invalid UTF-8 in an unquoted key.
        let crash = Data([0x7B, 0xFF, 0xFF, 0x12]) + Data(#"ain_timesteps": 4}"#.utf8)
        XCTAssertThrowsError(try SchedulerConfig.decode(crash, file: "s.json")) { XCTAssertTrue("\($0)".contains("s.json"), "\($0)") }
    }
}

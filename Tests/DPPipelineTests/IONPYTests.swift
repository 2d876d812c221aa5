// NPY: hand-built files of each format version and dtype, every error, and the golden pose files.
import DPFileKit
import DPPipeline
import DPTensor
import Foundation
import XCTest

final class IONPYTests: XCTestCase {
    /// An .npy file built by hand: `header` is the dict text (padding and newline added here).
    static func npy(major: UInt8, header: String, payload: [UInt8], pad: Bool = true,
                    magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59], minor: UInt8 = 0) -> Data {
        let prefix = major == 1 ? 10 : 12
        var text = header
        if pad {
            let total = prefix + text.utf8.count + 1
            text += String(repeating: " ", count: (64 - total % 64) % 64)
        }
        text += "\n"
        let n = text.utf8.count
        var out = magic + [major, minor]
        out += major == 1 ? [UInt8(n & 0xFF), UInt8(n >> 8)]
                          : [UInt8(n & 0xFF), UInt8((n >> 8) & 0xFF), UInt8((n >> 16) & 0xFF), UInt8(n >> 24)]
        return Data(out + Array(text.utf8) + payload)
    }

    static func f8(_ values: [Double]) -> [UInt8] {
        values.flatMap { v in (0 ..< 8).map { UInt8((v.bitPattern >> (8 * UInt64($0))) & 0xFF) } }
    }

    static func f4(_ values: [Float]) -> [UInt8] {
        values.flatMap { v in (0 ..< 4).map { UInt8((v.bitPattern >> (8 * UInt32($0))) & 0xFF) } }
    }

    func testEachVersionAndDtype() throws {
        let doubles: [Double] = [0, 1, -2.5, 0.1, 1e-40, 3.4028235677973366e38, .pi, 0.7]
        for major: UInt8 in [1, 2, 3] {
            let d = Self.npy(major: major, header: "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 4), }",
                             payload: Self.f8(doubles))
            let r = try NPY.decode(d, name: "v\(major).npy")
            XCTAssertEqual(r.shape, [2, 4])
            XCTAssertEqual(r.values, doubles.map { Float($0) })  // astype(float32) rounding

            let floats: [Float] = [1.5, -0, .greatestFiniteMagnitude, Float(bitPattern: 1), 42]
            let f = Self.npy(major: major, header: "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }",
                             payload: Self.f4(floats))
            let rf = try NPY.decode(f)
            XCTAssertEqual(rf.shape, [5])
            XCTAssertEqual(rf.values.map(\.bitPattern), floats.map(\.bitPattern))
        }
        // Scalar (shape ()), empty array, key order and spacing as numpy 1.x/2.x may write them,
        // double quotes, and no padding at all.
        let scalar = try NPY.decode(Self.npy(major: 1, header: "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
                                             payload: Self.f4([7])))
        XCTAssertEqual(scalar.shape, [])
        XCTAssertEqual(scalar.values, [7])
        let empty = try NPY.decode(Self.npy(major: 1, header: "{'descr': '<f8', 'fortran_order': False, 'shape': (0, 3), }",
                                            payload: []))
        XCTAssertEqual(empty.shape, [0, 3])
        XCTAssertEqual(empty.values, [])
        let odd = try NPY.decode(Self.npy(major: 1, header: "{\"shape\":(1,2),\"fortran_order\":False,\"descr\":\"<f4\"}",
                                          payload: Self.f4([1, 2]), pad: false))
        XCTAssertEqual(odd.shape, [1, 2])
        XCTAssertEqual(odd.values, [1, 2])
    }

    func testWriteThenRead() throws {
        let dir = try IOGolden.temporaryDirectory(self)
        for shape in [[], [3], [2, 3, 4], [1, 1, 1, 5]] {
            let values = (0 ..< shape.reduce(1, *)).map { Float($0) * 0.37 - 1 }
            let url = dir.appendingPathComponent("a\(shape.count).npy")
            try NPY.write(shape: shape, values: values, to: url)
            let bytes = try Data(contentsOf: url)
            XCTAssertEqual(Array(bytes.prefix(8)), [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])
            let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            XCTAssertEqual((10 + headerLength) % 64, 0, "header is padded to 64 bytes")
            XCTAssertEqual(bytes[10 + headerLength - 1], 0x0A)
            let r = try NPY.read(url)
            XCTAssertEqual(r.shape, shape)
            XCTAssertEqual(r.values, values)
        }
    }

    func testErrorsNameTheFileAndTheExpectation() throws {
        let good = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }"
        let cases: [(String, Data, String)] = [
            ("bad magic", Self.npy(major: 1, header: good, payload: Self.f8([1, 2]),
                                   magic: Array("XNUMPY".utf8)), "magic"),
            ("too short", Data([0x93, 0x4E]), "magic"),
            ("version 4", Self.npy(major: 4, header: good, payload: Self.f8([1, 2])), "version"),
            ("version 1.1", Self.npy(major: 1, header: good, payload: Self.f8([1, 2]), minor: 1), "version"),
            ("fortran", Self.npy(major: 1, header: "{'descr': '<f8', 'fortran_order': True, 'shape': (2,), }",
                                 payload: Self.f8([1, 2])), "fortran_order"),
            ("big endian", Self.npy(major: 1, header: "{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }",
                                    payload: Self.f8([1, 2])), "big-endian"),
            ("no byte order", Self.npy(major: 1, header: "{'descr': '|f4', 'fortran_order': False, 'shape': (2,), }",
                                       payload: Self.f4([1, 2])), "byte order"),
            ("int64", Self.npy(major: 1, header: "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }",
                               payload: Self.f8([1, 2])), "'<f8' or float32 '<f4'"),
            ("float16", Self.npy(major: 1, header: "{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }",
                                 payload: [0, 0, 0, 0]), "not supported"),
            ("structured", Self.npy(major: 1, header: "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }",
                                    payload: Self.f4([1, 2])), "structured"),
            ("truncated data", Self.npy(major: 1, header: good, payload: Array(Self.f8([1, 2]).dropLast(3))),
             "truncated data"),
            ("trailing data", Self.npy(major: 1, header: good, payload: Self.f8([1, 2, 3])), "unexpected bytes"),
            ("truncated header", Data(Self.npy(major: 2, header: good, payload: []).prefix(30)), "truncated"),
            ("missing key", Self.npy(major: 1, header: "{'descr': '<f8', 'shape': (2,), }", payload: Self.f8([1, 2])),
             "keys"),
            ("garbage header", Self.npy(major: 1, header: "{'descr': <f8}", payload: []), "bad header"),
        ]
        let dir = try IOGolden.temporaryDirectory(self)
        for (label, data, expected) in cases {
            let url = dir.appendingPathComponent("\(label.replacingOccurrences(of: " ", with: "_")).npy")
            try data.write(to: url)
            XCTAssertThrowsError(try NPY.read(url), label) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains(url.path), "\(label): \(text)")
                XCTAssertTrue(text.contains(expected), "\(label): '\(expected)' not in: \(text)")
            }
        }
        XCTAssertThrowsError(try NPY.read(dir.appendingPathComponent("absent.npy"))) { error in
            XCTAssertTrue("\(error)".contains("absent.npy"), "\(error)")
        }
    }

    /// The golden pose files read back with the manifest's shape, background exactly 0, UV in [0, 1];
    /// and the whole pose path (read -> bilinear to the frame -> *2-1 -> window of 5 -> nearest to the
    /// latent) reproduces every frame's `pose_window` tensor.
    func testGoldenPosesAndPoseWindows() throws {
        let cases = try IOGolden.pipelineCases()
        XCTAssertFalse(cases.isEmpty, "no pipeline golden case under \(IOGolden.root.path)")
        for (dir, m) in cases {
            let inputs = try XCTUnwrap(m["inputs"] as? [String: Any])
            let poseShape = try XCTUnwrap(inputs["pose_shape"] as? [Int])
            let posePaths = try XCTUnwrap(inputs["poses"] as? [String])
            let pipeline = try XCTUnwrap(m["pipeline"] as? [String: Any])
            let (height, width) = (try XCTUnwrap(pipeline["height"] as? Int), try XCTUnwrap(pipeline["width"] as? Int))
            let latent = try XCTUnwrap(pipeline["latent"] as? [Int])

            var poses: [String: Tensor] = [:]
            for path in posePaths {
                let r = try NPY.read(dir.appendingPathComponent(path))
                XCTAssertEqual(r.shape, poseShape, path)
                XCTAssertTrue(r.values.allSatisfy { $0 >= 0 && $0 <= 1 }, path)
                XCTAssertTrue(r.values.contains(0) && r.values.contains { $0 > 0 }, path)
                let scaled = TorchResample.bilinear(Tensor(shape: [1] + r.shape, data: r.values),
                                                    height: height, width: width)  // [1, 2, H, W]
                poses[path] = Tensor(shape: scaled.shape, data: scaled.data.map { $0 * 2 - 1 })
            }
            let frames = try XCTUnwrap(m["frames"] as? [[String: Any]])
            XCTAssertFalse(frames.isEmpty)
            for frame in frames {
                let n = try XCTUnwrap(frame["n"] as? Int)
                let window = try XCTUnwrap(frame["window_frames"] as? [Int])
                let tensors = try XCTUnwrap(frame["tensors"] as? [String: String])
                let expected = try IOGolden.tensor(try XCTUnwrap(tensors["pose_window"]), caseDir: dir, manifest: m)
                // Pose files are named like the frame's own ("frame_<n>_densepose.npy").
                let ownPath = try XCTUnwrap(frame["pose_file"] as? String)
                var channels: [Float] = []
                for k in window {
                    let path = ownPath.replacingOccurrences(of: "frame_\(n)_", with: "frame_\(k)_")
                    channels += try XCTUnwrap(poses[path], "pose \(path) for frame \(n)").data
                }
                let full = Tensor(shape: [1, 2 * window.count, height, width], data: channels)
                let got = TorchResample.nearest(full, height: latent[0], width: latent[1])  // [1, 10, h, w]
                XCTAssertEqual(got.shape, expected.shape)
                let diff = got.maxAbsDifference(Tensor(shape: expected.shape, data: expected.values))
                // float64 reference vs float32 here: float32 rounding of values in [-1, 1].
                XCTAssertLessThanOrEqual(diff, 1e-6, "frame \(n) pose window")
            }
        }
    }
}

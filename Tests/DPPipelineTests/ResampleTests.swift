// PillowResize, TorchResample and CLIPPreprocess against the golden vectors (../shared/golden/*/resample
// from Pillow 13 / torch 2.13, and the pipeline case's expected/ tensors from CLIPImageProcessorPil).
import DPPipeline
import DPTensor
import Foundation
import XCTest

final class ResamplePillowTests: XCTestCase {
    /// Every `pil_bicubic.*.in.png` under any golden */resample/ folder, resized to its `.out.png`'s size.
    func testEveryPillowBicubicVectorIsBitExact() throws {
        var checked = 0
        for caseDir in try IOGolden.caseDirectories() {
            let folder = caseDir.appendingPathComponent("resample")
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path) else { continue }
            for name in names.sorted() where name.hasPrefix("pil_bicubic.") && name.hasSuffix(".in.png") {
                let input = try PNGCodec.read(folder.appendingPathComponent(name))
                let outName = String(name.dropLast(".in.png".count)) + ".out.png"
                let expected = try PNGCodec.read(folder.appendingPathComponent(outName))
                let got = PillowResize.bicubic(input, width: expected.width, height: expected.height)
                XCTAssertEqual([got.width, got.height], [expected.width, expected.height], name)
                let diffs = zip(got.pixels, expected.pixels).map { abs(Int($0) - Int($1)) }
                XCTAssertEqual(diffs.max() ?? 0, 0,
                               "\(caseDir.lastPathComponent)/\(name) \(input.width)x\(input.height) -> "
                               + "\(expected.width)x\(expected.height): \(diffs.filter { $0 > 0 }.count) values differ")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 0, "no pil_bicubic vectors under \(IOGolden.root.path)")
    }

    /// The pipeline's subject resize: inputs/subject.png -> model width x height == expected/subject_resized.
    func testSubjectResizeMatchesExpected() throws {
        let cases = try IOGolden.pipelineCases()
        XCTAssertFalse(cases.isEmpty, "no pipeline golden case under \(IOGolden.root.path)")
        for (dir, m) in cases {
            let pipeline = try XCTUnwrap(m["pipeline"] as? [String: Any])
            let (height, width) = (try XCTUnwrap(pipeline["height"] as? Int), try XCTUnwrap(pipeline["width"] as? Int))
            let inputs = try XCTUnwrap(m["inputs"] as? [String: Any])
            let subject = try PNGCodec.read(dir.appendingPathComponent(try XCTUnwrap(inputs["subject"] as? String)))
            let expectedNames = try XCTUnwrap(m["expected"] as? [String: String])
            let expected = try IOGolden.tensor(try XCTUnwrap(expectedNames["subject_resized"]), caseDir: dir, manifest: m)
            XCTAssertEqual(expected.shape, [height, width, 3])
            let got = PillowResize.bicubic(subject, width: width, height: height)
            XCTAssertEqual([got.height, got.width, 3], expected.shape)
            let differing = zip(got.pixels, expected.values).filter { Float($0.0) != $0.1 }.count
            XCTAssertEqual(differing, 0, "\(dir.lastPathComponent) subject_resized: values differ")
        }
    }

    func testSameSizeIsIdentityAndOneAxisPassesOnly() {
        var img = RGBImage(width: 9, height: 4)
        for i in 0 ..< img.pixels.count { img.pixels[i] = UInt8((i * 53) % 256) }
        XCTAssertEqual(PillowResize.bicubic(img, width: 9, height: 4), img)
        // Only the vertical pass runs: every column is resized independently of its neighbours.
        let tall = PillowResize.bicubic(img, width: 9, height: 11)
        var column = RGBImage(width: 1, height: 4)
        for y in 0 ..< 4 { for c in 0 ..< 3 { column[y, 0, c] = img[y, 5, c] } }
        let tallColumn = PillowResize.bicubic(column, width: 1, height: 11)
        for y in 0 ..< 11 { for c in 0 ..< 3 { XCTAssertEqual(tall[y, 5, c], tallColumn[y, 0, c]) } }
        // A constant image stays constant under any resize (weights sum to one in fixed point).
        let flat = RGBImage(width: 13, height: 7, pixels: [UInt8](repeating: 200, count: 13 * 7 * 3))
        XCTAssertTrue(PillowResize.bicubic(flat, width: 5, height: 17).pixels.allSatisfy { $0 == 200 })
    }
}

final class ResampleTorchTests: XCTestCase {
    /// Every `torch_bilinear` / `torch_nearest` entry of every golden manifest's `resample` list.
    func testEveryTorchVector() throws {
        var checked = 0
        for caseDir in try IOGolden.caseDirectories() {
            let m = try IOGolden.manifest(caseDir)
            guard let vectors = m["resample"] as? [[String: Any]] else { continue }
            for v in vectors {
                guard let op = v["op"] as? String, op == "torch_bilinear" || op == "torch_nearest" else { continue }
                let name = v["name"] as? String ?? "?"
                let input = try IOGolden.tensor(try XCTUnwrap(v["input"] as? String), caseDir: caseDir, manifest: m)
                let expected = try IOGolden.tensor(try XCTUnwrap(v["output"] as? String), caseDir: caseDir, manifest: m)
                let outHW = try XCTUnwrap(v["out_hw"] as? [Int])
                // Stored as (C, h, w); interpolated as x.unsqueeze(0).
                let x = Tensor(shape: [1] + input.shape, data: input.values)
                XCTAssertEqual(Array(input.shape.suffix(2)), try XCTUnwrap(v["in_hw"] as? [Int]), name)
                let got = op == "torch_nearest"
                    ? TorchResample.nearest(x, height: outHW[0], width: outHW[1])
                    : TorchResample.bilinear(x, height: outHW[0], width: outHW[1])
                XCTAssertEqual(got.shape, [1] + expected.shape, name)
                let diff = got.maxAbsDifference(Tensor(shape: [1] + expected.shape, data: expected.values))
                if op == "torch_nearest" {
                    XCTAssertEqual(diff, 0, "\(name): nearest must pick exactly the same source pixels")
                } else {
                    // Expected values are torch's float64 run; torch's own float32 run is off by
                    // `torch_fp32_max_abs_diff`. Allow that plus one float32 ulp at 1.0.
                    let floor = (expected.entry["torch_fp32_max_abs_diff"] as? Double).map(Float.init) ?? 0
                    XCTAssertLessThanOrEqual(diff, floor + Float.ulpOfOne, "\(name) (torch fp32: \(floor))")
                }
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 0, "no torch resample vectors in any manifest under \(IOGolden.root.path)")
    }

    func testNearestFloat32IndexQuirk() {
        // golden/README.md §7.4: 26 -> 22 takes src 12 at dst 11 (float32 scale), exact maths gives 13.
        let x = Tensor(shape: [1, 1, 26, 1], data: (0 ..< 26).map(Float.init))
        let y = TorchResample.nearest(x, height: 22, width: 1)
        XCTAssertEqual(y.data[11], 12)
        // out == 2 * in: dst >> 1.
        let z = TorchResample.nearest(Tensor(shape: [1, 1, 1, 3], data: [1, 2, 3]), height: 1, width: 6)
        XCTAssertEqual(z.data, [1, 1, 2, 2, 3, 3])
    }

    func testBilinearHandComputed() {
        // 1 x 2 -> 1 x 4: src = 0.5 * (dst + 0.5) - 0.5 = [-0.25 -> 0, 0.25, 0.75, 1.25 -> i0 1 clamped].
        let x = Tensor(shape: [1, 1, 1, 2], data: [0, 8])
        XCTAssertEqual(TorchResample.bilinear(x, height: 1, width: 4).data, [0, 2, 6, 8])
        // Identity size copies; batch and channels are independent planes.
        let y = Tensor(shape: [2, 3, 2, 2], data: (0 ..< 24).map { Float($0) * 0.5 })
        XCTAssertEqual(TorchResample.bilinear(y, height: 2, width: 2), y)
        let down = TorchResample.bilinear(y, height: 1, width: 1)  // src 0.5 on both axes: mean of 4
        XCTAssertEqual(down.shape, [2, 3, 1, 1])
        for p in 0 ..< 6 {
            let q = y.data[p * 4 ..< p * 4 + 4]
            XCTAssertEqual(down.data[p], q.reduce(0, +) / 4, accuracy: 1e-6)
        }
    }
}

final class ResampleCLIPTests: XCTestCase {
    /// expected/subject_resized -> CLIPPreprocess == expected/clip_pixel_values, bit for bit.
    func testClipPixelValuesExact() throws {
        let cases = try IOGolden.pipelineCases()
        XCTAssertFalse(cases.isEmpty, "no pipeline golden case under \(IOGolden.root.path)")
        for (dir, m) in cases {
            let names = try XCTUnwrap(m["expected"] as? [String: String])
            let resized = try IOGolden.tensor(try XCTUnwrap(names["subject_resized"]), caseDir: dir, manifest: m)
            let expected = try IOGolden.tensor(try XCTUnwrap(names["clip_pixel_values"]), caseDir: dir, manifest: m)
            let (h, w) = (resized.shape[0], resized.shape[1])
            let img = RGBImage(width: w, height: h, pixels: resized.values.map { UInt8(exactly: $0)! })
            let size = expected.shape[3]
            let got = CLIPPreprocess.pixelValues(img, size: size, mean: CLIPPreprocess.openAIMean,
                                                 std: CLIPPreprocess.openAIStd)
            XCTAssertEqual(got.shape, expected.shape)
            let differing = zip(got.data, expected.values).filter { $0.0.bitPattern != $0.1.bitPattern }.count
            XCTAssertEqual(differing, 0, "\(dir.lastPathComponent) clip_pixel_values: max diff "
                           + "\(got.maxAbsDifference(Tensor(shape: expected.shape, data: expected.values)))")

            // The null image: constant (0 - mean) / std per channel, as the manifest lists.
            if let pipeline = m["pipeline"] as? [String: Any],
               let null = pipeline["clip_pixel_values_null_per_channel"] as? [Double] {
                let zero = CLIPPreprocess.pixelValues(RGBImage(width: h, height: w), size: size,
                                                      mean: CLIPPreprocess.openAIMean, std: CLIPPreprocess.openAIStd)
                for c in 0 ..< 3 {
                    let plane = zero.data[c * size * size ..< (c + 1) * size * size]
                    XCTAssertTrue(plane.allSatisfy { $0 == Float(null[c]) }, "null channel \(c)")
                }
            }
        }
    }

    func testShortestEdgeSize() {
        XCTAssertTrue(CLIPPreprocess.resizedSize(width: 64, height: 128, size: 224) == (224, 448))
        XCTAssertTrue(CLIPPreprocess.resizedSize(width: 512, height: 640, size: 224) == (224, 280))
        XCTAssertTrue(CLIPPreprocess.resizedSize(width: 300, height: 200, size: 224) == (336, 224))
        XCTAssertTrue(CLIPPreprocess.resizedSize(width: 97, height: 61, size: 224) == (356, 224))  // 356.19.. truncated
        XCTAssertTrue(CLIPPreprocess.resizedSize(width: 50, height: 50, size: 224) == (224, 224))
    }
}

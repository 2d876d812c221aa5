// PNGCodec and DurableFile (DPFileKit): round trips, every colour type Pillow's convert("RGB") would accept, errors.
import DPPipeline
import DPFileKit
import Foundation
import XCTest

final class IOPNGTests: XCTestCase {
    func testRoundTripThroughMemoryAndFile() throws {
        var img = RGBImage(width: 7, height: 5)
        for i in 0 ..< img.pixels.count { img.pixels[i] = UInt8((i * 37 + 11) % 256) }
        let data = try PNGCodec.encode(img)
        XCTAssertEqual(Array(data.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        XCTAssertEqual(try PNGCodec.decode(data), img)

        let dir = try IOGolden.temporaryDirectory(self)
        let url = dir.appendingPathComponent("frame.png")
        try PNGCodec.write(img, to: url)
        XCTAssertEqual(try PNGCodec.read(url), img)
        // Overwrite with another image; no temporary files are left behind.
        img.pixels[0] ^= 0xFF
        try PNGCodec.write(img, to: url)
        XCTAssertEqual(try PNGCodec.read(url), img)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["frame.png"])
    }

    func testIncompressibleAndTinyImagesRoundTrip() throws {
        // Noise does not compress: the PNG is larger than the raw pixels, the worst case for the
        // encoder's one-pass buffer.
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for (w, h) in [(1, 1), (3, 2), (301, 203), (640, 512)] {
            var img = RGBImage(width: w, height: h)
            for i in 0 ..< img.pixels.count {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                img.pixels[i] = UInt8(truncatingIfNeeded: state >> 24)
            }
            let data = try PNGCodec.encode(img)
            XCTAssertEqual(try PNGCodec.decode(data), img, "\(w)x\(h)")
            if w * h > 1000 { XCTAssertGreaterThan(data.count, w * h * 3, "\(w)x\(h) noise should not compress") }
        }
    }

    func testStoredPNGsDecodeWithLibpng() throws {
        // Uncompressed PNGs (encodeStored): one stored block, exactly 65,535 raw bytes (the block limit),
        // and several blocks; libpng checks every CRC and the Adler-32 while decoding.
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        for (w, h) in [(1, 1), (8, 8), (28, 771), (21845, 3), (150, 200)] {
            var img = RGBImage(width: w, height: h)
            for i in 0 ..< img.pixels.count {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                img.pixels[i] = UInt8(truncatingIfNeeded: state >> 24)
            }
            let data = PNGCodec.encodeStored(img)
            XCTAssertEqual(try PNGCodec.decode(data), img, "\(w)x\(h)")
            let raw = h * (w * 3 + 1)
            XCTAssertEqual(data.count, 8 + 25 + 12 + 2 + raw + 5 * max(1, (raw + 65534) / 65535) + 4 + 12, "\(w)x\(h)")
        }
        // A flipped byte inside the image data is caught (chunk CRC).
        var bad = PNGCodec.encodeStored(RGBImage(width: 4, height: 4, pixels: [UInt8](repeating: 7, count: 48)))
        bad[60] ^= 0x01
        XCTAssertThrowsError(try PNGCodec.decode(bad))
    }

    func testGoldenPNGsDecodeToTheirSizes() throws {
        // The pipeline subject is RGB8; its size is in the manifest (PIL order: width, height).
        let cases = try IOGolden.pipelineCases()
        XCTAssertFalse(cases.isEmpty, "no pipeline golden case under \(IOGolden.root.path)")
        for (dir, m) in cases {
            let inputs = try XCTUnwrap(m["inputs"] as? [String: Any])
            let wh = try XCTUnwrap(inputs["subject_wh"] as? [Int])
            let subject = try PNGCodec.read(dir.appendingPathComponent(try XCTUnwrap(inputs["subject"] as? String)))
            XCTAssertEqual([subject.width, subject.height], wh)
            // Re-encoding and decoding is lossless.
            XCTAssertEqual(try PNGCodec.decode(try PNGCodec.encode(subject)), subject)
        }
    }

    func testColourTypesConvertToRGBLikePillow() throws {
        // Grey 8-bit: replicated into R, G, B.
        let grey = TinyPNG.make(width: 3, height: 1, bitDepth: 8, colorType: 0, rows: [[0, 128, 255]])
        XCTAssertEqual(try PNGCodec.decode(grey).pixels, [0, 0, 0, 128, 128, 128, 255, 255, 255])

        // RGBA 8-bit: alpha dropped, colour not composited (Pillow's convert("RGB")).
        let rgba = TinyPNG.make(width: 2, height: 1, bitDepth: 8, colorType: 6,
                                rows: [[10, 20, 30, 0, 200, 100, 50, 128]])
        XCTAssertEqual(try PNGCodec.decode(rgba).pixels, [10, 20, 30, 200, 100, 50])

        // Grey + alpha 8-bit.
        let ga = TinyPNG.make(width: 2, height: 1, bitDepth: 8, colorType: 4, rows: [[77, 255, 99, 3]])
        XCTAssertEqual(try PNGCodec.decode(ga).pixels, [77, 77, 77, 99, 99, 99])

        // Palette (colour type 3) with 2-bit indices.
        let plte = TinyPNG.chunk("PLTE", [255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 8, 7])
        let pal = TinyPNG.make(width: 4, height: 1, bitDepth: 2, colorType: 3,
                               rows: [[0b00_01_10_11]], extraChunks: [plte])
        XCTAssertEqual(try PNGCodec.decode(pal).pixels, [255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 8, 7])

        // 16-bit RGB: the high byte (Pillow's "RGB;16B"), no transfer curve.
        let rgb16 = TinyPNG.make(width: 2, height: 1, bitDepth: 16, colorType: 2,
                                 rows: [[0x12, 0x34, 0x80, 0xFF, 0xFF, 0x00, 0x00, 0x01, 0x7F, 0x80, 0xAB, 0xCD]])
        XCTAssertEqual(try PNGCodec.decode(rgb16).pixels, [0x12, 0x80, 0xFF, 0x00, 0x7F, 0xAB])

        // Multiple rows, 2x2 RGB.
        let rgb = TinyPNG.make(width: 2, height: 2, bitDepth: 8, colorType: 2,
                               rows: [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])
        let img = try PNGCodec.decode(rgb)
        XCTAssertEqual([img.width, img.height], [2, 2])
        XCTAssertEqual(img[1, 0, 2], 9)
        XCTAssertEqual(img.pixels, Array(1 ... 12))
    }

    func testErrorsNameTheFile() throws {
        let dir = try IOGolden.temporaryDirectory(self)
        let bad = dir.appendingPathComponent("not-a-png.png")
        try Data("hello, world".utf8).write(to: bad)
        XCTAssertThrowsError(try PNGCodec.read(bad)) { error in
            XCTAssertTrue("\(error)".contains(bad.path), "\(error)")
        }
        let missing = dir.appendingPathComponent("missing.png")
        XCTAssertThrowsError(try PNGCodec.read(missing)) { error in
            XCTAssertTrue("\(error)".contains(missing.path), "\(error)")
        }
        // A PNG cut short inside its image data.
        let good = try PNGCodec.encode(RGBImage(width: 16, height: 16, pixels: (0 ..< 768).map { UInt8($0 % 251) }))
        let cut = dir.appendingPathComponent("cut.png")
        try good.prefix(good.count - 30).write(to: cut)
        XCTAssertThrowsError(try PNGCodec.read(cut)) { error in
            XCTAssertTrue("\(error)".contains(cut.path), "\(error)")
        }
    }

    func testDurableFileWritesReplacesAndFailsCleanly() throws {
        let dir = try IOGolden.temporaryDirectory(self)
        let url = dir.appendingPathComponent("out.bin")
        try DurableFile.write(Data([1, 2, 3]), to: url)
        XCTAssertEqual(try Data(contentsOf: url), Data([1, 2, 3]))
        try DurableFile.write(Data(repeating: 7, count: 100_000), to: url)
        XCTAssertEqual(try Data(contentsOf: url), Data(repeating: 7, count: 100_000))
        try DurableFile.write(Data(), to: url)
        XCTAssertEqual(try Data(contentsOf: url).count, 0)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["out.bin"])

        // A folder that does not exist: error naming the target, nothing created.
        let nowhere = dir.appendingPathComponent("no/such/folder/out.bin")
        XCTAssertThrowsError(try DurableFile.write(Data([1]), to: nowhere)) { error in
            XCTAssertTrue("\(error)".contains(nowhere.path), "\(error)")
        }
        // The target is a directory: rename fails, the temp file is removed, the directory survives.
        let sub = dir.appendingPathComponent("sub")
        try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: false)
        try Data([9]).write(to: sub.appendingPathComponent("keep"))
        XCTAssertThrowsError(try DurableFile.write(Data([1]), to: sub))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), ["out.bin", "sub"])
        XCTAssertEqual(try Data(contentsOf: sub.appendingPathComponent("keep")), Data([9]))
    }
}

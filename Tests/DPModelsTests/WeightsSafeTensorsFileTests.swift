// SafeTensorsFile (reader) and SafeTensorsWriter on real files in a temporary folder.

@testable import DPModels
import DPTensor
import Foundation
import XCTest

final class WeightsSafeTensorsFileTests: XCTestCase {

    // MARK: Round trip

    func testWriterReaderRoundTripF32() throws {
        let dir = try weightsTempDir(self)
        let url = dir.appendingPathComponent("model.safetensors")
        let a = Tensor(shape: [2, 3], data: [1, -2, 3.5, .greatestFiniteMagnitude, -0.0, 1e-40])
        let b = Tensor(shape: [4], data: [0.1, 0.2, 0.3, 0.4])
        let scalar = Tensor(shape: [], data: [7])
        let empty = Tensor(zeros: [0, 5])
        let odd = Tensor(shape: [3, 1, 1], data: [9, 8, 7])
        let tensors: [(String, Tensor)] = [("a.weight", a), ("b", b), ("scalar", scalar), ("empty", empty), ("odd", odd)]
        try SafeTensorsWriter.write(tensors, to: url, metadata: ["format": "pt", "note": "x\"y"])

        let f = try SafeTensorsFile(url: url)
        XCTAssertEqual(Set(f.names), Set(tensors.map(\.0)))
        XCTAssertEqual(f.metadata, ["format": "pt", "note": "x\"y"])
        for (name, t) in tensors {
            XCTAssertEqual(f.shape(of: name), t.shape, name)
            XCTAssertEqual(f.dtype(of: name), .F32)
            let back = try f.tensor(name)
            XCTAssertEqual(back.shape, t.shape, name)
            XCTAssertEqual(back.data.map(\.bitPattern), t.data.map(\.bitPattern), name)   // bit exact, incl. -0 and subnormal
        }
        XCTAssertNil(f.shape(of: "nope"))

        // Header padded so that the data section starts on an 8-byte boundary.
        let bytes = try [UInt8](Data(contentsOf: url))
        let n = bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        XCTAssertEqual((8 + Int(n)) % 8, 0)
        XCTAssertEqual(bytes.count, 8 + Int(n) + 4 * (6 + 4 + 1 + 0 + 3))

        // Atomic write: no temporary files left, and an existing file is replaced.
        try SafeTensorsWriter.write([("only", b)], to: url)
        XCTAssertEqual(try SafeTensorsFile(url: url).names, ["only"])
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        XCTAssertEqual(leftovers, ["model.safetensors"])
    }

    func testWriterRejectsDuplicateNamesAndMissingFolder() throws {
        let dir = try weightsTempDir(self)
        let t = Tensor(shape: [1], data: [1])
        let e = assertWeightsError(try SafeTensorsWriter.write([("x", t), ("x", t)], to: dir.appendingPathComponent("d.safetensors")))
        XCTAssertTrue("\(e!)".contains("'x'"), "\(e!)")
        let missing = dir.appendingPathComponent("no/such/dir/m.safetensors")
        let e2 = assertWeightsError(try SafeTensorsWriter.write([("x", t)], to: missing))
        guard case .io(let file, _)? = e2 else { return XCTFail("expected .io, got \(String(describing: e2))") }
        XCTAssertEqual(file, missing.path)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), [])
    }

    // MARK: F16 / BF16

    func testF16FileWithKnownValues() throws {
        let url = try weightsTempDir(self).appendingPathComponent("half.safetensors")
        // bit pattern -> exact value
        let cases: [(UInt16, Float)] = [
            (0x3C00, 1), (0xC000, -2), (0x3555, 0.333251953125), (0x7BFF, 65504),
            (0x0001, 0x1p-24),                        // smallest subnormal
            (0x03FF, 1023 * 0x1p-24),                  // largest subnormal
            (0x0400, 0x1p-14),                         // smallest normal
            (0x8000, -0.0), (0x7C00, .infinity), (0xFC00, -.infinity),
        ]
        var bits = cases.map(\.0)
        bits.append(0x7E00)                            // NaN
        bits.append(0xFE01)                            // negative NaN with payload
        try wtWrite(rawSafeTensors([WTRawTensor(name: "h", dtype: "F16", shape: [3, 4], bytes: wtU16Bytes(bits))]), to: url)
        let f = try SafeTensorsFile(url: url)
        XCTAssertEqual(f.dtype(of: "h"), .F16)
        let t = try f.tensor("h")
        XCTAssertEqual(t.shape, [3, 4])
        for (i, c) in cases.enumerated() {
            XCTAssertEqual(t.data[i].bitPattern, c.1.bitPattern, "F16 0x\(String(c.0, radix: 16)) -> \(t.data[i]), want \(c.1)")
        }
        XCTAssertTrue(t.data[10].isNaN)
        XCTAssertTrue(t.data[11].isNaN)
        XCTAssertEqual(t.data[11].sign, .minus)
        XCTAssertEqual(t.data[11].bitPattern, 0xFFC0_2000)   // payload kept
    }

    func testF16ConversionMatchesSwiftFloat16ForAllBitPatterns() throws {
        #if arch(x86_64) || arch(arm64)
        for b in 0...0xFFFF {
            let h = UInt16(b)
            let ours = HalfPrecision.float(fromF16: h)
            let table = HalfPrecision.f16Table[b]
            XCTAssertEqual(ours.bitPattern, table.bitPattern)
            let reference = Float(Float16(bitPattern: h))
            if reference.isNaN {
                XCTAssertTrue(ours.isNaN, "0x\(String(h, radix: 16))")
            } else if ours.bitPattern != reference.bitPattern {
                XCTFail("F16 0x\(String(h, radix: 16)): ours \(ours), Float16 says \(reference)")
                return
            }
        }
        #else
        throw XCTSkip("Float16 reference not available on this architecture")
        #endif
    }

    func testBF16FileWithKnownValues() throws {
        let url = try weightsTempDir(self).appendingPathComponent("bf.safetensors")
        let cases: [(UInt16, Float)] = [
            (0x3F80, 1), (0xC040, -3), (0x3EAB, 0.333984375), (0x7F7F, Float(bitPattern: 0x7F7F_0000)),
            (0x0001, Float(bitPattern: 0x0001_0000)),  // subnormal
            (0x8000, -0.0), (0x7F80, .infinity), (0xFF80, -.infinity),
        ]
        var bits = cases.map(\.0)
        bits.append(0x7FC0)   // NaN
        try wtWrite(rawSafeTensors([
            WTRawTensor(name: "pad", dtype: "F32", shape: [1], bytes: wtF32Bytes([5])),
            WTRawTensor(name: "b", dtype: "BF16", shape: [9], bytes: wtU16Bytes(bits)),
        ]), to: url)
        let f = try SafeTensorsFile(url: url)
        XCTAssertEqual(f.names, ["pad", "b"])          // data order
        let t = try f.tensor("b")
        for (i, c) in cases.enumerated() {
            XCTAssertEqual(t.data[i].bitPattern, c.1.bitPattern, "BF16 0x\(String(c.0, radix: 16))")
        }
        XCTAssertTrue(t.data[8].isNaN)
        XCTAssertEqual(try f.tensor("pad").data, [5])
    }

    func testUnalignedF32DataIsReadCorrectly() throws {
        // A 1-byte tensor first puts the F32 tensor at an odd address.
        let url = try weightsTempDir(self).appendingPathComponent("u.safetensors")
        try wtWrite(rawSafeTensors([
            WTRawTensor(name: "byte", dtype: "U8", shape: [1], bytes: [7]),
            WTRawTensor(name: "w", dtype: "F32", shape: [3], bytes: wtF32Bytes([1.5, -2.25, 3])),
        ]), to: url)
        let f = try SafeTensorsFile(url: url)
        XCTAssertEqual(try f.tensor("w").data, [1.5, -2.25, 3])
        let e = assertWeightsError(try f.tensor("byte"))
        XCTAssertTrue("\(e!)".contains("'byte'") && "\(e!)".contains("U8") && "\(e!)".contains(url.path), "\(e!)")
    }

    // MARK: Malformed files: each error names the file and what is wrong

    private func expectMalformed(_ bytes: [UInt8], _ fragments: [String],
                                 file: StaticString = #filePath, line: UInt = #line) throws {
        let url = try weightsTempDir(self).appendingPathComponent("bad.safetensors")
        try wtWrite(bytes, to: url)
        let e = assertWeightsError(try SafeTensorsFile(url: url), file: file, line: line)
        guard let e else { return }
        guard case .malformed(let f, _) = e else {
            return XCTFail("expected .malformed, got \(e)", file: file, line: line)
        }
        XCTAssertEqual(f, url.path, file: file, line: line)
        let text = "\(e)"
        XCTAssertTrue(text.contains(url.path), text, file: file, line: line)
        for frag in fragments {
            XCTAssertTrue(text.contains(frag), "'\(frag)' not in: \(text)", file: file, line: line)
        }
    }

    func testTruncatedFile() throws {
        let good = rawSafeTensors([WTRawTensor(name: "w", dtype: "F32", shape: [2, 2], bytes: wtF32Bytes([1, 2, 3, 4]))])
        try expectMalformed(Array(good.dropLast(3)), ["'w'", "truncated"])
        try expectMalformed(Array(good.prefix(5)), ["too short"])
        try expectMalformed([], ["too short"])
    }

    func testHeaderLengthPastEndOfFile() throws {
        let bytes = rawSafeTensors([WTRawTensor(name: "w", dtype: "F32", shape: [1], bytes: wtF32Bytes([1]))],
                                   headerLengthOverride: 1 << 40)
        try expectMalformed(bytes, ["header length 1099511627776", "past the end"])
    }

    func testOverlappingTensors() throws {
        let bytes = rawSafeTensors([
            WTRawTensor(name: "a", dtype: "F32", shape: [2], bytes: wtF32Bytes([1, 2]), offsets: [0, 8]),
            WTRawTensor(name: "b", dtype: "F32", shape: [2], bytes: wtF32Bytes([3, 4]), offsets: [4, 12]),
        ])
        try expectMalformed(bytes, ["'a'", "'b'", "overlap"])
    }

    func testBadDtype() throws {
        try expectMalformed(rawSafeTensors([WTRawTensor(name: "w.weight", dtype: "F99", shape: [1], bytes: [0, 0, 0, 0])]),
                            ["'w.weight'", "F99"])
    }

    func testSizeDisagreesWithShape() throws {
        try expectMalformed(rawSafeTensors([WTRawTensor(name: "w", dtype: "F16", shape: [3], bytes: wtF32Bytes([1, 2]))]),
                            ["'w'", "F16", "[3]", "hold 8"])
    }

    func testBadShapesAndOffsets() throws {
        try expectMalformed(rawSafeTensors(header: #"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
                                           data: wtF32Bytes([1])), ["'w'", "[-1]"])
        try expectMalformed(rawSafeTensors(header: #"{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#,
                                           data: wtF32Bytes([1])), ["'w'", "shape"])
        try expectMalformed(rawSafeTensors(header: #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
                                           data: wtF32Bytes([1])), ["'w'", "begin <= end"])
        try expectMalformed(rawSafeTensors(header: #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#,
                                           data: wtF32Bytes([1])), ["'w'", "data_offsets"])
        try expectMalformed(rawSafeTensors(header: #"{"w":{"shape":[1],"data_offsets":[0,4]}}"#,
                                           data: wtF32Bytes([1])), ["'w'", "dtype"])
        try expectMalformed(rawSafeTensors(header: #"{"w":[1,2]}"#, data: []), ["'w'", "not an object"])
    }

    func testBadJSONAndMetadata() throws {
        try expectMalformed(rawSafeTensors(header: #"{"w": {"dtype": "F32""#, data: []), ["not valid JSON"])
        try expectMalformed(rawSafeTensors(header: #"[1, 2, 3]"#, data: []), ["not a JSON object"])
        try expectMalformed(rawSafeTensors(header: #"{"__metadata__": {"a": 1}}"#, data: []), ["__metadata__"])
    }

    func testMissingFileIsAnIOErrorNamingTheFile() throws {
        let url = try weightsTempDir(self).appendingPathComponent("absent.safetensors")
        let e = assertWeightsError(try SafeTensorsFile(url: url))
        guard case .io(let f, _)? = e else { return XCTFail("expected .io, got \(String(describing: e))") }
        XCTAssertEqual(f, url.path)
    }

    func testEmptyHeaderObjectIsAValidEmptyFile() throws {
        let url = try weightsTempDir(self).appendingPathComponent("empty.safetensors")
        try wtWrite(rawSafeTensors(header: "{}      ", data: []), to: url)
        let f = try SafeTensorsFile(url: url)
        XCTAssertEqual(f.names, [])
    }
}

// Helpers for the weights tests: temporary folders and hand-built safetensors files.

import DPGolden
import DPModels
import DPTensor
import Foundation
import XCTest

/// A fresh temporary folder, removed at the end of the test.
func weightsTempDir(_ test: XCTestCase) throws -> URL {
    let dir = FileManager.default.temporaryDirectory
        .appendingPathComponent("dp-weights-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
    return dir
}

/// One tensor entry of a hand-built file: the header fields are written as given (so they can be
/// wrong on purpose) and `bytes` are appended to the data section in order.
struct WTRawTensor {
    var name: String
    var dtype: String
    var shape: [Int]
    var bytes: [UInt8]
    /// Override of the data offsets (default: consecutive).
    var offsets: [Int]? = nil
}

/// Builds a safetensors file byte by byte (no use of SafeTensorsWriter), so reader tests do not
/// depend on the writer.
func rawSafeTensors(_ specs: [WTRawTensor], metadata: [String: String]? = nil,
                    headerLengthOverride: UInt64? = nil) -> [UInt8] {
    var parts: [String] = []
    var offset = 0
    var data: [UInt8] = []
    for s in specs {
        let offs = s.offsets ?? [offset, offset + s.bytes.count]
        offset += s.bytes.count
        data += s.bytes
        let shape = s.shape.map(String.init).joined(separator: ",")
        parts.append("\"\(s.name)\":{\"dtype\":\"\(s.dtype)\",\"shape\":[\(shape)],\"data_offsets\":[\(offs[0]),\(offs[1])]}")
    }
    if let metadata {
        let m = metadata.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\"\($0.value)\"" }.joined(separator: ",")
        parts.append("\"__metadata__\":{\(m)}")
    }
    return rawSafeTensors(header: "{" + parts.joined(separator: ",") + "}", data: data,
                          headerLengthOverride: headerLengthOverride)
}

/// A file from a literal header string and data bytes.
func rawSafeTensors(header: String, data: [UInt8], headerLengthOverride: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    let n = headerLengthOverride ?? UInt64(h.count)
    var out: [UInt8] = withUnsafeBytes(of: n.littleEndian) { Array($0) }
    out += h
    out += data
    return out
}

func wtWrite(_ bytes: [UInt8], to url: URL) throws {
    try Data(bytes).write(to: url)
}

func wtF32Bytes(_ values: [Float]) -> [UInt8] {
    values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
}

func wtU16Bytes(_ values: [UInt16]) -> [UInt8] {
    values.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } }
}

/// Asserts that `body` throws a `WeightsError` and returns it.
@discardableResult
func assertWeightsError(_ body: @autoclosure () throws -> Any, file: StaticString = #filePath,
                        line: UInt = #line) -> WeightsError? {
    do {
        _ = try body()
        XCTFail("expected a WeightsError, nothing was thrown", file: file, line: line)
        return nil
    } catch let e as WeightsError {
        return e
    } catch {
        XCTFail("expected a WeightsError, got \(type(of: error)): \(error)", file: file, line: line)
        return nil
    }
}

/// The golden folder (shared/golden/README.md); `DP_GOLDEN_DIR` overrides it.
func wtGoldenRoot() throws -> URL {
    let root = GoldenCase.goldenRoot
    guard FileManager.default.fileExists(atPath: root.path) else {
        throw GoldenError.io(file: root.path, reason: "golden directory not found (set DP_GOLDEN_DIR)")
    }
    return root
}

/// Every file under `root` whose name ends with `suffix`, sorted.
func wtFilesUnder(_ root: URL, endingWith suffix: String) -> [URL] {
    guard let e = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil) else { return [] }
    var out: [URL] = []
    for case let url as URL in e where url.lastPathComponent.hasSuffix(suffix) { out.append(url) }
    return out.sorted { $0.path < $1.path }
}

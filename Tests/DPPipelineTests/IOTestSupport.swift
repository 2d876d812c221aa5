// Helpers shared by the IO*/Resample* tests: locating the golden cases (../shared/golden, produced by
// diffusers/transformers/Pillow; see golden/README.md) and reading their raw float32 tensors.
import DPGolden
import Foundation
import XCTest

enum IOGolden {
    /// The golden root (DPGolden: $DP_GOLDEN_DIR, else <repo>/../shared/golden).
    static var root: URL { GoldenCase.goldenRoot }

    /// Every case folder (one holding a manifest.json) under the golden root, sorted by name.
    static func caseDirectories() throws -> [URL] {
        let names = try FileManager.default.contentsOfDirectory(atPath: root.path).sorted()
        return names.map { root.appendingPathComponent($0) }.filter {
            FileManager.default.fileExists(atPath: $0.appendingPathComponent("manifest.json").path)
        }
    }

    static func manifest(_ caseDir: URL) throws -> [String: Any] {
        let data = try Data(contentsOf: caseDir.appendingPathComponent("manifest.json"))
        guard let m = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw NSError(domain: "IOGolden", code: 1,
                          userInfo: [NSLocalizedDescriptionKey: "\(caseDir.path)/manifest.json is not an object"])
        }
        return m
    }

    /// Pipeline cases (manifest format "dreampose-pipeline-golden/1").
    static func pipelineCases() throws -> [(dir: URL, manifest: [String: Any])] {
        try caseDirectories().compactMap { dir in
            let m = try manifest(dir)
            return (m["format"] as? String) == "dreampose-pipeline-golden/1" ? (dir, m) : nil
        }
    }

    /// A manifest tensor (`tensors[name]`): its shape, values and entry.
    static func tensor(_ name: String, caseDir: URL, manifest: [String: Any]) throws
        -> (shape: [Int], values: [Float], entry: [String: Any]) {
        let tensors = manifest["tensors"] as? [String: Any] ?? [:]
        guard let entry = tensors[name] as? [String: Any], let file = entry["file"] as? String,
              let shape = entry["shape"] as? [Int] else {
            throw NSError(domain: "IOGolden", code: 2,
                          userInfo: [NSLocalizedDescriptionKey: "\(caseDir.path): no tensor '\(name)' in manifest"])
        }
        let values = try readF32(caseDir.appendingPathComponent(file), count: shape.reduce(1, *))
        return (shape, values, entry)
    }

    /// Raw little-endian float32, `count` values.
    static func readF32(_ url: URL, count: Int) throws -> [Float] {
        let data = try Data(contentsOf: url)
        guard data.count == count * 4 else {
            throw NSError(domain: "IOGolden", code: 3, userInfo: [NSLocalizedDescriptionKey:
                "\(url.path): \(data.count) bytes, expected \(count * 4)"])
        }
        return data.withUnsafeBytes { raw in
            (0 ..< count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }

    /// A fresh empty temporary folder (removed by the caller's `addTeardownBlock`).
    static func temporaryDirectory(_ test: XCTestCase) throws -> URL {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("dp-pipeio-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    /// Runs a command and returns its stdout.
    static func run(_ executable: String, _ arguments: [String], stdin: Data? = nil) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        let out = Pipe()
        p.standardOutput = out
        let input = Pipe()
        if stdin != nil { p.standardInput = input }
        try p.run()
        if let stdin {
            input.fileHandleForWriting.write(stdin)
            try input.fileHandleForWriting.close()
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw NSError(domain: "IOGolden", code: 4, userInfo: [NSLocalizedDescriptionKey:
                "\(executable) \(arguments) exited \(p.terminationStatus)"])
        }
        return String(decoding: data, as: UTF8.self)
    }
}

/// Builds small PNG files byte by byte (stored deflate blocks, no compression), so tests can make any
/// colour type / bit depth without an image library.
enum TinyPNG {
    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            crc ^= UInt32(b)
            for _ in 0 ..< 8 { crc = (crc >> 1) ^ (crc & 1 != 0 ? 0xEDB8_8320 : 0) }
        }
        return ~crc
    }

    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

    static func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
        let typed = Array(type.utf8) + body
        return be32(UInt32(body.count)) + typed + be32(crc32(typed))
    }

    /// zlib stream of stored blocks.
    static func zlibStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]
        var i = 0
        repeat {
            let n = min(65535, data.count - i)
            let final: UInt8 = i + n == data.count ? 1 : 0
            out += [final, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += data[i ..< i + n]
            i += n
        } while i < data.count
        var a: UInt32 = 1, b: UInt32 = 0
        for x in data { a = (a + UInt32(x)) % 65521; b = (b + a) % 65521 }
        return out + be32(b << 16 | a)
    }

    /// A PNG of `rows` (each row's raw sample bytes, filter byte 0 added here).
    static func make(width: Int, height: Int, bitDepth: UInt8, colorType: UInt8, rows: [[UInt8]],
                     extraChunks: [[UInt8]] = []) -> Data {
        var png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        png += chunk("IHDR", be32(UInt32(width)) + be32(UInt32(height)) + [bitDepth, colorType, 0, 0, 0])
        for c in extraChunks { png += c }
        png += chunk("IDAT", zlibStored(rows.flatMap { [0] + $0 }))
        png += chunk("IEND", [])
        return Data(png)
    }
}

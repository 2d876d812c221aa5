// The model id, ModelManifest.modelID in DPFileKit (docs/model-format.md "Identity"), checked against an independent computation with the
// system's sha256sum, and against the per-file digests listed in the golden manifests.
import DPPipeline
import DPFileKit
import Foundation
import XCTest

final class IOModelIDTests: XCTestCase {
    static let sha256sum = "/usr/bin/sha256sum"

    /// sha256sum of a byte string or a file, as lowercase hex.
    static func sha256sum(file: String? = nil, data: Data? = nil) throws -> String {
        let out = try IOGolden.run(sha256sum, file.map { [$0] } ?? ["-"], stdin: data)
        return String(out.prefix(64))
    }

    /// The id computed independently: `find`-free listing via FileManager, digests by sha256sum.
    static func independentID(_ root: URL, files: [String]) throws -> String {
        let sorted = files.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        var lines = Data()
        for f in sorted {
            lines.append(Data(f.utf8))
            lines.append(0)
            lines.append(Data(try sha256sum(file: root.appendingPathComponent(f).path).utf8))
            lines.append(0x0A)
        }
        return try sha256sum(data: lines)
    }

    func testTinyFolderMatchesSha256sum() throws {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: Self.sha256sum), "no \(Self.sha256sum)")
        let root = try IOGolden.temporaryDirectory(self)
        // Names chosen so that bytewise order differs from case-insensitive or per-component order:
        // "unet/config.json" vs "unet-extra" ('-' 0x2D < '/' 0x2F), "B" < "a", a hidden file, UTF-8.
        let files: [String: Data] = [
            "dreampose.json": Data("{\"format\": \"dreampose-model/1\"}\n".utf8),
            "unet/config.json": Data("{}".utf8),
            "unet/diffusion_pytorch_model.safetensors": Data((0 ..< 9_000_001).map { UInt8(truncatingIfNeeded: $0 &* 31) }),
            "unet-extra": Data(),
            "B.txt": Data("upper".utf8),
            "a.txt": Data("lower".utf8),
            ".hidden": Data("still counted".utf8),
            "vae/ü.bin": Data([0, 1, 2]),
        ]
        for (path, data) in files {
            let url = root.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try data.write(to: url)
        }
        let expected = try Self.independentID(root, files: Array(files.keys))
        XCTAssertEqual(try ModelManifest.modelID(directory: root), expected)
        // The large file is hashed in chunks; its digest matches sha256sum's.
        let big = root.appendingPathComponent("unet/diffusion_pytorch_model.safetensors").path
        XCTAssertEqual(try FileDigest.sha256(ofFile: big).sha256, try Self.sha256sum(file: big))

        // Any change to content or name changes the id.
        try Data("lower!".utf8).write(to: root.appendingPathComponent("a.txt"))
        let changed = try ModelManifest.modelID(directory: root)
        XCTAssertNotEqual(changed, expected)
        try FileManager.default.moveItem(at: root.appendingPathComponent("a.txt"), to: root.appendingPathComponent("c.txt"))
        XCTAssertNotEqual(try ModelManifest.modelID(directory: root), changed)
    }

    func testGoldenModelFolderMatchesManifestDigests() throws {
        let cases = try IOGolden.pipelineCases()
        XCTAssertFalse(cases.isEmpty, "no pipeline golden case under \(IOGolden.root.path)")
        for (dir, m) in cases {
            let model = try XCTUnwrap(m["model"] as? [String: Any])
            let folder = dir.appendingPathComponent(try XCTUnwrap(model["dir"] as? String))
            let listed = try XCTUnwrap(model["files"] as? [String: [String: Any]])
            // Each listed digest matches our per-file hash.
            for (path, entry) in listed {
                XCTAssertEqual(try FileDigest.sha256(ofFile: folder.appendingPathComponent(path).path).sha256,
                               entry["sha256"] as? String, path)
            }
            // The id from the manifest's own digests (lines hashed by sha256sum) equals ours.
            if FileManager.default.isExecutableFile(atPath: Self.sha256sum) {
                let sorted = listed.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
                var lines = Data()
                for p in sorted {
                    lines.append(Data(p.utf8)); lines.append(0)
                    lines.append(Data((listed[p]?["sha256"] as? String ?? "").utf8)); lines.append(0x0A)
                }
                XCTAssertEqual(try ModelManifest.modelID(directory: folder), try Self.sha256sum(data: lines))
            }
        }
    }

    func testNotAFolder() throws {
        let root = try IOGolden.temporaryDirectory(self)
        let missing = root.appendingPathComponent("nope")
        XCTAssertThrowsError(try ModelManifest.modelID(directory: missing)) { error in
            XCTAssertTrue("\(error)".contains(missing.path), "\(error)")
        }
    }
}

import DPGolden
import DPTensor
import Foundation
import XCTest

/// Reads the golden cases in ../shared/golden (produced by diffusers 0.42.1 / torch, see golden/README.md).
/// `DP_GOLDEN_DIR` overrides the location.
enum Golden {
    static var root: URL { GoldenCase.goldenRoot }

    /// The golden root; its absence is a failure (golden checks must not pass by finding nothing).
    static func requireRoot() throws -> URL {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root.path, isDirectory: &isDir), isDir.boolValue else {
            throw DPGolden.GoldenError.io(file: root.path, reason: "golden directory not found (set DP_GOLDEN_DIR)")
        }
        return root
    }

    /// Every case directory (a folder holding manifest.json) directly under the golden root.
    static func caseDirectories() throws -> [URL] {
        let root = try requireRoot()
        let names = try FileManager.default.contentsOfDirectory(atPath: root.path).sorted()
        return names.map { root.appendingPathComponent($0) }
            .filter { FileManager.default.fileExists(atPath: $0.appendingPathComponent("manifest.json").path) }
    }

    struct Manifest {
        let dir: URL
        let json: [String: Any]
        var cases: [[String: Any]] { json["cases"] as? [[String: Any]] ?? [] }
        var tensors: [String: Any] { json["tensors"] as? [String: Any] ?? [:] }

        func tensor(_ name: String) throws -> Tensor {
            guard let entry = tensors[name] as? [String: Any], let file = entry["file"] as? String,
                  let shape = entry["shape"] as? [Int] else {
                throw GoldenError("\(dir.path)/manifest.json: no tensor entry '\(name)' with file and shape")
            }
            let url = dir.appendingPathComponent(file)
            let data = try Data(contentsOf: url)
            let count = shape.reduce(1, *)
            guard data.count == 4 * count else {
                throw GoldenError("\(url.path): \(data.count) bytes, shape \(shape) needs \(4 * count)")
            }
            let values = data.withUnsafeBytes { raw in
                (0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
            }
            return Tensor(shape: shape, data: values)
        }
    }

    static func manifest(_ dir: URL) throws -> Manifest {
        let url = dir.appendingPathComponent("manifest.json")
        guard let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any] else {
            throw GoldenError("\(url.path): not a JSON object")
        }
        return Manifest(dir: dir, json: json)
    }

    /// Every scheduler_config.json under the golden root (any depth).
    static func schedulerConfigFiles() throws -> [URL] {
        let root = try requireRoot()
        guard let e = FileManager.default.enumerator(atPath: root.path) else { return [] }
        var out: [URL] = []
        while let p = e.nextObject() as? String {
            if (p as NSString).lastPathComponent == "scheduler_config.json" { out.append(root.appendingPathComponent(p)) }
        }
        return out.sorted { $0.path < $1.path }
    }
}

struct GoldenError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// max |a - b| / max |b| (0 when both are zero).
func relativeError(_ a: Tensor, _ b: Tensor) -> Float {
    let m = b.maxAbs
    let d = a.maxAbsDifference(b)
    return m == 0 ? d : d / m
}

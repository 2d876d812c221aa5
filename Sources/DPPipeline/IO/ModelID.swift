// A model folder's identity (docs/model-format.md "Identity"): workers cache loaded models by it and
// the coordinator routes frames by it.
//
// For each file under the folder, sorted bytewise by its relative path (`/` separators), the line
// `<relative path>\0<lowercase hex sha256 of the file>\n`; the id is the lowercase hex SHA-256 of all
// the lines concatenated. Nothing is skipped (hidden files included). Files are hashed in chunks, so a
// 3.4 GB UNet never sits in memory whole.
import Crypto
import Foundation

/// A model folder whose identity could not be computed; `description` names the path.
public struct ModelIDError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "model id of \(path): \(message)" }
}

public enum ModelID {
    static let chunkSize = 4 << 20

    /// The lowercase hex model id of the folder at `directory`.
    public static func compute(directory: URL) throws -> String {
        let root = directory.standardizedFileURL
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root.path, isDirectory: &isDir), isDir.boolValue else {
            throw ModelIDError(path: root.path, message: "not a directory")
        }
        var files: [String] = []
        var visited: Set<String> = []
        try collectFiles(in: root.path, relative: "", into: &files, visited: &visited)
        // Bytewise order of the UTF-8 paths (Swift's String `<` is not bytewise).
        files.sort { $0.utf8.lexicographicallyPrecedes($1.utf8) }

        var outer = SHA256()
        for relative in files {
            let digest = try fileSHA256(root.path + "/" + relative)
            outer.update(data: Data(relative.utf8))
            outer.update(data: Data([0]))
            outer.update(data: Data(digest.utf8))
            outer.update(data: Data([0x0A]))
        }
        return hex(outer.finalize())
    }

    /// Lowercase hex SHA-256 of one file, read in `chunkSize` pieces.
    public static func fileSHA256(_ path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw ModelIDError(path: path, message: "cannot open file for reading")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        while true {
            let chunk: Data?
            do {
                chunk = try handle.read(upToCount: chunkSize)
            } catch {
                throw ModelIDError(path: path, message: "read failed: \(error.localizedDescription)")
            }
            guard let chunk, !chunk.isEmpty else { break }
            hasher.update(data: chunk)
        }
        return hex(hasher.finalize())
    }

    /// Regular files under `path` (symbolic links followed; a link cycle is an error), as paths
    /// relative to the model root joined with `/`.
    private static func collectFiles(in path: String, relative: String, into files: inout [String],
                                     visited: inout Set<String>) throws {
        let real = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        guard visited.insert(real).inserted else {
            throw ModelIDError(path: path, message: "directory link cycle (\(real) visited twice)")
        }
        defer { visited.remove(real) }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: path)
        } catch {
            throw ModelIDError(path: path, message: "cannot list directory: \(error.localizedDescription)")
        }
        for name in names {
            let child = path + "/" + name
            let rel = relative.isEmpty ? name : relative + "/" + name
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: child, isDirectory: &isDir) else {
                throw ModelIDError(path: child, message: "dangling symbolic link or vanished file")
            }
            if isDir.boolValue {
                try collectFiles(in: child, relative: rel, into: &files, visited: &visited)
            } else {
                files.append(rel)
            }
        }
    }

    private static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for b in digest {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

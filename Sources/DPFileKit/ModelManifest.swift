// A model folder's manifest and identity (docs/model-format.md "Identity"), in ONE place that the
// coordinator (no model code, no weights), the worker's model cache and the pipeline can all use.
//
// The identity: for each file under the folder, sorted bytewise by its relative path (`/`
// separators), the line `<relative path>\0<lowercase hex sha256 of the file>\n`; the model id is the
// lowercase hex SHA-256 of all the lines concatenated. Nothing is skipped (hidden files included);
// symbolic links are followed. Files are hashed in chunks, so a 3.4 GB UNet never sits in memory.
import Crypto
import Foundation

/// One file of a model folder.
public struct ModelFileEntry: Codable, Equatable, Hashable, Sendable {
    /// Relative to the model folder, `/`-separated, e.g. `unet/config.json`.
    public var path: String
    public var size: UInt64
    /// Lowercase hex SHA-256 of the file's bytes.
    public var sha256: String

    public init(path: String, size: UInt64, sha256: String) {
        self.path = path
        self.size = size
        self.sha256 = sha256
    }
}

/// What a model folder holds: every file (sorted bytewise by path) and the model id derived from them.
public struct ModelManifest: Codable, Equatable, Sendable {
    public var modelID: String
    public var files: [ModelFileEntry]

    enum CodingKeys: String, CodingKey {
        case modelID = "model_id"
        case files
    }

    public init(modelID: String, files: [ModelFileEntry]) {
        self.modelID = modelID
        self.files = files
    }

    /// A manifest whose id is computed from `files` (sorted here).
    public init(files: [ModelFileEntry]) {
        let sorted = ModelManifest.sorted(files)
        self.init(modelID: ModelManifest.identity(of: sorted), files: sorted)
    }

    // Upper bounds (a manifest comes from a client or a coordinator; `validate` checks them, SECURITY.md lists
    // them). A manifest declaring 2^62-byte files used to pass and to overflow sums of sizes.
    /// Most files a model may have.
    public static let maxFiles = 4096
    /// Largest file of a model (64 GiB; SD-1.5's UNet in float32 is 3.4 GB).
    public static let maxFileBytes: UInt64 = 1 << 36
    /// Largest model (256 GiB in all).
    public static let maxTotalBytes: UInt64 = 1 << 38
    /// Longest relative path, in UTF-8 bytes.
    public static let maxPathBytes = 1024

    /// Sum of the file sizes (saturating at UInt64.max; `validate` bounds it by `maxTotalBytes`).
    public var totalBytes: UInt64 {
        var total: UInt64 = 0
        for file in files {
            let (sum, overflow) = total.addingReportingOverflow(file.size)
            if overflow { return .max }
            total = sum
        }
        return total
    }

    /// The entry for `path`, if the manifest lists it.
    public func entry(for path: String) -> ModelFileEntry? {
        files.first { $0.path == path }
    }

    /// The model id of a set of files: the formula of docs/model-format.md "Identity".
    /// `files` may come in any order; only `path` and `sha256` take part.
    public static func identity(of files: [ModelFileEntry]) -> String {
        var outer = SHA256()
        for file in sorted(files) {
            outer.update(data: Data(file.path.utf8))
            outer.update(data: Data([0]))
            outer.update(data: Data(file.sha256.utf8))
            outer.update(data: Data([0x0A]))
        }
        return FileDigest.hex(outer.finalize())
    }

    /// Checks that the manifest is self-consistent: paths unique and sorted bytewise, digests are
    /// 64 lowercase hex digits, and `modelID` is the identity of `files`.
    /// (Path safety against `..` etc. is the receiver's business: see DPProtocol's `RelativePath`.)
    public func validate() throws {
        guard files.count <= Self.maxFiles else {
            throw ModelManifestError(path: "<manifest>",
                                     message: "model \(modelID.prefix(80)) lists \(files.count) files, at most \(Self.maxFiles) allowed")
        }
        var previous: String?
        var total: UInt64 = 0
        for file in files {
            guard !file.path.isEmpty, file.path.utf8.count <= Self.maxPathBytes else {
                throw ModelManifestError(path: String(file.path.prefix(80)),
                                         message: "path is \(file.path.utf8.count) bytes, expected 1 to \(Self.maxPathBytes)")
            }
            guard file.size <= Self.maxFileBytes else {
                throw ModelManifestError(path: file.path,
                                         message: "size \(file.size) is more than the \(Self.maxFileBytes) bytes a model file may have")
            }
            total += file.size  // both terms <= 2^36 * 4096 = 2^48: no overflow
            guard total <= Self.maxTotalBytes else {
                throw ModelManifestError(path: file.path,
                                         message: "the model's files add up to more than the \(Self.maxTotalBytes) bytes a model may have")
            }
            if let previous, !previous.utf8.lexicographicallyPrecedes(file.path.utf8) {
                throw ModelManifestError(path: file.path, message: previous == file.path
                    ? "listed twice in the manifest of model \(modelID)"
                    : "not sorted bytewise after '\(previous)' in the manifest of model \(modelID)")
            }
            guard FileDigest.isHexSHA256(file.sha256) else {
                throw ModelManifestError(path: file.path,
                                         message: "sha256 '\(file.sha256)' is not 64 lowercase hex digits")
            }
            previous = file.path
        }
        let computed = ModelManifest.identity(of: files)
        guard computed == modelID else {
            throw ModelManifestError(path: "<manifest>",
                                     message: "model id \(modelID) does not match its files (they give \(computed))")
        }
    }

    /// Hashes every file under `directory` and returns its manifest (id included).
    public static func compute(directory: URL) throws -> ModelManifest {
        let root = directory.standardizedFileURL
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root.path, isDirectory: &isDir), isDir.boolValue else {
            throw ModelManifestError(path: root.path, message: "not a directory")
        }
        var paths: [String] = []
        var visited: Set<String> = []
        try collectFiles(in: root.path, relative: "", into: &paths, visited: &visited)
        var entries: [ModelFileEntry] = []
        entries.reserveCapacity(paths.count)
        for relative in paths {
            let (digest, size) = try FileDigest.sha256(ofFile: root.path + "/" + relative)
            entries.append(ModelFileEntry(path: relative, size: size, sha256: digest))
        }
        return ModelManifest(files: entries)
    }

    /// Just the model id of the folder at `directory` (same as `compute(directory:).modelID`).
    public static func modelID(directory: URL) throws -> String {
        try compute(directory: directory).modelID
    }

    static func sorted(_ files: [ModelFileEntry]) -> [ModelFileEntry] {
        // Bytewise order of the UTF-8 paths (Swift's String `<` is not bytewise).
        files.sorted { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
    }

    /// Regular files under `path` (symbolic links followed; a directory link cycle is an error), as
    /// paths relative to the model root joined with `/`.
    private static func collectFiles(in path: String, relative: String, into files: inout [String],
                                     visited: inout Set<String>) throws {
        let real = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        guard visited.insert(real).inserted else {
            throw ModelManifestError(path: path, message: "directory link cycle (\(real) visited twice)")
        }
        defer { visited.remove(real) }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: path)
        } catch {
            throw ModelManifestError(path: path, message: "cannot list directory: \(error.localizedDescription)")
        }
        for name in names {
            let child = path + "/" + name
            let rel = relative.isEmpty ? name : relative + "/" + name
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: child, isDirectory: &isDir) else {
                throw ModelManifestError(path: child, message: "dangling symbolic link or vanished file")
            }
            if isDir.boolValue {
                try collectFiles(in: child, relative: rel, into: &files, visited: &visited)
            } else {
                files.append(rel)
            }
        }
    }
}

/// A manifest or model file that is wrong; `description` names the path and what was expected.
public struct ModelManifestError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "model manifest: \(path): \(message)" }
}

/// SHA-256 of files and bytes, as lowercase hex.
public enum FileDigest {
    /// Bytes read per chunk when hashing a file.
    public static let chunkSize = 4 << 20

    /// Lowercase hex SHA-256 and size of the file at `path`, read in `chunkSize` pieces.
    public static func sha256(ofFile path: String) throws -> (sha256: String, size: UInt64) {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw ModelManifestError(path: path, message: "cannot open file for reading")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        var size: UInt64 = 0
        while true {
            let chunk: Data?
            do {
                chunk = try handle.read(upToCount: chunkSize)
            } catch {
                throw ModelManifestError(path: path, message: "read failed: \(error.localizedDescription)")
            }
            guard let chunk, !chunk.isEmpty else { break }
            hasher.update(data: chunk)
            size += UInt64(chunk.count)
        }
        return (hex(hasher.finalize()), size)
    }

    /// Lowercase hex SHA-256 of `data`.
    public static func sha256(_ data: Data) -> String {
        hex(SHA256.hash(data: data))
    }

    /// The first 8 bytes (little-endian) of the SHA-256 of `parts`, each prefixed by its length as
    /// 8 little-endian bytes (so no two different part lists hash alike): a cheap 64-bit seed
    /// derived from several buffers without concatenating them.
    public static func seed64(_ parts: [Data]) -> UInt64 {
        var hasher = SHA256()
        for part in parts {
            withUnsafeBytes(of: UInt64(part.count).littleEndian) { hasher.update(bufferPointer: $0) }
            hasher.update(data: part)
        }
        return hasher.finalize().withUnsafeBytes { raw in
            (0 ..< 8).reduce(UInt64(0)) { $0 | UInt64(raw[$1]) << (8 * UInt64($1)) }
        }
    }

    /// Lowercase hex of a byte sequence (a digest).
    public static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        var out = [UInt8]()
        out.reserveCapacity(64)
        for b in digest {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static let digits = Array("0123456789abcdef".utf8)

    /// True for exactly 64 lowercase hex digits (a model id or file digest).
    public static func isHexSHA256(_ s: String) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { (0x30 ... 0x39).contains($0) || (0x61 ... 0x66).contains($0) }
    }
}

// Installing a model folder safely: files are written into a hidden temporary folder next to the
// destination, every file is checked against the manifest (size and SHA-256, no missing or extra
// files, model id), and only then is the folder renamed into place. A reader of `<parent>/<id>/`
// therefore only ever sees a complete, verified model. Used by the worker's model cache (chunks from
// the coordinator) and the coordinator's model store (uploads, local imports).
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a staged model was refused; `description` names the model, the file and expected vs found.
public enum ModelInstallError: Error, CustomStringConvertible, Equatable {
    case invalidManifest(modelID: String, reason: String)
    case unknownFile(modelID: String, path: String)
    case outOfRange(modelID: String, path: String, offset: UInt64, count: Int, size: UInt64)
    case missingFile(modelID: String, path: String)
    case extraFile(modelID: String, path: String)
    case sizeMismatch(modelID: String, path: String, expected: UInt64, found: UInt64)
    case checksumMismatch(modelID: String, path: String, expected: String, found: String)
    case io(path: String, message: String)

    public var description: String {
        switch self {
        case let .invalidManifest(id, reason):
            return "model \(id): invalid manifest: \(reason)"
        case let .unknownFile(id, path):
            return "model \(id): file '\(path)' is not in the manifest"
        case let .outOfRange(id, path, offset, count, size):
            return "model \(id): \(count) bytes at offset \(offset) of '\(path)' run past its size \(size)"
        case let .missingFile(id, path):
            return "model \(id): file '\(path)' of the manifest is missing"
        case let .extraFile(id, path):
            return "model \(id): file '\(path)' is not in the manifest"
        case let .sizeMismatch(id, path, expected, found):
            return "model \(id): file '\(path)' has \(found) bytes, manifest says \(expected)"
        case let .checksumMismatch(id, path, expected, found):
            return "model \(id): file '\(path)' is corrupted: sha256 \(found), manifest says \(expected)"
        case let .io(path, message):
            return "\(path): \(message)"
        }
    }
}

/// A model folder being assembled in a temporary folder. Not thread-safe: one writer at a time.
public final class ModelStaging {
    public let manifest: ModelManifest
    /// The temporary folder (`<parent>/.staging-<id>-<random>`).
    public let directory: URL
    private var finished = false

    /// Creates the temporary folder under `parent` after checking the manifest: self-consistent
    /// (`ModelManifest.validate`), every path relative and free of `.`/`..`/empty components, and no
    /// path that is both a file and a folder.
    public init(manifest: ModelManifest, in parent: URL) throws {
        try ModelStaging.check(manifest)
        self.manifest = manifest
        let name = ".staging-\(manifest.modelID.prefix(16))-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        directory = parent.appendingPathComponent(name, isDirectory: true)
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw ModelInstallError.io(path: directory.path, message: "cannot create staging folder: \(error)")
        }
    }

    deinit {
        if !finished { try? FileManager.default.removeItem(at: directory) }
    }

    /// Temporary folders of this kind under `parent` (left behind by a crash); callers remove them at
    /// start-up.
    public static func leftovers(in parent: URL) -> [URL] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: parent.path)) ?? []
        return names.filter { $0.hasPrefix(".staging-") }.map { parent.appendingPathComponent($0) }
    }

    /// Where `path` of the manifest lives inside the staging folder.
    public func fileURL(_ path: String) -> URL {
        directory.appendingPathComponent(path)
    }

    /// Writes `data` at `offset` of the manifest file `path` (creating it and its folders).
    public func write(path: String, offset: UInt64, data: Data) throws {
        guard let entry = manifest.entry(for: path) else {
            throw ModelInstallError.unknownFile(modelID: manifest.modelID, path: path)
        }
        guard offset <= entry.size, UInt64(data.count) <= entry.size - offset else {
            throw ModelInstallError.outOfRange(modelID: manifest.modelID, path: path, offset: offset,
                                               count: data.count, size: entry.size)
        }
        let url = fileURL(path)
        do {
            let fm = FileManager.default
            if !fm.fileExists(atPath: url.path) {
                try fm.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                guard fm.createFile(atPath: url.path, contents: nil) else {
                    throw ModelInstallError.io(path: url.path, message: "cannot create file")
                }
            }
            let handle = try FileHandle(forWritingTo: url)
            defer { try? handle.close() }
            try handle.seek(toOffset: offset)
            try handle.write(contentsOf: data)
        } catch let error as ModelInstallError {
            throw error
        } catch {
            throw ModelInstallError.io(path: url.path, message: "write of \(data.count) bytes at \(offset) failed: \(error)")
        }
    }

    /// Empties the file `path` (before fetching it again).
    public func reset(path: String) throws {
        guard manifest.entry(for: path) != nil else {
            throw ModelInstallError.unknownFile(modelID: manifest.modelID, path: path)
        }
        let url = fileURL(path)
        if FileManager.default.fileExists(atPath: url.path) {
            guard truncate(url.path, 0) == 0 else {
                throw ModelInstallError.io(path: url.path, message: "truncate failed: \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Hashes every file of the staging folder and compares it with the manifest: each file's size
    /// and SHA-256, no missing and no extra files. (The model id follows: `manifest.validate()`
    /// checked that it is the identity of the listed files.)
    public func verify() throws {
        let found: ModelManifest
        do {
            found = try ModelManifest.compute(directory: directory)
        } catch {
            throw ModelInstallError.io(path: directory.path, message: "\(error)")
        }
        let present = Dictionary(found.files.map { ($0.path, $0) }, uniquingKeysWith: { a, _ in a })
        for expected in manifest.files {
            guard let actual = present[expected.path] else {
                throw ModelInstallError.missingFile(modelID: manifest.modelID, path: expected.path)
            }
            if actual.size != expected.size {
                throw ModelInstallError.sizeMismatch(modelID: manifest.modelID, path: expected.path,
                                                     expected: expected.size, found: actual.size)
            }
            if actual.sha256 != expected.sha256 {
                throw ModelInstallError.checksumMismatch(modelID: manifest.modelID, path: expected.path,
                                                         expected: expected.sha256, found: actual.sha256)
            }
        }
        if let extra = found.files.first(where: { manifest.entry(for: $0.path) == nil }) {
            throw ModelInstallError.extraFile(modelID: manifest.modelID, path: extra.path)
        }
        if found.modelID != manifest.modelID {  // cannot happen once the files match; kept as a guard
            throw ModelInstallError.invalidManifest(modelID: manifest.modelID,
                                                    reason: "files give model id \(found.modelID)")
        }
    }

    /// `verify()`, then renames the staging folder to `destination`. Returns false (and removes the
    /// staging folder) when `destination` already exists - another install of the same id won.
    @discardableResult
    public func commit(to destination: URL) throws -> Bool {
        try verify()
        if rename(directory.path, destination.path) != 0 {
            let code = errno
            if code == EEXIST || code == ENOTEMPTY {
                discard()
                return false
            }
            throw ModelInstallError.io(path: destination.path,
                                       message: "rename \(directory.path) failed: \(String(cString: strerror(code)))")
        }
        finished = true
        DurableFile.syncDirectory(destination.deletingLastPathComponent().path)
        return true
    }

    /// Removes the staging folder.
    public func discard() {
        if !finished {
            try? FileManager.default.removeItem(at: directory)
            finished = true
        }
    }

    static func check(_ manifest: ModelManifest) throws {
        guard FileDigest.isHexSHA256(manifest.modelID) else {
            throw ModelInstallError.invalidManifest(modelID: manifest.modelID,
                                                    reason: "model id is not 64 lowercase hex digits")
        }
        do {
            try manifest.validate()
        } catch {
            throw ModelInstallError.invalidManifest(modelID: manifest.modelID, reason: "\(error)")
        }
        var folders: Set<String> = []
        for file in manifest.files {
            if let problem = ModelStaging.pathProblem(file.path) {
                throw ModelInstallError.invalidManifest(modelID: manifest.modelID, reason: problem)
            }
            var prefix = ""
            for component in file.path.split(separator: "/").dropLast() {
                prefix += prefix.isEmpty ? String(component) : "/" + component
                folders.insert(prefix)
            }
        }
        if let clash = manifest.files.first(where: { folders.contains($0.path) }) {
            throw ModelInstallError.invalidManifest(modelID: manifest.modelID,
                                                    reason: "'\(clash.path)' is listed as a file and used as a folder")
        }
    }

    /// nil when `path` is a safe relative path (what DPProtocol's `RelativePath` checks on the wire;
    /// repeated here because this module sits below the protocol).
    static func pathProblem(_ path: String) -> String? {
        if path.isEmpty { return "empty path" }
        if path.hasPrefix("/") { return "absolute path '\(path)'" }
        if path.contains("\\") { return "backslash in path '\(path)'" }
        if path.utf8.contains(0) { return "NUL byte in path" }
        for component in path.split(separator: "/", omittingEmptySubsequences: false) {
            if component.isEmpty { return "empty component in path '\(path)'" }
            if component == "." || component == ".." { return "'\(component)' component in path '\(path)'" }
        }
        return nil
    }
}

// The coordinator's models: verified model folders under `<state>/models/<model id>/`, each with
// its manifest cached beside it as `<state>/models/<model id>.manifest.json` (so a restart does not
// re-hash gigabytes). Workers fetch models from here in chunks (ModelChunkRequest); clients add
// models by upload (SubmitJob + UploadChunk) or, for the embedded `dp-coord submit`, by import of a
// local folder. This file never loads a model: it only hashes and serves files.
import DPFileKit
import DPProtocol
import Foundation
import Synchronization

/// A model request the store cannot serve; `code` is the wire error to answer with.
public struct ModelStoreError: Error, CustomStringConvertible {
    public let code: FarmErrorCode
    public let message: String
    public init(_ code: FarmErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { message }
}

public final class ModelStore: Sendable {
    /// `<state>/models`.
    public let directory: URL
    /// Largest chunk served per request (the message limit leaves room for the envelope).
    public let maxChunkBytes: Int

    private struct State {
        var manifests: [String: ModelManifest] = [:]
        var chunkFault: (@Sendable (_ path: String, _ offset: UInt64, _ data: Data) -> Data)?
    }
    private let state: Mutex<State>
    /// Model folders found at start-up that could not be used (id -> why): not served, and a job that
    /// needs one fails with the reason instead of keeping the coordinator from starting.
    public let refusedAtStart: [String: String]

    /// TESTS ONLY (fault injection; nil in production, set by nothing but tests): when set, every
    /// chunk `readChunk` serves is passed through it (model-relative path, offset, bytes read from
    /// disk) and its return value is served instead, so a test can corrupt what a worker receives.
    public var chunkTransform: (@Sendable (_ path: String, _ offset: UInt64, _ data: Data) -> Data)? {
        get { state.withLock { $0.chunkFault } }
        set { state.withLock { $0.chunkFault = newValue } }
    }

    /// Opens the store in `directory` (created if needed). Staging folders left by a crash are
    /// removed; each model folder's manifest is read from its sidecar file (checked: self-consistent,
    /// same id, file sizes on disk match) or computed again by hashing.
    public init(directory: URL, maxChunkBytes: Int = 16 << 20) throws {
        let directory = directory.standardizedFileURL
        self.directory = directory
        self.maxChunkBytes = maxChunkBytes
        let fm = FileManager.default
        do {
            try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw ModelStoreError(.internal, "model store \(directory.path): cannot create folder: \(error)")
        }
        for leftover in ModelStaging.leftovers(in: directory) { try? fm.removeItem(at: leftover) }
        var manifests: [String: ModelManifest] = [:]
        var refusedAtStart: [String: String] = [:]
        let names = (try? fm.contentsOfDirectory(atPath: directory.path)) ?? []
        for name in names where FileDigest.isHexSHA256(name) {
            let folder = Self.folder(for: name, in: directory)
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: folder.path, isDirectory: &isDir), isDir.boolValue else { continue }
            if let manifest = Self.loadSidecar(name, in: directory) {
                manifests[name] = manifest
                continue
            }
            // A folder that cannot be used is left alone and reported (`refusedAtStart`), never a
            // reason for the coordinator not to start (issue 12: no crash loop on stored state).
            let manifest: ModelManifest
            do {
                manifest = try ModelManifest.compute(directory: folder)
            } catch {
                refusedAtStart[name] = "model store: cannot hash \(folder.path): \(error)"
                continue
            }
            guard manifest.modelID == name else {
                refusedAtStart[name] = "model store: folder \(folder.path) holds model \(manifest.modelID), "
                    + "not \(name) (its files changed; remove or rename it)"
                continue
            }
            do {
                try Self.writeSidecar(manifest, in: directory)
            } catch {
                refusedAtStart[name] = "model store: cannot record the manifest of \(name): \(error)"
                continue
            }
            manifests[name] = manifest
        }
        self.refusedAtStart = refusedAtStart
        state = Mutex(State(manifests: manifests))
    }

    /// Model ids held, sorted.
    public var modelIDs: [String] {
        state.withLock { $0.manifests.keys.sorted() }
    }

    public func contains(_ modelID: String) -> Bool {
        state.withLock { $0.manifests[modelID] != nil }
    }

    /// The manifest of a held model (ModelManifestRequest).
    public func manifest(for modelID: String) throws -> ModelManifest {
        guard let manifest = state.withLock({ $0.manifests[modelID] }) else {
            throw ModelStoreError(.unknownModel, "model \(modelID) is not held by this coordinator")
        }
        return manifest
    }

    /// Where model `modelID` lives (whether or not it is held).
    public func folder(for modelID: String) -> URL {
        Self.folder(for: modelID, in: directory)
    }

    private static func folder(for modelID: String, in directory: URL) -> URL {
        directory.appendingPathComponent(modelID, isDirectory: true)
    }

    /// Reads `length` bytes at `offset` of the model file `path` (ModelChunkRequest). The path must be
    /// a safe relative path listed in the model's manifest, the offset within the file, and the
    /// length 1 ... maxChunkBytes; the reply is shorter than `length` only at the end of the file.
    public func readChunk(modelID: String, path: String, offset: UInt64,
                          length: Int) throws -> (data: Data, fileSize: UInt64) {
        if let problem = RelativePath.problem(path) {
            throw ModelStoreError(.unknownFile, "model \(modelID): refused chunk request: \(problem)")
        }
        let manifest = try self.manifest(for: modelID)
        guard let entry = manifest.entry(for: path) else {
            throw ModelStoreError(.unknownFile, "model \(modelID): file '\(path)' is not in its manifest")
        }
        guard length > 0, length <= maxChunkBytes else {
            throw ModelStoreError(.badRequest,
                                  "model \(modelID): chunk of '\(path)': length \(length) not in 1...\(maxChunkBytes)")
        }
        guard offset <= entry.size else {
            throw ModelStoreError(.badRequest,
                                  "model \(modelID): chunk of '\(path)': offset \(offset) is past the file size \(entry.size)")
        }
        let count = Int(min(UInt64(length), entry.size - offset))
        let url = folder(for: modelID).appendingPathComponent(path)
        do {
            let handle = try FileHandle(forReadingFrom: url)
            defer { try? handle.close() }
            try handle.seek(toOffset: offset)
            let data = try handle.read(upToCount: count) ?? Data()
            guard data.count == count else {
                throw ModelStoreError(.internal, "model \(modelID): '\(path)' is shorter on disk than its manifest "
                                          + "(read \(data.count) of \(count) bytes at \(offset))")
            }
            if let transform = chunkTransform { return (transform(path, offset, data), entry.size) }
            return (data, entry.size)
        } catch let error as ModelStoreError {
            throw error
        } catch {
            throw ModelStoreError(.internal, "model \(modelID): cannot read '\(path)': \(error)")
        }
    }

    /// Copies the model folder at `source` into the store (embedded `dp-coord submit`): hashes it,
    /// copies it into a staging folder, verifies the copy and renames it into place. Returns the
    /// manifest; a model already held is not copied again.
    @discardableResult
    public func importFolder(_ source: URL) throws -> ModelManifest {
        let manifest: ModelManifest
        do {
            manifest = try ModelManifest.compute(directory: source)
        } catch {
            throw ModelStoreError(.badRequest, "cannot import model folder: \(error)")
        }
        if contains(manifest.modelID) { return manifest }
        let staging = try beginUpload(manifest)
        do {
            for file in manifest.files {
                let target = staging.fileURL(file.path)
                try FileManager.default.createDirectory(at: target.deletingLastPathComponent(),
                                                        withIntermediateDirectories: true)
                try FileManager.default.copyItem(at: source.appendingPathComponent(file.path), to: target)
            }
        } catch {
            staging.discard()
            throw ModelStoreError(.internal, "cannot copy model \(manifest.modelID) from \(source.path): \(error)")
        }
        try finishUpload(staging)
        return manifest
    }

    /// Starts receiving a model by upload: checks the manifest and creates its staging folder.
    /// Write chunks with `ModelStaging.write(path:offset:data:)`, then call `finishUpload`.
    public func beginUpload(_ manifest: ModelManifest) throws -> ModelStaging {
        for file in manifest.files {
            if let problem = RelativePath.problem(file.path) {
                throw ModelStoreError(.badRequest, "model \(manifest.modelID): manifest refused: \(problem)")
            }
        }
        do {
            return try ModelStaging(manifest: manifest, in: directory)
        } catch {
            throw ModelStoreError(.badRequest, "\(error)")
        }
    }

    /// Verifies an uploaded model (every file's size and SHA-256, no extra files) and makes it
    /// available. A corrupted file is refused with CHECKSUM_MISMATCH naming the file and both hashes.
    public func finishUpload(_ staging: ModelStaging) throws {
        let manifest = staging.manifest
        do {
            try staging.commit(to: folder(for: manifest.modelID))
        } catch let error as ModelInstallError {
            staging.discard()
            switch error {
            case .checksumMismatch, .sizeMismatch, .missingFile, .extraFile:
                throw ModelStoreError(.checksumMismatch, error.description)
            default:
                throw ModelStoreError(.internal, error.description)
            }
        }
        try writeSidecar(manifest)
        state.withLock { $0.manifests[manifest.modelID] = manifest }
    }

    // MARK: - Manifest sidecar files

    private static func sidecarURL(_ modelID: String, in directory: URL) -> URL {
        directory.appendingPathComponent(modelID + ".manifest.json")
    }

    private static func loadSidecar(_ modelID: String, in directory: URL) -> ModelManifest? {
        guard let data = try? Data(contentsOf: sidecarURL(modelID, in: directory)),
              let manifest = try? JSONDecoder().decode(ModelManifest.self, from: data),
              manifest.modelID == modelID, (try? manifest.validate()) != nil else { return nil }
        // Cheap check that the folder still matches: every listed file has its size, nothing else.
        let root = folder(for: modelID, in: directory).path
        var count = 0
        if let walker = FileManager.default.enumerator(atPath: root) {
            while let rel = walker.nextObject() as? String {
                let attrs = try? FileManager.default.attributesOfItem(atPath: root + "/" + rel)
                if attrs?[.type] as? FileAttributeType == .typeRegular { count += 1 }
            }
        }
        guard count == manifest.files.count else { return nil }
        for file in manifest.files {
            let attrs = try? FileManager.default.attributesOfItem(atPath: root + "/" + file.path)
            guard (attrs?[.size] as? NSNumber)?.uint64Value == file.size else { return nil }
        }
        return manifest
    }

    private func writeSidecar(_ manifest: ModelManifest) throws {
        try Self.writeSidecar(manifest, in: directory)
    }

    private static func writeSidecar(_ manifest: ModelManifest, in directory: URL) throws {
        let url = sidecarURL(manifest.modelID, in: directory)
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try DurableFile.write(try encoder.encode(manifest), to: url)
        } catch {
            throw ModelStoreError(.internal, "cannot write \(url.path): \(error)")
        }
    }
}

// The worker's on-disk model cache (`dp-worker --cache DIR`).
//
// Layout:
//   DIR/<model id>/...            one verified model folder per id (docs/model-format.md)
//   DIR/index.json                least-recently-used order and sizes, rewritten atomically
//   DIR/.staging-<id>-<n>/        an install in progress (removed at start-up if a crash left one)
//
// The cache holds at most `maxBytes` bytes of model files. Room for a new model is made when its
// install begins (before any byte is fetched), by evicting the least recently used models that are
// not in use; a model is "in use" while a `ModelLease` on it is alive, and is never evicted then.
// A model only appears under DIR/<id>/ after every file matched the manifest (size, SHA-256, id);
// see `ModelStaging`.
import DPFileKit
import Foundation
import Synchronization

/// Why the cache could not do what was asked; `description` names the model and the numbers.
public enum ModelCacheError: Error, CustomStringConvertible {
    case tooLarge(modelID: String, bytes: UInt64, maxBytes: UInt64)
    case noRoom(modelID: String, bytes: UInt64, free: UInt64, maxBytes: UInt64, inUse: [String])
    case notCached(modelID: String)
    case io(path: String, message: String)

    public var description: String {
        switch self {
        case let .tooLarge(id, bytes, maxBytes):
            return "model \(id) needs \(bytes) bytes, more than the whole cache (\(maxBytes) bytes)"
        case let .noRoom(id, bytes, free, maxBytes, inUse):
            return "model \(id) needs \(bytes) bytes; only \(free) of \(maxBytes) can be freed because "
                + "models in use or being installed cannot be evicted (\(inUse.joined(separator: ", ")))"
        case let .notCached(id):
            return "model \(id) is not in the cache"
        case let .io(path, message):
            return "model cache \(path): \(message)"
        }
    }
}

/// A model held in use: it is not evicted until `release()` is called or the lease is freed.
public final class ModelLease: Sendable {
    public let modelID: String
    /// The model folder.
    public let directory: URL
    private weak let cache: ModelCache?
    private let released = Mutex(false)

    init(modelID: String, directory: URL, cache: ModelCache) {
        self.modelID = modelID
        self.directory = directory
        self.cache = cache
    }

    public func release() {
        let first = released.withLock { released in
            defer { released = true }
            return !released
        }
        if first { cache?.endUse(modelID) }
    }

    deinit { release() }
}

/// An install that has room reserved in the cache; finish it with `ModelCache.commit(_:)` or
/// `ModelCache.abandon(_:)`.
public final class ModelInstall {
    public let staging: ModelStaging
    public var manifest: ModelManifest { staging.manifest }
    fileprivate var open = true
    init(staging: ModelStaging) { self.staging = staging }
}

public final class ModelCache: Sendable {
    /// The cache folder.
    public let directory: URL
    /// Upper bound on the bytes of model files kept (manifest sizes).
    public let maxBytes: UInt64

    private struct Entry: Codable {
        var modelID: String
        var bytes: UInt64
        /// Larger = used more recently (a counter, not a wall time).
        var lastUsed: UInt64
        enum CodingKeys: String, CodingKey {
            case modelID = "model_id", bytes, lastUsed = "last_used"
        }
    }

    private struct Index: Codable {
        var format: String
        var useCounter: UInt64
        var models: [Entry]
        enum CodingKeys: String, CodingKey {
            case format, useCounter = "use_counter", models
        }
    }

    static let indexFormat = "dp-worker-model-cache/1"

    private struct State {
        var entries: [String: Entry] = [:]
        var useCounter: UInt64 = 0
        var inUse: [String: Int] = [:]
        /// Bytes reserved by installs in progress, by model id.
        var reserved: [String: UInt64] = [:]
    }
    private let state = Mutex(State())

    /// Opens (creating if needed) the cache at `directory`. Removes staging folders left by a crash,
    /// reconciles the index with the model folders present (a folder missing from the index counts
    /// as least recently used), and evicts down to `maxBytes` if the bound shrank.
    public init(directory: URL, maxBytes: UInt64) throws {
        self.directory = directory.standardizedFileURL
        self.maxBytes = maxBytes
        let fm = FileManager.default
        do {
            try fm.createDirectory(at: self.directory, withIntermediateDirectories: true)
        } catch {
            throw ModelCacheError.io(path: self.directory.path, message: "cannot create folder: \(error)")
        }
        for leftover in ModelStaging.leftovers(in: self.directory) {
            try? fm.removeItem(at: leftover)
        }

        var indexed: [String: Entry] = [:]
        var entries: [String: Entry] = [:]
        var useCounter: UInt64 = 0
        let indexURL = self.directory.appendingPathComponent("index.json")
        if let data = try? Data(contentsOf: indexURL) {
            guard let index = try? JSONDecoder().decode(Index.self, from: data), index.format == Self.indexFormat else {
                throw ModelCacheError.io(path: indexURL.path,
                                         message: "not a \(Self.indexFormat) index (remove it to rebuild from the folders)")
            }
            useCounter = index.useCounter
            for entry in index.models { indexed[entry.modelID] = entry }
        }
        let names = (try? fm.contentsOfDirectory(atPath: self.directory.path)) ?? []
        for name in names where FileDigest.isHexSHA256(name) {
            var isDir: ObjCBool = false
            let path = self.directory.appendingPathComponent(name).path
            guard fm.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else { continue }
            if let entry = indexed[name] {
                entries[name] = entry
            } else {
                entries[name] = Entry(modelID: name, bytes: try Self.folderBytes(path), lastUsed: 0)
            }
        }
        try state.withLock { state in
            state.entries = entries
            state.useCounter = useCounter
            try evictLocked(toFit: 0, for: nil, &state)
            try saveIndexLocked(state)
        }
    }

    /// Model ids on disk, most recently used first (for Hello.cached_model_ids).
    public var modelIDs: [String] {
        state.withLock { $0.entries.values.sorted { ($0.lastUsed, $0.modelID) > ($1.lastUsed, $1.modelID) }.map(\.modelID) }
    }

    /// Bytes of the models on disk.
    public var usedBytes: UInt64 {
        state.withLock { $0.entries.values.reduce(0) { $0 + $1.bytes } }
    }

    public func contains(_ modelID: String) -> Bool {
        state.withLock { $0.entries[modelID] != nil }
    }

    /// The folder of `modelID` (whether or not it is cached).
    public func folder(for modelID: String) -> URL {
        directory.appendingPathComponent(modelID, isDirectory: true)
    }

    /// Marks `modelID` used now (most recently used) and in use until the lease is released.
    /// Returns nil when the model is not cached.
    public func lease(_ modelID: String) throws -> ModelLease? {
        try state.withLock { state in
            guard state.entries[modelID] != nil else { return nil }
            try touchLocked(modelID, &state)
            state.inUse[modelID, default: 0] += 1
            return ModelLease(modelID: modelID, directory: folder(for: modelID), cache: self)
        }
    }

    /// Reserves room for `manifest` (evicting least recently used models not in use) and creates its
    /// staging folder. Throws `tooLarge`/`noRoom` when the bound cannot be met.
    public func beginInstall(_ manifest: ModelManifest) throws -> ModelInstall {
        let bytes = manifest.totalBytes
        guard bytes <= maxBytes else {
            throw ModelCacheError.tooLarge(modelID: manifest.modelID, bytes: bytes, maxBytes: maxBytes)
        }
        return try state.withLock { state in
            try evictLocked(toFit: bytes, for: manifest.modelID, &state)
            let staging = try ModelStaging(manifest: manifest, in: directory)
            state.reserved[manifest.modelID, default: 0] += bytes
            return ModelInstall(staging: staging)
        }
    }

    /// Verifies the staged files against the manifest, renames the folder into place, records the
    /// model as most recently used and returns a lease on it. On a verification error the staged
    /// files are removed and the reservation released; the error names the file and both hashes.
    public func commit(_ install: ModelInstall) throws -> ModelLease {
        let id = install.manifest.modelID
        defer { abandon(install) }
        try install.staging.commit(to: folder(for: id))  // false: an identical install won; keep it
        let bytes = install.manifest.totalBytes
        return try state.withLock { state in
            if state.entries[id] == nil {
                state.entries[id] = Entry(modelID: id, bytes: bytes, lastUsed: 0)
            }
            try touchLocked(id, &state)
            state.inUse[id, default: 0] += 1
            return ModelLease(modelID: id, directory: folder(for: id), cache: self)
        }
    }

    /// Drops an install: removes its staging folder and releases its reservation.
    public func abandon(_ install: ModelInstall) {
        install.staging.discard()
        let id = install.manifest.modelID
        let bytes = install.manifest.totalBytes
        state.withLock { state in
            guard install.open else { return }
            install.open = false
            let left = (state.reserved[id] ?? 0) - min(state.reserved[id] ?? 0, bytes)
            state.reserved[id] = left == 0 ? nil : left
        }
    }

    fileprivate func endUse(_ modelID: String) {
        state.withLock { state in
            let count = (state.inUse[modelID] ?? 1) - 1
            state.inUse[modelID] = count <= 0 ? nil : count
        }
    }

    // MARK: - Locked helpers

    private func touchLocked(_ modelID: String, _ state: inout State) throws {
        state.useCounter += 1
        state.entries[modelID]?.lastUsed = state.useCounter
        try saveIndexLocked(state)
    }

    /// Evicts least recently used models that are not in use until `extra` more bytes fit.
    private func evictLocked(toFit extra: UInt64, for modelID: String?, _ state: inout State) throws {
        let inUse = state.inUse, reserved = state.reserved
        var used = state.entries.values.reduce(0) { $0 + $1.bytes } + reserved.values.reduce(0, +)
        guard used + extra > maxBytes else { return }
        let candidates = state.entries.values
            .filter { (inUse[$0.modelID] ?? 0) == 0 }
            .sorted { ($0.lastUsed, $0.modelID) < ($1.lastUsed, $1.modelID) }
        var victims: [Entry] = []
        for entry in candidates where used + extra > maxBytes {
            victims.append(entry)
            used -= entry.bytes
        }
        guard used + extra <= maxBytes else {
            let pinned = state.entries.keys.filter { (inUse[$0] ?? 0) > 0 } + reserved.keys
            throw ModelCacheError.noRoom(modelID: modelID ?? "(cache bound)", bytes: extra,
                                         free: maxBytes - min(maxBytes, used), maxBytes: maxBytes,
                                         inUse: pinned.sorted())
        }
        for victim in victims {
            // Rename first so that a half-deleted folder is never taken for a model.
            let folder = folder(for: victim.modelID)
            let doomed = directory.appendingPathComponent(".staging-evicted-\(victim.modelID.prefix(16))-\(UInt32.random(in: 0 ... .max))")
            do {
                try FileManager.default.moveItem(at: folder, to: doomed)
            } catch {
                throw ModelCacheError.io(path: folder.path, message: "cannot evict: \(error)")
            }
            state.entries[victim.modelID] = nil
            try? FileManager.default.removeItem(at: doomed)
        }
        if !victims.isEmpty { try saveIndexLocked(state) }
    }

    private func saveIndexLocked(_ state: State) throws {
        let index = Index(format: Self.indexFormat, useCounter: state.useCounter,
                          models: state.entries.values.sorted { $0.modelID < $1.modelID })
        let url = directory.appendingPathComponent("index.json")
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try DurableFile.write(try encoder.encode(index), to: url)
        } catch {
            throw ModelCacheError.io(path: url.path, message: "cannot write index: \(error)")
        }
    }

    private static func folderBytes(_ path: String) throws -> UInt64 {
        guard let walker = FileManager.default.enumerator(atPath: path) else {
            throw ModelCacheError.io(path: path, message: "cannot list folder")
        }
        var total: UInt64 = 0
        while let rel = walker.nextObject() as? String {
            let attrs = try? FileManager.default.attributesOfItem(atPath: path + "/" + rel)
            if attrs?[.type] as? FileAttributeType == .typeRegular {
                total += (attrs?[.size] as? NSNumber)?.uint64Value ?? 0
            }
        }
        return total
    }
}

// Downloads a model into the worker's cache in chunks, over any transport.
//
// The driver knows nothing of sockets: it calls `fetchChunk(path, offset, length)` (the worker loop
// turns that into ModelChunkRequest/ModelChunk messages; tests pass a closure reading a folder).
// Every file is streamed into the install's staging folder while its SHA-256 is computed; a file whose
// size or hash does not match the manifest is fetched again from the start, at most
// `maxAttemptsPerFile` times. Then the cache verifies the whole folder once more from disk and renames
// it into place (`ModelCache.commit`).
import DPFileKit
import Crypto
import Foundation

/// A model file that could not be fetched intact; `description` names the model, file and hashes.
public enum ModelFetchError: Error, CustomStringConvertible {
    case corrupted(modelID: String, path: String, attempts: Int, expected: String, found: String)
    case badChunk(modelID: String, path: String, offset: UInt64, asked: Int, got: Int)

    public var description: String {
        switch self {
        case let .corrupted(id, path, attempts, expected, found):
            return "model \(id): file '\(path)' still corrupted after \(attempts) fetches: sha256 \(found), "
                + "manifest says \(expected)"
        case let .badChunk(id, path, offset, asked, got):
            return "model \(id): chunk of '\(path)' at offset \(offset): asked for \(asked) bytes, got \(got)"
        }
    }
}

public struct ModelFetcher {
    /// Bytes asked for per chunk (the coordinator's Welcome.model_chunk_bytes in the farm).
    public var chunkBytes: Int
    /// Fetches of one file before giving up on it (the first included).
    public var maxAttemptsPerFile: Int

    /// A fetched file whose SHA-256 is not the manifest's (then fetched again, or given up).
    public struct Corrupted: Sendable, Equatable, CustomStringConvertible {
        public var modelID: String
        public var path: String
        /// 1 for the first fetch.
        public var attempt: Int
        public var found: String
        public var expected: String
        /// No fetch left: the model fetch fails.
        public var givingUp: Bool

        /// The worker's log line.
        public var description: String {
            "model \(modelID): '\(path)' fetch \(attempt) corrupted (sha256 \(found), manifest says \(expected))"
                + (givingUp ? "; giving up" : "; fetching it again")
        }
    }

    /// Called for each corrupted fetch (which file, which hashes), for the worker's log and events.
    public var onCorrupted: (Corrupted) -> Void

    public init(chunkBytes: Int = 4 << 20, maxAttemptsPerFile: Int = 3,
                onCorrupted: @escaping (Corrupted) -> Void = { _ in }) {
        precondition(chunkBytes > 0 && maxAttemptsPerFile > 0)
        self.chunkBytes = chunkBytes
        self.maxAttemptsPerFile = maxAttemptsPerFile
        self.onCorrupted = onCorrupted
    }

    /// Fetches every file of `manifest` into `cache` and returns a lease on the installed model.
    /// If the model is already cached, returns a lease on it without fetching anything.
    ///
    /// - fetchChunk: `(path, offset, length) -> bytes`; must return exactly `length` bytes except at
    ///   the end of the file. Errors it throws end the fetch (the staged files are removed).
    /// - progress: `(bytes fetched so far, total bytes)` after each chunk.
    /// - verifying: called once every file is fetched, before the cache checks the whole folder again
    ///   from disk (a long step of its own for a large model).
    public func fetch(_ manifest: ModelManifest, into cache: ModelCache,
                      progress: ((UInt64, UInt64) -> Void)? = nil,
                      verifying: (() -> Void)? = nil,
                      fetchChunk: (_ path: String, _ offset: UInt64, _ length: Int) throws -> Data) throws -> ModelLease {
        if let lease = try cache.lease(manifest.modelID) { return lease }
        let install = try cache.beginInstall(manifest)
        var committed = false
        defer { if !committed { cache.abandon(install) } }

        let total = manifest.totalBytes
        var done: UInt64 = 0
        for file in manifest.files {
            var attempt = 0
            while true {
                attempt += 1
                try install.staging.reset(path: file.path)
                var hasher = SHA256()
                var offset: UInt64 = 0
                if file.size == 0 { try install.staging.write(path: file.path, offset: 0, data: Data()) }
                while offset < file.size {
                    let length = Int(min(UInt64(chunkBytes), file.size - offset))
                    let data = try fetchChunk(file.path, offset, length)
                    guard data.count == length else {
                        throw ModelFetchError.badChunk(modelID: manifest.modelID, path: file.path,
                                                       offset: offset, asked: length, got: data.count)
                    }
                    try install.staging.write(path: file.path, offset: offset, data: data)
                    hasher.update(data: data)
                    offset += UInt64(length)
                    progress?(done + offset, total)
                }
                let found = FileDigest.hex(hasher.finalize())
                if found == file.sha256 { break }
                onCorrupted(Corrupted(modelID: manifest.modelID, path: file.path, attempt: attempt, found: found,
                                      expected: file.sha256, givingUp: attempt >= maxAttemptsPerFile))
                guard attempt < maxAttemptsPerFile else {
                    throw ModelFetchError.corrupted(modelID: manifest.modelID, path: file.path,
                                                    attempts: attempt, expected: file.sha256, found: found)
                }
            }
            done += file.size
        }
        verifying?()
        let lease = try cache.commit(install)
        committed = true
        return lease
    }
}

// One receiver for files a client uploads in chunks: a model's files (into its staging folder) and a
// job's inputs (into temp files in <state>/inputs). The rules are the same for both: chunks of a file
// arrive in order (offset = bytes received so far), offset 0 starts the file over, no chunk goes past
// the declared size, and the last chunk is followed by a size + SHA-256 check; a file that does not
// match is dropped and must be sent again from offset 0.
import DPFileKit
import DPProtocol
import Foundation

/// Where an uploaded file's bytes go.
protocol UploadTarget {
    /// Empties the file, creating it if needed (a transfer starting, or starting over, at offset 0).
    func reset() throws
    func write(offset: UInt64, data: Data) throws
    /// The path whose size and SHA-256 are checked after the last chunk.
    var filePath: String { get }
    /// Drops what was received (the check failed).
    func discard() throws
}

/// A model file in its staging folder.
struct ModelFileUpload: UploadTarget {
    let staging: ModelStaging
    let path: String
    func reset() throws { try staging.reset(path: path) }
    func write(offset: UInt64, data: Data) throws { try staging.write(path: path, offset: offset, data: data) }
    var filePath: String { staging.fileURL(path).path }
    func discard() throws { try staging.reset(path: path) }
}

/// A job input's temp file (renamed to its SHA-256 once complete).
struct InputFileUpload: UploadTarget {
    let url: URL
    func reset() throws {
        guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
            throw CoordinatorError("cannot create \(url.path)")
        }
    }
    func write(offset: UInt64, data: Data) throws {
        let handle = try FileHandle(forWritingTo: url)
        defer { try? handle.close() }
        try handle.seek(toOffset: offset)
        try handle.write(contentsOf: data)
    }
    var filePath: String { url.path }
    func discard() throws { try? FileManager.default.removeItem(at: url) }
}

enum ChunkedUpload {
    enum Outcome: Equatable {
        /// Stored; the next chunk starts at `nextOffset`. `complete`: it was the last and the file matches.
        case stored(nextOffset: UInt64, complete: Bool)
        /// Refused (nothing stored, or the finished file did not match and was dropped): the client's error.
        case refused(FarmErrorCode, String)
    }

    /// Applies one chunk (`offset`, `data`, `last`) of the file `label` ("model file 'x'", "input 'x'")
    /// of job `job`, declared as `size` bytes with SHA-256 `sha256`, to `target`. `received`: the bytes
    /// of it received so far (nil: none yet, or dropped); updated. Throws when the coordinator cannot
    /// write (its own trouble, not the client's).
    static func receive(offset: UInt64, data: Data, last: Bool, into target: some UploadTarget, received: inout UInt64?,
                        size: UInt64, sha256: String, label: String, job: Int64) throws -> Outcome {
        if offset == 0 {
            try target.reset()
            received = 0
        }
        let have = received ?? 0
        let count = UInt64(data.count)
        guard offset == have, have <= size, count <= size - have else {
            return .refused(.badRequest, "job \(job): \(label): chunk of \(data.count) bytes at offset \(offset), "
                + "expected offset \(have) within \(size) bytes")
        }
        try target.write(offset: offset, data: data)
        received = have + count
        guard last else { return .stored(nextOffset: have + count, complete: false) }
        let found = try? FileDigest.sha256(ofFile: target.filePath)
        guard let found, found.size == size, found.sha256 == sha256 else {
            try target.discard()
            received = nil
            return .refused(.checksumMismatch, "job \(job): \(label): expected \(size) bytes with sha256 \(sha256), "
                + "received \(found?.size ?? 0) bytes with sha256 \(found?.sha256 ?? "?"); send it again from offset 0")
        }
        return .stored(nextOffset: have + count, complete: true)
    }
}

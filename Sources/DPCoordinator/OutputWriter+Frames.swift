// OutputWriter's frame files: each result's PNG written new, never replacing a file (`.syncEachFrame`:
// temp + fsync + link; `.batched`: O_TMPFILE or temp + link, no fsync), then recorded for manifest.json.
// The folder, the manifest and the durability modes: OutputWriter.swift.
import CDPSys
import DPFileKit
import Foundation

extension OutputWriter {
    /// Writes frame `frame`'s PNG and records it. Refused (nothing written) when the frame was
    /// already written, is not a frame of the job, or `claimedSHA256` (the worker's hash) does not
    /// match the bytes. With `flush: false` the manifest is only rewritten by `flush()` (a coordinator
    /// loop that receives many results per turn flushes once per turn).
    @discardableResult
    public func write(frame: UInt32, png: Data, attempt: UInt64, worker: String, renderSeconds: Double,
                      claimedSHA256: String? = nil, flush: Bool = true) throws -> OutputFrameRecord {
        let record = try state.withLock { state in
            try writeLocked(frame: frame, png: png, attempt: attempt, worker: worker, renderSeconds: renderSeconds,
                            claimedSHA256: claimedSHA256, &state)
        }
        if flush { try self.flush() }
        return record
    }

    func writeLocked(frame: UInt32, png: Data, attempt: UInt64, worker: String, renderSeconds: Double,
                             claimedSHA256: String?, _ state: inout State) throws -> OutputFrameRecord {
        let job = state.manifest.jobID
        guard expected.contains(frame) else { throw OutputError.unexpectedFrame(jobID: job, frame: frame) }
        if let previous = state.written[frame] {
            throw OutputError.alreadyWritten(jobID: job, frame: frame, writtenBy: previous.attempt, refusedAttempt: attempt)
        }
        let digest = FileDigest.sha256(png)
        if let claimedSHA256, claimedSHA256 != digest {
            throw OutputError.checksumMismatch(jobID: job, frame: frame, claimed: claimedSHA256, found: digest)
        }
        let name = OutputWriter.fileName(frame: frame)
        let path = directoryPath + "/" + name
        do {
            switch durability {
            case .syncEachFrame: try DurableFile.writeNew(png, to: URL(fileURLWithPath: path))
            case .batched: try OutputWriter.writeNewUnsynced(png, folder: directoryPath, name: name)
            }
        } catch let error as DurableFileError where error.alreadyExists {
            // Only possible if something else writes into the folder: never overwrite it.
            throw OutputError.io(path: path, message: "exists but is not in manifest.json (another writer in this folder?)")
        } catch {
            throw OutputError.io(path: path, message: "\(error)")
        }
        let s = state.manifest.settings
        let record = OutputFrameRecord(frame: frame, file: name, attempt: attempt, worker: worker,
                                       modelID: state.manifest.modelID, seed: s.seed, sampler: s.sampler, steps: s.steps,
                                       imageGuidance: s.imageGuidance, poseGuidance: s.poseGuidance,
                                       renderSeconds: renderSeconds, pngSHA256: digest, pngSize: png.count)
        state.written[frame] = record
        state.entryJSON[frame] = ManifestJSON.entry(record)
        state.dirty = true
        return record
    }

    /// `.batched` PNG write: on Linux an unnamed O_TMPFILE file linked into place when complete
    /// (`dp_write_new_file_tmpfile`; refuses an existing file, leaves nothing after a crash); where
    /// that is not available, a temp file next to `folder/name` (`.<name>.tmp-<pid>-<random>`, as
    /// DurableFile names them; removed on reopening if a crash leaves it), then link(2) into place,
    /// which refuses an existing file. No fsync: the journal vouches for the frame (see the file
    /// comment). Paths are strings: this runs once per frame on the coordinator's loop thread.
    static func writeNewUnsynced(_ data: Data, folder: String, name: String) throws {
        let path = folder + "/" + name
        // Linux: an unnamed file linked into place (no temp name created and removed: two
        // directory operations fewer per frame); elsewhere, or where it cannot, the temp file below.
        let rc = data.withUnsafeBytes { dp_write_new_file_tmpfile(folder, path, $0.baseAddress, $0.count) }
        switch rc {
        case 0:
            return
        case 1:
            break
        default:
            let why = String(cString: strerror(errno))
            if rc == -3 && errno == EEXIST {
                throw DurableFileError(path: path, message: "already exists (refusing to overwrite)", alreadyExists: true)
            }
            let step = rc == -1 ? "create an unnamed file in \(folder)" : rc == -2 ? "write" : "link into place"
            throw DurableFileError(path: path, message: "\(step): \(why)")
        }
        let tempPath = folder + "/" + DurableFile.temporaryName(besides: name)
        let fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 { throw DurableFileError(path: path, message: "create \(tempPath): \(String(cString: strerror(errno)))") }
        defer { unlink(tempPath) }
        let written = data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> Int in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return -1
                }
                offset += n
            }
            return offset
        }
        let writeError = written < 0 ? String(cString: strerror(errno)) : nil
        if close(fd) != 0, writeError == nil {
            throw DurableFileError(path: path, message: "close \(tempPath): \(String(cString: strerror(errno)))")
        }
        if let writeError { throw DurableFileError(path: path, message: "write \(tempPath): \(writeError)") }
        if link(tempPath, path) != 0 {
            let exists = errno == EEXIST
            throw DurableFileError(path: path, message: exists ? "already exists (refusing to overwrite)"
                                       : "link \(tempPath) -> \(path): \(String(cString: strerror(errno)))",
                                   alreadyExists: exists)
        }
    }
}

// Client uploads: a submitted job's missing inputs and, for the job that first submitted a model the
// coordinator lacks, that model's files (ChunkedUpload receives both); upload limits and idle uploads.
import DPFileKit
import DPJournal
import DPLog
import DPProtocol
import Foundation

/// A job waiting for its uploads.
final class JobUpload {
    let jobID: Int64
    let modelID: String
    /// The client connection that submitted it (the per-client upload limits count by it).
    let peer: Data
    /// Bytes the job declared it will upload (its missing inputs, plus its model if it uploads it).
    let declaredBytes: UInt64
    /// When a chunk last arrived (or the submit): an upload idle for `uploadIdleSeconds` is dropped.
    var lastActivityMs: Int64
    /// Input files still missing, by upload path.
    var pendingInputs: [String: FarmInputFile]
    /// Bytes received so far of the input being uploaded, by path (temp file in <state>/inputs).
    var received: [String: UInt64] = [:]
    init(jobID: Int64, modelID: String, peer: Data, declaredBytes: UInt64, now: Int64,
         pendingInputs: [String: FarmInputFile]) {
        self.jobID = jobID
        self.modelID = modelID
        self.peer = peer
        self.declaredBytes = declaredBytes
        lastActivityMs = now
        self.pendingInputs = pendingInputs
    }
}

/// A model being uploaded by the job that first submitted it.
final class ModelUpload {
    let ownerJob: Int64
    let staging: ModelStaging
    var received: [String: UInt64] = [:]
    var complete: Set<String> = []
    init(ownerJob: Int64, staging: ModelStaging) {
        self.ownerJob = ownerJob
        self.staging = staging
    }
}

extension Coordinator {
    func onUpload(_ peer: Data, _ requestID: UInt64, _ chunk: FarmUploadChunk) throws {
        let jobID = Int64(truncatingIfNeeded: chunk.jobID)
        guard try accessibleJob(peer, requestID, chunk.jobID, for: "upload") != nil else { return }
        guard let upload = uploads[jobID] else {
            badRequest(peer, requestID, .unknownJob, "job \(chunk.jobID) is not waiting for uploads", job: chunk.jobID)
            return
        }
        guard upload.peer == peer else {
            badRequest(peer, requestID, .unknownJob, "job \(chunk.jobID) is being uploaded by another connection",
                       job: chunk.jobID)
            return
        }
        upload.lastActivityMs = now
        var ack = FarmUploadAck()
        ack.jobID = chunk.jobID
        ack.file = chunk.file
        let path = chunk.file.path
        if let problem = RelativePath.problem(path) {
            badRequest(peer, requestID, .unknownFile, "upload for job \(jobID) refused: \(problem)", job: chunk.jobID)
            return
        }
        let accepted: Bool
        switch chunk.file.kind {
        case .model:
            accepted = try onModelChunk(peer, requestID, chunk, upload, &ack)
        case .input:
            accepted = try onInputChunk(peer, requestID, chunk, upload, &ack)
        default:
            badRequest(peer, requestID, "job \(jobID): upload of '\(path)' has no file kind", job: chunk.jobID)
            return
        }
        guard accepted else { return }
        ack.jobQueued = maybeQueue(upload)
        send(peer, .uploadAck(ack), requestID: requestID)
    }

    /// A chunk of the model file `chunk.file.path`, which only the job uploading the model sends
    /// (ChunkedUpload). When every file is in, the model is verified and installed, and the jobs
    /// waiting for it are queued (or, if it fails verification, failed). False: refused (answered).
    func onModelChunk(_ peer: Data, _ requestID: UInt64, _ chunk: FarmUploadChunk, _ upload: JobUpload,
                      _ ack: inout FarmUploadAck) throws -> Bool {
        let jobID = upload.jobID, path = chunk.file.path
        guard let model = modelUploads[upload.modelID], model.ownerJob == jobID,
              let entry = model.staging.manifest.entry(for: path) else {
            badRequest(peer, requestID, .unknownFile,
                       "job \(jobID): model file '\(path)' is not expected from this job", job: chunk.jobID)
            return false
        }
        if chunk.offset == 0 { model.complete.remove(path) }
        var received = model.received[path]
        let outcome = try ChunkedUpload.receive(offset: chunk.offset, data: chunk.data, last: chunk.last,
                                                into: ModelFileUpload(staging: model.staging, path: path),
                                                received: &received, size: entry.size, sha256: entry.sha256,
                                                label: "model file '\(path)'", job: jobID)
        model.received[path] = received
        guard case let .stored(next, complete) = outcome else {
            if case let .refused(code, message) = outcome { badRequest(peer, requestID, code, message, job: chunk.jobID) }
            return false
        }
        ack.nextOffset = next
        guard complete else { return true }
        model.complete.insert(path)
        ack.fileComplete = true
        guard model.complete.count == model.staging.manifest.files.count else { return true }
        modelUploads[upload.modelID] = nil
        do {
            try models.finishUpload(model.staging)
            log.info("model \(upload.modelID) uploaded by job \(jobID) and installed", .modelInstalled(model: upload.modelID, job: jobID))
        } catch {
            log.error("model \(upload.modelID) upload by job \(jobID) failed verification: \(error)",
                .modelUploadFailed(model: upload.modelID, job: jobID))
            for waiting in uploads.values where waiting.modelID == upload.modelID {
                uploads[waiting.jobID] = nil
                failJob(waiting.jobID, error: "model upload failed: \(error)")
            }
            badRequest(peer, requestID, .checksumMismatch, "model \(upload.modelID): \(error)",
                       job: chunk.jobID)
            return false
        }
        for waiting in Array(uploads.values) where waiting.modelID == upload.modelID && waiting.jobID != jobID {
            maybeQueue(waiting)
        }
        return true
    }

    /// A chunk of one of the job's missing inputs (ChunkedUpload), into a temp file that is renamed to
    /// its SHA-256 in <state>/inputs once complete. False: refused (answered).
    func onInputChunk(_ peer: Data, _ requestID: UInt64, _ chunk: FarmUploadChunk, _ upload: JobUpload,
                      _ ack: inout FarmUploadAck) throws -> Bool {
        let jobID = upload.jobID, path = chunk.file.path
        guard let input = upload.pendingInputs[path] else {
            badRequest(peer, requestID, .unknownFile, "job \(jobID): input '\(path)' is not expected",
                       job: chunk.jobID)
            return false
        }
        let temp = inputsDirectory.appendingPathComponent(".upload-\(jobID)-\(input.sha256)")
        var received = upload.received[path]
        let outcome = try ChunkedUpload.receive(offset: chunk.offset, data: chunk.data, last: chunk.last,
                                                into: InputFileUpload(url: temp), received: &received, size: input.size,
                                                sha256: input.sha256, label: "input '\(path)'", job: jobID)
        upload.received[path] = received
        guard case let .stored(next, complete) = outcome else {
            if case let .refused(code, message) = outcome { badRequest(peer, requestID, code, message, job: chunk.jobID) }
            return false
        }
        ack.nextOffset = next
        guard complete else { return true }
        let target = inputsDirectory.appendingPathComponent(input.sha256)
        if rename(temp.path, target.path) != 0 {
            throw CoordinatorError("cannot rename \(temp.path) to \(target.path): \(String(cString: strerror(errno)))")
        }
        upload.pendingInputs[path] = nil
        upload.received[path] = nil
        ack.fileComplete = true
        return true
    }

    /// Ends a job's upload: its temp input files are removed and, when it was uploading a model, that
    /// model upload is released (its staging folder discarded) and every other job waiting for the
    /// model fails (nobody is sending it any more). The job itself is left to the caller.
    func dropUpload(_ jobID: Int64, reason: String) {
        guard let upload = uploads.removeValue(forKey: jobID) else { return }
        let prefix = ".upload-\(jobID)-"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: inputsDirectory.path)) ?? []
        where name.hasPrefix(prefix) {
            try? FileManager.default.removeItem(at: inputsDirectory.appendingPathComponent(name))
        }
        guard let model = modelUploads[upload.modelID], model.ownerJob == jobID else { return }
        modelUploads[upload.modelID] = nil
        model.staging.discard()
        log.notice("model \(upload.modelID) upload by job \(jobID) released: \(reason)", .modelUploadReleased(model: upload.modelID, job: jobID))
        for waiting in Array(uploads.values) where waiting.modelID == upload.modelID {
            dropUpload(waiting.jobID, reason: reason)
            failJob(waiting.jobID, error: "its model \(upload.modelID) was being uploaded by job \(jobID), whose upload "
                + "ended (\(reason)); submit again")
        }
    }

    /// Uploads that received nothing for `uploadIdleSeconds` are dropped and their jobs failed
    /// (called from the loop's timer tick).
    func expireIdleUploads() {
        let limit = Int64(settings.limits.uploadIdleSeconds * 1000)
        let t = now
        for upload in uploads.values.sorted(by: { $0.jobID < $1.jobID })
        where uploads[upload.jobID] != nil && t - upload.lastActivityMs > limit {
            let reason = "no upload chunk for \(t - upload.lastActivityMs) ms (the limit is "
                + "\(settings.limits.uploadIdleSeconds) s)"
            dropUpload(upload.jobID, reason: reason)
            failJob(upload.jobID, error: "upload dropped: \(reason); submit again")
        }
    }

    /// Queues a job once its inputs and model are all here.
    @discardableResult
    func maybeQueue(_ upload: JobUpload) -> Bool {
        guard upload.pendingInputs.isEmpty, models.contains(upload.modelID), uploads[upload.jobID] != nil else {
            return false
        }
        uploads[upload.jobID] = nil
        do {
            try journal.markJobQueued(upload.jobID)
        } catch {
            log.error("job \(upload.jobID): cannot queue it: \(error)", job: upload.jobID)
            return false
        }
        log.info("job \(upload.jobID): every upload arrived; queued", .jobQueued(job: upload.jobID))
        dispatchNeeded = true
        return true
    }
}

// Client requests: submit + uploads, follow, status, cancel, workers.
import DPFileKit
import DPJournal
import DPProtocol
import Foundation

/// A job waiting for its uploads.
final class JobUpload {
    let jobID: Int64
    let modelID: String
    /// Input files still missing, by upload path.
    var pendingInputs: [String: FarmInputFile]
    /// Bytes received so far of the input being uploaded, by path (temp file in <state>/inputs).
    var received: [String: UInt64] = [:]
    init(jobID: Int64, modelID: String, pendingInputs: [String: FarmInputFile]) {
        self.jobID = jobID
        self.modelID = modelID
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
    func badRequest(_ peer: Data, _ requestID: UInt64, _ message: String, job: UInt64 = 0) {
        badRequest(peer, requestID, .badRequest, message, job: job)
    }

    func badRequest(_ peer: Data, _ requestID: UInt64, _ code: FarmErrorCode, _ message: String,
                    job: UInt64 = 0) {
        log("refused request from \(peerName(peer)): \(message)")
        send(peer, .error(FarmError(code, message, jobID: job)), requestID: requestID)
    }

    // MARK: submit

    func onSubmit(_ peer: Data, _ requestID: UInt64, _ submit: FarmSubmitJob) throws {
        var spec = submit.spec
        let manifest = ModelManifest(wire: submit.model)
        if let problem = validate(spec: spec, manifest: manifest) {
            badRequest(peer, requestID, problem)
            return
        }
        // Output folder and video on this machine; relative = under the state folder.
        spec.outputDir = resolve(spec.outputDir)
        if spec.hasVideo, !spec.video.path.isEmpty { spec.video.path = resolve(spec.video.path) }
        let frames = spec.frames.isEmpty ? spec.poses.map(\.frame).sorted() : spec.frames
        spec.frames = frames

        var missing: [FarmFileRef] = []
        var startModelUpload = false
        if !models.contains(manifest.modelID) && modelUploads[manifest.modelID] == nil {
            startModelUpload = true
            for file in manifest.files {
                var ref = FarmFileRef()
                ref.kind = .model
                ref.path = file.path
                missing.append(ref)
            }
        }
        var pendingInputs: [String: FarmInputFile] = [:]
        // Each distinct file once (a job's poses often repeat): held already, or listed to upload.
        var seenDigests: Set<String> = []
        let inputsPath = inputsDirectory.path
        for input in [spec.subject] + spec.poses.map(\.file) {
            guard seenDigests.insert(input.sha256).inserted else { continue }
            if access(inputsPath + "/" + input.sha256, F_OK) == 0 { continue }
            pendingInputs[input.path] = input
            var ref = FarmFileRef()
            ref.kind = .input
            ref.path = input.path
            missing.append(ref)
        }
        let waitsForModel = !models.contains(manifest.modelID)
        let specBytes: Data = try spec.serializedBytes()
        let record = try journal.createJob(NewJob(
            name: spec.name, spec: specBytes, modelID: manifest.modelID, priority: Int(spec.priority),
            order: spec.order == .preview ? .preview : .frame, outputDir: spec.outputDir,
            videoPath: spec.video.path.isEmpty ? nil : spec.video.path,
            videoFPS: spec.video.fps == 0 ? 30 : Int(spec.video.fps), frames: frames.map { Int($0) },
            initialState: pendingInputs.isEmpty && !waitsForModel ? .queued : .uploading, ownerKey: sender.key))
        if startModelUpload {
            do {
                modelUploads[manifest.modelID] = ModelUpload(ownerJob: record.id, staging: try models.beginUpload(manifest))
            } catch {
                _ = try journal.failJob(record.id, error: "model upload refused: \(error)")
                badRequest(peer, requestID, "model \(manifest.modelID): \(error)", job: UInt64(record.id))
                return
            }
        }
        if record.state == .uploading {
            uploads[record.id] = JobUpload(jobID: record.id, modelID: manifest.modelID, pendingInputs: pendingInputs)
        } else {
            // Everything is here: open the job's context now, with the spec already decoded (the
            // first dispatch would otherwise read it back from the journal and decode it again).
            do {
                jobContexts[record.id] = try JobContext(record: record, spec: spec, doneFrames: [], models: models,
                                                        inputs: inputsDirectory)
            } catch {
                log("job \(record.id): cannot open its context yet (\(error)); the first dispatch tries again")
            }
        }
        var reply = FarmSubmitReply()
        reply.jobID = UInt64(record.id)
        reply.missing = missing
        send(peer, .submitReply(reply), requestID: requestID)
        log("job \(record.id) '\(spec.name)' submitted by \(peerName(peer)): \(frames.count) frame(s), model "
            + "\(manifest.modelID.prefix(12)) (\(models.contains(manifest.modelID) ? "held" : "to upload")), "
            + "\(missing.count) file(s) to upload, output \(spec.outputDir)")
        dispatchNeeded = true
    }

    func resolve(_ path: String) -> String {
        if path.hasPrefix("/") { return URL(fileURLWithPath: path).standardizedFileURL.path }
        return settings.stateDirectory.appendingPathComponent(path).standardizedFileURL.path
    }

    /// Why a submitted job is refused (nil = acceptable).
    func validate(spec: FarmJobSpec, manifest: ModelManifest) -> String? {
        guard spec.modelID == manifest.modelID else {
            return "job spec names model \(spec.modelID), the manifest is model \(manifest.modelID)"
        }
        do { try manifest.validate() } catch { return "model manifest refused: \(error)" }
        for file in manifest.files {
            if let problem = RelativePath.problem(file.path) { return "model manifest refused: \(problem)" }
        }
        guard !manifest.files.isEmpty else { return "model manifest lists no files" }
        var paths: Set<String> = []
        for input in [spec.subject] + spec.poses.map(\.file) {
            if let problem = RelativePath.problem(input.path) { return "input refused: \(problem)" }
            guard FileDigest.isHexSHA256(input.sha256) else {
                return "input '\(input.path)': sha256 '\(input.sha256)' is not 64 lowercase hex digits"
            }
            guard paths.insert(input.path).inserted else { return "input path '\(input.path)' listed twice" }
        }
        guard !spec.poses.isEmpty else { return "job lists no poses" }
        let poseFrames = Set(spec.poses.map(\.frame))
        guard poseFrames.count == spec.poses.count else { return "a pose frame number is listed twice" }
        var seen: Set<UInt32> = []
        for frame in spec.frames {
            guard poseFrames.contains(frame) else { return "frame \(frame) has no pose in the job" }
            guard seen.insert(frame).inserted else { return "frame \(frame) listed twice" }
        }
        guard !spec.outputDir.isEmpty else { return "job has no output folder" }
        if !spec.outputDir.hasPrefix("/"), let problem = RelativePath.problem(spec.outputDir) {
            return "output folder refused: \(problem)"
        }
        if spec.hasVideo, !spec.video.path.isEmpty, !spec.video.path.hasPrefix("/"),
           let problem = RelativePath.problem(spec.video.path) {
            return "video path refused: \(problem)"
        }
        return nil
    }

    // MARK: uploads

    func onUpload(_ peer: Data, _ requestID: UInt64, _ chunk: FarmUploadChunk) throws {
        let jobID = Int64(truncatingIfNeeded: chunk.jobID)
        guard try accessibleJob(peer, requestID, chunk.jobID, for: "upload") != nil else { return }
        guard let upload = uploads[jobID] else {
            badRequest(peer, requestID, .unknownJob, "job \(chunk.jobID) is not waiting for uploads", job: chunk.jobID)
            return
        }
        var ack = FarmUploadAck()
        ack.jobID = chunk.jobID
        ack.file = chunk.file
        let path = chunk.file.path
        if let problem = RelativePath.problem(path) {
            badRequest(peer, requestID, .unknownFile, "upload for job \(jobID) refused: \(problem)", job: chunk.jobID)
            return
        }
        switch chunk.file.kind {
        case .model:
            guard let model = modelUploads[upload.modelID], model.ownerJob == jobID,
                  let entry = model.staging.manifest.entry(for: path) else {
                badRequest(peer, requestID, .unknownFile,
                           "job \(jobID): model file '\(path)' is not expected from this job", job: chunk.jobID)
                return
            }
            if chunk.offset == 0 && (model.received[path] ?? 0) != 0 {
                try model.staging.reset(path: path)
                model.received[path] = 0
                model.complete.remove(path)
            }
            let have = model.received[path] ?? 0
            guard chunk.offset == have else {
                badRequest(peer, requestID, "job \(jobID): model file '\(path)': chunk at offset \(chunk.offset), "
                    + "expected \(have)", job: chunk.jobID)
                return
            }
            do {
                try model.staging.write(path: path, offset: chunk.offset, data: chunk.data)
            } catch {
                badRequest(peer, requestID, "job \(jobID): model file '\(path)': \(error)", job: chunk.jobID)
                return
            }
            model.received[path] = have + UInt64(chunk.data.count)
            ack.nextOffset = have + UInt64(chunk.data.count)
            if chunk.last {
                let found = try? FileDigest.sha256(ofFile: model.staging.fileURL(path).path)
                guard let found, found.size == entry.size, found.sha256 == entry.sha256 else {
                    try model.staging.reset(path: path)
                    model.received[path] = 0
                    badRequest(peer, requestID, .checksumMismatch,
                               "job \(jobID): model file '\(path)': expected \(entry.size) bytes with sha256 "
                                   + "\(entry.sha256), received \(found?.size ?? 0) bytes with sha256 "
                                   + "\(found?.sha256 ?? "?"); send it again from offset 0", job: chunk.jobID)
                    return
                }
                model.complete.insert(path)
                ack.fileComplete = true
                if model.complete.count == model.staging.manifest.files.count {
                    modelUploads[upload.modelID] = nil
                    do {
                        try models.finishUpload(model.staging)
                        log("model \(upload.modelID) uploaded by job \(jobID) and installed")
                    } catch {
                        log("model \(upload.modelID) upload by job \(jobID) failed verification: \(error)")
                        for waiting in uploads.values where waiting.modelID == upload.modelID {
                            uploads[waiting.jobID] = nil
                            failJob(waiting.jobID, error: "model upload failed: \(error)")
                        }
                        badRequest(peer, requestID, .checksumMismatch, "model \(upload.modelID): \(error)",
                                   job: chunk.jobID)
                        return
                    }
                    for waiting in Array(uploads.values) where waiting.modelID == upload.modelID && waiting.jobID != jobID {
                        maybeQueue(waiting)
                    }
                }
            }
        case .input:
            guard let input = upload.pendingInputs[path] else {
                badRequest(peer, requestID, .unknownFile, "job \(jobID): input '\(path)' is not expected",
                           job: chunk.jobID)
                return
            }
            let temp = inputsDirectory.appendingPathComponent(".upload-\(jobID)-\(input.sha256)")
            if chunk.offset == 0 {
                guard FileManager.default.createFile(atPath: temp.path, contents: nil) else {
                    throw CoordinatorError("cannot create \(temp.path)")
                }
                upload.received[path] = 0
            }
            let have = upload.received[path] ?? 0
            guard chunk.offset == have, chunk.offset + UInt64(chunk.data.count) <= input.size else {
                badRequest(peer, requestID, "job \(jobID): input '\(path)': chunk of \(chunk.data.count) bytes at offset "
                    + "\(chunk.offset), expected offset \(have) within \(input.size) bytes", job: chunk.jobID)
                return
            }
            let handle = try FileHandle(forWritingTo: temp)
            try handle.seek(toOffset: chunk.offset)
            try handle.write(contentsOf: chunk.data)
            try handle.close()
            upload.received[path] = have + UInt64(chunk.data.count)
            ack.nextOffset = have + UInt64(chunk.data.count)
            if chunk.last {
                let found = try? FileDigest.sha256(ofFile: temp.path)
                guard let found, found.size == input.size, found.sha256 == input.sha256 else {
                    try? FileManager.default.removeItem(at: temp)
                    upload.received[path] = nil
                    badRequest(peer, requestID, .checksumMismatch,
                               "job \(jobID): input '\(path)': expected \(input.size) bytes with sha256 \(input.sha256), "
                                   + "received \(found?.size ?? 0) bytes with sha256 \(found?.sha256 ?? "?"); "
                                   + "send it again from offset 0", job: chunk.jobID)
                    return
                }
                let target = inputsDirectory.appendingPathComponent(input.sha256)
                if rename(temp.path, target.path) != 0 {
                    throw CoordinatorError("cannot rename \(temp.path) to \(target.path): \(String(cString: strerror(errno)))")
                }
                upload.pendingInputs[path] = nil
                upload.received[path] = nil
                ack.fileComplete = true
            }
        default:
            badRequest(peer, requestID, "job \(jobID): upload of '\(path)' has no file kind", job: chunk.jobID)
            return
        }
        ack.jobQueued = maybeQueue(upload)
        send(peer, .uploadAck(ack), requestID: requestID)
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
            log("job \(upload.jobID): cannot queue it: \(error)")
            return false
        }
        log("job \(upload.jobID): every upload arrived; queued")
        dispatchNeeded = true
        return true
    }

    // MARK: follow, status, cancel, workers

    func onFollow(_ peer: Data, _ requestID: UInt64, _ follow: FarmFollowJob) throws {
        let id = Int64(truncatingIfNeeded: follow.jobID)
        guard let record = try accessibleJob(peer, requestID, follow.jobID, for: "follow") else { return }
        let follower = Follower(peer: peer, requestID: requestID, includePNG: follow.includePng)
        sendEvent(follower, job: id, nil)
        if record.state.isFinished && !finishing.contains(id) {
            var finished = FarmJobFinished()
            finished.state = FarmJobState(record.state)
            finished.videoPath = record.videoWritten ? record.videoPath ?? "" : ""
            finished.message = record.error ?? ""
            sendEvent(follower, job: id, .jobFinished(finished))
            return
        }
        followers[id, default: []].append(follower)
    }

    func jobStatus(_ record: JobRecord) -> FarmJobStatus {
        var status = FarmJobStatus()
        status.jobID = UInt64(record.id)
        status.name = record.name
        status.state = FarmJobState(record.state)
        status.modelID = record.modelID
        status.priority = Int32(record.priority)
        status.order = record.order == .preview ? .preview : .frame
        status.counts = counts(record.id)
        status.outputDir = record.outputDir
        status.createdUnixMs = UInt64(max(0, record.createdAtMs))
        status.updatedUnixMs = UInt64(max(0, record.updatedAtMs))
        status.renderSeconds = (try? journal.progress(job: record.id).renderSeconds) ?? 0
        if record.videoWritten { status.videoPath = record.videoPath ?? "" }
        status.error = record.error ?? ""
        status.framesByWorker = ((try? journal.framesDoneByWorker(job: record.id)) ?? []).map {
            var w = FarmWorkerFrames()
            w.worker = $0.worker
            w.frames = UInt32(clamping: $0.frames)
            return w
        }
        return status
    }

    func onStatus(_ peer: Data, _ requestID: UInt64, _ request: FarmStatusRequest) throws {
        var reply = FarmStatusReply()
        if request.jobID == 0 {
            reply.jobs = try journal.jobs(includingSpec: false).filter(senderMayAccess).map(jobStatus)
        } else {
            guard let record = try accessibleJob(peer, requestID, request.jobID, for: "status") else { return }
            reply.jobs = [jobStatus(record)]
        }
        send(peer, .statusReply(reply), requestID: requestID)
    }

    func onCancel(_ peer: Data, _ requestID: UInt64, _ request: FarmCancelJob) throws {
        let id = Int64(truncatingIfNeeded: request.jobID)
        guard try accessibleJob(peer, requestID, request.jobID, for: "cancel") != nil else { return }
        let running = try journal.cancelJob(id, reason: "cancelled by \(peerName(peer))")
        uploads[id] = nil
        cancelOnWorkers(job: id, attempts: running, reason: "job \(id) cancelled")
        let state = try journal.job(id, includingSpec: false)?.state ?? .cancelled
        var reply = FarmCancelReply()
        reply.jobID = request.jobID
        reply.state = FarmJobState(state)
        send(peer, .cancelReply(reply), requestID: requestID)
        log("job \(id) cancel requested by \(peerName(peer)): now \(state.rawValue)"
            + (running.isEmpty ? "" : ", stopping attempts \(running.map(\.id))"))
        if state == .cancelled, followers[id] != nil || jobContexts[id] != nil {
            announceFinished(id, state: state, video: nil, message: "cancelled")
        }
    }

    func onWorkers(_ peer: Data, _ requestID: UInt64) throws {
        var reply = FarmWorkersReply()
        var connected: Set<String> = []
        let records = Dictionary(try journal.workers().map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for session in sessions.values.sorted(by: { $0.name < $1.name }) {
            connected.insert(session.name)
            var w = FarmWorkerStatus()
            w.name = session.name
            w.host = session.host
            w.slots = UInt32(session.slots)
            w.busy = UInt32(session.attempts.count)
            w.cachedModelIds = session.models.sorted()
            w.lastSeenUnixMs = UInt64(max(0, session.lastHeardMs))
            w.connected = true
            w.framesDone = UInt64(records[session.name]?.framesDone ?? 0)
            w.attempts = session.attempts.values.sorted { $0.id < $1.id }.map {
                var p = FarmAttemptProgress()
                p.attemptID = UInt64($0.id)
                p.step = UInt32($0.step)
                p.totalSteps = UInt32($0.total)
                return p
            }
            reply.workers.append(w)
        }
        for record in records.values.sorted(by: { $0.name < $1.name }) where !connected.contains(record.name) {
            var w = FarmWorkerStatus()
            w.name = record.name
            w.host.hostname = record.host
            w.slots = UInt32(record.slots)
            w.lastSeenUnixMs = UInt64(max(0, record.lastSeenMs))
            w.connected = false
            w.framesDone = UInt64(record.framesDone)
            reply.workers.append(w)
        }
        send(peer, .workersReply(reply), requestID: requestID)
    }
}

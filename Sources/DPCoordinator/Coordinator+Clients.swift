// Client requests: submit + uploads, follow, status, cancel, workers.
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
    func badRequest(_ peer: Data, _ requestID: UInt64, _ message: String, job: UInt64 = 0) {
        badRequest(peer, requestID, .badRequest, message, job: job)
    }

    func badRequest(_ peer: Data, _ requestID: UInt64, _ code: FarmErrorCode, _ message: String,
                    job: UInt64 = 0) {
        log.warning("refused request from \(peerName(peer)): \(peer: message, limit: 600)")
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
        // Output folder and video: names inside the output root (OutputConfinement.swift), refused
        // before anything is journalled.
        switch outputPlacement.place(outputDir: spec.outputDir,
                                     video: spec.hasVideo && !spec.video.path.isEmpty ? spec.video.path : nil) {
        case .failure(let why):
            badRequest(peer, requestID, why.message)
            return
        case .success(let placed):
            spec.outputDir = placed.outputDir
            if let video = placed.video { spec.video.path = video }
        }
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
        // Upload limits (DESIGN.md, "Limits"): jobs uploading at once, in all and from this client,
        // and the bytes this client's uploads declare; checked before anything is journalled.
        var declared: UInt64 = startModelUpload ? manifest.files.reduce(UInt64(0)) { $0 &+ $1.size } : 0
        for input in pendingInputs.values { declared = declared &+ input.size }  // each bounded by validate()
        if !pendingInputs.isEmpty || waitsForModel {
            let limits = settings.limits
            let mine = uploads.values.filter { $0.peer == peer }
            let mineBytes = mine.reduce(UInt64(0)) { $0 &+ $1.declaredBytes }
            if uploads.count >= limits.maxConcurrentUploads {
                badRequest(peer, requestID, "\(uploads.count) jobs are uploading, the most the coordinator takes at once "
                    + "(\(limits.maxConcurrentUploads)); submit again when one has finished")
                return
            }
            if mine.count >= limits.maxConcurrentUploadsPerClient {
                badRequest(peer, requestID, "this connection has \(mine.count) jobs uploading, the most one client may "
                    + "(\(limits.maxConcurrentUploadsPerClient)); submit again when one has finished")
                return
            }
            if mineBytes &+ declared > limits.maxUploadBytesPerClient {
                badRequest(peer, requestID, "this connection's uploads would declare \(mineBytes &+ declared) bytes, more "
                    + "than the \(limits.maxUploadBytesPerClient) one client may have in flight")
                return
            }
        }
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
            uploads[record.id] = JobUpload(jobID: record.id, modelID: manifest.modelID, peer: peer, declaredBytes: declared,
                                           now: now, pendingInputs: pendingInputs)
        } else {
            // Everything is here: open the job's context now, with the spec already decoded (the
            // first dispatch would otherwise read it back from the journal and decode it again).
            do {
                jobContexts[record.id] = try JobContext(record: record, spec: spec, doneFrames: [], models: models,
                                                        inputs: inputsDirectory, placement: outputPlacement)
            } catch {
                log.warning("job \(record.id): cannot open its context yet (\(error)); the first dispatch tries again", job: record.id)
            }
        }
        var reply = FarmSubmitReply()
        reply.jobID = UInt64(record.id)
        reply.missing = missing
        send(peer, .submitReply(reply), requestID: requestID)
        log.info("job \(record.id) '\(peer: spec.name)' submitted by \(peerName(peer)): \(frames.count) frame(s), model "
            + "\(manifest.modelID.prefix(12)) (\(models.contains(manifest.modelID) ? "held" : "to upload")), "
            + "\(missing.count) file(s) to upload, output \(peer: spec.outputDir)",
                .jobSubmitted(job: record.id, frames: frames.count, uploads: missing.count, modelHeld: models.contains(manifest.modelID)))
        dispatchNeeded = true
    }

    /// Why a submitted job is refused (nil = acceptable).
    func validate(spec: FarmJobSpec, manifest: ModelManifest) -> String? {
        // Hard limits first (DESIGN.md, "Limits"): nothing below runs over an unbounded list.
        let limits = settings.limits
        guard spec.name.utf8.count <= limits.maxNameBytes else {
            return "job name: \(spec.name.utf8.count) bytes, more than the \(limits.maxNameBytes) allowed"
        }
        guard spec.poses.count <= limits.maxFramesPerJob, spec.frames.count <= limits.maxFramesPerJob else {
            return "job lists \(spec.poses.count) poses and \(spec.frames.count) frames, more than the "
                + "\(limits.maxFramesPerJob) allowed"
        }
        guard manifest.files.count <= limits.maxModelFiles else {
            return "model manifest lists \(manifest.files.count) files, more than the \(limits.maxModelFiles) allowed"
        }
        for path in [spec.outputDir, spec.video.path, spec.subject.path] + spec.poses.map(\.file.path)
            + manifest.files.map(\.path) where path.utf8.count > limits.maxPathBytes {
            return "path '\(PeerText.escaped(path, limit: 80))': \(path.utf8.count) bytes, more than the "
                + "\(limits.maxPathBytes) allowed"
        }
        var inputBytes: UInt64 = 0
        for input in [spec.subject] + spec.poses.map(\.file) {
            let (sum, overflow) = inputBytes.addingReportingOverflow(input.size)
            guard !overflow, sum <= limits.maxInputBytesPerJob else {
                return "the job's inputs declare more than the \(limits.maxInputBytesPerJob) bytes allowed"
            }
            inputBytes = sum
        }
        var modelBytes: UInt64 = 0
        for file in manifest.files {
            let (sum, overflow) = modelBytes.addingReportingOverflow(UInt64(clamping: file.size))
            guard !overflow, sum <= limits.maxModelUploadBytes else {
                return "model manifest declares more than the \(limits.maxModelUploadBytes) bytes allowed"
            }
            modelBytes = sum
        }
        // The render request: the same check, in the same words, as `dp-coord submit` and the workers make
        // (DPFileKit's RenderRequest), before anything is journalled.
        do { _ = try RenderRequest(spec: spec) } catch { return "\(error)" }
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

    // MARK: follow, status, cancel, workers

    func onFollow(_ peer: Data, _ requestID: UInt64, _ follow: FarmFollowJob) throws {
        let id = Int64(truncatingIfNeeded: follow.jobID)
        guard let record = try accessibleJob(peer, requestID, follow.jobID, for: "follow") else { return }
        let limits = settings.limits
        let following = followers[id]?.count ?? 0
        let streams = followers.values.reduce(0) { n, list in n + list.filter { $0.peer == peer }.count }
        if !record.state.isFinished || finishing.contains(id) {
            guard following < limits.maxFollowersPerJob else {
                badRequest(peer, requestID, "job \(id) has \(following) followers, the most it takes "
                    + "(\(limits.maxFollowersPerJob))", job: follow.jobID)
                return
            }
            guard streams < limits.maxFollowsPerClient else {
                badRequest(peer, requestID, "this connection follows \(streams) jobs, the most one client may "
                    + "(\(limits.maxFollowsPerClient))", job: follow.jobID)
                return
            }
        }
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
        sendWorkerPhases(follower, job: id)  // Coordinator+Phases.swift
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
        addPhases(&status, job: record.id)  // Coordinator+Phases.swift
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
            // At most `maxStatusJobs`, the newest; a marker entry (job id 0) says how many were left out.
            let all = try journal.jobs(includingSpec: false).filter(senderMayAccess)
            let limit = max(1, settings.limits.maxStatusJobs)
            reply.jobs = all.suffix(limit).map(jobStatus)
            if all.count > limit {
                var marker = FarmJobStatus()
                marker.jobID = 0
                marker.name = "(truncated)"
                marker.error = "truncated: \(all.count - limit) older job(s) not listed (the newest \(limit) are); "
                    + "ask for one by id"
                reply.jobs.append(marker)
            }
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
        if uploads[id] != nil { dropUpload(id, reason: "job \(id) was cancelled") }
        cancelOnWorkers(job: id, attempts: running, reason: "job \(id) cancelled")
        let state = try journal.job(id, includingSpec: false)?.state ?? .cancelled
        var reply = FarmCancelReply()
        reply.jobID = request.jobID
        reply.state = FarmJobState(state)
        send(peer, .cancelReply(reply), requestID: requestID)
        log.notice("job \(id) cancel requested by \(peerName(peer)): now \(state.rawValue)"
            + (running.isEmpty ? "" : ", stopping attempts \(running.map(\.id))"), .jobCancelRequested(job: id))
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
            if let phase = session.phaseState.phase { w.phase = phase }  // Coordinator+Phases.swift
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
        // Disconnected workers: the most recently seen `maxStatusWorkers`, then a marker if more exist.
        let offline = records.values.filter { !connected.contains($0.name) }
        let shown = offline.sorted { ($0.lastSeenMs, $1.name) > ($1.lastSeenMs, $0.name) }.prefix(max(1, settings.limits.maxStatusWorkers))
        for record in shown.sorted(by: { $0.name < $1.name }) {
            var w = FarmWorkerStatus()
            w.name = record.name
            w.host.hostname = record.host
            w.slots = UInt32(record.slots)
            w.lastSeenUnixMs = UInt64(max(0, record.lastSeenMs))
            w.connected = false
            w.framesDone = UInt64(record.framesDone)
            reply.workers.append(w)
        }
        if offline.count > shown.count {
            var marker = FarmWorkerStatus()
            marker.name = "(truncated: \(offline.count - shown.count) disconnected worker(s) seen longest ago not listed)"
            reply.workers.append(marker)
        }
        send(peer, .workersReply(reply), requestID: requestID)
    }
}

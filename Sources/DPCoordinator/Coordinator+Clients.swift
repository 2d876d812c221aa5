// Client requests: submit, follow, status, cancel, workers (uploads: Coordinator+Uploads.swift).
import DPFileKit
import DPJournal
import DPLog
import DPProtocol
import Foundation

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
        if let problem = placeOutputs(&spec) {
            badRequest(peer, requestID, problem)
            return
        }
        let frames = spec.frames.isEmpty ? spec.poses.map(\.frame).sorted() : spec.frames
        spec.frames = frames

        let (missing, startModelUpload, pendingInputs) = filesToUpload(spec, manifest)
        let waitsForModel = !models.contains(manifest.modelID)
        // Upload limits (DESIGN.md, "Limits"): jobs uploading at once, in all and from this client,
        // and the bytes this client's uploads declare; checked before anything is journalled.
        var declared: UInt64 = startModelUpload ? manifest.files.reduce(UInt64(0)) { $0 &+ $1.size } : 0
        for input in pendingInputs.values { declared = declared &+ input.size }  // each bounded by validate()
        if !pendingInputs.isEmpty || waitsForModel, let problem = uploadLimitProblem(peer, declared: declared) {
            badRequest(peer, requestID, problem)
            return
        }
        let record = try createJob(spec, modelID: manifest.modelID,
                                   initialState: pendingInputs.isEmpty && !waitsForModel ? .queued : .uploading)
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

    /// Output folder and video: names inside the output root (OutputConfinement.swift), refused
    /// before anything is journalled. Sets the spec's placed paths; returns why it is refused.
    func placeOutputs(_ spec: inout FarmJobSpec) -> String? {
        switch outputPlacement.place(outputDir: spec.outputDir,
                                     video: spec.hasVideo && !spec.video.path.isEmpty ? spec.video.path : nil) {
        case .failure(let why):
            return why.message
        case .success(let placed):
            spec.outputDir = placed.outputDir
            if let video = placed.video { spec.video.path = video }
            return nil
        }
    }

    /// Journals a submitted (checked, placed) job and its frames, owned by the sender's key.
    func createJob(_ spec: FarmJobSpec, modelID: String, initialState: JobState) throws -> JobRecord {
        let specBytes: Data = try spec.serializedBytes()
        return try journal.createJob(NewJob(
            name: spec.name, spec: specBytes, modelID: modelID, priority: Int(spec.priority),
            order: spec.order == .preview ? .preview : .frame, outputDir: spec.outputDir,
            videoPath: spec.video.path.isEmpty ? nil : spec.video.path,
            videoFPS: spec.video.fps == 0 ? 30 : Int(spec.video.fps), frames: spec.frames.map { Int($0) },
            initialState: initialState, ownerKey: sender.key))
    }

    /// The files a submitted job must upload: the model's (when the coordinator lacks it and no other job
    /// is uploading it: then this job uploads it) and each distinct input it does not hold.
    func filesToUpload(_ spec: FarmJobSpec, _ manifest: ModelManifest)
        -> (missing: [FarmFileRef], startModelUpload: Bool, pendingInputs: [String: FarmInputFile]) {
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
        return (missing, startModelUpload, pendingInputs)
    }

    /// Why one more uploading job declaring `declared` bytes from `peer` is refused (nil = it is not).
    func uploadLimitProblem(_ peer: Data, declared: UInt64) -> String? {
        let limits = settings.limits
        let mine = uploads.values.filter { $0.peer == peer }
        let mineBytes = mine.reduce(UInt64(0)) { $0 &+ $1.declaredBytes }
        if uploads.count >= limits.maxConcurrentUploads {
            return "\(uploads.count) jobs are uploading, the most the coordinator takes at once "
                + "(\(limits.maxConcurrentUploads)); submit again when one has finished"
        }
        if mine.count >= limits.maxConcurrentUploadsPerClient {
            return "this connection has \(mine.count) jobs uploading, the most one client may "
                + "(\(limits.maxConcurrentUploadsPerClient)); submit again when one has finished"
        }
        if mineBytes &+ declared > limits.maxUploadBytesPerClient {
            return "this connection's uploads would declare \(mineBytes &+ declared) bytes, more "
                + "than the \(limits.maxUploadBytesPerClient) one client may have in flight"
        }
        return nil
    }

    /// Why a submitted job is refused (nil = acceptable).
    func validate(spec: FarmJobSpec, manifest: ModelManifest) -> String? {
        if let problem = limitProblem(spec: spec, manifest: manifest) { return problem }
        return contentProblem(spec: spec, manifest: manifest)
    }

    /// The hard limits first (DESIGN.md, "Limits"): nothing after them runs over an unbounded list.
    func limitProblem(spec: FarmJobSpec, manifest: ModelManifest) -> String? {
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
        return nil
    }

    /// Why a job within the limits is refused: its settings, model manifest, inputs, poses and frames.
    func contentProblem(spec: FarmJobSpec, manifest: ModelManifest) -> String? {
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
        try apply(lifecycle.jobCancelled(id, running: running), from: nil)
        let state = try journal.job(id, includingSpec: false)?.state ?? .cancelled
        var reply = FarmCancelReply()
        reply.jobID = request.jobID
        reply.state = FarmJobState(state)
        send(peer, .cancelReply(reply), requestID: requestID)
        log.notice("job \(id) cancel requested by \(peerName(peer)): now \(state.rawValue)"
            + (running.isEmpty ? "" : ", stopping attempts \(running.map(\.id))"), .jobCancelRequested(job: id))
        try apply(lifecycle.cancelAnswered(id, state: state, observed: followers[id] != nil || jobContexts[id] != nil),
                  from: nil)
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

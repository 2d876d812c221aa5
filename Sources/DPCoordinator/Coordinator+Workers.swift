// Worker sessions, dispatch by credits, results with fencing, and job completion.
import DPFileKit
import DPJournal
import DPLog
import DPProtocol
import Foundation
import Synchronization

extension Coordinator {
    // MARK: sessions

    func onHello(_ peer: Data, _ hello: FarmHello) throws {
        if let problem = helloProblem(hello) {
            log.warning("rejected hello from \(peerName(peer)): \(problem)", .helloRejected(peer: peerName(peer)))
            send(peer, .error(FarmError(.badRequest, "hello refused: \(problem)")))
            return
        }
        // A name belongs to its key: another key's Hello gets no session and none of its attempts.
        if let problem = try workerNameProblem(hello.workerName) {
            log.warning("rejected hello from \(peerName(peer)), \(sender.label): \(problem)", .helloRejected(peer: peerName(peer)))
            send(peer, .error(FarmError(.badRequest, problem)))
            return
        }
        // Earlier sessions of this worker (same connection, or an older one by name) end here.
        var previous: [LiveAttempt] = []
        for old in [sessions[peer], sessionByName[hello.workerName].flatMap { sessions[$0] }].compactMap({ $0 }) {
            guard sessions[old.routingID] != nil else { continue }
            previous.append(contentsOf: old.attempts.values)
            sessions[old.routingID] = nil
            if sessionByName[old.name] == old.routingID { sessionByName[old.name] = nil }
        }
        let session = WorkerSession(routingID: peer, hello: hello, key: sender.key, now: now)
        // Attempts in the journal are re-adopted only by the key that owns the name.
        let ownsRecordedAttempts = try sender.key == nil || journal.workerKey(hello.workerName) == sender.key
        var adopted: [UInt64] = []
        var refused: [UInt64] = []
        for id in hello.runningAttemptIds {
            let attemptID = Int64(truncatingIfNeeded: id)
            if ownsRecordedAttempts, let record = try journal.attempt(attemptID), record.worker == hello.workerName,
               try journal.isCurrent(attemptID) {
                session.attempts[attemptID] = LiveAttempt(id: attemptID, jobID: record.jobID, frame: record.frame,
                                                          step: 0, total: 0, lastProgressMs: now)
                adopted.append(id)
            } else {
                refused.append(id)
            }
        }
        for old in previous where session.attempts[old.id] == nil {
            // Its worker came back without it (restarted or lost it mid-attempt): a failure of the frame.
            workerLostAttempt(old.id, worker: hello.workerName, reason: "worker '\(hello.workerName)' reconnected without it")
        }
        sessions[peer] = session
        sessionByName[session.name] = peer
        try journal.recordWorker(name: session.name, host: hello.host.hostname, slots: session.slots,
                                 threads: session.threads, key: session.key)
        var welcome = FarmWelcome()
        welcome.coordinatorID = coordinatorID
        welcome.heartbeatIntervalMs = UInt32(settings.heartbeatIntervalMs)
        welcome.heartbeatLiveness = UInt32(settings.heartbeatLiveness)
        welcome.maxMessageBytes = UInt64(settings.maxMessageBytes)
        welcome.modelChunkBytes = UInt32(min(settings.modelChunkBytes, models.maxChunkBytes))
        welcome.adoptedAttemptIds = adopted
        send(peer, .welcome(welcome))
        for id in refused {
            var cancel = FarmCancel()
            cancel.attemptID = id
            cancel.reason = "attempt \(id) is no longer current"
            send(peer, .cancel(cancel))
        }
        log.info("worker '\(peer: session.name)' registered from \(peerName(peer)): \(session.slots) slot(s), host "
            + "'\(peer: hello.host.hostname)', \(hello.cachedModelIds.count) cached model(s)"
            + (adopted.isEmpty ? "" : ", re-adopted attempts \(adopted)")
            + (refused.isEmpty ? "" : ", cancelled stale attempts \(refused)"), .workerRegistered(worker: session.name, slots: session.slots))
        dispatchNeeded = true
    }

    /// Why a Hello is refused (nil = acceptable): the hard limits of DESIGN.md's "Limits" table.
    func helloProblem(_ hello: FarmHello) -> String? {
        let limits = settings.limits
        let name = hello.workerName
        guard !name.isEmpty, name.utf8.count <= limits.maxNameBytes else {
            return "worker name of \(name.utf8.count) bytes (expected 1 to \(limits.maxNameBytes))"
        }
        guard !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
            return "worker name '\(peer: name)' holds control characters"
        }
        guard hello.slots >= 1, hello.slots <= UInt32(clamping: limits.maxSlots) else {
            return "worker '\(peer: name)': \(hello.slots) slots (expected 1 to \(limits.maxSlots))"
        }
        // A worker holds at most what its credit cap lets it ask for: one frame per slot rendering plus the
        // frames it prefetched (a worker restarting its session after a coordinator restart lists them all).
        let held = Int(hello.slots) * (1 + limits.maxPrefetchPerSlot)
        guard hello.runningAttemptIds.count <= held else {
            return "worker '\(peer: name)' lists \(hello.runningAttemptIds.count) running attempts with "
                + "\(hello.slots) slot(s) (at most \(held): slots x (1 + \(limits.maxPrefetchPerSlot) prefetched))"
        }
        guard hello.cachedModelIds.count <= limits.maxCachedModels,
              hello.cachedModelIds.allSatisfy({ FileDigest.isHexSHA256($0) }) else {
            return "worker '\(peer: name)': \(hello.cachedModelIds.count) cached model ids (expected at most "
                + "\(limits.maxCachedModels), each 64 lowercase hex digits)"
        }
        let host = hello.host
        let fields = [host.hostname, host.os, host.cpuModel, host.workerVersion] + host.cpuFeatures
        guard host.cpuFeatures.count <= limits.maxCPUFeatures,
              fields.allSatisfy({ $0.utf8.count <= limits.maxHostFieldBytes }) else {
            return "worker '\(peer: name)': host description over its limits (\(limits.maxCPUFeatures) cpu features, "
                + "\(limits.maxHostFieldBytes) bytes a field)"
        }
        return nil
    }

    /// The most credit a session may hold: slots x (1 + the prefetch a worker may ask for).
    func creditCap(_ session: WorkerSession) -> Int {
        session.slots * (1 + settings.limits.maxPrefetchPerSlot)
    }

    /// Adds `credits` to the session's credit, up to `creditCap`; the excess is ignored (logged once).
    func grantCredit(_ session: WorkerSession, _ credits: UInt32) {
        let cap = creditCap(session)
        let total = session.credit + Int(credits) + session.attempts.count
        if total > cap {
            if !session.warnedCredit {
                session.warnedCredit = true
                log.warning("worker '\(peer: session.name)' asked for credit beyond its cap (\(session.slots) slot(s) x "
                    + "\(1 + settings.limits.maxPrefetchPerSlot) = \(cap) frames held or asked for): excess ignored",
                        .creditBeyondCap(worker: session.name))
            }
            session.credit = max(session.credit, cap - session.attempts.count)
        } else {
            session.credit += Int(credits)
        }
    }

    /// Ends a session. Attempts it still holds (it died, went silent or its connection went away
    /// mid-attempt; a Goodbye hands its attempts back before this) count as failed attempts of their
    /// frames (`workerLostAttempt`): a frame that takes down 3 different workers fails.
    func endSession(_ session: WorkerSession, cause: WorkerDropCause = .gone, reason: String) {
        guard sessions[session.routingID] === session else { return }
        sessions[session.routingID] = nil
        if sessionByName[session.name] == session.routingID { sessionByName[session.name] = nil }
        let ids = session.attempts.keys.sorted()
        session.attempts.removeAll()
        for id in ids { workerLostAttempt(id, worker: session.name, reason: "worker '\(session.name)' \(reason)") }
        log.notice("worker '\(peer: session.name)' (\(peerName(session.routingID))) dropped: \(peer: reason, limit: 400)"
            + (ids.isEmpty ? "" : "; attempts \(ids) count as failed on it"), .workerDropped(worker: session.name, cause: cause))
        dispatchNeeded = true
    }

    /// An attempt whose worker died, disconnected or stalled during it: failed for the frame's budget
    /// (`maxFailedWorkersPerFrame` different workers, then the frame fails with their errors), not
    /// for the worker's ban from the job. Goodbye hand-backs and the restart requeue are not this
    /// (`loseAttempt`).
    func workerLostAttempt(_ id: Int64, worker: String, reason: String) {
        do {
            let outcome = try journal.failAttempt(id, error: reason, maxFailedWorkersPerFrame: settings.maxFailedWorkersPerFrame,
                                                  maxFailedFramesPerWorker: settings.maxFailedFramesPerWorkerJob,
                                                  countsTowardWorkerBan: false)
            guard outcome.applied else { return }
            reportFailure(outcome, worker: worker, error: FarmError(.renderFailed, reason))
        } catch {
            log.error("cannot record the loss of attempt \(id): \(error)", attempt: id)
        }
    }

    func loseAttempt(_ id: Int64, reason: String) {
        do {
            let outcome = try journal.loseAttempt(id, reason: reason)
            if outcome.applied {
                log.info("attempt \(id) (job \(outcome.jobID) frame \(outcome.frame)) lost: \(peer: reason, limit: 400); frame requeued",
                    .attemptRequeued(job: outcome.jobID, frame: outcome.frame, attempt: id))
                dispatchNeeded = true
            }
        } catch {
            log.error("cannot requeue attempt \(id): \(error)", attempt: id)
        }
    }

    func onWorkerMessage(_ session: WorkerSession, _ body: FarmEnvelope.OneOf_Body, requestID: UInt64) throws {
        switch body {
        case .credit(let credit):
            grantCredit(session, credit.credits)
            dispatchNeeded = true
        case .progress(let progress):
            onProgress(session, progress)
        case .heartbeat(let heartbeat):
            onWorkerPhase(session, heartbeat)  // Coordinator+Phases.swift
            // A session holds at most creditCap attempts; entries beyond that are not looked at.
            for p in heartbeat.attempts.prefix(creditCap(session)) {
                let id = Int64(truncatingIfNeeded: p.attemptID)
                guard var live = session.attempts[id] else { continue }
                // Only a step forward refreshes the stall timer (`step 0 of 0` forever must stall).
                if Int(p.step) > live.step {
                    live.step = Int(p.step)
                    live.total = Int(p.totalSteps)
                    live.lastProgressMs = now
                    session.attempts[id] = live
                }
            }
        case .frameResult(let result):
            // The credit rides on the result whatever becomes of it (refused, stale or written).
            // After the result (its attempt no longer counts toward the cap), even if handling it throws.
            defer { grantCredit(session, result.credits) }
            try onFrameResult(session, result)
        case .goodbye(let goodbye):
            let handed = Set(goodbye.handedBackAttemptIds.prefix(creditCap(session)).map { Int64(truncatingIfNeeded: $0) })
            for id in session.attempts.keys.sorted() {
                session.attempts[id] = nil
                loseAttempt(id, reason: handed.contains(id) ? "handed back by worker '\(session.name)'"
                    : "worker '\(session.name)' left without returning it")
            }
            endSession(session, cause: .goodbye, reason: "said goodbye (\(goodbye.reason))")
        case .modelManifestRequest(let request):
            do {
                let manifest = try models.manifest(for: request.modelID)
                send(session.routingID, .modelManifest(FarmModelManifest(manifest)), requestID: requestID)
            } catch let error as ModelStoreError {
                log.warning("refused model manifest request from \(peerName(session.routingID)): \(peer: error.message, limit: 400)",
                    .modelRequestRefused(worker: session.name, request: "manifest"))
                send(session.routingID, .error(FarmError(error.code, error.message)), requestID: requestID)
            }
        case .modelChunkRequest(let request):
            do {
                let chunk = try models.readChunk(modelID: request.modelID, path: request.path, offset: request.offset,
                                                 length: Int(request.length))
                var reply = FarmModelChunk()
                reply.modelID = request.modelID
                reply.path = request.path
                reply.offset = request.offset
                reply.data = chunk.data
                reply.fileSize = chunk.fileSize
                send(session.routingID, .modelChunk(reply), requestID: requestID)
            } catch let error as ModelStoreError {
                log.warning("refused model chunk request from \(peerName(session.routingID)): \(peer: error.message, limit: 400)",
                    .modelRequestRefused(worker: session.name, request: "chunk"))
                send(session.routingID, .error(FarmError(error.code, error.message)), requestID: requestID)
            }
        default:
            break
        }
    }

    func onProgress(_ session: WorkerSession, _ progress: FarmProgress) {
        let id = Int64(truncatingIfNeeded: progress.attemptID)
        guard var live = session.attempts[id] else {
            // Not an attempt this session holds: if it is not current, tell the worker to stop.
            if (try? journal.isCurrent(id)) != true {
                log.info("progress for attempt \(id) from \(peerName(session.routingID)) is not current: sent Cancel", attempt: id)
                var cancel = FarmCancel()
                cancel.attemptID = progress.attemptID
                cancel.reason = "attempt \(id) is no longer current"
                send(session.routingID, .cancel(cancel))
            }
            return
        }
        guard Int(progress.step) > live.step else { return }  // only a step forward counts (and is shown)
        live.lastProgressMs = now
        live.step = Int(progress.step)
        live.total = Int(progress.totalSteps)
        session.attempts[id] = live
        guard followers[live.jobID] != nil else { return }
        var event = FarmFrameProgress()
        event.frame = UInt32(live.frame)
        event.attemptID = progress.attemptID
        event.workerName = session.name
        event.step = progress.step
        event.totalSteps = progress.totalSteps
        emit(job: live.jobID, .frameProgress(event))
    }

    // MARK: results (fencing)

    func onFrameResult(_ session: WorkerSession, _ result: FarmFrameResult) throws {
        let id = Int64(truncatingIfNeeded: result.attemptID)
        session.attempts[id] = nil
        dispatchNeeded = true
        guard let (record, current) = try journal.resultTarget(id) else {
            log.warning("result for unknown attempt \(id) from \(peerName(session.routingID)): refused", attempt: id)
            send(session.routingID, .error(FarmError(.unknownAttempt, "no attempt \(id)", attemptID: result.attemptID)))
            return
        }
        guard record.worker == session.name else {
            log.warning("result for attempt \(id) of worker '\(peer: record.worker)' from \(peerName(session.routingID)): refused", attempt: id)
            send(session.routingID, .error(FarmError(.unknownAttempt,
                                                     "attempt \(id) was given to worker '\(record.worker)', not '\(session.name)'",
                                                     attemptID: result.attemptID)))
            return
        }
        if result.hasError {
            try onFailedResult(session, record, result.error)
            return
        }
        guard current else {
            // Recorded as stale; the PNG (and so its checksum) does not matter.
            let outcome = try journal.completeAttempt(id, output: FrameOutput(sha256: result.pngSha256, size: result.png.count,
                                                                                renderSeconds: result.renderSeconds))
            log.notice("stale result: attempt \(id) (job \(record.jobID) frame \(record.frame)) from worker '\(peer: session.name)' "
                + "is not current (\(outcome.staleReason ?? "frame moved on")); recorded, PNG dropped",
                    .staleResult(job: record.jobID, frame: record.frame, attempt: id, worker: session.name))
            return
        }
        let context: JobContext
        do {
            context = try jobContext(record.jobID)
        } catch {
            log.error("job \(record.jobID): cannot open its output for frame \(record.frame): \(error)", job: record.jobID, frame: record.frame)
            failJob(record.jobID, error: "\(error)")
            return
        }
        // The PNG's structure and frame size are checked before anything is written (ResultPNGCheck).
        if let problem = ResultPNGCheck.problem(result.png, width: context.frameWidth, height: context.frameHeight) {
            try onFailedResult(session, record, FarmError(.badRequest,
                "job \(record.jobID) frame \(record.frame): result of attempt \(id) from worker '\(session.name)' refused: \(problem)"))
            return
        }
        // The writer hashes the PNG once and refuses it if that is not the worker's claimed SHA-256.
        let digest: String
        do {
            digest = try context.output.write(frame: UInt32(record.frame), png: result.png, attempt: UInt64(id),
                                              worker: session.name, renderSeconds: result.renderSeconds,
                                              claimedSHA256: result.pngSha256, flush: false).pngSHA256
        } catch let error as OutputError {
            if case let .checksumMismatch(_, _, claimed, found) = error {
                try onFailedResult(session, record, FarmError(.checksumMismatch,
                    "job \(record.jobID) frame \(record.frame): PNG has sha256 \(found), worker claimed \(claimed)"))
                return
            } else if case .alreadyWritten = error {
                digest = FileDigest.sha256(result.png)
                guard digest == result.pngSha256 else {
                    try onFailedResult(session, record, FarmError(.checksumMismatch,
                        "job \(record.jobID) frame \(record.frame): PNG has sha256 \(digest), worker claimed \(result.pngSha256)"))
                    return
                }
                // Written before a crash that came before the journal update: same job, same bytes.
                log.notice("job \(record.jobID) frame \(record.frame): already in the output folder (\(error)); marking done",
                    job: record.jobID, frame: record.frame)
            } else {
                log.error("job \(record.jobID) frame \(record.frame): cannot write the output: \(error)", job: record.jobID, frame: record.frame)
                loseAttempt(id, reason: "coordinator could not write the frame: \(error)")
                return
            }
        }
        // Checked by resultTarget above, in this same turn's transaction.
        let outcome = try journal.completeAttempt(checked: record, current: current,
                                                  output: FrameOutput(sha256: digest, size: result.png.count,
                                                                      renderSeconds: result.renderSeconds))
        session.models.insert(context.modelID)
        log.info("job \(record.jobID) frame \(record.frame) done by worker '\(peer: session.name)' (attempt \(id), "
            + Self.seconds(result.renderSeconds) + ")", .frameDone(job: record.jobID, frame: record.frame, attempt: id, worker: session.name))
        if let list = followers[record.jobID] {
            var done = FarmFrameDone()
            done.frame = UInt32(record.frame)
            done.attemptID = UInt64(id)
            done.workerName = session.name
            done.renderSeconds = result.renderSeconds
            done.pngSha256 = digest
            done.pngSize = UInt64(result.png.count)
            for follower in list {
                var event = done
                if follower.includePNG { event.png = result.png }
                sendEvent(follower, job: record.jobID, .frameDone(event))
            }
        }
        if outcome.jobFinished { finishJob(record.jobID) }
    }

    func onFailedResult(_ session: WorkerSession, _ record: AttemptRecord, _ error: FarmError) throws {
        var error = error
        let cap = settings.limits.maxErrorMessageBytes
        if error.message.utf8.count > cap {
            error.message = String(decoding: error.message.utf8.prefix(cap), as: UTF8.self) + "... (cut at \(cap) bytes)"
        }
        let reason = "\(error.code) from worker '\(session.name)': \(error.message)"
        switch error.code {
        case .cancelled, .shuttingDown:
            loseAttempt(record.id, reason: reason)
            return
        case .jobPrepMissing:
            session.preps.remove(record.jobID)
            loseAttempt(record.id, reason: reason)
            return
        default:
            break
        }
        let outcome = try journal.failAttempt(record.id, error: reason,
                                              maxFailedWorkersPerFrame: settings.maxFailedWorkersPerFrame,
                                              maxFailedFramesPerWorker: settings.maxFailedFramesPerWorkerJob)
        guard outcome.applied else {
            log.notice("stale failure: attempt \(record.id) (job \(record.jobID) frame \(record.frame)): \(peer: reason, limit: 400); recorded",
                job: record.jobID, frame: record.frame, attempt: record.id)
            return
        }
        reportFailure(outcome, worker: session.name, error: error)
    }

    /// A failed attempt that the journal applied: log line, FrameFailed to followers, the job's end.
    func reportFailure(_ outcome: AttemptOutcome, worker: String, error: FarmError) {
        let final = outcome.frameState == .failed
        log.warning("job \(outcome.jobID) frame \(outcome.frame) failed on attempt \(outcome.attemptID): \(peer: error.message, limit: 400)"
            + (final ? "; frame given up" : "; requeued")
            + (outcome.workerBannedFromJob ? "; worker '\(peer: worker)' gets no more frames of this job" : ""),
                .frameFailed(job: outcome.jobID, frame: outcome.frame, attempt: outcome.attemptID, worker: worker, final: final,
                             workerBanned: outcome.workerBannedFromJob, error: error.message))
        dispatchNeeded = true
        var failed = FarmFrameFailed()
        failed.frame = UInt32(outcome.frame)
        failed.attemptID = UInt64(outcome.attemptID)
        failed.workerName = worker
        failed.error = error
        failed.final = final
        emit(job: outcome.jobID, .frameFailed(failed))
        if outcome.jobFinished {
            finishJob(outcome.jobID)
        } else if outcome.workerBannedFromJob {
            noticeIfNoWorkerMayTake(job: outcome.jobID)
        }
    }

    /// After a ban: when every connected worker is banned from `job`, its queued frames wait for a
    /// worker that is not. Says so (log line, JobNotice to followers) instead of stalling silently.
    func noticeIfNoWorkerMayTake(job: Int64) {
        let names = sessions.values.map(\.name).sorted()
        guard !names.isEmpty, (try? names.allSatisfy({ try journal.isBanned(worker: $0, job: job) })) == true else { return }
        let message = "no connected worker may take job \(job) any more (\(names.joined(separator: ", ")): each failed "
            + "\(settings.maxFailedFramesPerWorkerJob) of its frames); its remaining frames wait for another worker "
            + "(start one, or dp-coord cancel \(job))"
        log.warning("job \(job): \(message)", .noWorkerMayTake(job: job))
        var notice = FarmJobNotice()
        notice.message = message
        emit(job: job, .jobNotice(notice))
    }

    // MARK: dispatch

    /// Hands queued frames to workers with credit, best frames first (`Journal.nextFrames`: job
    /// priority, age, dispatch rank). One queue read for the whole turn: the best frames for all
    /// the credit at once, shared out to the workers holding the best frame's model first, then the
    /// freest; each worker skips jobs it is banned from (read once per turn), and each frame is
    /// dispatched with `startAttempt(checked:)` (no second lookup). A worker left with credit
    /// because of its bans while more frames may be queued falls back to reading the queue for
    /// itself (`nextFrames(worker:)`, which filters its bans).
    func dispatch() {
        dispatchNeeded = false
        let ready = sessions.values.filter { $0.credit > 0 }
        guard !ready.isEmpty else { return }
        let wanted = ready.reduce(0) { $0 + $1.credit }
        let candidates: [DispatchCandidate]
        let banned: [String: Set<Int64>]
        do {
            candidates = try journal.nextFrames(limit: wanted)
            guard !candidates.isEmpty else { return }
            banned = try journal.bannedJobs()
        } catch {
            log.error("dispatch: cannot read the queue: \(error)")
            return
        }
        let topModel = candidates[0].modelID
        let ordered = ready.sorted {
            let a = $0.models.contains(topModel), b = $1.models.contains(topModel)
            if a != b { return a }
            if $0.credit != $1.credit { return $0.credit > $1.credit }
            return $0.name < $1.name
        }
        var taken = [Bool](repeating: false, count: candidates.count)
        var stopped: Set<Int64> = []  // jobs failed during this pass: their other candidates are void
        var leftOver: [WorkerSession] = []
        for session in ordered {
            let bans = banned[session.name] ?? []
            var index = 0
            while session.credit > 0, sessions[session.routingID] === session, index < candidates.count {
                let candidate = candidates[index]
                if !taken[index], !bans.contains(candidate.jobID), !stopped.contains(candidate.jobID) {
                    taken[index] = true
                    if !dispatchOne(session, candidate, checked: true) { stopped.insert(candidate.jobID) }
                }
                index += 1
            }
            if session.credit > 0, sessions[session.routingID] === session, !bans.isEmpty { leftOver.append(session) }
        }
        // Only bans can leave credit unused while frames beyond `wanted` are queued.
        guard candidates.count == wanted else { return }
        for session in leftOver {
            var rounds = 0
            while session.credit > 0, sessions[session.routingID] === session, rounds < 8 {
                rounds += 1
                let more: [DispatchCandidate]
                do {
                    more = try journal.nextFrames(limit: session.credit, worker: session.name)
                } catch {
                    log.error("dispatch: cannot read the queue for worker '\(peer: session.name)': \(error)", worker: session.name)
                    return
                }
                if more.isEmpty { break }
                for candidate in more where session.credit > 0 && sessions[session.routingID] === session {
                    _ = dispatchOne(session, candidate, checked: false)
                }
            }
        }
    }

    /// Dispatches one frame to `session`. `checked`: the candidate comes from this turn's queue
    /// read and the worker is not banned from its job (see `dispatch`). Returns false when the job
    /// failed here (its context or poses could not be read): its other candidates are void.
    @discardableResult
    func dispatchOne(_ session: WorkerSession, _ candidate: DispatchCandidate, checked: Bool) -> Bool {
        let context: JobContext
        do {
            context = try jobContext(candidate.jobID)
        } catch {
            log.error("job \(candidate.jobID): cannot prepare it for dispatch: \(error)", job: candidate.jobID)
            failJob(candidate.jobID, error: "\(error)")
            return false
        }
        let window: [Data]
        do {
            window = try context.poseWindow(for: UInt32(candidate.frame))
        } catch {
            log.error("job \(candidate.jobID) frame \(candidate.frame): cannot read its poses: \(error)",
                job: candidate.jobID, frame: candidate.frame)
            failJob(candidate.jobID, error: "\(error)")
            return false
        }
        let attempt: AttemptRecord
        do {
            attempt = checked
                ? try journal.startAttempt(checked: candidate, worker: session.name)
                : try journal.startAttempt(job: candidate.jobID, frame: candidate.frame, worker: session.name)
        } catch {
            log.error("dispatch of job \(candidate.jobID) frame \(candidate.frame) to '\(peer: session.name)' refused: \(error)",
                job: candidate.jobID, frame: candidate.frame)
            return true
        }
        session.credit -= 1
        session.attempts[attempt.id] = LiveAttempt(id: attempt.id, jobID: candidate.jobID, frame: candidate.frame,
                                                   step: 0, total: 0, lastProgressMs: now)
        if !session.preps.contains(candidate.jobID) {
            session.preps.insert(candidate.jobID)
            guard send(session.routingID, .jobPrep(context.prep)) else {
                session.preps.remove(candidate.jobID)
                return true
            }
        }
        var task = FarmFrameTask()
        task.jobID = UInt64(candidate.jobID)
        task.attemptID = UInt64(attempt.id)
        task.frame = UInt32(candidate.frame)
        task.modelID = context.modelID
        task.poseWindowNpy = window
        send(session.routingID, .frameTask(task))
        return true
    }

    // MARK: jobs

    /// The job's context, opened on first use. Opening checks every frame the journal says is done
    /// against its PNG (SHA-256 and size); a missing or corrupt one is requeued (an unfinished job)
    /// so it is rendered again.
    func jobContext(_ id: Int64) throws -> JobContext {
        if let context = jobContexts[id] { return context }
        guard let record = try journal.job(id) else { throw JournalError.unknownJob(id) }
        let context = try JobContext(record: record, doneFrames: try journal.frames(job: id, state: .done),
                                     models: models, inputs: inputsDirectory, placement: outputPlacement)
        jobContexts[id] = context
        for (frame, reason) in context.output.invalidRecords {
            if record.state == .queued || record.state == .running {
                do {
                    try journal.requeueDoneFrame(job: id, frame: Int(frame), reason: "output lost: \(reason)")
                    log.warning("job \(id) frame \(frame): was done but \(reason); requeued",
                        .frameOutputLost(job: id, frame: Int(frame), requeued: true, reason: reason))
                    dispatchNeeded = true
                } catch {
                    log.error("job \(id) frame \(frame): was done but \(reason); cannot requeue it: \(error)",
                        .frameOutputLost(job: id, frame: Int(frame), requeued: false, reason: reason))
                }
            } else {
                log.warning("job \(id) frame \(frame): was done but \(reason) (job \(record.state.rawValue); not requeued)",
                    .frameOutputLost(job: id, frame: Int(frame), requeued: false, reason: reason))
            }
        }
        return context
    }

    func failJob(_ id: Int64, error: String) {
        do {
            let running = try journal.failJob(id, error: error)
            dispatchNeeded = true  // credit that was meant for this job goes to the next one
            cancelOnWorkers(job: id, attempts: running, reason: error)
            log.warning("job \(id) failed: \(error)", .jobFailed(job: id, error: error))
            finishJob(id)
        } catch {
            log.error("cannot fail job \(id): \(error)", job: id)
        }
    }

    /// Sends Cancel{job} to every session holding the job's prep or one of its attempts.
    func cancelOnWorkers(job: Int64, attempts: [AttemptRecord], reason: String) {
        let holders = Set(attempts.map(\.worker))
        for session in Array(sessions.values)
        where session.preps.contains(job) || holders.contains(session.name)
            || session.attempts.values.contains(where: { $0.jobID == job }) {
            session.preps.remove(job)
            var cancel = FarmCancel()
            cancel.jobID = UInt64(job)
            cancel.reason = reason
            send(session.routingID, .cancel(cancel))
            log.info("sent Cancel{job \(job)} to worker '\(peer: session.name)'", job: job, worker: session.name)
        }
    }

    /// The job reached a final state (in this turn's transaction). Its last manifest.json rewrite
    /// and, for a completed job that asked for one, its video are made off the loop thread: the
    /// manifest on `manifestQueue` (after any periodic rewrite of it), the video then on
    /// `videoQueue`. A 10,000-frame job's manifest and its context's teardown took ~25 ms, which
    /// held up every other job's dispatch. When both are written, `drainFinishedOutputs` marks
    /// the job's outputs final in the journal and sends JobFinished to its followers, so a
    /// follower that sees JobFinished finds every output in place. A crash before that is
    /// finished by the next start-up (`startUp`: finished jobs whose outputs are not final).
    func finishJob(_ id: Int64) {
        guard !finishing.contains(id), let record = try? journal.job(id, includingSpec: false) else { return }
        finishing.insert(id)
        // Its context leaves the loop: the job gets no more frames, and the background work owns its
        // OutputWriter. A job whose output cannot be opened (it failed for that) has nothing to write.
        let context: JobContext?
        if let open = jobContexts.removeValue(forKey: id) {
            context = open
        } else {
            do {
                context = try jobContext(id)
                jobContexts[id] = nil
            } catch {
                log.error("job \(id): cannot open its output to finish it: \(error)", job: id)
                context = nil
            }
        }
        let wantsVideo = record.state == .completed && !(record.videoPath ?? "").isEmpty && !record.videoWritten
        let journal = self.journal
        let ffmpeg = settings.ffmpegPath
        let log = self.log
        let report: @Sendable (String?, String, Bool) -> Void = { [weak self] video, message, final in
            guard let self else { return }
            self.finishedOutputs.withLock {
                $0.append(FinishedOutputs(job: id, state: record.state, video: video, message: message, final: final))
            }
            self.wakeLoop()
        }
        let message = record.error ?? ""
        let videoQueue = self.videoQueue
        let output = context?.output  // all the background work needs of the context
        manifestQueue.async {
            do {
                try output?.flush()
            } catch {
                log.error("job \(id): cannot write its final manifest.json: \(error)", job: id)
            }
            guard wantsVideo, let output else {
                report(record.videoWritten ? record.videoPath : nil, message, true)
                return
            }
            videoQueue.async {
                do {
                    let video = try output.makeVideo(at: URL(fileURLWithPath: record.videoPath ?? ""),
                                                             fps: record.videoFPS, ffmpeg: ffmpeg)
                    try journal.markVideoWritten(job: id)
                    report(video.path, message, true)
                } catch let error as OutputError {
                    // A file in the way that this job did not create stays untouched, for good (final);
                    // anything else (ffmpeg) is tried again by the next start-up (not final).
                    if case .notOwned = error {
                        report(nil, "video failed: \(error)", true)
                    } else {
                        report(nil, "video failed: \(error)", false)
                    }
                } catch {
                    report(nil, "video failed: \(error)", false)  // not final: the next start-up tries again
                }
            }
        }
    }

    /// What `finishJob`'s background work reports back to the loop.
    struct FinishedOutputs: Sendable {
        var job: Int64
        var state: JobState
        var video: String?
        var message: String
        /// False when the video failed: its outputs stay not final, so a restart tries it again.
        var final: Bool
    }

    /// Jobs whose final outputs were written since the last turn: marked final in the journal
    /// (this turn's transaction), then JobFinished to their followers.
    func drainFinishedOutputs() {
        let done = finishedOutputs.withLock { outputs in
            defer { outputs.removeAll() }
            return outputs
        }
        for f in done {
            finishing.remove(f.job)
            if f.final {
                do {
                    try journal.markOutputsFinal(job: f.job)
                } catch {
                    log.error("job \(f.job): cannot mark its outputs final: \(error)", job: f.job)
                }
            }
            if f.message.hasPrefix("video failed") { log.error("job \(f.job): \(f.message)", .videoFailed(job: f.job, error: f.message)) }
            announceFinished(f.job, state: f.state, video: f.video, message: f.message)
        }
    }

    func announceFinished(_ id: Int64, state: JobState, video: String?, message: String) {
        var finished = FarmJobFinished()
        finished.state = FarmJobState(state)
        finished.videoPath = video ?? ""
        finished.message = message
        log.notice("job \(id) finished: \(state.rawValue)" + (video.map { ", video \($0)" } ?? "")
            + (message.isEmpty ? "" : " (\(message))"), JobEnd(rawValue: state.rawValue).map { .jobFinished(job: id, state: $0) })
        emit(job: id, .jobFinished(finished))
        followers[id] = nil
    }

    // MARK: follower events

    func counts(_ job: Int64) -> FarmJobCounts {
        var counts = FarmJobCounts()
        guard let p = try? journal.liveCounts(job: job) else { return counts }
        counts.total = UInt32(p.total)
        counts.queued = UInt32(p.queued)
        counts.inFlight = UInt32(p.dispatched)
        counts.done = UInt32(p.done)
        counts.failed = UInt32(p.failed)
        counts.cancelled = UInt32(p.cancelled)
        return counts
    }

    func emit(job: Int64, _ event: DPProtocol.FarmJobEvent.OneOf_Event) {
        guard let list = followers[job], !list.isEmpty else { return }
        for follower in list { sendEvent(follower, job: job, event) }
    }

    /// A JobEvent to a follower. Its counts are the job's as the event leaves: inside a loop turn
    /// they are filled in after the turn's commit, once per job however many events the turn has.
    func sendEvent(_ follower: Follower, job: Int64, _ event: DPProtocol.FarmJobEvent.OneOf_Event?) {
        var message = DPProtocol.FarmJobEvent()
        message.jobID = UInt64(job)
        message.sentUnixMs = UInt64(max(0, now))
        message.event = event
        if outbox != nil {
            outbox!.append(OutgoingMessage(peer: follower.peer, body: .jobEvent(message), requestID: follower.requestID,
                                           countsOfJob: job))
            return
        }
        message.counts = counts(job)
        sendNow(follower.peer, .jobEvent(message), requestID: follower.requestID)
    }

    /// Sends a follower's events in order: one JobEvent alone, several as JobEvents batches.
    func sendEvents(_ events: [DPProtocol.FarmJobEvent], to stream: FollowerStream) {
        let limit = max(64 << 10, min(FarmProtocol.defaultMaxMessageBytes, settings.limits.maxQueuedBytesPerPeer) / 4)
        for batch in Self.eventBatches(events, limitBytes: limit) {
            if batch.count == 1 {
                sendNow(stream.peer, .jobEvent(batch[0]), requestID: stream.requestID)
            } else {
                var message = DPProtocol.FarmJobEvents()
                message.events = batch
                sendNow(stream.peer, .jobEvents(message), requestID: stream.requestID)
            }
        }
    }

    /// `events` cut, in order, into batches whose estimated size (256 bytes an event plus its PNG,
    /// if it carries one) stays under `limitBytes`; an event larger than that is a batch of its own.
    static func eventBatches(_ events: [DPProtocol.FarmJobEvent], limitBytes: Int) -> [[DPProtocol.FarmJobEvent]] {
        var batches: [[DPProtocol.FarmJobEvent]] = []
        var current: [DPProtocol.FarmJobEvent] = []
        var bytes = 0
        for event in events {
            let size = 256 + event.frameDone.png.count
            if !current.isEmpty && bytes + size > limitBytes {
                batches.append(current)
                current = []
                bytes = 0
            }
            current.append(event)
            bytes += size
        }
        if !current.isEmpty { batches.append(current) }
        return batches
    }

    /// `x` seconds with 2 decimals ("12.34 s"), for log lines written once per frame.
    static func seconds(_ x: Double) -> String {
        guard x.isFinite, x >= 0, x < 1e12 else { return "\(x) s" }
        let hundredths = Int((x * 100).rounded())
        let fraction = hundredths % 100
        return "\(hundredths / 100)." + (fraction < 10 ? "0" : "") + "\(fraction) s"
    }
}

extension FarmJobState {
    init(_ state: JobState) {
        switch state {
        case .uploading: self = .uploading
        case .queued: self = .queued
        case .running: self = .running
        case .completed: self = .completed
        case .failed: self = .failed
        case .cancelled: self = .cancelled
        }
    }
}

// Worker sessions and their messages (results go to the lifecycle: Coordinator+Lifecycle.swift), and
// follower events. Dispatch: Coordinator+Dispatch.swift; jobs' contexts and ends: Coordinator+Jobs.swift.
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
        // Attempts in the journal are re-adopted only by the key that owns the name (FrameLifecycle.hello).
        let ownsRecordedAttempts = try sender.key == nil || journal.workerKey(hello.workerName) == sender.key
        var targets: [Int64: AttemptTarget] = [:]
        for id in hello.runningAttemptIds where ownsRecordedAttempts {
            let attemptID = Int64(truncatingIfNeeded: id)
            if let (record, current) = try journal.resultTarget(attemptID) {
                targets[attemptID] = AttemptTarget(record: record, current: current)
            }
        }
        let decision = lifecycle.hello(worker: hello.workerName, listed: hello.runningAttemptIds, targets: targets,
                                       ownsRecordedAttempts: ownsRecordedAttempts, previous: previous.map(\.id))
        for record in decision.adopted {
            session.attempts[record.id] = LiveAttempt(id: record.id, jobID: record.jobID, frame: record.frame,
                                                      step: 0, total: 0, lastProgressMs: now)
        }
        let adopted = decision.adopted.map { UInt64(bitPattern: $0.id) }
        let refused = decision.refused
        // Its worker came back without them (restarted or lost them mid-attempt): failures of their frames.
        applyLogging(decision.lost, from: nil)
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
        applyLogging(decision.cancels, from: session)
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
        applyLogging(lifecycle.attemptsLost(ids, worker: session.name, .sessionEnded(reason)), from: nil)
        log.notice("worker '\(peer: session.name)' (\(peerName(session.routingID))) dropped: \(peer: reason, limit: 400)"
            + (ids.isEmpty ? "" : "; attempts \(ids) count as failed on it"), .workerDropped(worker: session.name, cause: cause))
        dispatchNeeded = true
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
                guard let live = session.attempts[id] else { continue }
                // Only a step forward refreshes the stall timer (`step 0 of 0` forever must stall).
                if let next = FrameLifecycle.progressed(live, step: Int(p.step), total: Int(p.totalSteps), now: now) {
                    session.attempts[id] = next
                }
            }
        case .frameResult(let result):
            // The credit rides on the result whatever becomes of it (refused, stale or written).
            // After the result (its attempt no longer counts toward the cap), even if handling it throws.
            defer { grantCredit(session, result.credits) }
            try onFrameResult(session, result)
        case .goodbye(let goodbye):
            let held = session.attempts.keys.sorted()
            session.attempts.removeAll()
            applyLogging(lifecycle.goodbye(held: held, handedBack: goodbye.handedBackAttemptIds, cap: creditCap(session),
                                           worker: session.name), from: session)
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
        guard let held = session.attempts[id] else {
            // Not an attempt this session holds: if it is not current, tell the worker to stop.
            let effects = lifecycle.progressForUnheldAttempt(progress.attemptID, current: (try? journal.isCurrent(id)) == true)
            if !effects.isEmpty {
                log.info("progress for attempt \(id) from \(peerName(session.routingID)) is not current: sent Cancel", attempt: id)
            }
            applyLogging(effects, from: session)
            return
        }
        // Only a step forward counts (and is shown).
        guard let live = FrameLifecycle.progressed(held, step: Int(progress.step), total: Int(progress.totalSteps),
                                                   now: now) else { return }
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

    /// A FrameResult: the lifecycle decides (fencing, failures, the output's checks), `apply` does it.
    func onFrameResult(_ session: WorkerSession, _ result: FarmFrameResult) throws {
        let id = Int64(truncatingIfNeeded: result.attemptID)
        session.attempts[id] = nil
        dispatchNeeded = true
        let target = try journal.resultTarget(id).map { AttemptTarget(record: $0.attempt, current: $0.current) }
        let report: ResultReport = result.hasError ? .failed(result.error)
            : .rendered(claimedSHA256: result.pngSha256, size: result.png.count, renderSeconds: result.renderSeconds)
        try apply(lifecycle.resultArrived(id, target: target, worker: session.name, report: report), from: session, result: result)
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

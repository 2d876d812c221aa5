// The worker's I/O thread: messages from the coordinator (Welcome, Error, JobPrep, FrameTask, Cancel, ...).
import CDPSys
import DPFileKit
import DPLog
import DPProtocol
import DPTransport
import Foundation
import Synchronization

extension WorkerService {
    // MARK: incoming messages

    func handle(_ frames: [Data]) throws {
        guard frames.count == 1 else {
            log.warning("worker \(settings.name): dropped a \(frames.count)-frame message from the coordinator (expected 1 frame)")
            return
        }
        let envelope: FarmEnvelope
        do {
            envelope = try FarmEnvelope.decode(frames[0], maxBytes: settings.maxMessageBytes)
        } catch let error as FarmProtocolError {
            log.warning("worker \(settings.name): refused a message from coordinator \(settings.connect): \(error)")
            try send(FarmEnvelope(.error(FarmError(error))))
            return
        }
        lastHeard = Date()
        // Read a quarter of the coordinator's cap since the last message sent: say so now.
        if receipts.read(envelope, wireBytes: frames[0].count) { try send(FarmEnvelope(.acknowledge(FarmAcknowledge()))) }
        switch envelope.body {
        case .welcome(let w):
            try handleWelcome(w)
        case .jobPrep(let prep):
            handleJobPrep(prep)
        case .frameTask(let task):
            try handleFrameTask(task)
        case .cancel(let cancel):
            handleCancel(cancel)
        case .modelManifest, .modelChunk:
            answerModelRequest(envelope)
        case .heartbeat:
            break
        case .error(let error):
            try handleError(error, requestID: envelope.requestID)
        default:
            log.warning("worker \(settings.name): ignored unexpected \(envelope.bodyName) from the coordinator")
        }
    }

    func handleWelcome(_ w: FarmWelcome) throws {
        welcomed = true
        setProblem(nil)
        backoffMs = settings.reconnectInitialMs
        if w.heartbeatIntervalMs > 0 { heartbeatIntervalMs = Int(w.heartbeatIntervalMs) }
        if w.heartbeatLiveness > 0 { heartbeatLiveness = Int(w.heartbeatLiveness) }
        let adopted = Set(w.adoptedAttemptIds)
        let (dropped, mode) = shared.withLock { shared in
            if w.modelChunkBytes > 0 { shared.modelChunkBytes = Int(w.modelChunkBytes) }
            var dropped: [UInt64] = []
            for task in shared.tasks.values where !adopted.contains(task.attemptID) && task.result == nil {
                // The coordinator no longer counts this attempt: stop rendering it.
                task.cancelReason = .cancelled
                dropped.append(task.attemptID)
            }
            return (dropped, shared.stopMode)
        }
        if coordinatorID != w.coordinatorID {
            log.notice("worker \(settings.name): welcomed by coordinator \(w.coordinatorID) (heartbeat \(heartbeatIntervalMs) ms x \(heartbeatLiveness))",
                .welcomed(worker: settings.name, coordinator: w.coordinatorID))
            coordinatorID = w.coordinatorID
        }
        if !dropped.isEmpty { log.warning("worker \(settings.name): attempts \(dropped.sorted()) not adopted; cancelling them") }
        // A new session: the coordinator's credit for this worker starts at 0.
        shared.withLock { $0.creditsOutstanding = 0 }
        if mode == nil { try sendCredit(grantCredits()) }
        // Model requests of compute threads waiting across the reconnect go out again.
        for request in pendingModelRequests.values.sorted(by: { $0.requestID < $1.requestID }) {
            try send(FarmEnvelope(request.body, requestID: request.requestID))
        }
        try flushResults()
    }

    func handleError(_ error: FarmError, requestID: UInt64) throws {
        switch error.code {
        case .notRegistered:
            log.warning("worker \(settings.name): coordinator says not registered; sending Hello again")
            welcomed = false
            try sendHello()
        case .badRequest where !welcomed && requestID == 0:
            // The coordinator refused our Hello (e.g. this key is not a worker key, or the name
            // belongs to another key): no session; retried after the backoff.
            setProblem(.refused(error.message))
            log.error("worker \(settings.name): coordinator refused this worker: \(error.message)", .refusedByCoordinator(worker: settings.name))
        case .unknownModel, .unknownFile, .badRequest, .checksumMismatch, .tooLarge:
            // An answer to a model request fails it; other errors are only logged.
            var failed: [ModelRequest] = []
            if requestID != 0, let r = pendingModelRequests[requestID] { failed = [r] }
            else if error.code == .unknownModel || error.code == .unknownFile {
                failed = Array(pendingModelRequests.values)
            }
            for r in failed {
                pendingModelRequests[r.requestID] = nil
                r.complete(.failure(WorkerServiceError.modelUnavailable(
                    "coordinator refused \(r.what): \(error.code) \(error.message)")))
            }
            log.warning("worker \(settings.name): coordinator error \(error.code): \(error.message)")
        default:
            log.warning("worker \(settings.name): coordinator error \(error.code): \(error.message)")
        }
    }

    func handleJobPrep(_ prep: FarmJobPrep) {
        shared.withLock { shared in
            if let existing = shared.jobs[prep.jobID], existing.prep == prep {
                existing.lastUsed = Date()
            } else {
                shared.jobs[prep.jobID] = HeldJob(prep: prep)
            }
        }
        evictIdleJobs()
    }

    func handleFrameTask(_ frameTask: FarmFrameTask) throws {
        func answer(_ code: FarmErrorCode, _ message: String) throws {
            var result = FarmFrameResult()
            result.attemptID = frameTask.attemptID
            result.jobID = frameTask.jobID
            result.frame = frameTask.frame
            result.workerName = settings.name
            result.error = FarmError(code, message, jobID: frameTask.jobID, attemptID: frameTask.attemptID)
            result.credits = UInt32(grantCredits())
            try send(FarmEnvelope(.frameResult(result)))
        }
        let (stopping, duplicate, job) = shared.withLock { shared in
            shared.creditsOutstanding = max(0, shared.creditsOutstanding - 1)  // every FrameTask used one credit
            return (shared.stopMode != nil, shared.tasks[frameTask.attemptID] != nil, shared.jobs[frameTask.jobID])
        }
        if duplicate {
            log.warning("worker \(settings.name): ignored a second FrameTask for attempt \(frameTask.attemptID)",
                attempt: Int64(truncatingIfNeeded: frameTask.attemptID))
            return
        }
        if stopping {
            try answer(.shuttingDown, "worker \(settings.name) is shutting down; frame \(frameTask.frame) handed back")
            return
        }
        guard let job else {
            log.warning("worker \(settings.name): FrameTask attempt \(frameTask.attemptID) (job \(frameTask.jobID) frame \(frameTask.frame)) without a JobPrep",
                job: Int64(truncatingIfNeeded: frameTask.jobID), frame: Int(frameTask.frame),
                attempt: Int64(truncatingIfNeeded: frameTask.attemptID))
            try answer(.jobPrepMissing, "worker \(settings.name) holds no JobPrep for job \(frameTask.jobID) "
                       + "(frame \(frameTask.frame), attempt \(frameTask.attemptID))")
            return
        }
        let task = AttemptTask(task: frameTask, job: job)
        shared.withLock { shared in
            shared.tasks[frameTask.attemptID] = task
            shared.queued.append(task)
            job.lastUsed = Date()
        }
        workSignal.signal()
    }
}

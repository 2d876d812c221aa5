// Applying the lifecycle's effects (FrameLifecycle.swift): the journal writes through DPJournal,
// the messages through `send` (held in the turn's outbox until its commit), and the journal's
// answers fed back to the lifecycle. The handlers only turn messages into lifecycle events.
import DPFileKit
import DPJournal
import DPLog
import DPProtocol
import Foundation

extension Coordinator {
    var lifecycle: FrameLifecycle { FrameLifecycle(settings) }

    /// Applies `effects` in order. `session`: the worker the event came from (refusals, Cancel{attempt},
    /// forgotten preps go to it); `result`: the FrameResult being handled (its PNG). Throws what the
    /// journal throws for a worker's result (the handler answers an internal error); the other
    /// effects log their failures, as their handlers did.
    func apply(_ effects: [LifecycleEffect], from session: WorkerSession?, result: FarmFrameResult? = nil) throws {
        for effect in effects {
            switch effect {
            case let .recordStale(record, output):
                try recordStale(record, output, worker: session?.name ?? record.worker)
            case .writeOutput(let target):
                guard let session, let result else { continue }
                let check = try writeResult(target, result, worker: session.name)
                try apply(lifecycle.outputChecked(target, worker: session.name, claimedSHA256: result.pngSha256,
                                                  size: result.png.count, renderSeconds: result.renderSeconds, check),
                          from: session, result: result)
            case let .completeAttempt(target, output, alreadyWritten):
                if let note = alreadyWritten {
                    // Written before a crash that came before the journal update: same job, same bytes.
                    log.notice("job \(target.record.jobID) frame \(target.record.frame): already in the output folder (\(note)); marking done",
                        job: target.record.jobID, frame: target.record.frame)
                }
                // Checked by resultTarget, in this same turn's transaction.
                let outcome = try journal.completeAttempt(checked: target.record, current: target.current, output: output)
                try apply(lifecycle.completionRecorded(outcome, target: target, output: output), from: session, result: result)
            case let .failAttempt(id, worker, reason, error, countsTowardWorkerBan):
                try failAttempt(id, worker: worker, reason: reason, error: error, countsTowardWorkerBan: countsTowardWorkerBan,
                                from: session)
            case let .loseAttempt(id, reason):
                loseAttempt(id, reason: reason)
            case let .requeueInFlight(keep, reason):
                requeueInFlight(keeping: keep, reason: reason)
            case let .failJob(id, error):
                failJob(id, error: error)
            case let .requeueDoneFrame(id, frame, reason):
                requeueDoneFrame(id, frame: frame, reason: reason)
            case let .noteLostOutput(id, frame, reason, state):
                log.warning("job \(id) frame \(frame): was done but \(reason) (job \(state.rawValue); not requeued)",
                    .frameOutputLost(job: id, frame: frame, requeued: false, reason: reason))
            case let .refuseResult(id, owner):
                guard let session else { continue }
                refuseResult(id, owner: owner, session: session)
            case let .cancelAttempt(id, reason):
                guard let session else { continue }
                sendCancel(attempt: id, reason: reason, to: session)
            case .forgetPrep(let job):
                session?.preps.remove(job)
            case let .cancelJobOnWorkers(job, attempts, reason):
                cancelOnWorkers(job: job, attempts: attempts, reason: reason)
            case let .noteStaleFailure(outcome, reason):
                log.notice("stale failure: attempt \(outcome.attemptID) (job \(outcome.jobID) frame \(outcome.frame)): "
                    + "\(peer: reason, limit: 400); recorded", job: outcome.jobID, frame: outcome.frame, attempt: outcome.attemptID)
            case let .frameDone(target, output):
                guard let session else { continue }
                frameDone(target, output, session: session, png: result?.png ?? Data())
            case let .frameFailed(outcome, worker, error):
                frameFailed(outcome, worker: worker, error: error)
            case .finishJob(let id):
                finishJob(id)
            case .noticeIfNoWorkerMayTake(let job):
                noticeIfNoWorkerMayTake(job: job)
            case let .announceFinished(id, state, message):
                announceFinished(id, state: state, video: nil, message: message)
            }
        }
    }

    /// `apply` for effects whose failures are logged, not thrown (losses, requeues, cancels).
    func applyLogging(_ effects: [LifecycleEffect], from session: WorkerSession?) {
        do {
            try apply(effects, from: session)
        } catch {
            log.error("cannot apply \(effects.count) lifecycle effect(s): \(error)")
        }
    }

    // MARK: journal writes

    func recordStale(_ record: AttemptRecord, _ output: FrameOutput, worker: String) throws {
        let id = record.id
        let outcome = try journal.completeAttempt(id, output: output)
        log.notice("stale result: attempt \(id) (job \(record.jobID) frame \(record.frame)) from worker '\(peer: worker)' "
            + "is not current (\(outcome.staleReason ?? "frame moved on")); recorded, PNG dropped",
                .staleResult(job: record.jobID, frame: record.frame, attempt: id, worker: worker))
    }

    /// A failed attempt. Of a worker's own result (`countsTowardWorkerBan`): the journal's error goes
    /// to the handler. Of a lost worker (died, disconnected, stalled): logged.
    func failAttempt(_ id: Int64, worker: String, reason: String, error: FarmError, countsTowardWorkerBan: Bool,
                     from session: WorkerSession?) throws {
        let record = { (outcome: AttemptOutcome) in
            try self.apply(self.lifecycle.failureRecorded(outcome, worker: worker, reason: reason, error: error,
                                                          countsTowardWorkerBan: countsTowardWorkerBan), from: session)
        }
        guard countsTowardWorkerBan else {
            do {
                try record(try journal.failAttempt(id, error: reason, maxFailedWorkersPerFrame: settings.maxFailedWorkersPerFrame,
                                                   maxFailedFramesPerWorker: settings.maxFailedFramesPerWorkerJob,
                                                   countsTowardWorkerBan: false))
            } catch {
                log.error("cannot record the loss of attempt \(id): \(error)", attempt: id)
            }
            return
        }
        try record(try journal.failAttempt(id, error: reason, maxFailedWorkersPerFrame: settings.maxFailedWorkersPerFrame,
                                           maxFailedFramesPerWorker: settings.maxFailedFramesPerWorkerJob))
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

    func requeueInFlight(keeping keep: Set<Int64>, reason: String) {
        do {
            let requeued = try journal.requeueInFlightAttempts(keeping: keep, reason: reason)
            if !requeued.isEmpty {
                log.notice("restart grace over: requeued \(requeued.count) attempt(s) "
                    + requeued.map { "\($0.id) (job \($0.jobID) frame \($0.frame), worker \(peer: $0.worker))" }
                    .joined(separator: ", "), .restartGraceOver(requeued: requeued.count))
                dispatchNeeded = true
            }
        } catch {
            log.error("restart grace over: cannot requeue in-flight attempts: \(error)")
        }
    }

    func requeueDoneFrame(_ id: Int64, frame: Int, reason: String) {
        do {
            try journal.requeueDoneFrame(job: id, frame: frame, reason: "output lost: \(reason)")
            log.warning("job \(id) frame \(frame): was done but \(reason); requeued",
                .frameOutputLost(job: id, frame: frame, requeued: true, reason: reason))
            dispatchNeeded = true
        } catch {
            log.error("job \(id) frame \(frame): was done but \(reason); cannot requeue it: \(error)",
                .frameOutputLost(job: id, frame: frame, requeued: false, reason: reason))
        }
    }

    // MARK: messages

    func sendCancel(attempt id: UInt64, reason: String, to session: WorkerSession) {
        var cancel = FarmCancel()
        cancel.attemptID = id
        cancel.reason = reason
        send(session.routingID, .cancel(cancel))
    }

    // MARK: results

    /// Checks a current result's PNG and writes it to the job's output (OutputWriter hashes it once and
    /// refuses it if that is not the worker's claimed SHA-256). Errors other than OutputError go up.
    func writeResult(_ target: AttemptTarget, _ result: FarmFrameResult, worker: String) throws -> OutputCheck {
        let record = target.record
        let context: JobContext
        do {
            context = try jobContext(record.jobID)
        } catch {
            log.error("job \(record.jobID): cannot open its output for frame \(record.frame): \(error)", job: record.jobID, frame: record.frame)
            return .outputUnavailable("\(error)")
        }
        // The PNG's structure and frame size are checked before anything is written (ResultPNGCheck).
        if let problem = ResultPNGCheck.problem(result.png, width: context.frameWidth, height: context.frameHeight) {
            return .badPNG(problem)
        }
        do {
            return .written(sha256: try context.output.write(
                frame: UInt32(record.frame), png: result.png, attempt: UInt64(record.id), worker: worker,
                renderSeconds: result.renderSeconds, claimedSHA256: result.pngSha256, flush: false).pngSHA256)
        } catch let error as OutputError {
            if case let .checksumMismatch(_, _, _, found) = error {
                return .checksumMismatch(found: found)
            } else if case .alreadyWritten = error {
                return .alreadyWritten(sha256: FileDigest.sha256(result.png), note: "\(error)")
            }
            log.error("job \(record.jobID) frame \(record.frame): cannot write the output: \(error)", job: record.jobID, frame: record.frame)
            return .writeFailed("\(error)")
        }
    }

    func refuseResult(_ id: Int64, owner: String?, session: WorkerSession) {
        let attemptID = UInt64(bitPattern: id)
        guard let owner else {
            log.warning("result for unknown attempt \(id) from \(peerName(session.routingID)): refused", attempt: id)
            send(session.routingID, .error(FarmError(.unknownAttempt, "no attempt \(id)", attemptID: attemptID)))
            return
        }
        log.warning("result for attempt \(id) of worker '\(peer: owner)' from \(peerName(session.routingID)): refused", attempt: id)
        send(session.routingID, .error(FarmError(.unknownAttempt, "attempt \(id) was given to worker '\(owner)', not '\(session.name)'",
                                                 attemptID: attemptID)))
    }

    /// A frame done: its worker holds the job's model now; FrameDone to the job's followers.
    func frameDone(_ target: AttemptTarget, _ output: FrameOutput, session: WorkerSession, png: Data) {
        let record = target.record
        if let context = jobContexts[record.jobID] { session.models.insert(context.modelID) }
        log.info("job \(record.jobID) frame \(record.frame) done by worker '\(peer: session.name)' (attempt \(record.id), "
            + Self.seconds(output.renderSeconds) + ")",
                .frameDone(job: record.jobID, frame: record.frame, attempt: record.id, worker: session.name))
        guard let list = followers[record.jobID] else { return }
        var done = FarmFrameDone()
        done.frame = UInt32(record.frame)
        done.attemptID = UInt64(record.id)
        done.workerName = session.name
        done.renderSeconds = output.renderSeconds
        done.pngSha256 = output.sha256
        done.pngSize = UInt64(output.size)
        for follower in list {
            var event = done
            if follower.includePNG { event.png = png }
            sendEvent(follower, job: record.jobID, .frameDone(event))
        }
    }

    /// A failed attempt that the journal applied: log line, FrameFailed to followers.
    func frameFailed(_ outcome: AttemptOutcome, worker: String, error: FarmError) {
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
    }

    /// After a ban: when every connected worker is banned from `job`, its queued frames wait for a
    /// worker that is not. Says so (log line, JobNotice to followers) instead of stalling silently.
    func noticeIfNoWorkerMayTake(job: Int64) {
        let names = sessions.values.map(\.name).sorted()
        let allBanned = (try? FrameLifecycle.noWorkerMayTake(connected: names) { try journal.isBanned(worker: $0, job: job) })
        guard allBanned == true else { return }
        let message = "no connected worker may take job \(job) any more (\(names.joined(separator: ", ")): each failed "
            + "\(settings.maxFailedFramesPerWorkerJob) of its frames); its remaining frames wait for another worker "
            + "(start one, or dp-coord cancel \(job))"
        log.warning("job \(job): \(message)", .noWorkerMayTake(job: job))
        var notice = FarmJobNotice()
        notice.message = message
        emit(job: job, .jobNotice(notice))
    }
}

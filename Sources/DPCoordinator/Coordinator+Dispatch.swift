// Dispatch by credits: queued frames to the workers holding credit, best frames first.
import DPJournal
import DPLog
import DPProtocol
import Foundation

extension Coordinator {
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
}

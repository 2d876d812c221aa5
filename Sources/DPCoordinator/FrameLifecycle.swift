// The frame and job lifecycle as a pure state machine: events in (a result arrived, its output was
// checked, the journal applied a failure, a worker died or stalled or said goodbye, a worker said
// Hello listing attempts, the restart grace ended, a job was cancelled or failed), effects out as
// values (the journal writes to make, the messages to send, the follow-ups). It owns the rules that
// were spread over the handlers: fencing by attempt id, which failures count toward the frame's
// budget of different workers and which toward the worker's ban, hand-backs and restart requeues
// that count nothing, and what ends a job. The counting itself (`LifecycleRules`, in DPJournal) is
// pure too; the journal persists what it decides. The coordinator applies the effects
// (`Coordinator.apply`, Coordinator+Lifecycle.swift) and feeds the journal's answers back in.
// No sockets, no SQLite: LifecycleTests drives it with plain values.
import DPJournal
import DPProtocol

/// The journal's view of the attempt a FrameResult names (`Journal.resultTarget`).
struct AttemptTarget: Equatable, Sendable {
    var record: AttemptRecord
    /// Running and its frame's current attempt: the only result that counts (fencing).
    var current: Bool
}

/// What a worker's FrameResult reports.
enum ResultReport: Equatable, Sendable {
    /// A PNG: the SHA-256 the worker claims, its size and the render time.
    case rendered(claimedSHA256: String, size: Int, renderSeconds: Double)
    case failed(FarmError)
}

/// What became of a current result's PNG when the coordinator checked and wrote it (OutputWriter).
enum OutputCheck: Equatable, Sendable {
    /// Written; the digest the writer found (equal to the worker's claim).
    case written(sha256: String)
    /// The same frame was already in the output folder (written before a crash that came before the
    /// journal update): `sha256` is the received PNG's digest, `note` what the output said.
    case alreadyWritten(sha256: String, note: String)
    /// The job's output could not be opened: the job fails.
    case outputUnavailable(String)
    /// The PNG's structure or size is wrong (ResultPNGCheck).
    case badPNG(String)
    /// The PNG's digest is not the one the worker claimed.
    case checksumMismatch(found: String)
    /// The coordinator could not write it (its own problem, not the worker's).
    case writeFailed(String)
}

/// Why a worker lost attempts it held without handing them back: each is a failed attempt of its
/// frame (toward the budget of different workers), never toward the worker's ban from the job.
enum AttemptLoss: Equatable, Sendable {
    /// Its session ended: silent, connection gone, replaced (the text says how).
    case sessionEnded(String)
    /// No step progress for `milliseconds` (the stall timeout).
    case stalled(milliseconds: Int64)
    /// The worker said Hello again without it (it restarted or lost it mid-attempt).
    case reconnectedWithout
}

enum LifecycleEffect: Equatable, Sendable {
    // Journal writes.
    /// `completeAttempt` of a non-current attempt: recorded stale, the PNG dropped unwritten.
    case recordStale(AttemptRecord, FrameOutput)
    /// Check the current result's PNG and write it to the job's output; report back `outputChecked`.
    case writeOutput(AttemptTarget)
    /// `completeAttempt(checked:)`: the frame is done. `alreadyWritten`: the output already held
    /// these bytes (what it said, logged).
    case completeAttempt(AttemptTarget, FrameOutput, alreadyWritten: String?)
    /// `failAttempt`. `countsTowardWorkerBan` false: the worker was lost during it (AttemptLoss).
    /// `error` is what followers see (FrameFailed).
    case failAttempt(Int64, worker: String, reason: String, error: FarmError, countsTowardWorkerBan: Bool)
    /// `loseAttempt`: requeued, nothing counted.
    case loseAttempt(Int64, reason: String)
    /// The restart requeue: every running attempt but `keeping` lost, nothing counted.
    case requeueInFlight(keeping: Set<Int64>, reason: String)
    /// The job fails as a whole (its output or poses cannot be read).
    case failJob(Int64, error: String)
    /// `requeueDoneFrame`: a done frame whose PNG is missing or corrupt is rendered again.
    case requeueDoneFrame(job: Int64, frame: Int, reason: String)
    /// A finished job's done frame lost its PNG: logged, not requeued (`state`: the job's).
    case noteLostOutput(job: Int64, frame: Int, reason: String, state: JobState)

    // Messages and follow-ups.
    /// Error{UNKNOWN_ATTEMPT} to the worker that sent a result; `owner` nil: no such attempt.
    case refuseResult(attemptID: Int64, owner: String?)
    /// Cancel{attempt} to the worker.
    case cancelAttempt(UInt64, reason: String)
    /// The worker no longer holds the job's prep: it is sent again with its next task.
    case forgetPrep(job: Int64)
    /// Cancel{job} to every worker holding the job's prep or one of `attempts`.
    case cancelJobOnWorkers(Int64, attempts: [AttemptRecord], reason: String)
    /// A late failure of an attempt no longer current (the journal recorded it stale): logged.
    case noteStaleFailure(AttemptOutcome, reason: String)
    /// A frame done: FrameDone to followers, the worker holds the job's model.
    case frameDone(AttemptTarget, FrameOutput)
    /// A failure the journal applied: FrameFailed (final or requeued) to followers.
    case frameFailed(AttemptOutcome, worker: String, error: FarmError)
    /// The job ended: its final outputs, then JobFinished.
    case finishJob(Int64)
    /// The worker was banned from the job: say so if no connected worker may take it any more.
    case noticeIfNoWorkerMayTake(job: Int64)
    /// JobFinished to the followers at once (a cancel: no outputs to wait for).
    case announceFinished(Int64, state: JobState, message: String)
}

/// The lifecycle's rules. A value: the limits it applies, no state of its own (the journal holds the
/// frames' and attempts' states; each event carries what the rule needs of them).
struct FrameLifecycle: Sendable {
    /// Different workers a frame may fail on before it fails (3).
    var maxFailedWorkersPerFrame: Int
    /// Failed frames of a job after which a worker gets no more of them (3).
    var maxFailedFramesPerWorkerJob: Int
    /// A worker's error message is cut to this many bytes.
    var maxErrorMessageBytes: Int
    /// A worker is dead after this long without any message (heartbeat interval x liveness).
    var silentAfterMs: Int64
    /// An attempt is stalled after this long without a step forward (the stall timeout).
    var stallAfterMs: Int64

    init(maxFailedWorkersPerFrame: Int, maxFailedFramesPerWorkerJob: Int, maxErrorMessageBytes: Int,
         silentAfterMs: Int64 = 5000, stallAfterMs: Int64 = 600_000) {
        self.maxFailedWorkersPerFrame = maxFailedWorkersPerFrame
        self.maxFailedFramesPerWorkerJob = maxFailedFramesPerWorkerJob
        self.maxErrorMessageBytes = maxErrorMessageBytes
        self.silentAfterMs = silentAfterMs
        self.stallAfterMs = stallAfterMs
    }

    init(_ settings: CoordinatorSettings) {
        self.init(maxFailedWorkersPerFrame: settings.maxFailedWorkersPerFrame,
                  maxFailedFramesPerWorkerJob: settings.maxFailedFramesPerWorkerJob,
                  maxErrorMessageBytes: settings.limits.maxErrorMessageBytes,
                  silentAfterMs: Int64(settings.heartbeatIntervalMs * settings.heartbeatLiveness),
                  stallAfterMs: Int64(settings.stallTimeoutSeconds * 1000))
    }

    // MARK: deadlines and progress

    /// A worker last heard from at `lastHeardMs` is dead at `now` (any message counts).
    func isSilent(lastHeardMs: Int64, now: Int64) -> Bool {
        now - lastHeardMs > silentAfterMs
    }

    /// The attempts among `attempts` stalled at `now`: no step forward for longer than the stall timeout.
    func stalled(_ attempts: [LiveAttempt], now: Int64) -> [LiveAttempt] {
        attempts.filter { now - $0.lastProgressMs > stallAfterMs }
    }

    /// Progress reported for an attempt (Progress, or a Heartbeat's entry): only a step forward counts,
    /// and only it refreshes the stall timer (a worker reporting `step 0 of 0` forever must stall;
    /// model loading counts against the timer too). nil: not a step forward, nothing changes.
    static func progressed(_ live: LiveAttempt, step: Int, total: Int, now: Int64) -> LiveAttempt? {
        guard step > live.step else { return nil }
        var next = live
        next.step = step
        next.total = total
        next.lastProgressMs = now
        return next
    }

    // MARK: results (fencing)

    /// A FrameResult for attempt `id` from `worker`; `target` is the journal's view of that attempt
    /// (nil: unknown). Only the attempt's own worker may report it; a failure is classified first
    /// (even for an attempt that is no longer current: the journal records it stale); a PNG of a
    /// non-current attempt is recorded stale and dropped; a current one is checked and written.
    func resultArrived(_ id: Int64, target: AttemptTarget?, worker: String, report: ResultReport) -> [LifecycleEffect] {
        guard let target else { return [.refuseResult(attemptID: id, owner: nil)] }
        guard target.record.worker == worker else { return [.refuseResult(attemptID: id, owner: target.record.worker)] }
        switch report {
        case .failed(let error):
            return failedResult(target.record, worker: worker, error: error)
        case let .rendered(claimed, size, seconds):
            guard target.current else {
                // The PNG (and so its checksum) does not matter.
                return [.recordStale(target.record, FrameOutput(sha256: claimed, size: size, renderSeconds: seconds))]
            }
            return [.writeOutput(target)]
        }
    }

    /// What checking and writing a current result's PNG found.
    func outputChecked(_ target: AttemptTarget, worker: String, claimedSHA256: String, size: Int, renderSeconds: Double,
                       _ check: OutputCheck) -> [LifecycleEffect] {
        let a = target.record
        let output = { (digest: String) in FrameOutput(sha256: digest, size: size, renderSeconds: renderSeconds) }
        switch check {
        case .written(let digest):
            return [.completeAttempt(target, output(digest), alreadyWritten: nil)]
        case let .alreadyWritten(digest, note):
            guard digest == claimedSHA256 else { return mismatch(a, worker: worker, found: digest, claimed: claimedSHA256) }
            return [.completeAttempt(target, output(digest), alreadyWritten: note)]
        case .outputUnavailable(let why):
            return [.failJob(a.jobID, error: why)]
        case .badPNG(let problem):
            return failedResult(a, worker: worker, error: FarmError(.badRequest,
                "job \(a.jobID) frame \(a.frame): result of attempt \(a.id) from worker '\(worker)' refused: \(problem)"))
        case .checksumMismatch(let found):
            return mismatch(a, worker: worker, found: found, claimed: claimedSHA256)
        case .writeFailed(let why):
            return [.loseAttempt(a.id, reason: "coordinator could not write the frame: \(why)")]
        }
    }

    private func mismatch(_ a: AttemptRecord, worker: String, found: String, claimed: String) -> [LifecycleEffect] {
        failedResult(a, worker: worker, error: FarmError(.checksumMismatch,
            "job \(a.jobID) frame \(a.frame): PNG has sha256 \(found), worker claimed \(claimed)"))
    }

    /// A failed result (the worker's error, or its PNG refused). A cancelled or shut-down attempt is
    /// handed back (nothing counted); a missing job prep is handed back and the prep sent again; any
    /// other error is a failure of that worker (toward the frame's budget and the worker's ban).
    func failedResult(_ a: AttemptRecord, worker: String, error: FarmError) -> [LifecycleEffect] {
        var error = error
        let cap = maxErrorMessageBytes
        if error.message.utf8.count > cap {
            error.message = String(decoding: error.message.utf8.prefix(cap), as: UTF8.self) + "... (cut at \(cap) bytes)"
        }
        let reason = "\(error.code) from worker '\(worker)': \(error.message)"
        switch error.code {
        case .cancelled, .shuttingDown:
            return [.loseAttempt(a.id, reason: reason)]
        case .jobPrepMissing:
            return [.forgetPrep(job: a.jobID), .loseAttempt(a.id, reason: reason)]
        default:
            return [.failAttempt(a.id, worker: worker, reason: reason, error: error, countsTowardWorkerBan: true)]
        }
    }

    /// The journal applied (or, for an attempt no longer current, refused) a failure.
    func failureRecorded(_ outcome: AttemptOutcome, worker: String, reason: String, error: FarmError,
                         countsTowardWorkerBan: Bool) -> [LifecycleEffect] {
        guard outcome.applied else {
            // A lost worker's attempt that already ended is nothing to report; a late failure is noted.
            return countsTowardWorkerBan ? [.noteStaleFailure(outcome, reason: reason)] : []
        }
        var effects: [LifecycleEffect] = [.frameFailed(outcome, worker: worker, error: error)]
        if outcome.jobFinished {
            effects.append(.finishJob(outcome.jobID))
        } else if outcome.workerBannedFromJob {
            effects.append(.noticeIfNoWorkerMayTake(job: outcome.jobID))
        }
        return effects
    }

    /// The journal marked a current result's frame done.
    func completionRecorded(_ outcome: AttemptOutcome, target: AttemptTarget, output: FrameOutput) -> [LifecycleEffect] {
        var effects: [LifecycleEffect] = [.frameDone(target, output)]
        if outcome.jobFinished { effects.append(.finishJob(outcome.jobID)) }
        return effects
    }

    // MARK: workers

    /// `attempts` (oldest first) were held by `worker`, which lost them (`loss`): each is a failed
    /// attempt of its frame, counted toward the frame's budget of different workers (a poison frame
    /// that kills every worker it reaches fails after `maxFailedWorkersPerFrame` of them, with their
    /// errors), not toward the worker's ban. A stalled attempt is also cancelled on the worker.
    func attemptsLost(_ attempts: [Int64], worker: String, _ loss: AttemptLoss) -> [LifecycleEffect] {
        attempts.flatMap { id -> [LifecycleEffect] in
            let reason: String
            switch loss {
            case .sessionEnded(let why): reason = "worker '\(worker)' \(why)"
            case .stalled(let ms): reason = "stalled: no step progress on worker '\(worker)' for \(ms) ms"
            case .reconnectedWithout: reason = "worker '\(worker)' reconnected without it"
            }
            let fail = LifecycleEffect.failAttempt(id, worker: worker, reason: reason, error: FarmError(.renderFailed, reason),
                                                   countsTowardWorkerBan: false)
            guard case .stalled = loss else { return [fail] }
            return [fail, .cancelAttempt(UInt64(id), reason: "stalled")]
        }
    }

    /// A worker said Goodbye holding `held` (oldest first): the attempts it listed are handed back,
    /// the others it left without returning; neither counts as a failure (a stopped worker, Slurm
    /// preemption). Only the first `cap` listed ids are looked at (what a session may hold).
    func goodbye(held: [Int64], handedBack: [UInt64], cap: Int, worker: String) -> [LifecycleEffect] {
        let handed = Set(handedBack.prefix(cap).map { Int64(truncatingIfNeeded: $0) })
        return held.map { id in
            .loseAttempt(id, reason: handed.contains(id) ? "handed back by worker '\(worker)'"
                : "worker '\(worker)' left without returning it")
        }
    }

    /// Which attempts a Hello's `running_attempt_ids` re-adopts: those the journal still has running
    /// and current for this worker name, when the sender's key owns the name (`ownsRecordedAttempts`).
    /// The rest get Cancel. The worker's earlier session's attempts that it did not list are lost
    /// (`reconnectedWithout`).
    struct HelloDecision: Equatable, Sendable {
        var adopted: [AttemptRecord] = []
        var refused: [UInt64] = []
        /// Failures of the attempts the worker came back without (apply after adopting).
        var lost: [LifecycleEffect] = []

        /// Cancel for each refused attempt (sent after the Welcome).
        var cancels: [LifecycleEffect] {
            refused.map { .cancelAttempt($0, reason: "attempt \($0) is no longer current") }
        }
    }

    func hello(worker: String, listed: [UInt64], targets: [Int64: AttemptTarget], ownsRecordedAttempts: Bool,
               previous: [Int64]) -> HelloDecision {
        var decision = HelloDecision()
        var adoptedIDs: Set<Int64> = []
        for id in listed {
            let attemptID = Int64(truncatingIfNeeded: id)
            if ownsRecordedAttempts, let target = targets[attemptID], target.record.worker == worker, target.current {
                decision.adopted.append(target.record)
                adoptedIDs.insert(attemptID)
            } else {
                decision.refused.append(id)
            }
        }
        decision.lost = attemptsLost(previous.filter { !adoptedIDs.contains($0) }, worker: worker, .reconnectedWithout)
        return decision
    }

    /// Progress for an attempt the session does not hold: if it is not current, the worker stops it.
    func progressForUnheldAttempt(_ id: UInt64, current: Bool) -> [LifecycleEffect] {
        current ? [] : [.cancelAttempt(id, reason: "attempt \(Int64(truncatingIfNeeded: id)) is no longer current")]
    }

    // MARK: restart, cancel, job failure

    /// The restart grace period ended: every attempt still running from before the restart that no
    /// reconnected worker re-adopted (`keeping`) is requeued; nothing counts as a failure.
    func graceOver(keeping: Set<Int64>, graceSeconds: Double) -> [LifecycleEffect] {
        [.requeueInFlight(keeping: keeping, reason: "not re-adopted within the \(graceSeconds) s restart grace period")]
    }

    /// The journal cancelled job `id` (`running`: the attempts it stopped): its workers stop them
    /// (their late results are stale). Then the client gets its reply, then `cancelAnswered`.
    func jobCancelled(_ id: Int64, running: [AttemptRecord]) -> [LifecycleEffect] {
        [.cancelJobOnWorkers(id, attempts: running, reason: "job \(id) cancelled")]
    }

    /// After the cancel's reply: a job now cancelled (not one that had already ended) that someone
    /// follows or whose output is open (`observed`) announces its end at once.
    func cancelAnswered(_ id: Int64, state: JobState, observed: Bool) -> [LifecycleEffect] {
        state == .cancelled && observed ? [.announceFinished(id, state: state, message: "cancelled")] : []
    }

    /// A done frame of job `id` whose PNG was missing or did not match the journal when its output was
    /// opened (`reason`): an unfinished job renders it again; a finished one keeps its state (its video
    /// then reports the frame missing).
    func doneFrameLost(_ id: Int64, frame: Int, reason: String, jobState: JobState) -> [LifecycleEffect] {
        jobState == .queued || jobState == .running ? [.requeueDoneFrame(job: id, frame: frame, reason: reason)]
            : [.noteLostOutput(job: id, frame: frame, reason: reason, state: jobState)]
    }

    /// The journal failed job `id` as a whole: its workers stop, its end is written.
    func jobFailed(_ id: Int64, running: [AttemptRecord], error: String) -> [LifecycleEffect] {
        [.cancelJobOnWorkers(id, attempts: running, reason: error), .finishJob(id)]
    }

    /// After a ban: true when every connected worker is banned from the job (its queued frames wait
    /// for a worker that is not; said, not stalled silently). No worker connected: nothing to say.
    static func noWorkerMayTake(connected: [String], banned: (String) throws -> Bool) rethrows -> Bool {
        try !connected.isEmpty && connected.allSatisfy(banned)
    }
}

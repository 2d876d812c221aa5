import Foundation

/// Dispatch and the attempt state machine (fencing by attempt id).
///
///   frame queued --startAttempt--> dispatched (current_attempt_id = A)
///   dispatched --completeAttempt(A)--> done                       attempt ok
///   dispatched --failAttempt(A)--> queued, or failed after N workers  attempt failed
///   dispatched --loseAttempt(A) / requeueInFlightAttempts--> queued   attempt lost
///   any result for an attempt that is not the frame's current one: attempt stale, frame unchanged
extension Journal {
    /// Frames to dispatch next, best first: job priority (higher first), then job age, then the
    /// job's dispatch rank (frame or preview order). Only jobs that are queued or running; with
    /// `worker`, jobs that worker is banned from are skipped.
    public func nextFrames(limit: Int, worker: String? = nil) throws -> [DispatchCandidate] {
        guard limit > 0 else { return [] }
        return try locked {
            let rows = try db.query("""
                SELECT f.job_id AS job_id, f.frame AS frame, j.model_id AS model_id, j.priority AS priority,
                       j.state AS job_state
                FROM jobs j CROSS JOIN frames f ON f.job_id = j.id AND f.state = 'queued'
                WHERE j.state IN ('queued', 'running')
                  AND NOT EXISTS (SELECT 1 FROM worker_job_failures b
                                  WHERE b.worker = ?1 AND b.job_id = j.id AND b.banned = 1)
                ORDER BY j.priority DESC, j.id, f.dispatch_rank
                LIMIT ?2
                """, [.optionalText(worker), .int(limit)])
            return rows.map {
                DispatchCandidate(jobID: $0.int64("job_id") ?? 0, frame: $0.int("frame") ?? 0,
                                  modelID: $0.string("model_id") ?? "", priority: $0.int("priority") ?? 0,
                                  jobState: JobState(rawValue: $0.string("job_state") ?? "") ?? .queued)
            }
        }
    }

    /// Dispatches a queued frame to `worker`: a new attempt (its id is the fencing token sent in
    /// FrameTask), frame -> dispatched, job queued -> running.
    public func startAttempt(job: Int64, frame: Int, worker: String) throws -> AttemptRecord {
        try write {
            let t = now
            // One lookup for the job's state, the frame's state and the worker's ban.
            guard let row = try db.query("""
                SELECT j.state AS job_state, f.state AS frame_state,
                       (SELECT banned FROM worker_job_failures b WHERE b.worker = ?3 AND b.job_id = j.id) AS banned
                FROM jobs j LEFT JOIN frames f ON f.job_id = j.id AND f.frame = ?2
                WHERE j.id = ?1
                """, [.integer(job), .int(frame), .text(worker)]).first else { throw JournalError.unknownJob(job) }
            let state = JobState(rawValue: row.string("job_state") ?? "") ?? .failed
            guard state == .queued || state == .running else {
                throw JournalError.notDispatchable(job: job, frame: frame, reason: "job is \(state.rawValue)")
            }
            guard let frameState = row.string("frame_state") else { throw JournalError.unknownFrame(job: job, frame: frame) }
            guard frameState == FrameState.queued.rawValue else {
                throw JournalError.notDispatchable(job: job, frame: frame, reason: "frame is \(frameState)")
            }
            if (row.int("banned") ?? 0) != 0 {
                throw JournalError.notDispatchable(job: job, frame: frame, reason: "worker '\(worker)' is banned from this job")
            }
            return try beginAttempt(job: job, frame: frame, worker: worker, jobQueued: state == .queued, at: t)
        }
    }

    /// `startAttempt` for a candidate the caller got from `nextFrames` inside the same `batch` and
    /// has not dispatched since, for a worker it checked is not banned from the job (`bannedJobs`):
    /// the coordinator's per-turn dispatch. Those checks make `startAttempt`'s lookup redundant, so
    /// this skips it (two statements instead of three).
    public func startAttempt(checked candidate: DispatchCandidate, worker: String) throws -> AttemptRecord {
        try write {
            try beginAttempt(job: candidate.jobID, frame: candidate.frame, worker: worker,
                             jobQueued: candidate.jobState == .queued, at: now)
        }
    }

    /// A new running attempt (its id is the fencing token), frame -> dispatched, job queued -> running.
    private func beginAttempt(job: Int64, frame: Int, worker: String, jobQueued: Bool, at t: Int64) throws -> AttemptRecord {
        try db.run("""
            INSERT INTO attempts (job_id, frame, worker, state, started_at_ms) VALUES (?, ?, ?, 'running', ?)
            """, [.integer(job), .int(frame), .text(worker), .integer(t)])
        let id = db.lastInsertRowID
        try db.run("""
            UPDATE frames SET state = 'dispatched', current_attempt_id = ?, updated_at_ms = ? WHERE job_id = ? AND frame = ?
            """, [.integer(id), .integer(t), .integer(job), .int(frame)])
        if jobQueued {
            try db.run("UPDATE jobs SET state = 'running', updated_at_ms = ? WHERE id = ? AND state = 'queued'",
                       [.integer(t), .integer(job)])
        }
        return AttemptRecord(id: id, jobID: job, frame: frame, worker: worker, result: nil,
                             startedAtMs: t, finishedAtMs: nil, renderSeconds: nil, error: nil)
    }

    /// The jobs each worker is banned from (`worker_job_failures.banned`), by worker name.
    public func bannedJobs() throws -> [String: Set<Int64>] {
        try locked {
            var out: [String: Set<Int64>] = [:]
            for row in try db.query("SELECT worker, job_id FROM worker_job_failures WHERE banned = 1") {
                out[row.string("worker") ?? "", default: []].insert(row.int64("job_id") ?? 0)
            }
            return out
        }
    }

    /// A successful result. Applied only if `attempt` is its frame's current attempt; otherwise
    /// the attempt is recorded as stale and the frame is not touched (the coordinator drops the PNG).
    public func completeAttempt(_ attempt: Int64, output: FrameOutput) throws -> AttemptOutcome {
        try writeKeepingDeferred {
            let (a, current) = try loadForResult(attempt)
            return try completeLoaded(a, current: current, output: output)
        }
    }

    /// `completeAttempt` for an attempt the caller looked up with `resultTarget` inside the same
    /// `batch`, with no change to that attempt or its frame since (the coordinator's per-result
    /// path): saves looking it up a second time.
    public func completeAttempt(checked a: AttemptRecord, current: Bool, output: FrameOutput) throws -> AttemptOutcome {
        try writeKeepingDeferred { try completeLoaded(a, current: current, output: output) }
    }

    private func completeLoaded(_ a: AttemptRecord, current: Bool, output: FrameOutput) throws -> AttemptOutcome {
        let t = now
        guard current else { return try recordStale(a, at: t, late: "ok") }
        try finishAttempt(a.id, result: .ok, at: t, renderSeconds: output.renderSeconds, error: nil)
        try db.run("""
            UPDATE frames SET state = 'done', current_attempt_id = NULL, output_sha256 = ?, output_size = ?,
                              render_seconds = ?, worker = ?, done_attempt_id = ?, updated_at_ms = ?
            WHERE job_id = ? AND frame = ?
            """, [.text(output.sha256), .int(output.size), .real(output.renderSeconds), .text(a.worker),
                  .integer(a.id), .integer(t), .integer(a.jobID), .int(a.frame)])
        // The job's and the worker's frames_done are written once per transaction (DeferredCounters);
        // the result that completes the job writes them now and settles it.
        let job = try deferFrameDone(job: a.jobID, worker: a.worker, at: t)
        var jobState = job.state, finished = false
        if !job.state.isFinished && job.pending <= 0 {
            try writeDeferredCounters()
            (jobState, finished) = try settleJob(a.jobID, at: t)
        }
        return AttemptOutcome(applied: true, attemptID: a.id, jobID: a.jobID, frame: a.frame, frameState: .done,
                              jobState: jobState, jobFinished: finished, workerBannedFromJob: false, staleReason: nil)
    }

    /// A failed render. If current: the worker's failure count for the job goes up (banned at
    /// `maxFailedFramesPerWorker`), and the frame is requeued, or failed once it has failed on
    /// `maxFailedWorkersPerFrame` different workers. If not current: recorded as stale.
    ///
    /// `countsTowardWorkerBan` false: the worker died, disconnected or stalled during the attempt
    /// (issue 12: a poison frame that kills every worker must end). The failure counts toward the
    /// frame's budget of different workers, not toward the worker's ban from the job (a worker
    /// killed by its host is not a bad worker). A non-current attempt is left as it is.
    public func failAttempt(_ attempt: Int64, error: String, maxFailedWorkersPerFrame: Int = 3,
                            maxFailedFramesPerWorker: Int = 3, countsTowardWorkerBan: Bool = true) throws -> AttemptOutcome {
        try write {
            let t = now
            let (a, current) = try loadForResult(attempt)
            guard current else {
                if !countsTowardWorkerBan {
                    return AttemptOutcome(applied: false, attemptID: a.id, jobID: a.jobID, frame: a.frame, frameState: .queued,
                                          jobState: try jobState(a.jobID) ?? .failed, jobFinished: false,
                                          workerBannedFromJob: false, staleReason: "attempt is not current")
                }
                return try recordStale(a, at: t, late: "failed: \(error)")
            }
            try finishAttempt(a.id, result: .failed, at: t, renderSeconds: nil, error: error)
            let previous = try db.query("SELECT failures, banned FROM worker_job_failures WHERE worker = ? AND job_id = ?",
                                        [.text(a.worker), .integer(a.jobID)]).first
            var banned = (previous?.int("banned") ?? 0) != 0
            if countsTowardWorkerBan {
                // The ban is the lifecycle's rule (LifecycleRules); the row records it.
                let failures = (previous?.int("failures") ?? 0) + 1
                banned = LifecycleRules.workerBanned(failures: failures, limit: maxFailedFramesPerWorker)
                try db.run("""
                    INSERT INTO worker_job_failures (worker, job_id, failures, banned) VALUES (?1, ?2, ?3, ?4)
                    ON CONFLICT (worker, job_id) DO UPDATE SET failures = ?3, banned = ?4
                    """, [.text(a.worker), .integer(a.jobID), .int(failures), .int(banned ? 1 : 0)])
            }
            try db.run("UPDATE workers SET frames_failed = frames_failed + 1 WHERE name = ?", [.text(a.worker)])
            let failedBy = try db.query("SELECT worker FROM attempts WHERE job_id = ? AND frame = ? AND result = 'failed'",
                                        [.integer(a.jobID), .int(a.frame)]).map { $0.string("worker") ?? "" }
            let (failedOn, frameState) = LifecycleRules.frameAfterFailure(failedAttemptWorkers: failedBy,
                                                                          budget: maxFailedWorkersPerFrame)
            try db.run("""
                UPDATE frames SET state = ?, current_attempt_id = NULL, failures = ?, updated_at_ms = ?
                WHERE job_id = ? AND frame = ?
                """, [.text(frameState.rawValue), .int(failedOn), .integer(t), .integer(a.jobID), .int(a.frame)])
            if frameState == .failed {
                try db.run("UPDATE jobs SET frames_failed = frames_failed + 1, updated_at_ms = ? WHERE id = ?",
                           [.integer(t), .integer(a.jobID)])
            }
            let (jobState, finished) = try settleJob(a.jobID, at: t)
            return AttemptOutcome(applied: true, attemptID: a.id, jobID: a.jobID, frame: a.frame, frameState: frameState,
                                  jobState: jobState, jobFinished: finished, workerBannedFromJob: banned, staleReason: nil)
        }
    }

    /// The attempt's worker died, disconnected, stalled or handed the frame back: if current,
    /// the attempt is lost and the frame requeued (no failure counted). If not current, nothing
    /// changes (`applied` false).
    public func loseAttempt(_ attempt: Int64, reason: String) throws -> AttemptOutcome {
        try write {
            let t = now
            let (a, current) = try loadForResult(attempt)
            let frameState = try db.query("SELECT state FROM frames WHERE job_id = ? AND frame = ?",
                                          [.integer(a.jobID), .int(a.frame)]).first?.string("state")
                .flatMap(FrameState.init(rawValue:)) ?? .failed
            let jobState = try jobState(a.jobID) ?? .failed
            guard current else {
                return AttemptOutcome(applied: false, attemptID: a.id, jobID: a.jobID, frame: a.frame, frameState: frameState,
                                      jobState: jobState, jobFinished: false, workerBannedFromJob: false,
                                      staleReason: "attempt is not current (\(a.result?.rawValue ?? "frame moved on"))")
            }
            try requeue(a, at: t, reason: reason)
            return AttemptOutcome(applied: true, attemptID: a.id, jobID: a.jobID, frame: a.frame, frameState: .queued,
                                  jobState: jobState, jobFinished: false, workerBannedFromJob: false, staleReason: nil)
        }
    }

    /// After a coordinator restart (and its reconnect grace period): every running attempt except
    /// `keeping` (re-adopted by reconnected workers) is lost and its frame requeued, in one
    /// transaction. Returns the attempts requeued.
    @discardableResult
    public func requeueInFlightAttempts(keeping: Set<Int64> = [], reason: String = "coordinator restarted") throws -> [AttemptRecord] {
        try write {
            let t = now
            let running = try db.query("SELECT * FROM attempts WHERE state = 'running' ORDER BY id").map(Journal.attemptRecord)
            var requeued: [AttemptRecord] = []
            for a in running where !keeping.contains(a.id) {
                try requeue(a, at: t, reason: reason)
                var lost = a
                lost.result = .lost
                lost.finishedAtMs = t
                lost.error = reason
                requeued.append(lost)
            }
            return requeued
        }
    }

    /// A done frame whose output turned out missing or corrupt (the coordinator checks every done
    /// frame's PNG against `output_sha256` when it reopens a job's output): the frame goes back to
    /// queued, the job's done count down by one, and its done attempt is marked `lost` with `reason`
    /// (its output is gone; the frame keeps one `ok` attempt once re-rendered). Only for a job that
    /// is queued or running; returns false (nothing changed) when the frame is not done.
    @discardableResult
    public func requeueDoneFrame(job: Int64, frame: Int, reason: String) throws -> Bool {
        try write {
            let t = now
            guard let state = try jobState(job) else { throw JournalError.unknownJob(job) }
            guard state == .queued || state == .running else {
                throw JournalError.notDispatchable(job: job, frame: frame, reason: "job is \(state.rawValue)")
            }
            guard let row = try db.query("SELECT state, done_attempt_id FROM frames WHERE job_id = ? AND frame = ?",
                                         [.integer(job), .int(frame)]).first else {
                throw JournalError.unknownFrame(job: job, frame: frame)
            }
            guard row.string("state") == FrameState.done.rawValue else { return false }
            if let attempt = row.int64("done_attempt_id") {
                try db.run("UPDATE attempts SET result = 'lost', error = ? WHERE id = ? AND result = 'ok'",
                           [.text(reason), .integer(attempt)])
            }
            try db.run("""
                UPDATE frames SET state = 'queued', current_attempt_id = NULL, output_sha256 = NULL, output_size = NULL,
                                  render_seconds = NULL, worker = NULL, done_attempt_id = NULL, updated_at_ms = ?
                WHERE job_id = ? AND frame = ?
                """, [.integer(t), .integer(job), .int(frame)])
            try db.run("UPDATE jobs SET frames_done = frames_done - 1, updated_at_ms = ? WHERE id = ?",
                       [.integer(t), .integer(job)])
            return true
        }
    }

    /// Attempts still running, oldest first (after a restart: what workers may re-adopt).
    public func runningAttempts() throws -> [AttemptRecord] {
        try locked { try db.query("SELECT * FROM attempts WHERE state = 'running' ORDER BY id").map(Journal.attemptRecord) }
    }

    public func attempt(_ id: Int64) throws -> AttemptRecord? {
        try locked { try db.query("SELECT * FROM attempts WHERE id = ?", [.integer(id)]).first.map(Journal.attemptRecord) }
    }

    /// Every attempt of a job (or of one of its frames), oldest first.
    public func attempts(job: Int64, frame: Int? = nil) throws -> [AttemptRecord] {
        try locked {
            if let frame = frame {
                return try db.query("SELECT * FROM attempts WHERE job_id = ? AND frame = ? ORDER BY id",
                                    [.integer(job), .int(frame)]).map(Journal.attemptRecord)
            }
            return try db.query("SELECT * FROM attempts WHERE job_id = ? ORDER BY id", [.integer(job)]).map(Journal.attemptRecord)
        }
    }

    /// True when `attempt` is running and its frame's current attempt (what a result must be to count).
    public func isCurrent(_ attempt: Int64) throws -> Bool {
        try locked { try loadForResult(attempt).1 }
    }

    /// The attempt a result names and whether that result would count now (`isCurrent`), in one
    /// lookup; nil for an unknown attempt id. The coordinator's per-result check.
    public func resultTarget(_ attempt: Int64) throws -> (attempt: AttemptRecord, current: Bool)? {
        try lockedKeepingDeferred { try loadForResultIfKnown(attempt) }
    }

    // MARK: internals (called inside a transaction)

    func loadForResult(_ id: Int64) throws -> (AttemptRecord, Bool) {
        guard let loaded = try loadForResultIfKnown(id) else { throw JournalError.unknownAttempt(id) }
        return loaded
    }

    /// The attempt and whether it is current (running, and its frame is dispatched to it).
    func loadForResultIfKnown(_ id: Int64) throws -> (AttemptRecord, Bool)? {
        guard let row = try db.query("""
            SELECT a.*, f.state AS frame_state, f.current_attempt_id AS frame_attempt
            FROM attempts a LEFT JOIN frames f ON f.job_id = a.job_id AND f.frame = a.frame
            WHERE a.id = ?
            """, [.integer(id)]).first else { return nil }
        let a = Journal.attemptRecord(row)
        let current = a.result == nil && row.string("frame_state") == FrameState.dispatched.rawValue
            && row.int64("frame_attempt") == id
        return (a, current)
    }

    func finishAttempt(_ id: Int64, result: AttemptResult, at t: Int64, renderSeconds: Double?, error: String?) throws {
        try db.run("""
            UPDATE attempts SET state = 'finished', result = ?, finished_at_ms = ?, render_seconds = ?, error = ? WHERE id = ?
            """, [.text(result.rawValue), .integer(t), .optionalReal(renderSeconds), .optionalText(error), .integer(id)])
    }

    /// A result for a non-current attempt. An attempt that had ended lost/cancelled (or was
    /// somehow still open) becomes `stale`, keeping what it had been in its error text; a repeated
    /// result for an attempt already ok/failed/stale changes nothing.
    func recordStale(_ a: AttemptRecord, at t: Int64, late: String) throws -> AttemptOutcome {
        let before = a.result?.rawValue ?? "running but not current"
        let reason = "late result (\(late)) for attempt \(a.id) of job \(a.jobID) frame \(a.frame) from '\(a.worker)': attempt was \(before)"
        if a.result == nil || a.result == .lost || a.result == .cancelled {
            let note = [a.error, reason].compactMap { $0 }.joined(separator: "; ")
            try db.run("""
                UPDATE attempts SET state = 'finished', result = 'stale', finished_at_ms = COALESCE(finished_at_ms, ?), error = ?
                WHERE id = ?
                """, [.integer(t), .text(note), .integer(a.id)])
        }
        let frameState = try db.query("SELECT state FROM frames WHERE job_id = ? AND frame = ?",
                                      [.integer(a.jobID), .int(a.frame)]).first?.string("state")
            .flatMap(FrameState.init(rawValue:)) ?? .failed
        return AttemptOutcome(applied: false, attemptID: a.id, jobID: a.jobID, frame: a.frame, frameState: frameState,
                              jobState: try jobState(a.jobID) ?? .failed, jobFinished: false,
                              workerBannedFromJob: false, staleReason: reason)
    }

    func requeue(_ a: AttemptRecord, at t: Int64, reason: String) throws {
        try finishAttempt(a.id, result: .lost, at: t, renderSeconds: nil, error: reason)
        try db.run("""
            UPDATE frames SET state = 'queued', current_attempt_id = NULL, updated_at_ms = ?
            WHERE job_id = ? AND frame = ? AND current_attempt_id = ?
            """, [.integer(t), .integer(a.jobID), .int(a.frame), .integer(a.id)])
    }

    /// True when `worker` failed too many frames of `job` to be given it again.
    public func isBanned(worker: String, job: Int64) throws -> Bool {
        try locked { try isBannedLocked(worker: worker, job: job) }
    }

    func isBannedLocked(worker: String, job: Int64) throws -> Bool {
        (try db.query("SELECT banned FROM worker_job_failures WHERE worker = ? AND job_id = ?",
                      [.text(worker), .integer(job)]).first?.int("banned") ?? 0) != 0
    }
}

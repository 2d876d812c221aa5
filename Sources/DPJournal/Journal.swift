import Foundation

/// The coordinator's durable memory: jobs, their frames, every dispatch attempt, workers and
/// models, in one SQLite file (WAL, foreign keys on). Every state change is one transaction, so a
/// crash (kill -9) leaves the journal at the last completed change.
///
/// Thread-safe: every public method holds the journal's lock for its whole transaction.
/// Times come from the injected `JournalClock`.
// unchecked: `db` (one SQLite connection) and `deferred` are only touched holding `lock`, a recursive lock
// because `batch` bodies and composite changes call public methods while holding it; a Mutex is not reentrant.
public final class Journal: @unchecked Sendable {
    public let path: String
    public let clock: JournalClock
    let db: SQLiteDatabase
    let lock = NSRecursiveLock()  // recursive: composite changes (failJob) call other public methods
    /// Counter increments of accepted results not yet written (see `DeferredCounters`); guarded by `lock`.
    var deferred = DeferredCounters()

    /// Opens (or creates) the journal at `path` and runs pending migrations.
    public init(path: String, clock: JournalClock = SystemClock()) throws {
        self.path = path
        self.clock = clock
        db = try SQLiteDatabase(path: path)
        try Journal.migrate(db, clock: clock)
    }

    /// The highest applied migration.
    public func schemaVersion() throws -> Int {
        try locked { try db.query("SELECT MAX(version) AS v FROM schema_migrations").first?.int("v") ?? 0 }
    }

    /// Holds the journal's lock for `body`, first writing the counters `completeAttempt` deferred
    /// (so every other call, reader or writer, sees the rows as if each result had written them).
    func locked<T>(_ body: () throws -> T) throws -> T {
        lock.lock(); defer { lock.unlock() }
        if !deferred.isEmpty { try writeDeferredCounters() }
        return try body()
    }

    /// `locked` without writing deferred counters: only for the per-result calls, which neither read
    /// the jobs' nor the workers' counters (`resultTarget`, `completeAttempt`).
    func lockedKeepingDeferred<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock(); defer { lock.unlock() }
        return try body()
    }

    /// One transaction (or a part of the enclosing `batch`) holding the lock.
    func write<T>(_ body: () throws -> T) throws -> T {
        try locked { try transaction(body) }
    }

    /// `write` for the per-result calls (see `lockedKeepingDeferred`).
    func writeKeepingDeferred<T>(_ body: () throws -> T) throws -> T {
        try lockedKeepingDeferred { try transaction(body) }
    }

    /// `db.transaction` that, when it is the outermost one, writes the deferred counters before its
    /// commit and drops them when it rolls back (they were part of what it undid).
    private func transaction<T>(_ body: () throws -> T) throws -> T {
        guard !db.isInTransaction else { return try db.transaction(body) }
        do {
            return try db.transaction {
                let result = try body()
                if !deferred.isEmpty { try writeDeferredCounters() }
                return result
            }
        } catch {
            deferred = DeferredCounters()
            throw error
        }
    }

    var now: Int64 { clock.nowMilliseconds() }

    /// Runs `body` as ONE transaction holding the journal's lock: every journal call made inside it
    /// joins it (a call that throws before changing anything, like a refused dispatch, leaves the
    /// batch going on; one that throws after changing rows makes the whole batch roll back, see
    /// `SQLiteDatabase.transaction`), and all of them commit together when `body` returns - one WAL commit for a whole coordinator loop
    /// turn instead of one per event. Nothing is visible to other connections, or survives a crash,
    /// before the commit: send nothing that depends on these changes (a FrameTask with a new attempt
    /// id, a FrameDone event) until `batch` has returned. Rolls everything back if `body` throws.
    public func batch<T>(_ body: () throws -> T) throws -> T {
        try write(body)
    }

    // MARK: jobs

    /// Creates a job and its frames (dispatch ranks from `job.order`) in one transaction.
    public func createJob(_ job: NewJob) throws -> JobRecord {
        guard !job.frames.isEmpty else { throw JournalError.invalidJob("job '\(job.name)' has no frames") }
        let sorted = job.frames.sorted()
        if let bad = sorted.first, bad < 0 { throw JournalError.invalidJob("negative frame number \(bad)") }
        for i in 1..<max(sorted.count, 1) where sorted[i] == sorted[i - 1] {
            throw JournalError.invalidJob("frame \(sorted[i]) listed twice")
        }
        guard job.initialState == .queued || job.initialState == .uploading else {
            throw JournalError.invalidJob("a new job starts queued or uploading, not \(job.initialState.rawValue)")
        }
        let ranks = job.order.ranks(count: sorted.count)
        let id: Int64 = try write {
            let t = now
            try db.run("""
                INSERT INTO jobs (name, model_id, priority, order_mode, state, output_dir, video_path, video_fps,
                                  frames_total, created_at_ms, updated_at_ms, owner_key)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, [.text(job.name), .text(job.modelID), .int(job.priority), .text(job.order.rawValue),
                      .text(job.initialState.rawValue), .text(job.outputDir), .optionalText(job.videoPath),
                      .int(job.videoFPS), .int(sorted.count), .integer(t), .integer(t), .optionalText(job.ownerKey)])
            let id = db.lastInsertRowID
            try db.run("INSERT INTO job_specs (job_id, spec) VALUES (?, ?)", [.integer(id), .blob(job.spec)])
            // Rows of `chunk` frames per statement (a job can have tens of thousands of frames), the
            // rest one by one.
            let chunk = Journal.frameInsertChunk
            var i = 0
            if sorted.count >= chunk {
                let insertMany = try db.statement(Journal.frameInsertSQL(rows: chunk))
                var values: [SQLiteValue] = [.integer(id), .integer(t)]
                values.reserveCapacity(2 + 2 * chunk)
                while i + chunk <= sorted.count {
                    values.removeSubrange(2...)
                    for k in i ..< i + chunk { values.append(.int(sorted[k])); values.append(.int(ranks[k])) }
                    try insertMany.bind(values)
                    try insertMany.run()
                    i += chunk
                }
            }
            let insertOne = try db.statement(Journal.frameInsertSQL(rows: 1))
            while i < sorted.count {
                try insertOne.bind([.integer(id), .integer(t), .int(sorted[i]), .int(ranks[i])])
                try insertOne.run()
                i += 1
            }
            return id
        }
        guard let record = try self.job(id) else { throw JournalError.unknownJob(id) }
        return record
    }

    static let frameInsertChunk = 256

    /// INSERT of `rows` frames of one job: ?1 job id, ?2 time, then frame and dispatch rank per row.
    static func frameInsertSQL(rows: Int) -> String {
        "INSERT INTO frames (job_id, frame, dispatch_rank, state, updated_at_ms) VALUES "
            + (0 ..< rows).map { "(?1, ?\(3 + 2 * $0), ?\(4 + 2 * $0), 'queued', ?2)" }.joined(separator: ", ")
    }

    /// uploading -> queued: the job's inputs have all arrived.
    public func markJobQueued(_ id: Int64) throws {
        try write {
            let changed = try db.run("UPDATE jobs SET state = 'queued', updated_at_ms = ? WHERE id = ? AND state = 'uploading'",
                                     [.integer(now), .integer(id)])
            if changed == 0 {
                guard let state = try jobState(id) else { throw JournalError.unknownJob(id) }
                throw JournalError.invalidJob("job \(id) is \(state.rawValue), not uploading")
            }
        }
    }

    /// A job's record. `includingSpec` false leaves `spec` empty: the spec holds every pose file's
    /// entry (~100 bytes a frame), which status, follow and cancel do not need.
    public func job(_ id: Int64, includingSpec: Bool = true) throws -> JobRecord? {
        try locked {
            try db.query("\(Journal.jobColumns(includingSpec: includingSpec)) WHERE j.id = ?", [.integer(id)]).first
                .map(Journal.jobRecord)
        }
    }

    /// Jobs, oldest first; `states` nil = all; `includingSpec` as in `job`.
    public func jobs(states: Set<JobState>? = nil, includingSpec: Bool = true) throws -> [JobRecord] {
        try locked {
            try db.query("\(Journal.jobColumns(includingSpec: includingSpec)) ORDER BY j.id").map(Journal.jobRecord)
                .filter { states?.contains($0.state) ?? true }
        }
    }

    /// Frame counts by state for a job.
    public func progress(job id: Int64) throws -> JobProgress {
        try locked {
            guard try jobState(id) != nil else { throw JournalError.unknownJob(id) }
            var p = JobProgress()
            for row in try db.query("""
                SELECT state, COUNT(*) AS n, SUM(render_seconds) AS secs FROM frames WHERE job_id = ? GROUP BY state
                """, [.integer(id)]) {
                let n = row.int("n") ?? 0
                p.total += n
                switch FrameState(rawValue: row.string("state") ?? "") {
                case .queued: p.queued = n
                case .dispatched: p.dispatched = n
                case .done: p.done = n; p.renderSeconds = row.double("secs") ?? 0
                case .failed: p.failed = n
                case .cancelled: p.cancelled = n
                case nil: break
                }
            }
            return p
        }
    }

    /// Frame counts by state for a job without scanning its frames (the per-event counts of
    /// JobEvent): an unfinished job's counts come from its counters and its running attempts (a
    /// frame is dispatched exactly while its current attempt runs, and only `cancelJob` cancels
    /// frames, which also finishes the job). A finished job has no queued or dispatched frame (it
    /// settles when none is pending; cancelling cancels them), so what is neither done nor failed
    /// is cancelled. `renderSeconds` is left 0 (it needs the scan; `progress(job:)` has it).
    public func liveCounts(job id: Int64) throws -> JobProgress {
        try locked {
            let c = try jobCounters(id)
            var p = JobProgress()
            p.total = c.total
            p.done = c.done
            p.failed = c.failed
            if c.state.isFinished {
                p.cancelled = max(0, p.total - p.done - p.failed)
                return p
            }
            let dispatched = try db.query("""
                SELECT COUNT(*) AS n FROM attempts INDEXED BY attempts_running WHERE state = 'running' AND job_id = ?
                """, [.integer(id)]).first?.int("n") ?? 0
            p.dispatched = dispatched
            p.queued = max(0, p.total - p.done - p.failed - dispatched)
            return p
        }
    }

    /// A job's done frames per worker (the worker whose attempt was written), by worker name.
    public func framesDoneByWorker(job id: Int64) throws -> [(worker: String, frames: Int)] {
        try locked {
            try db.query("""
                SELECT worker, COUNT(*) AS n FROM frames WHERE job_id = ? AND state = 'done' GROUP BY worker ORDER BY worker
                """, [.integer(id)]).map { ($0.string("worker") ?? "", $0.int("n") ?? 0) }
        }
    }

    /// A job's frames in frame order.
    public func frames(job id: Int64) throws -> [FrameRecord] {
        try locked { try db.query("SELECT * FROM frames WHERE job_id = ? ORDER BY frame", [.integer(id)]).map(Journal.frameRecord) }
    }

    /// The job's frames in one state, by frame number.
    public func frames(job id: Int64, state: FrameState) throws -> [FrameRecord] {
        try locked {
            try db.query("SELECT * FROM frames WHERE job_id = ? AND state = ? ORDER BY frame", [.integer(id), .text(state.rawValue)])
                .map(Journal.frameRecord)
        }
    }

    public func frame(job id: Int64, frame: Int) throws -> FrameRecord? {
        try locked {
            try db.query("SELECT * FROM frames WHERE job_id = ? AND frame = ?", [.integer(id), .int(frame)]).first.map(Journal.frameRecord)
        }
    }

    /// Cancels a job: queued/dispatched frames -> cancelled, running attempts -> cancelled.
    /// Returns the attempts that were running (send Cancel to their workers). A finished job is
    /// left as it is (returns []).
    @discardableResult
    public func cancelJob(_ id: Int64, reason: String = "cancelled") throws -> [AttemptRecord] {
        try write {
            guard let state = try jobState(id) else { throw JournalError.unknownJob(id) }
            if state.isFinished { return [] }
            let t = now
            let running = try db.query("SELECT * FROM attempts WHERE job_id = ? AND state = 'running' ORDER BY id",
                                       [.integer(id)]).map(Journal.attemptRecord)
            try db.run("""
                UPDATE attempts SET state = 'finished', result = 'cancelled', finished_at_ms = ?, error = ?
                WHERE job_id = ? AND state = 'running'
                """, [.integer(t), .text(reason), .integer(id)])
            try db.run("""
                UPDATE frames SET state = 'cancelled', current_attempt_id = NULL, updated_at_ms = ?
                WHERE job_id = ? AND state IN ('queued', 'dispatched')
                """, [.integer(t), .integer(id)])
            try db.run("UPDATE jobs SET state = 'cancelled', error = ?, updated_at_ms = ?, finished_at_ms = ? WHERE id = ?",
                       [.text(reason), .integer(t), .integer(t), .integer(id)])
            return running
        }
    }

    /// Records that the job's video was written (so a restart does not encode it again).
    public func markVideoWritten(job id: Int64) throws {
        try write {
            if try db.run("UPDATE jobs SET video_written = 1, updated_at_ms = ? WHERE id = ?", [.integer(now), .integer(id)]) == 0 {
                throw JournalError.unknownJob(id)
            }
        }
    }

    /// Records that a finished job's final outputs (manifest.json, and the video if it asked for
    /// one) are written: a restart leaves it alone. Refused for a job that is not finished.
    public func markOutputsFinal(job id: Int64) throws {
        try write {
            guard let state = try jobState(id) else { throw JournalError.unknownJob(id) }
            guard state.isFinished else {
                throw JournalError.invalidJob("job \(id) is \(state.rawValue); only a finished job's outputs are final")
            }
            try db.run("UPDATE jobs SET outputs_final = 1, updated_at_ms = ? WHERE id = ?", [.integer(now), .integer(id)])
        }
    }

    /// Marks a job failed as a whole (e.g. its model could not be read), cancelling what is left.
    @discardableResult
    public func failJob(_ id: Int64, error: String) throws -> [AttemptRecord] {
        try write {
            let running = try cancelJob(id, reason: error)
            try db.run("UPDATE jobs SET state = 'failed', updated_at_ms = ? WHERE id = ? AND state = 'cancelled'",
                       [.integer(now), .integer(id)])
            return running
        }
    }

    // MARK: helpers

    func jobState(_ id: Int64) throws -> JobState? {
        try db.query("SELECT state FROM jobs WHERE id = ?", [.integer(id)]).first
            .flatMap { JobState(rawValue: $0.string("state") ?? "") }
    }

    /// After a frame left queued/dispatched: finish the job when none of its frames is pending.
    /// Returns the job's state and whether this call finished it.
    func settleJob(_ id: Int64, at t: Int64) throws -> (JobState, Bool) {
        // Counters, not a scan of the frames.
        let c = try jobCounters(id)
        let failed = c.failed
        guard let final = LifecycleRules.settlement(state: c.state, total: c.total, done: c.done, failed: failed) else {
            return (c.state, false)
        }
        try db.run("UPDATE jobs SET state = ?, updated_at_ms = ?, finished_at_ms = ?, error = ? WHERE id = ?",
                   [.text(final.rawValue), .integer(t), .integer(t),
                    failed > 0 ? .text(try failedFramesReport(id, failed: failed)) : .null, .integer(id)])
        return (final, true)
    }

    /// The job's error once frames failed (`LifecycleRules.failedFramesReport`): its first failed
    /// frames, each with its last workers' errors.
    func failedFramesReport(_ id: Int64, failed: Int) throws -> String {
        let frames = try db.query("SELECT frame FROM frames WHERE job_id = ? AND state = 'failed' ORDER BY frame LIMIT ?",
                                  [.integer(id), .int(LifecycleRules.reportedFrames)]).compactMap { $0.int("frame") }
        var report: [LifecycleRules.FailedFrame] = []
        for frame in frames {
            let errors = try db.query("""
                SELECT worker, error FROM attempts WHERE job_id = ? AND frame = ? AND result = 'failed' ORDER BY id DESC LIMIT ?
                """, [.integer(id), .int(frame), .int(LifecycleRules.reportedErrorsPerFrame)]).map {
                (worker: $0.string("worker") ?? "?", error: $0.string("error") ?? "?")
            }
            report.append(LifecycleRules.FailedFrame(frame: frame, errors: errors))
        }
        return LifecycleRules.failedFramesReport(failed: failed, frames: report)
    }

    /// A job's state and frame counters (inside the lock; unknown job: throws).
    func jobCounters(_ id: Int64) throws -> JobCounters {
        guard let row = try db.query("SELECT state, frames_total, frames_done, frames_failed FROM jobs WHERE id = ?",
                                     [.integer(id)]).first,
              let state = JobState(rawValue: row.string("state") ?? "") else { throw JournalError.unknownJob(id) }
        return JobCounters(state: state, total: row.int("frames_total") ?? 0, done: row.int("frames_done") ?? 0,
                           failed: row.int("frames_failed") ?? 0)
    }

    /// A job row, with its spec (kept in job_specs, see migration 2) or without.
    static func jobColumns(includingSpec: Bool) -> String {
        includingSpec ? "SELECT j.*, s.spec AS spec FROM jobs j LEFT JOIN job_specs s ON s.job_id = j.id" : "SELECT j.* FROM jobs j"
    }

    static func jobRecord(_ r: SQLiteRow) -> JobRecord {
        JobRecord(id: r.int64("id") ?? 0, name: r.string("name") ?? "", spec: r.data("spec") ?? Data(),
                  modelID: r.string("model_id") ?? "", priority: r.int("priority") ?? 0,
                  order: DispatchOrder(rawValue: r.string("order_mode") ?? "") ?? .frame,
                  state: JobState(rawValue: r.string("state") ?? "") ?? .failed,
                  outputDir: r.string("output_dir") ?? "", videoPath: r.string("video_path"),
                  videoFPS: r.int("video_fps") ?? 30, videoWritten: (r.int("video_written") ?? 0) != 0,
                  outputsFinal: (r.int("outputs_final") ?? 0) != 0,
                  framesTotal: r.int("frames_total") ?? 0, framesDone: r.int("frames_done") ?? 0,
                  framesFailed: r.int("frames_failed") ?? 0, error: r.string("error"),
                  createdAtMs: r.int64("created_at_ms") ?? 0, updatedAtMs: r.int64("updated_at_ms") ?? 0,
                  finishedAtMs: r.int64("finished_at_ms"), ownerKey: r.string("owner_key"))
    }

    static func frameRecord(_ r: SQLiteRow) -> FrameRecord {
        FrameRecord(jobID: r.int64("job_id") ?? 0, frame: r.int("frame") ?? 0, dispatchRank: r.int("dispatch_rank") ?? 0,
                    state: FrameState(rawValue: r.string("state") ?? "") ?? .failed,
                    currentAttemptID: r.int64("current_attempt_id"), failures: r.int("failures") ?? 0,
                    outputSHA256: r.string("output_sha256"), outputSize: r.int("output_size"),
                    renderSeconds: r.double("render_seconds"), worker: r.string("worker"),
                    doneAttemptID: r.int64("done_attempt_id"), updatedAtMs: r.int64("updated_at_ms") ?? 0)
    }

    static func attemptRecord(_ r: SQLiteRow) -> AttemptRecord {
        AttemptRecord(id: r.int64("id") ?? 0, jobID: r.int64("job_id") ?? 0, frame: r.int("frame") ?? 0,
                      worker: r.string("worker") ?? "", result: r.string("result").flatMap(AttemptResult.init(rawValue:)),
                      startedAtMs: r.int64("started_at_ms") ?? 0, finishedAtMs: r.int64("finished_at_ms"),
                      renderSeconds: r.double("render_seconds"), error: r.string("error"))
    }
}

import Foundation
import XCTest
@testable import DPJournal

final class JournalTests: XCTestCase {
    var dir: URL!
    var clock: ManualClock!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("journal-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        clock = ManualClock(milliseconds: 1_000_000)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    var path: String { dir.appendingPathComponent("journal.sqlite").path }

    func open() throws -> Journal { try Journal(path: path, clock: clock) }

    func newJob(_ frames: [Int], name: String = "j", priority: Int = 0, order: DispatchOrder = .frame) -> NewJob {
        NewJob(name: name, spec: Data("{\"spec\":\"\(name)\"}".utf8), modelID: "model-\(name)", priority: priority,
               order: order, outputDir: "/out/\(name)", videoPath: "/out/\(name).mp4", videoFPS: 24, frames: frames)
    }

    // MARK: SQLite wrapper

    func testDatabaseIsWALWithForeignKeysAndTypedBinds() throws {
        let db = try SQLiteDatabase(path: path)
        XCTAssertEqual(try db.query("PRAGMA journal_mode").first?.string("journal_mode"), "wal")
        XCTAssertEqual(try db.query("PRAGMA foreign_keys").first?.int("foreign_keys"), 1)
        try db.execute("CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, n)")
        try db.run("INSERT INTO t VALUES (?, ?, ?, ?, ?)", [.integer(-7), .real(2.5), .text("héllo"), .blob(Data([0, 1, 255])), .null])
        let row = try XCTUnwrap(db.query("SELECT * FROM t").first)
        XCTAssertEqual(row.values, [.integer(-7), .real(2.5), .text("héllo"), .blob(Data([0, 1, 255])), .null])
        XCTAssertThrowsError(try db.run("INSERT INTO t (i) VALUES (?)", [1, 2])) { error in
            XCTAssertTrue("\(error)".contains("expected 1 bound values, got 2"), "\(error)")
        }
    }

    func testTransactionRollsBackOnError() throws {
        let db = try SQLiteDatabase(path: path)
        try db.execute("CREATE TABLE t (x INTEGER)")
        struct Boom: Error {}
        XCTAssertThrowsError(try db.transaction {
            try db.run("INSERT INTO t VALUES (1)")
            try db.transaction { try db.run("INSERT INTO t VALUES (2)") }
            throw Boom()
        })
        XCTAssertEqual(try db.query("SELECT COUNT(*) AS n FROM t").first?.int("n"), 0)
        XCTAssertFalse(db.isInTransaction)
        try db.transaction { try db.run("INSERT INTO t VALUES (3)") }
        XCTAssertEqual(try db.query("SELECT COUNT(*) AS n FROM t").first?.int("n"), 1)
    }

    // MARK: migrations

    func testMigrationsRunOnceAndAreIdempotentOnReopen() throws {
        do {
            let j = try open()
            XCTAssertEqual(try j.schemaVersion(), Journal.migrations.last?.version)
        }
        let db = try SQLiteDatabase(path: path)
        XCTAssertEqual(try Journal.migrate(db, clock: clock), [], "a second run applies nothing")
        let rows = try db.query("SELECT version, name, applied_at_ms FROM schema_migrations ORDER BY version")
        XCTAssertEqual(rows.map { $0.int("version") }, Journal.migrations.map { $0.version })
        XCTAssertEqual(rows.first?.int64("applied_at_ms"), 1_000_000, "applied time comes from the injected clock")
        do {
            let j = try open()
            XCTAssertEqual(try j.schemaVersion(), Journal.migrations.last?.version)
        }
    }

    func testMigrationsApplyInOrderEachInItsTransaction() throws {
        let db = try SQLiteDatabase(path: path)
        let migrations = [
            Migration(version: 2, name: "second", sql: "ALTER TABLE a ADD COLUMN y INTEGER"),
            Migration(version: 1, name: "first", sql: "CREATE TABLE a (x INTEGER)"),
            Migration(version: 3, name: "broken", sql: "CREATE TABLE b (z INTEGER); THIS IS NOT SQL"),
        ]
        XCTAssertThrowsError(try Journal.migrate(db, migrations: migrations, clock: clock))
        XCTAssertEqual(try db.query("SELECT version FROM schema_migrations ORDER BY version").map { $0.int("version") }, [1, 2])
        XCTAssertTrue(try db.query("SELECT name FROM sqlite_master WHERE name = 'b'").isEmpty, "failed migration rolled back")
        XCTAssertEqual(try Journal.migrate(db, migrations: Array(migrations.prefix(2)), clock: clock), [])
    }

    func testMigrationThreeMarksOnlyFinishedJobsOutputsFinal() throws {
        // A journal written before migration 3: one completed job, one still running.
        let db = try SQLiteDatabase(path: path)
        try Journal.migrate(db, migrations: Array(Journal.migrations.prefix(2)), clock: clock)
        for (id, state) in [(1, "completed"), (2, "running")] {
            try db.run("""
                INSERT INTO jobs (id, name, model_id, order_mode, state, output_dir, frames_total, created_at_ms, updated_at_ms)
                VALUES (?, 'old', 'm', 'frame', ?, '/out', 1, 0, 0)
                """, [.int(id), .text(state)])
        }
        let j = try open()
        XCTAssertEqual(try j.job(1)?.outputsFinal, true, "finished before the migration: written in that commit")
        XCTAssertEqual(try j.job(2)?.outputsFinal, false)
        let new = try j.createJob(newJob([0]))
        XCTAssertEqual(new.outputsFinal, false)
        XCTAssertThrowsError(try j.markOutputsFinal(job: new.id)) { error in
            XCTAssertTrue("\(error)".contains("only a finished job"), "\(error)")
        }
        XCTAssertThrowsError(try j.markOutputsFinal(job: 99))
        _ = try j.cancelJob(new.id)
        try j.markOutputsFinal(job: new.id)
        XCTAssertEqual(try j.job(new.id)?.outputsFinal, true)
    }

    func testMigrationFiveAddsOwnerKeysAndKeepsOlderRowsReadable() throws {
        // A journal written before migration 5: a job and a worker without keys.
        let db = try SQLiteDatabase(path: path)
        try Journal.migrate(db, migrations: Array(Journal.migrations.prefix(4)), clock: clock)
        try db.execute("""
            INSERT INTO jobs (id, name, model_id, order_mode, state, output_dir, frames_total, created_at_ms, updated_at_ms)
                VALUES (1, 'old', 'm', 'frame', 'queued', '/out', 1, 0, 0);
            INSERT INTO job_specs (job_id, spec) VALUES (1, x'00');
            INSERT INTO workers (name, host, first_seen_ms, last_seen_ms) VALUES ('w', 'h', 0, 0);
            """)
        let j = try open()
        XCTAssertEqual(try j.job(1)?.name, "old")
        XCTAssertNil(try j.job(1)?.ownerKey, "no owner recorded before authentication")
        XCTAssertNil(try j.workerKey("w"))
        var owned = newJob([0])
        owned.ownerKey = "client-key"
        XCTAssertEqual(try j.createJob(owned).ownerKey, "client-key")
        try j.recordWorker(name: "w", host: "h", slots: 1, threads: 1, key: "worker-key")
        XCTAssertEqual(try j.workerKey("w"), "worker-key")
        XCTAssertEqual(try j.workers().first?.key, "worker-key")
        XCTAssertFalse(try j.hasRunningAttempts(worker: "w"))
        let job = try j.createJob(newJob([0]))
        _ = try j.startAttempt(job: job.id, frame: 0, worker: "w")
        XCTAssertTrue(try j.hasRunningAttempts(worker: "w"))
    }

    func testMigrationFourKeepsRowsForeignKeysAndTheAttemptSequence() throws {
        // A journal written before migration 4: a job with a done and a dispatched frame, and a
        // deleted job whose attempts had taken ids 3-7 (so the sequence is past the largest id left).
        let db = try SQLiteDatabase(path: path)
        try Journal.migrate(db, migrations: Array(Journal.migrations.prefix(3)), clock: clock)
        try db.execute("""
            INSERT INTO jobs (id, name, model_id, order_mode, state, output_dir, frames_total, created_at_ms, updated_at_ms)
                VALUES (1, 'kept', 'm', 'frame', 'running', '/out', 2, 0, 0), (2, 'gone', 'm', 'frame', 'running', '/out', 1, 0, 0);
            INSERT INTO job_specs (job_id, spec) VALUES (1, x'00'), (2, x'00');
            INSERT INTO frames (job_id, frame, dispatch_rank, state, current_attempt_id, output_sha256, worker, done_attempt_id, updated_at_ms)
                VALUES (1, 0, 0, 'done', NULL, 'abc', 'w', 1, 5), (1, 1, 1, 'dispatched', 2, NULL, NULL, NULL, 6), (2, 0, 0, 'queued', NULL, NULL, NULL, NULL, 0);
            INSERT INTO attempts (id, job_id, frame, worker, state, result, started_at_ms, finished_at_ms, render_seconds)
                VALUES (1, 1, 0, 'w', 'finished', 'ok', 1, 2, 0.5), (2, 1, 1, 'w', 'running', NULL, 3, NULL, NULL);
            INSERT INTO attempts (id, job_id, frame, worker, state, started_at_ms) VALUES (3, 2, 0, 'v', 'running', 0), (7, 2, 0, 'v', 'running', 0);
            DELETE FROM jobs WHERE id = 2;
            """)
        XCTAssertEqual(try db.query("SELECT COUNT(*) AS n FROM attempts").first?.int("n"), 2, "cascaded before the migration")

        let j = try open()
        XCTAssertEqual(try j.schemaVersion(), Journal.migrations.last?.version)
        XCTAssertEqual(try j.frame(job: 1, frame: 0)?.state, .done)
        XCTAssertEqual(try j.frame(job: 1, frame: 0)?.outputSHA256, "abc")
        XCTAssertEqual(try j.frame(job: 1, frame: 1)?.currentAttemptID, 2)
        XCTAssertTrue(try j.isCurrent(2))
        XCTAssertEqual(try j.job(1)?.spec, Data([0]))
        // Attempt ids go on after 7, never reusing one that fenced a result.
        _ = try j.completeAttempt(2, output: FrameOutput(sha256: "d", size: 1, renderSeconds: 1))
        XCTAssertNil(try j.nextFrames(limit: 1).first, "every frame done or dispatched")
        let other = try j.createJob(newJob([0]))
        XCTAssertEqual(try j.startAttempt(job: other.id, frame: 0, worker: "w").id, 8)
        // The checks and foreign keys hold as before: a bad state is refused, deleting a job
        // cascades to its frames and attempts.
        let check = try SQLiteDatabase(path: path)
        XCTAssertThrowsError(try check.run("UPDATE frames SET state = 'bogus' WHERE job_id = 1")) {
            XCTAssertTrue(($0 as? SQLiteError)?.isConstraint == true, "\($0)")
        }
        XCTAssertThrowsError(try check.run("UPDATE attempts SET result = 'bogus' WHERE id = 1"))
        XCTAssertThrowsError(try check.run("INSERT INTO frames (job_id, frame, dispatch_rank, state, updated_at_ms) VALUES (99, 0, 0, 'queued', 0)"))
        try check.run("DELETE FROM jobs WHERE id = 1")
        XCTAssertEqual(try check.query("SELECT COUNT(*) AS n FROM frames WHERE job_id = 1").first?.int("n"), 0)
        XCTAssertEqual(try check.query("SELECT COUNT(*) AS n FROM attempts WHERE job_id = 1").first?.int("n"), 0)
        XCTAssertEqual(try check.query("PRAGMA foreign_keys").first?.int("foreign_keys"), 1)
    }

    func testPerFrameWritesBuildNoTemporaryTables() throws {
        // SQLite checks `x IN (three or more values)` with a temporary b-tree built on every write;
        // the four writes of every dispatch+result cycle must not (migration 4).
        let j = try open()
        for sql in [
            "INSERT INTO attempts (job_id, frame, worker, state, started_at_ms) VALUES (?, ?, ?, 'running', ?)",
            "UPDATE frames SET state = 'dispatched', current_attempt_id = ?, updated_at_ms = ? WHERE job_id = ? AND frame = ?",
            "UPDATE attempts SET state = 'finished', result = ?, finished_at_ms = ?, render_seconds = ?, error = ? WHERE id = ?",
            """
            UPDATE frames SET state = 'done', current_attempt_id = NULL, output_sha256 = ?, output_size = ?,
                              render_seconds = ?, worker = ?, done_attempt_id = ?, updated_at_ms = ? WHERE job_id = ? AND frame = ?
            """,
        ] {
            let parameters = [SQLiteValue](repeating: .null, count: sql.filter { $0 == "?" }.count)
            let opcodes = try j.db.query("EXPLAIN " + sql, parameters).compactMap { $0.string("opcode") }
            XCTAssertFalse(opcodes.isEmpty)
            XCTAssertFalse(opcodes.contains("OpenEphemeral"), "a temporary b-tree in: \(sql)")
        }
    }

    func testJournalFromANewerBuildIsRefused() throws {
        _ = try open()
        let db = try SQLiteDatabase(path: path)
        try db.run("INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (99, 'future', 0)")
        XCTAssertThrowsError(try open()) { error in
            XCTAssertTrue("\(error)".contains("migration 99"), "\(error)")
        }
    }

    // MARK: jobs

    func testJobSurvivesCloseAndReopen() throws {
        let id: Int64
        do {
            let j = try open()
            let job = try j.createJob(newJob([3, 1, 2], name: "keep", priority: 5, order: .preview))
            id = job.id
            XCTAssertEqual(job.state, .queued)
            XCTAssertEqual(job.createdAtMs, 1_000_000)
            let a = try j.startAttempt(job: id, frame: 1, worker: "w1")
            clock.advance(milliseconds: 500)
            _ = try j.completeAttempt(a.id, output: FrameOutput(sha256: "aa", size: 10, renderSeconds: 1.5))
        }
        let j = try open()
        let job = try XCTUnwrap(j.job(id))
        XCTAssertEqual(job.name, "keep")
        XCTAssertEqual(job.spec, Data("{\"spec\":\"keep\"}".utf8))
        XCTAssertEqual(job.modelID, "model-keep")
        XCTAssertEqual(job.priority, 5)
        XCTAssertEqual(job.order, .preview)
        XCTAssertEqual(job.state, .running)
        XCTAssertEqual(job.videoPath, "/out/keep.mp4")
        XCTAssertEqual(job.videoFPS, 24)
        XCTAssertEqual(job.framesTotal, 3)
        XCTAssertEqual(job.framesDone, 1)
        XCTAssertEqual(job.updatedAtMs, 1_000_500, "completing a frame updates the job at the clock's time")
        // Without the spec (status, follow, cancel): the same record, spec left empty.
        var withoutSpec = job
        withoutSpec.spec = Data()
        XCTAssertEqual(try j.job(id, includingSpec: false), withoutSpec)
        XCTAssertEqual(try j.jobs(states: [.running], includingSpec: false), [withoutSpec])
        XCTAssertEqual(try j.jobs(states: [.completed], includingSpec: false), [])
        let frames = try j.frames(job: id)
        XCTAssertEqual(frames.map(\.frame), [1, 2, 3])
        XCTAssertEqual(frames.map(\.state), [.done, .queued, .queued])
        XCTAssertEqual(frames[0].outputSHA256, "aa")
        XCTAssertEqual(frames[0].worker, "w1")
        XCTAssertEqual(try j.progress(job: id), JobProgress(total: 3, queued: 2, dispatched: 0, done: 1, failed: 0,
                                                            cancelled: 0, renderSeconds: 1.5))
        // A done frame is never handed out again.
        XCTAssertEqual(try j.nextFrames(limit: 10).map(\.frame), [3, 2], "preview order: last, then the middle")
    }

    func testInvalidJobsAreRefused() throws {
        let j = try open()
        XCTAssertThrowsError(try j.createJob(newJob([])))
        XCTAssertThrowsError(try j.createJob(newJob([1, 2, 1]))) { XCTAssertTrue("\($0)".contains("frame 1 listed twice")) }
        XCTAssertThrowsError(try j.createJob(newJob([-1])))
    }

    func testJobFinishesWhenEveryFrameIsDone() throws {
        let j = try open()
        let job = try j.createJob(newJob([0, 1]))
        let a0 = try j.startAttempt(job: job.id, frame: 0, worker: "w")
        let a1 = try j.startAttempt(job: job.id, frame: 1, worker: "w")
        let o0 = try j.completeAttempt(a0.id, output: FrameOutput(sha256: "0", size: 1, renderSeconds: 1))
        XCTAssertFalse(o0.jobFinished)
        let o1 = try j.completeAttempt(a1.id, output: FrameOutput(sha256: "1", size: 1, renderSeconds: 1))
        XCTAssertTrue(o1.jobFinished)
        XCTAssertEqual(o1.jobState, .completed)
        XCTAssertEqual(try j.job(job.id)?.state, .completed)
        XCTAssertThrowsError(try j.startAttempt(job: job.id, frame: 0, worker: "w"))
        try j.markVideoWritten(job: job.id)
        XCTAssertEqual(try j.job(job.id)?.videoWritten, true)
    }

    func testCountersOfResultsInABatchAreSeenByEveryReadAndUndoneByARollback() throws {
        let j = try open()
        try j.recordWorker(name: "w", host: "h", slots: 1, threads: 1)
        try j.recordWorker(name: "v", host: "h", slots: 1, threads: 1)
        let job = try j.createJob(newJob([0, 1, 2, 3]))
        let a = try (0 ..< 4).map { try j.startAttempt(job: job.id, frame: $0, worker: $0 == 3 ? "v" : "w") }
        let out = FrameOutput(sha256: "x", size: 1, renderSeconds: 1)
        func done(_ name: String) throws -> Int? { try j.workers().first { $0.name == name }?.framesDone }

        // Counted in memory inside the batch; any other call in it (or after it) sees them written.
        try j.batch {
            _ = try j.completeAttempt(checked: XCTUnwrap(j.resultTarget(a[0].id)).attempt, current: true, output: out)
            clock.advance(milliseconds: 5)
            _ = try j.completeAttempt(a[1].id, output: out)
            XCTAssertEqual(try j.job(job.id)?.framesDone, 2)
            XCTAssertEqual(try j.job(job.id)?.updatedAtMs, 1_000_005)
            XCTAssertEqual(try done("w"), 2)
            XCTAssertEqual(try j.liveCounts(job: job.id).done, 2)
            XCTAssertEqual(try j.liveCounts(job: job.id).dispatched, 2)
        }
        XCTAssertEqual(try j.job(job.id)?.framesDone, 2)

        // A batch that rolls back takes its counted results with it.
        XCTAssertThrowsError(try j.batch {
            _ = try j.completeAttempt(a[2].id, output: out)
            throw JournalError.invalidJob("roll back")
        })
        XCTAssertEqual(try j.frame(job: job.id, frame: 2)?.state, .dispatched)
        XCTAssertEqual(try j.job(job.id)?.framesDone, 2)
        XCTAssertEqual(try done("w"), 2)

        // The last results finish the job inside the batch, counters written.
        let last = try j.batch { () throws -> [AttemptOutcome] in
            [try j.completeAttempt(a[2].id, output: out), try j.completeAttempt(a[3].id, output: out)]
        }
        XCTAssertEqual(last.map(\.jobFinished), [false, true])
        XCTAssertEqual(last.last?.jobState, .completed)
        let record = try XCTUnwrap(j.job(job.id))
        XCTAssertEqual(record.state, .completed)
        XCTAssertEqual(record.framesDone, 4)
        XCTAssertEqual(try done("w"), 3)
        XCTAssertEqual(try done("v"), 1)

        // And they are in the file, not only in this Journal object.
        let reopened = try open()
        XCTAssertEqual(try reopened.job(job.id)?.framesDone, 4)
        XCTAssertEqual(try reopened.workers().map(\.framesDone).sorted(), [1, 3])
    }

    func testStartAttemptCheckedDispatchesAQueueCandidateAndBannedJobsLists() throws {
        let j = try open()
        let job = try j.createJob(newJob([0, 1]))
        let candidates = try j.nextFrames(limit: 5)
        XCTAssertEqual(candidates.map(\.frame), [0, 1])
        XCTAssertEqual(candidates.first?.jobState, .queued)
        let a = try j.startAttempt(checked: candidates[0], worker: "w")
        XCTAssertEqual(try j.job(job.id)?.state, .running, "the first dispatch starts the job")
        XCTAssertEqual(try j.frame(job: job.id, frame: 0)?.state, .dispatched)
        XCTAssertEqual(try j.frame(job: job.id, frame: 0)?.currentAttemptID, a.id)
        XCTAssertTrue(try j.isCurrent(a.id))
        _ = try j.startAttempt(checked: candidates[1], worker: "v")  // read while queued: the job stays running
        XCTAssertEqual(try j.job(job.id)?.state, .running)
        XCTAssertEqual(try j.nextFrames(limit: 5), [])

        XCTAssertEqual(try j.bannedJobs(), [:])
        _ = try j.failAttempt(a.id, error: "x", maxFailedFramesPerWorker: 1)
        XCTAssertEqual(try j.bannedJobs(), ["w": [job.id]])
    }

    // MARK: ordering

    func testPreviewOrderFirstLastMiddleThenHalves() {
        XCTAssertEqual(DispatchOrder.preview.sequence(count: 9), [0, 8, 4, 2, 6, 1, 3, 5, 7])
        XCTAssertEqual(DispatchOrder.preview.sequence(count: 1), [0])
        XCTAssertEqual(DispatchOrder.preview.sequence(count: 2), [0, 1])
        XCTAssertEqual(DispatchOrder.preview.sequence(count: 5), [0, 4, 2, 1, 3])
        XCTAssertEqual(DispatchOrder.frame.sequence(count: 4), [0, 1, 2, 3])
        for n in 0...300 {
            let seq = DispatchOrder.preview.sequence(count: n)
            XCTAssertEqual(seq.sorted(), Array(0..<n), "preview order of \(n) frames is a permutation")
        }
    }

    func testNextFramesFollowsPreviewRanksOfTheSelectedFrames() throws {
        let j = try open()
        // Frame numbers need not be contiguous: ranks are over the sorted selection.
        let frames = [10, 12, 14, 16, 18, 20, 22, 24, 26]
        let job = try j.createJob(newJob(frames.shuffled(), order: .preview))
        XCTAssertEqual(try j.nextFrames(limit: 100).map(\.frame), [10, 26, 18, 14, 22, 12, 16, 20, 24])
        XCTAssertEqual(try j.frames(job: job.id).map(\.dispatchRank), [0, 5, 3, 6, 2, 7, 4, 8, 1])
    }

    func testPriorityThenAgeThenRank() throws {
        let j = try open()
        let low = try j.createJob(newJob([0, 1], name: "low", priority: 0))
        let high = try j.createJob(newJob([5, 6], name: "high", priority: 9))
        let lowToo = try j.createJob(newJob([2], name: "low2", priority: 0))
        let next = try j.nextFrames(limit: 10)
        XCTAssertEqual(next.map(\.jobID), [high.id, high.id, low.id, low.id, lowToo.id])
        XCTAssertEqual(next.map(\.frame), [5, 6, 0, 1, 2])
        XCTAssertEqual(next.first?.modelID, "model-high")
        XCTAssertEqual(try j.nextFrames(limit: 2).count, 2)
        _ = try j.startAttempt(job: high.id, frame: 5, worker: "w")
        XCTAssertEqual(try j.nextFrames(limit: 1).first?.frame, 6, "dispatched frames are not offered again")
    }

    // MARK: attempts and fencing

    func testStaleResultIsRecordedButFrameUnchanged() throws {
        let j = try open()
        let job = try j.createJob(newJob([7]))
        let first = try j.startAttempt(job: job.id, frame: 7, worker: "slow")
        // The coordinator gives up on "slow" and requeues; "fast" gets the frame.
        XCTAssertTrue(try j.loseAttempt(first.id, reason: "no progress for 30 s").applied)
        XCTAssertEqual(try j.frame(job: job.id, frame: 7)?.state, .queued)
        let second = try j.startAttempt(job: job.id, frame: 7, worker: "fast")
        XCTAssertFalse(try j.isCurrent(first.id))
        XCTAssertTrue(try j.isCurrent(second.id))

        clock.advance(milliseconds: 1000)
        let late = try j.completeAttempt(first.id, output: FrameOutput(sha256: "old", size: 1, renderSeconds: 9))
        XCTAssertFalse(late.applied)
        XCTAssertNotNil(late.staleReason)
        XCTAssertEqual(late.frameState, .dispatched)
        let frame = try XCTUnwrap(j.frame(job: job.id, frame: 7))
        XCTAssertEqual(frame.state, .dispatched)
        XCTAssertEqual(frame.currentAttemptID, second.id)
        XCTAssertNil(frame.outputSHA256)
        let recorded = try XCTUnwrap(j.attempt(first.id))
        XCTAssertEqual(recorded.result, .stale)
        XCTAssertTrue(recorded.error?.contains("no progress for 30 s") == true, recorded.error ?? "")
        XCTAssertTrue(recorded.error?.contains("attempt was lost") == true, recorded.error ?? "")

        // The current attempt still completes normally; a late failure of the old one changes nothing.
        XCTAssertTrue(try j.completeAttempt(second.id, output: FrameOutput(sha256: "new", size: 2, renderSeconds: 1)).applied)
        XCTAssertFalse(try j.failAttempt(first.id, error: "late crash").applied)
        XCTAssertFalse(try j.completeAttempt(second.id, output: FrameOutput(sha256: "dup", size: 2, renderSeconds: 1)).applied,
                       "a duplicate result is not applied twice")
        XCTAssertEqual(try j.frame(job: job.id, frame: 7)?.outputSHA256, "new")
        XCTAssertEqual(try j.attempt(second.id)?.result, .ok)
        XCTAssertEqual(try j.job(job.id)?.framesDone, 1)
        XCTAssertThrowsError(try j.completeAttempt(999, output: FrameOutput(sha256: "", size: 0, renderSeconds: 0))) {
            XCTAssertEqual($0 as? JournalError, .unknownAttempt(999))
        }
    }

    func testRequeueInFlightAttemptsAfterRestart() throws {
        var ids: [Int64] = []
        let jobID: Int64
        do {
            let j = try open()
            let job = try j.createJob(newJob([0, 1, 2, 3]))
            jobID = job.id
            for f in 0..<3 { ids.append(try j.startAttempt(job: job.id, frame: f, worker: "w\(f)").id) }
            _ = try j.completeAttempt(ids[0], output: FrameOutput(sha256: "x", size: 1, renderSeconds: 1))
        }   // "crash": the journal is closed with attempts 1 and 2 in flight
        let j = try open()
        XCTAssertEqual(try j.runningAttempts().map(\.id), [ids[1], ids[2]])
        clock.advance(milliseconds: 10_000)
        // w2 reconnected within the grace period and still renders its frame: keep it.
        let requeued = try j.requeueInFlightAttempts(keeping: [ids[2]])
        XCTAssertEqual(requeued.map(\.id), [ids[1]])
        XCTAssertEqual(requeued.first?.result, .lost)
        XCTAssertEqual(try j.attempt(ids[1])?.result, .lost)
        XCTAssertEqual(try j.attempt(ids[1])?.finishedAtMs, 1_010_000)
        XCTAssertNil(try j.attempt(ids[2])?.result)
        XCTAssertEqual(try j.frames(job: jobID).map(\.state), [.done, .queued, .dispatched, .queued])
        XCTAssertEqual(try j.frame(job: jobID, frame: 1)?.failures, 0, "a lost attempt is not a failure")
        XCTAssertEqual(try j.nextFrames(limit: 10).map(\.frame), [1, 3])
        // New attempt ids never reuse old ones.
        let fresh = try j.startAttempt(job: jobID, frame: 1, worker: "w9")
        XCTAssertGreaterThan(fresh.id, ids.max()!)
        XCTAssertEqual(try j.requeueInFlightAttempts().map(\.id), [ids[2], fresh.id])
    }

    func testFrameFailsAfterThreeDifferentWorkersAndWorkerIsBannedAfterThreeFrames() throws {
        let j = try open()
        let job = try j.createJob(newJob([0, 1, 2, 3]))
        // Frame 0 fails on w1 twice: still one distinct worker.
        for _ in 0..<2 {
            let a = try j.startAttempt(job: job.id, frame: 0, worker: "w1")
            let o = try j.failAttempt(a.id, error: "render failed: NaN in latent")
            XCTAssertEqual(o.frameState, .queued)
            XCTAssertFalse(o.workerBannedFromJob)
        }
        XCTAssertEqual(try j.frame(job: job.id, frame: 0)?.failures, 1)
        var a = try j.startAttempt(job: job.id, frame: 0, worker: "w2")
        XCTAssertEqual(try j.failAttempt(a.id, error: "oom").frameState, .queued)
        a = try j.startAttempt(job: job.id, frame: 0, worker: "w3")
        let o = try j.failAttempt(a.id, error: "oom")
        XCTAssertEqual(o.frameState, .failed, "third different worker fails it for good")
        XCTAssertEqual(try j.job(job.id)?.framesFailed, 1)

        // w1 has failed 2 frames of this job; a third failure bans it.
        a = try j.startAttempt(job: job.id, frame: 1, worker: "w1")
        XCTAssertTrue(try j.failAttempt(a.id, error: "boom").workerBannedFromJob)
        XCTAssertEqual(try j.workerJobFailures(worker: "w1", job: job.id).failures, 3)
        XCTAssertEqual(try j.bannedJobs(worker: "w1"), [job.id])
        XCTAssertEqual(try j.nextFrames(limit: 10, worker: "w1"), [], "banned worker gets nothing of this job")
        XCTAssertEqual(try j.nextFrames(limit: 10, worker: "w2").map(\.frame), [1, 2, 3])
        XCTAssertThrowsError(try j.startAttempt(job: job.id, frame: 1, worker: "w1"))

        // The rest completes; the job ends failed because one frame failed.
        for f in 1...3 {
            let a = try j.startAttempt(job: job.id, frame: f, worker: "w2")
            _ = try j.completeAttempt(a.id, output: FrameOutput(sha256: "\(f)", size: 1, renderSeconds: 1))
        }
        let job2 = try XCTUnwrap(j.job(job.id))
        XCTAssertEqual(job2.state, .failed)
        XCTAssertEqual(job2.framesDone, 3)
        // The failed frame's last workers' errors, last first (issue 12: the job reports them).
        XCTAssertEqual(job2.error, "1 frame(s) failed: frame 0 ('w3': oom | 'w2': oom | 'w1': render failed: NaN in latent)")
    }

    func testCancelJobStopsDispatchAndFencesRunningAttempts() throws {
        let j = try open()
        let job = try j.createJob(newJob([0, 1, 2]))
        let other = try j.createJob(newJob([0], name: "other"))
        let a = try j.startAttempt(job: job.id, frame: 0, worker: "w")
        let cancelled = try j.cancelJob(job.id)
        XCTAssertEqual(cancelled.map(\.id), [a.id])
        XCTAssertEqual(try j.job(job.id)?.state, .cancelled)
        XCTAssertEqual(try j.progress(job: job.id).cancelled, 3)
        XCTAssertEqual(try j.nextFrames(limit: 10).map(\.jobID), [other.id])
        XCTAssertFalse(try j.completeAttempt(a.id, output: FrameOutput(sha256: "x", size: 1, renderSeconds: 1)).applied)
        XCTAssertEqual(try j.attempt(a.id)?.result, .stale)
        XCTAssertEqual(try j.cancelJob(job.id), [], "cancelling twice is a no-op")
    }

    func testUploadingJobIsNotDispatchedUntilQueued() throws {
        let j = try open()
        var spec = newJob([0])
        spec.initialState = .uploading
        let job = try j.createJob(spec)
        XCTAssertEqual(try j.nextFrames(limit: 10), [])
        try j.markJobQueued(job.id)
        XCTAssertEqual(try j.nextFrames(limit: 10).map(\.jobID), [job.id])
        XCTAssertThrowsError(try j.markJobQueued(job.id))
    }

    func testWorkersAndModels() throws {
        let j = try open()
        try j.recordWorker(name: "w1", host: "box-a", slots: 2, threads: 8)
        clock.advance(milliseconds: 250)
        try j.touchWorker("w1")
        let w = try XCTUnwrap(j.workers().first)
        XCTAssertEqual(w.host, "box-a")
        XCTAssertEqual(w.firstSeenMs, 1_000_000)
        XCTAssertEqual(w.lastSeenMs, 1_000_250)
        let files = [ModelFileRecord(path: "unet/config.json", size: 10, sha256: "b"),
                     ModelFileRecord(path: "dreampose.json", size: 5, sha256: "a")]
        try j.putModel(id: "m1", directory: "/state/models/m1", files: files)
        let m = try XCTUnwrap(j.model("m1"))
        XCTAssertEqual(m.files.map(\.path), ["dreampose.json", "unet/config.json"])
        XCTAssertEqual(m.totalBytes, 15)
        XCTAssertNil(try j.model("nope"))
    }

    func testDispatchCycleThroughput() throws {
        // Not a benchmark: a guard that a dispatch+result cycle stays well under a millisecond
        // (the farm target is >= 5,000 cycles/s through the coordinator).
        let j = try open()
        let n = 2000
        let job = try j.createJob(newJob(Array(0..<n)))
        let start = Date()
        for _ in 0..<n {
            guard let next = try j.nextFrames(limit: 1, worker: "w").first else { return XCTFail("ran dry") }
            let a = try j.startAttempt(job: next.jobID, frame: next.frame, worker: "w")
            _ = try j.completeAttempt(a.id, output: FrameOutput(sha256: "x", size: 1, renderSeconds: 0))
        }
        let perSecond = Double(n) / Date().timeIntervalSince(start)
        print("journal dispatch+result cycles/s (debug build): \(Int(perSecond))")
        XCTAssertEqual(try j.job(job.id)?.state, .completed)
        XCTAssertGreaterThan(perSecond, 500)
    }
}

// The farm's batched durability (DESIGN.md, "Durability and batching"): journal batches with
// savepoints, counts without a frame scan, OutputWriter's `.batched` mode vouched for by journal
// records, and the coordinator re-rendering a done frame whose PNG went missing or corrupt.
@testable import DPCoordinator
import DPFileKit
import DPJournal
import DPLog
import DPProtocol
import Foundation
import XCTest

final class FarmBatchingTests: XCTestCase {
    var root: URL!

    override func setUpWithError() throws {
        root = try FarmFixtures.tempDirectory("batching")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: root)
    }

    private func journal(_ name: String = "journal.sqlite") throws -> Journal {
        try Journal(path: root.appendingPathComponent(name).path, clock: ManualClock())
    }

    private func newJob(_ journal: Journal, frames: [Int]) throws -> Int64 {
        try journal.createJob(NewJob(name: "j", spec: Data([1]), modelID: "m", outputDir: root.path, frames: frames)).id
    }

    // MARK: journal

    func testBatchCommitsTogetherAndAFailedCallUndoesOnlyItself() throws {
        let j = try journal()
        let job = try newJob(j, frames: [0, 1, 2])
        let (a, b) = try j.batch { () -> (AttemptRecord, AttemptRecord) in
            let a = try j.startAttempt(job: job, frame: 0, worker: "w")
            // Refused inside the batch (frame 0 is dispatched now): its savepoint is rolled back,
            // the batch goes on.
            XCTAssertThrowsError(try j.startAttempt(job: job, frame: 0, worker: "w"))
            let b = try j.startAttempt(job: job, frame: 1, worker: "w")
            return (a, b)
        }
        XCTAssertEqual(try j.frame(job: job, frame: 0)?.currentAttemptID, a.id)
        XCTAssertEqual(try j.frame(job: job, frame: 1)?.currentAttemptID, b.id)
        XCTAssertEqual(try j.attempts(job: job).count, 2, "the refused call left no attempt")

        // A batch that throws rolls back everything in it.
        struct Boom: Error {}
        XCTAssertThrowsError(try j.batch {
            _ = try j.completeAttempt(a.id, output: FrameOutput(sha256: "aa", size: 1, renderSeconds: 0.1))
            _ = try j.startAttempt(job: job, frame: 2, worker: "w")
            throw Boom()
        })
        XCTAssertEqual(try j.frame(job: job, frame: 0)?.state, .dispatched)
        XCTAssertEqual(try j.frame(job: job, frame: 2)?.state, .queued)
        XCTAssertEqual(try j.attempts(job: job).count, 2)
    }

    func testANestedCallThatFailsAfterWritingRollsTheWholeTransactionBack() throws {
        // Nested transactions have no savepoints: a nested failure before any write leaves the outer
        // transaction going; one after a write cannot be undone alone, so everything rolls back.
        let db = try SQLiteDatabase(path: root.appendingPathComponent("nested.sqlite").path)
        try db.execute("CREATE TABLE t (x INTEGER)")
        struct Boom: Error {}
        try db.transaction {
            try db.run("INSERT INTO t VALUES (1)")
            XCTAssertThrowsError(try db.transaction { () throws -> Void in throw Boom() })
            try db.run("INSERT INTO t VALUES (2)")
        }
        XCTAssertEqual(try db.query("SELECT COUNT(*) AS n FROM t").first?.int("n"), 2)
        XCTAssertThrowsError(try db.transaction {
            try db.run("INSERT INTO t VALUES (3)")
            XCTAssertThrowsError(try db.transaction { () throws -> Void in
                try db.run("INSERT INTO t VALUES (4)")
                throw Boom()
            })
            try db.run("INSERT INTO t VALUES (5)")
        }) { error in
            XCTAssertTrue("\(error)".contains("rolled back"), "\(error)")
        }
        XCTAssertEqual(try db.query("SELECT x FROM t ORDER BY x").map { $0.int("x") }, [1, 2], "nothing of the failed transaction")
        XCTAssertFalse(db.isInTransaction)
        try db.transaction { try db.run("INSERT INTO t VALUES (6)") }
        XCTAssertEqual(try db.query("SELECT COUNT(*) AS n FROM t").first?.int("n"), 3, "the connection works on")
    }

    func testLiveCountsMatchTheFullScanThroughEveryTransition() throws {
        let j = try journal()
        let job = try newJob(j, frames: Array(0 ..< 6))
        func check(_ label: String) throws {
            var full = try j.progress(job: job)
            full.renderSeconds = 0
            XCTAssertEqual(try j.liveCounts(job: job), full, label)
        }
        try check("new")
        let a0 = try j.startAttempt(job: job, frame: 0, worker: "w")
        let a1 = try j.startAttempt(job: job, frame: 1, worker: "w")
        let a2 = try j.startAttempt(job: job, frame: 2, worker: "v")
        try check("3 dispatched")
        _ = try j.completeAttempt(a0.id, output: FrameOutput(sha256: "aa", size: 1, renderSeconds: 0.5))
        try check("1 done")
        _ = try j.failAttempt(a1.id, error: "x", maxFailedWorkersPerFrame: 1)
        try check("1 failed")
        _ = try j.loseAttempt(a2.id, reason: "gone")
        try check("1 requeued")
        XCTAssertTrue(try j.requeueDoneFrame(job: job, frame: 0, reason: "PNG missing"))
        try check("done frame requeued")
        XCTAssertEqual(try j.liveCounts(job: job).done, 0)
        _ = try j.cancelJob(job)
        try check("cancelled")
        XCTAssertEqual(try j.liveCounts(job: job).cancelled, 5)

        // A job that ends failed (a frame failed, the rest done) and one that completes.
        let failing = try newJob(j, frames: [0, 1])
        let f0 = try j.startAttempt(job: failing, frame: 0, worker: "w")
        _ = try j.failAttempt(f0.id, error: "x", maxFailedWorkersPerFrame: 1)
        let f1 = try j.startAttempt(job: failing, frame: 1, worker: "w")
        XCTAssertEqual(try j.completeAttempt(f1.id, output: FrameOutput(sha256: "bb", size: 1, renderSeconds: 0.1)).jobState, .failed)
        let completing = try newJob(j, frames: [0])
        let c0 = try j.startAttempt(job: completing, frame: 0, worker: "w")
        XCTAssertEqual(try j.completeAttempt(c0.id, output: FrameOutput(sha256: "cc", size: 1, renderSeconds: 0.1)).jobState, .completed)
        for (id, label) in [(failing, "failed"), (completing, "completed")] {
            var full = try j.progress(job: id)
            full.renderSeconds = 0
            XCTAssertEqual(try j.liveCounts(job: id), full, label)
        }
    }

    func testRequeueDoneFrameMarksItsAttemptLostAndRefusesOtherStates() throws {
        let j = try journal()
        let job = try newJob(j, frames: [0, 1])
        let a = try j.startAttempt(job: job, frame: 0, worker: "w")
        _ = try j.completeAttempt(a.id, output: FrameOutput(sha256: "aa", size: 3, renderSeconds: 0.5))
        XCTAssertFalse(try j.requeueDoneFrame(job: job, frame: 1, reason: "r"), "frame 1 is not done")
        XCTAssertTrue(try j.requeueDoneFrame(job: job, frame: 0, reason: "output lost: gone"))
        let f = try XCTUnwrap(j.frame(job: job, frame: 0))
        XCTAssertEqual(f.state, .queued)
        XCTAssertNil(f.doneAttemptID)
        XCTAssertNil(f.outputSHA256)
        XCTAssertEqual(try j.attempt(a.id)?.result, .lost)
        XCTAssertEqual(try j.attempt(a.id)?.error, "output lost: gone")
        XCTAssertEqual(try j.job(job)?.framesDone, 0)
        XCTAssertEqual(try j.nextFrames(limit: 5).map(\.frame), [0, 1])
        // Rendered again: exactly one ok attempt, the new one.
        let b = try j.startAttempt(job: job, frame: 0, worker: "v")
        _ = try j.completeAttempt(b.id, output: FrameOutput(sha256: "bb", size: 3, renderSeconds: 0.5))
        XCTAssertEqual(try j.attempts(job: job, frame: 0).map(\.result), [.lost, .ok])
        // Not for a finished job.
        let c = try j.startAttempt(job: job, frame: 1, worker: "v")
        _ = try j.completeAttempt(c.id, output: FrameOutput(sha256: "cc", size: 3, renderSeconds: 0.5))
        XCTAssertEqual(try j.job(job)?.state, .completed)
        XCTAssertThrowsError(try j.requeueDoneFrame(job: job, frame: 0, reason: "r"))
    }

    // MARK: OutputWriter

    private let settings = OutputJobSettings(seed: 1, sampler: "ddim", steps: 3, imageGuidance: 1, poseGuidance: 1)

    private func record(_ frame: UInt32, _ png: Data, attempt: UInt64) -> OutputFrameRecord {
        OutputFrameRecord(frame: frame, file: OutputWriter.fileName(frame: frame), attempt: attempt, worker: "w",
                          modelID: "m", seed: 1, sampler: "ddim", steps: 3, imageGuidance: 1, poseGuidance: 1,
                          renderSeconds: 0.1, pngSHA256: FileDigest.sha256(png), pngSize: png.count)
    }

    func testBatchedWriterKeepsJournalVouchedFramesAndReportsMissingOrCorruptOnes() throws {
        let out = root.appendingPathComponent("out")
        let pngs = (0 ..< 4).map { FarmFixtures.png(frame: UInt32($0), by: "w") }
        var writer = try OutputWriter(directory: out, jobID: 1, modelID: "m", settings: settings, frames: [0, 1, 2, 3],
                                      durability: .batched, recorded: [])
        for n in 0 ..< 4 {
            try writer.write(frame: UInt32(n), png: pngs[n], attempt: UInt64(10 + n), worker: "w", renderSeconds: 0.1,
                             flush: false)
        }
        XCTAssertTrue(writer.needsFlush)
        // No manifest rewrite yet: the one written at open lists nothing.
        XCTAssertEqual((try FarmFixtures.manifest(out)["frames"] as? [Any])?.count, 0)
        XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("frame_00002.png")), pngs[2])
        XCTAssertThrowsError(try writer.write(frame: 2, png: pngs[1], attempt: 99, worker: "x", renderSeconds: 0.1))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: out.path).filter { $0.contains(".tmp-") }
        XCTAssertEqual(leftovers, [], "temp files left behind")

        // "Crash" (no flush). The journal vouches for frames 0, 1, 2 (frame 3's commit was lost);
        // frame 0's PNG vanished and frame 1's was corrupted.
        try FileManager.default.removeItem(at: out.appendingPathComponent("frame_00000.png"))
        try Data("garbage".utf8).write(to: out.appendingPathComponent("frame_00001.png"))
        let recorded = (0 ..< 3).map { record(UInt32($0), pngs[$0], attempt: UInt64(10 + $0)) }
        writer = try OutputWriter(directory: out, jobID: 1, modelID: "m", settings: settings, frames: [0, 1, 2, 3],
                                  durability: .batched, recorded: recorded)
        XCTAssertEqual(writer.invalidRecords.map(\.frame), [0, 1])
        XCTAssertTrue(writer.invalidRecords[0].reason.contains("missing"), writer.invalidRecords[0].reason)
        XCTAssertTrue(writer.invalidRecords[1].reason.contains(FileDigest.sha256(pngs[1])), writer.invalidRecords[1].reason)
        XCTAssertEqual(writer.missingFrames, [0, 1, 3])
        XCTAssertEqual(writer.record(frame: 2)?.attempt, 12)
        let names = try FileManager.default.contentsOfDirectory(atPath: out.path).sorted()
        XCTAssertEqual(names, ["frame_00002.png", "manifest.json"], "unvouched and corrupt PNGs removed")
        let listed = try XCTUnwrap(FarmFixtures.manifest(out)["frames"] as? [[String: Any]])
        XCTAssertEqual(listed.map { $0["frame"] as? Int }, [2])
        // The frames can be written again.
        try writer.write(frame: 0, png: pngs[0], attempt: 20, worker: "v", renderSeconds: 0.1, flush: false)
        try writer.flush()
        XCTAssertFalse(writer.needsFlush)
        XCTAssertEqual((try FarmFixtures.manifest(out)["frames"] as? [[String: Any]])?.map { $0["frame"] as? Int }, [0, 2])
    }

    func testBatchedPNGWriteCreatesOnlyTheFileAndRefusesAnExistingOne() throws {
        let folder = root.appendingPathComponent("png-folder")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let bytes = Data((0 ..< 100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        try OutputWriter.writeNewUnsynced(bytes, folder: folder.path, name: "frame_00001.png")
        XCTAssertEqual(try Data(contentsOf: folder.appendingPathComponent("frame_00001.png")), bytes)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), ["frame_00001.png"],
                       "no temp file left behind")
        XCTAssertThrowsError(try OutputWriter.writeNewUnsynced(Data("other".utf8), folder: folder.path, name: "frame_00001.png")) {
            XCTAssertEqual(($0 as? DurableFileError)?.alreadyExists, true, "\($0)")
        }
        XCTAssertEqual(try Data(contentsOf: folder.appendingPathComponent("frame_00001.png")), bytes, "the first file stays")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), ["frame_00001.png"])
        let missing = root.appendingPathComponent("no-such-folder").path
        XCTAssertThrowsError(try OutputWriter.writeNewUnsynced(bytes, folder: missing, name: "frame_00002.png")) {
            XCTAssertTrue("\($0)".contains("frame_00002.png"), "\($0)")
            XCTAssertEqual(($0 as? DurableFileError)?.alreadyExists, false)
        }
    }

    func testHandWrittenManifestReadsBackAsTheWritersManifest() throws {
        let out = root.appendingPathComponent("out-json")
        let noise = OutputJobSettings(seed: nil, noiseSHA256: String(repeating: "c", count: 64), sampler: "pndm",
                                      steps: 25, imageGuidance: 7.5, poseGuidance: 0.1)
        let writer = try OutputWriter(directory: out, jobID: 3, modelID: "mod\"el", settings: noise, frames: [5, 2, 9],
                                      durability: .batched, recorded: [])
        try writer.write(frame: 9, png: Data("nine".utf8), attempt: 41, worker: "w \"quoted\" \\ tab\t\u{1}é",
                         renderSeconds: 1e-7, flush: false)
        try writer.write(frame: 2, png: Data("two".utf8), attempt: 40, worker: "plain", renderSeconds: 12.25, flush: false)
        try writer.flush(durable: false)
        let data = try Data(contentsOf: out.appendingPathComponent("manifest.json"))
        let decoded = try JSONDecoder().decode(OutputManifest.self, from: data)
        XCTAssertEqual(decoded, writer.currentManifest, String(decoding: data, as: UTF8.self))
        XCTAssertEqual(decoded.frames.map(\.frame), [2, 9])
        XCTAssertFalse(decoded.complete)
        XCTAssertNil(decoded.settings.seed)
        XCTAssertNotNil(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        // Seeded settings, every frame: complete.
        let seeded = try OutputWriter(directory: root.appendingPathComponent("out-json2"), jobID: 4, modelID: "m",
                                      settings: settings, frames: [0], durability: .batched, recorded: [])
        try seeded.write(frame: 0, png: Data("zero".utf8), attempt: 1, worker: "w", renderSeconds: 3, flush: false)
        try seeded.flush()
        let again = try JSONDecoder().decode(OutputManifest.self,
                                             from: Data(contentsOf: seeded.directory.appendingPathComponent("manifest.json")))
        XCTAssertEqual(again, seeded.currentManifest)
        XCTAssertTrue(again.complete)
        XCTAssertEqual(again.frames.first?.seed, 1)
    }

    // MARK: coordinator

    func testDoneFrameWithMissingOrCorruptPNGIsRenderedAgainAfterRestart() throws {
        let state = root.appendingPathComponent("state")
        let model = try FarmFixtures.model(in: root)
        let out = root.appendingPathComponent("out")
        let frames = [0, 1, 2, 3]
        var firstAttempts: [Int: UInt64] = [:]
        let job: Int64
        do {
            let coord = try RunningCoordinator(state: state, clock: ManualClock())
            defer { coord.stop() }
            let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
            defer { client.close() }
            job = try client.submit(FarmFixtures.submission(model: model, frames: frames, out: out))
            let worker = try RawPeer(coord.endpoint, name: "w1")
            _ = try worker.hello()
            try worker.credit(1)
            var (_, task) = try worker.expectPrepAndTask()
            for n in 0 ..< 3 {
                XCTAssertEqual(task.frame, UInt32(n))
                firstAttempts[n] = task.attemptID
                try worker.result(task, png: FarmFixtures.png(frame: task.frame, by: "w1"))
                XCTAssertNotNil(coord.events.wait { if case .frameDone = $0 { $0.job == job && $0.frame == n } else { false } })
                if n < 2 {
                    try worker.credit(1)
                    task = try worker.expectTask()
                }
            }
        }
        // Stopped with frames 0, 1, 2 done. Frame 0's PNG is lost, frame 1's corrupted.
        let pngURL = { (n: Int) in out.appendingPathComponent(OutputWriter.fileName(frame: UInt32(n))) }
        try FileManager.default.removeItem(at: pngURL(0))
        try Data("\u{89}PNG torn".utf8).write(to: pngURL(1))
        let frame2 = try FileManager.default.attributesOfItem(atPath: pngURL(2).path)[.systemFileNumber] as? NSNumber

        let coord = try RunningCoordinator(state: state, clock: ManualClock())
        defer { coord.stop() }
        // The reasons are the ones the journal keeps for the requeue.
        let lost0 = coord.events.wait { if case .frameOutputLost(job, 0, true, _) = $0 { true } else { false } }
        let lost1 = coord.events.wait { if case .frameOutputLost(job, 1, true, _) = $0 { true } else { false } }
        XCTAssertTrue(lost0?.fields["reason"]?.contains("missing") == true, "\(String(describing: lost0))")
        XCTAssertTrue(lost1?.fields["reason"]?.contains("sha256") == true, "\(String(describing: lost1))")
        let worker = try RawPeer(coord.endpoint, name: "w2")
        _ = try worker.hello()
        try worker.credit(1)
        var (_, task) = try worker.expectPrepAndTask()
        var rendered: [UInt32] = []
        while true {
            rendered.append(task.frame)
            try worker.result(task, png: FarmFixtures.png(frame: task.frame, by: "w2"))
            if rendered.count == 3 { break }
            try worker.credit(1)
            task = try worker.expectTask()
        }
        XCTAssertEqual(rendered, [0, 1, 3], "the lost and corrupt frames again, then the one never rendered")
        XCTAssertNotNil(coord.events.wait(for: .jobFinished(job: job, state: .completed)))

        let journal = coord.coordinator.journal
        for n in frames {
            let attempts = try journal.attempts(job: job, frame: n)
            XCTAssertEqual(attempts.filter { $0.result == .ok }.count, 1, "frame \(n): \(attempts)")
            let f = try XCTUnwrap(journal.frame(job: job, frame: n))
            XCTAssertEqual(f.state, .done)
            XCTAssertEqual(f.outputSHA256, FileDigest.sha256(try Data(contentsOf: pngURL(n))), "frame \(n) PNG vs journal")
        }
        XCTAssertEqual(try journal.attempts(job: job, frame: 0).map(\.result), [.lost, .ok])
        XCTAssertEqual(try journal.attempts(job: job, frame: 1).map(\.result), [.lost, .ok])
        XCTAssertEqual(try journal.attempts(job: job, frame: 2).map { UInt64($0.id) }, [firstAttempts[2]!],
                       "frame 2 was fine: not rendered again")
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: pngURL(2).path)[.systemFileNumber] as? NSNumber,
                       frame2, "frame 2's PNG untouched")
        XCTAssertEqual(try Data(contentsOf: pngURL(0)), FarmFixtures.png(frame: 0, by: "w2"))
        XCTAssertEqual(try Data(contentsOf: pngURL(1)), FarmFixtures.png(frame: 1, by: "w2"))
        let listed = try XCTUnwrap(FarmFixtures.manifest(out)["frames"] as? [[String: Any]])
        XCTAssertEqual(listed.map { $0["frame"] as? Int }, frames)
        XCTAssertEqual(listed.map { $0["worker"] as? String }, ["w2", "w2", "w1", "w2"])
        XCTAssertEqual(listed[2]["attempt"] as? Int, Int(firstAttempts[2]!))
        XCTAssertEqual(try FarmFixtures.manifest(out)["complete"] as? Bool, true)
    }
}

final class JournalSpecMigrationTests: XCTestCase {
    func testVersion1JournalKeepsItsJobSpecsAfterMigration2() throws {
        let root = try FarmFixtures.tempDirectory("migrate")
        defer { try? FileManager.default.removeItem(at: root) }
        let path = root.appendingPathComponent("journal.sqlite").path
        let clock = ManualClock()
        let spec = Data((0 ..< 5000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        do {
            let db = try SQLiteDatabase(path: path)
            XCTAssertEqual(try Journal.migrate(db, migrations: Array(Journal.migrations.prefix(1)), clock: clock), [1])
            try db.run("""
                INSERT INTO jobs (name, spec, model_id, order_mode, state, output_dir, frames_total, created_at_ms, updated_at_ms)
                VALUES ('old', ?, 'm', 'frame', 'queued', '/tmp/x', 1, 0, 0)
                """, [.blob(spec)])
        }
        let journal = try Journal(path: path, clock: clock)
        XCTAssertEqual(try journal.schemaVersion(), Journal.migrations.last?.version)
        let jobs = try journal.jobs()
        XCTAssertEqual(jobs.map(\.name), ["old"])
        XCTAssertEqual(jobs.first?.spec, spec, "spec moved to job_specs")
        let fresh = try journal.createJob(NewJob(name: "new", spec: Data([9, 8]), modelID: "m", outputDir: "/tmp/y",
                                                 frames: [0]))
        XCTAssertEqual(try journal.job(fresh.id)?.spec, Data([9, 8]))
        XCTAssertEqual(try journal.job(jobs[0].id)?.spec, spec)
    }
}

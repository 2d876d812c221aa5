import DPCoordinator
import DPFileKit
import DPJournal
import DPLog
import DPProtocol
import DPTransport
import Foundation
import XCTest

/// The coordinator over real sockets, a real SQLite journal and real files, with workers simulated at
/// the protocol level (raw DEALER sockets) and time driven by a ManualClock.
final class CoordinatorTests: XCTestCase {
    var root: URL!

    override func setUpWithError() throws {
        root = try FarmFixtures.tempDirectory("coord")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: root)
    }

    func testDispatchAndResultsWriteFramesAndManifest() throws {
        let clock = ManualClock()
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: clock)
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let out = root.appendingPathComponent("out")
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        // Poses 0...4, frames 1 and 3: window neighbours come from every pose; 4 and 5 fall back.
        let job = try client.submit(FarmFixtures.submission(model: model, frames: [3, 1], out: out, poses: [0, 1, 2, 3, 4]))

        let worker = try RawPeer(coord.endpoint, name: "w1")
        let welcome = try worker.hello()
        XCTAssertEqual(welcome.heartbeatIntervalMs, 100)
        XCTAssertEqual(welcome.heartbeatLiveness, 5)
        try worker.credit(1)
        let (prep, first) = try worker.expectPrepAndTask()
        XCTAssertEqual(prep.jobID, UInt64(job))
        XCTAssertEqual(prep.subjectPng, Data("\u{89}PNG subject".utf8))
        XCTAssertEqual(prep.poseWindow, 5)
        XCTAssertEqual(prep.settings.seed, 42)
        XCTAssertEqual(first.frame, 1, "frame order: 1 before 3")
        XCTAssertEqual(first.poseWindowNpy, [1, 0, 1, 2, 3].map(FarmFixtures.pose), "pose -1 is missing: centre pose")
        XCTAssertEqual(first.modelID, prep.modelID)

        try worker.result(first, png: FarmFixtures.png(frame: 1, by: "w1"), seconds: 1.5)
        try worker.credit(1)
        let second = try worker.expectTask()  // same job: no second JobPrep
        XCTAssertEqual(second.frame, 3)
        XCTAssertEqual(second.poseWindowNpy, [1, 2, 3, 4, 3].map(FarmFixtures.pose))
        try worker.result(second, png: FarmFixtures.png(frame: 3, by: "w1"))

        var finished: String?
        try client.follow(job: job) { event in
            if case .finished(let state, _) = event { finished = state }
            return true
        }
        XCTAssertEqual(finished, "completed")
        XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("frame_00001.png")),
                       FarmFixtures.png(frame: 1, by: "w1"))
        XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("frame_00003.png")),
                       FarmFixtures.png(frame: 3, by: "w1"))
        let manifest = try FarmFixtures.manifest(out)
        XCTAssertEqual(manifest["complete"] as? Bool, true)
        let frames = try XCTUnwrap(manifest["frames"] as? [[String: Any]])
        XCTAssertEqual(frames.map { $0["frame"] as? Int }, [1, 3])
        XCTAssertEqual(frames[0]["attempt"] as? Int, Int(first.attemptID))
        XCTAssertEqual(frames[0]["worker"] as? String, "w1")
        XCTAssertEqual(frames[0]["steps"] as? Int, 7, "model default resolved from dreampose.json")
        XCTAssertEqual(frames[0]["png_sha256"] as? String, FileDigest.sha256(FarmFixtures.png(frame: 1, by: "w1")))
        let status = try XCTUnwrap(client.status(job: job).first)
        XCTAssertEqual(status.state, "completed")
        XCTAssertEqual(status.done, 2)
        XCTAssertEqual(status.perWorker, ["w1": 2], "status carries the done frames per worker")
        XCTAssertNil(status.video, "no video was asked for")
        XCTAssertNil(status.error)
        let workers = try client.workers()
        XCTAssertEqual(workers.map(\.name), ["w1"])
        XCTAssertEqual(workers.first?.framesDone, 2)
        XCTAssertEqual(workers.first?.connected, true)
    }

    func testStaleResultIsRecordedAndDroppedAfterRequeue() throws {
        let clock = ManualClock()
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: clock)
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let out = root.appendingPathComponent("out")
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        let job = try client.submit(FarmFixtures.submission(model: model, frames: [0], out: out))

        let slow = try RawPeer(coord.endpoint, name: "slow")
        _ = try slow.hello()
        try slow.credit(1)
        let (_, stale) = try slow.expectPrepAndTask()
        // "slow" goes silent for longer than liveness x interval: dead, its attempt requeued.
        clock.advance(milliseconds: 100 * 5 + 1)
        XCTAssertNotNil(coord.events.wait(for: .workerDropped(worker: "slow", cause: .silent)))

        let fast = try RawPeer(coord.endpoint, name: "fast")
        _ = try fast.hello()
        try fast.credit(1)
        let (_, current) = try fast.expectPrepAndTask()
        XCTAssertEqual(current.frame, 0)
        XCTAssertNotEqual(current.attemptID, stale.attemptID)

        // The slow worker comes back and delivers its old result: recorded as stale, PNG dropped.
        _ = try slow.hello()
        try slow.result(stale, png: FarmFixtures.png(frame: 0, by: "slow"))
        XCTAssertNotNil(coord.events.wait { if case .staleResult = $0 { $0.attempt == Int64(stale.attemptID) } else { false } })
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("frame_00000.png").path))

        try fast.result(current, png: FarmFixtures.png(frame: 0, by: "fast"))
        XCTAssertNotNil(coord.events.wait(for: .jobFinished(job: job, state: .completed)))
        XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("frame_00000.png")),
                       FarmFixtures.png(frame: 0, by: "fast"))
        let attempts = try coord.coordinator.journal.attempts(job: job, frame: 0)
        // The dead worker's attempt counts as failed (issue 12: a worker that dies mid-attempt counts
        // toward the frame's failure budget); its late result changes nothing.
        XCTAssertEqual(attempts.map(\.result), [.failed, .ok])
        XCTAssertEqual(attempts.map(\.id), [Int64(stale.attemptID), Int64(current.attemptID)])
        let frames = try XCTUnwrap(FarmFixtures.manifest(out)["frames"] as? [[String: Any]])
        XCTAssertEqual(frames.count, 1)
        XCTAssertEqual(frames[0]["attempt"] as? Int, Int(current.attemptID))
    }

    func testBadMessagesAreRejectedAndLoggedWhileOthersAreServed() throws {
        let clock = ManualClock()
        let limit = 2 << 20
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: clock) {
            $0.maxMessageBytes = limit
        }
        defer { coord.stop() }
        let bad = try RawPeer(coord.endpoint, name: "bad")
        let good = try RawPeer(coord.endpoint, name: "good")

        func expectRejected(_ frames: [Data], _ code: FarmErrorCode, _ logPart: String,
                            line: UInt = #line) throws {
            func rejection(_ event: FarmEvent) -> Bool { if case .messageRejected = event { true } else { false } }
            let before = coord.events.count(where: rejection)
            try bad.sendRaw(frames)
            let error = try bad.expect("error", line: line) { if case .error(let e) = $0 { return e } else { return nil } }
            XCTAssertEqual(error.code, code, error.message, line: line)
            // The reason logged is the error the peer was told.
            XCTAssertTrue(coord.events.wait(count: before + 1, rejection), line: line)
            XCTAssertEqual(coord.events.count(where: rejection), before + 1, line: line)
            guard case .messageRejected(_, let reason)? = coord.events.all.last(where: rejection) else { return XCTFail(line: line) }
            XCTAssertTrue(reason.contains(logPart), reason, line: line)
            // Another peer keeps being served.
            var status = FarmStatusRequest()
            status.jobID = 0
            try good.send(.statusRequest(status), requestID: 7)
            guard let reply = try good.next() else { return XCTFail("good peer got no reply", line: line) }
            XCTAssertEqual(reply.requestID, 7, line: line)
            guard case .statusReply? = reply.body else { return XCTFail("got \(reply.bodyName)", line: line) }
        }

        try expectRejected([Data([0xff, 0xff, 0xff, 0x07, 0x01])], .malformed, "not a protobuf message")
        var hello = FarmHello()
        hello.workerName = "a-worker-with-a-long-enough-name"
        hello.slots = 4
        let encoded = try FarmEnvelope(.hello(hello)).encoded()
        try expectRejected([encoded.prefix(encoded.count - 5)], .malformed, "malformed")
        var future = FarmEnvelope(.hello(hello))
        future.protocolVersion = 2
        try expectRejected([try future.serializedBytes()], .unsupportedVersion, "unsupported protocol version 2")
        var unversioned = FarmEnvelope(.hello(hello))
        unversioned.protocolVersion = 0
        try expectRejected([try unversioned.serializedBytes()], .unsupportedVersion, "field missing")
        try expectRejected([Data(count: limit + 100)], .tooLarge, "over the limit of \(limit) bytes")
        try expectRejected([encoded, encoded], .malformed, "expected 2 frames")
        // A worker message before Hello.
        try bad.credit(1)
        let error = try bad.expect("error") { if case .error(let e) = $0 { return e } else { return nil } }
        XCTAssertEqual(error.code, .notRegistered)
        XCTAssertNotNil(coord.events.wait { if case .unregisteredMessage(_, "credit") = $0 { true } else { false } })
    }

    func testRestartResumesJobWithoutRedoingDoneFrames() throws {
        let state = root.appendingPathComponent("state")
        let model = try FarmFixtures.model(in: root)
        let out = root.appendingPathComponent("out")
        let clock = ManualClock()
        var job: Int64 = 0
        var doneAttempt: UInt64 = 0
        var inFlightFrame: UInt32 = 0
        do {
            let coord = try RunningCoordinator(state: state, clock: clock)
            let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
            job = try client.submit(FarmFixtures.submission(model: model, frames: [0, 1, 2], out: out))
            client.close()
            let worker = try RawPeer(coord.endpoint, name: "w-before")
            _ = try worker.hello(slots: 2)
            try worker.credit(2)
            let (_, a) = try worker.expectPrepAndTask()
            let b = try worker.expectTask()
            try worker.result(a, png: FarmFixtures.png(frame: a.frame, by: "w-before"))
            XCTAssertNotNil(coord.events.wait { if case .frameDone = $0 { $0.frame == Int(a.frame) } else { false } })
            doneAttempt = a.attemptID
            inFlightFrame = b.frame
            coord.stop()  // b is still in flight
        }
        XCTAssertEqual(try Journal(path: state.appendingPathComponent("journal.sqlite").path).runningAttempts().count, 1)

        let coord = try RunningCoordinator(state: state, clock: clock) {
            $0.restartGraceSeconds = 2
            $0.heartbeatLiveness = 100  // the clock jump below must not kill the worker
        }
        defer { coord.stop() }
        XCTAssertNotNil(coord.events.wait(for: .restartAttemptsInFlight(attempts: 1)))
        let worker = try RawPeer(coord.endpoint, name: "w-after")
        _ = try worker.hello(slots: 3)
        try worker.credit(3)
        let (_, first) = try worker.expectPrepAndTask()
        XCTAssertEqual(first.frame, 2, "only the queued frame goes out during the grace period")
        XCTAssertNil(try worker.next(timeout: 0.3), "the in-flight frame waits for the grace period")
        clock.advance(milliseconds: 2001)
        XCTAssertNotNil(coord.events.wait(for: .restartGraceOver(requeued: 1)))
        let second = try worker.expectTask()
        XCTAssertEqual(second.frame, inFlightFrame)
        try worker.result(first, png: FarmFixtures.png(frame: first.frame, by: "w-after"))
        try worker.result(second, png: FarmFixtures.png(frame: second.frame, by: "w-after"))
        XCTAssertNotNil(coord.events.wait(for: .jobFinished(job: job, state: .completed)))
        XCTAssertNil(try worker.next(timeout: 0.2), "frame 0 was done before the restart: never sent again")

        let frames = try XCTUnwrap(FarmFixtures.manifest(out)["frames"] as? [[String: Any]])
        XCTAssertEqual(frames.map { $0["frame"] as? Int }, [0, 1, 2])
        XCTAssertEqual(frames[0]["attempt"] as? Int, Int(doneAttempt))
        XCTAssertEqual(frames[0]["worker"] as? String, "w-before")
        XCTAssertEqual(try coord.coordinator.journal.attempts(job: job, frame: 0).count, 1)
    }

    func testJobFinishedBeforeItsFinalManifestIsFinishedAtStartUp() throws {
        let state = root.appendingPathComponent("state")
        let model = try FarmFixtures.model(in: root)
        let out = root.appendingPathComponent("out")
        let clock = ManualClock()
        var job: Int64 = 0
        do {
            let coord = try RunningCoordinator(state: state, clock: clock)
            let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
            job = try client.submit(FarmFixtures.submission(model: model, frames: [0, 1], out: out))
            let worker = try RawPeer(coord.endpoint, name: "w1")
            _ = try worker.hello(slots: 2)
            try worker.credit(2)
            let (_, a) = try worker.expectPrepAndTask()
            let b = try worker.expectTask()
            try worker.result(a, png: FarmFixtures.png(frame: a.frame, by: "w1"))
            try worker.result(b, png: FarmFixtures.png(frame: b.frame, by: "w1"))
            var finished: String?
            try client.follow(job: job) { event in
                if case .finished(let s, _) = event { finished = s }
                return true
            }
            XCTAssertEqual(finished, "completed")
            // JobFinished comes once the final manifest is written and the journal says so.
            XCTAssertEqual(try FarmFixtures.manifest(out)["complete"] as? Bool, true)
            XCTAssertEqual(try coord.coordinator.journal.job(job)?.outputsFinal, true)
            client.close()
            coord.stop()
        }
        // As if the coordinator died between the commit that completed the job and its last
        // manifest rewrite: the journal says not final, manifest.json is a stale, partial one.
        let db = try SQLiteDatabase(path: state.appendingPathComponent("journal.sqlite").path)
        try db.run("UPDATE jobs SET outputs_final = 0 WHERE id = ?", [.integer(job)])
        var stale = try FarmFixtures.manifest(out)
        stale["complete"] = false
        stale["frames"] = [[String: Any]]()
        try JSONSerialization.data(withJSONObject: stale).write(to: out.appendingPathComponent("manifest.json"))

        let coord = try RunningCoordinator(state: state, clock: clock)
        defer { coord.stop() }
        XCTAssertNotNil(coord.events.wait(for: .jobOutputsResumed(job: job)))
        XCTAssertNotNil(coord.events.wait(for: .jobFinished(job: job, state: .completed)))
        let manifest = try FarmFixtures.manifest(out)
        XCTAssertEqual(manifest["complete"] as? Bool, true)
        XCTAssertEqual((manifest["frames"] as? [[String: Any]])?.map { $0["frame"] as? Int }, [0, 1])
        XCTAssertEqual(try coord.coordinator.journal.job(job)?.outputsFinal, true)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        var finished: String?
        try client.follow(job: job) { event in
            if case .finished(let s, _) = event { finished = s }
            return true
        }
        XCTAssertEqual(finished, "completed", "a follower of the finished job gets JobFinished at once")
    }

    func testWorkerBannedFromTheBestJobGetsAFrameOfAnother() throws {
        // The turn's queue read holds only as many frames as there is credit; a worker banned from
        // the job they belong to must still get frames of a job further down the queue.
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: ManualClock()) {
            $0.maxFailedFramesPerWorkerJob = 1
        }
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        var first = FarmFixtures.submission(model: model, frames: [0, 1, 2], out: root.appendingPathComponent("a"))
        first.priority = 5
        let jobA = try client.submit(first)
        let jobB = try client.submit(FarmFixtures.submission(model: model, frames: [7], out: root.appendingPathComponent("b")))

        let worker = try RawPeer(coord.endpoint, name: "w1")
        _ = try worker.hello()
        try worker.credit(1)
        let (_, a0) = try worker.expectPrepAndTask()
        XCTAssertEqual(a0.jobID, UInt64(jobA), "the higher-priority job first")
        try worker.failure(a0, .renderFailed, "boom")
        XCTAssertNotNil(coord.events.wait { if case .frameFailed(_, _, _, "w1", _, true, _) = $0 { true } else { false } })
        try worker.credit(1)
        let (prep, b) = try worker.expectPrepAndTask()
        XCTAssertEqual(prep.jobID, UInt64(jobB))
        XCTAssertEqual(b.jobID, UInt64(jobB))
        XCTAssertEqual(b.frame, 7)
        XCTAssertTrue(try coord.coordinator.journal.isBanned(worker: "w1", job: jobA))
    }

    func testLoopThreadNiceIsAppliedAndLogged() throws {
        // Raising a nice value needs no privilege, so this holds for any user.
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: ManualClock()) {
            $0.loopThreadNice = 7
        }
        defer { coord.stop() }
        XCTAssertNotNil(coord.events.wait(for: .loopThreadNice(nice: 7, applied: true)))
    }

    func testWorkerFetchesModelManifestAndChunksAndBadPathsAreRefused() throws {
        let clock = ManualClock()
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: clock) {
            $0.modelChunkBytes = 64 << 10
        }
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root, weightBytes: 200_000)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        _ = try client.submit(FarmFixtures.submission(model: model, frames: [0], out: root.appendingPathComponent("o")))
        let expected = try ModelManifest.compute(directory: model)

        let worker = try RawPeer(coord.endpoint, name: "fetcher")
        let welcome = try worker.hello()
        XCTAssertEqual(welcome.modelChunkBytes, 64 << 10)
        var request = FarmModelManifestRequest()
        request.modelID = expected.modelID
        try worker.send(.modelManifestRequest(request), requestID: 3)
        let manifest = try worker.expect("model_manifest") { if case .modelManifest(let m) = $0 { return m } else { return nil } }
        XCTAssertEqual(manifest.modelID, expected.modelID)
        XCTAssertEqual(manifest.files.map(\.path), expected.files.map(\.path))

        for file in manifest.files {
            var bytes = Data()
            while UInt64(bytes.count) < file.size {
                var chunk = FarmModelChunkRequest()
                chunk.modelID = manifest.modelID
                chunk.path = file.path
                chunk.offset = UInt64(bytes.count)
                chunk.length = welcome.modelChunkBytes
                try worker.send(.modelChunkRequest(chunk))
                let reply = try worker.expect("model_chunk") { if case .modelChunk(let c) = $0 { return c } else { return nil } }
                XCTAssertEqual(reply.offset, UInt64(bytes.count))
                XCTAssertEqual(reply.fileSize, file.size)
                XCTAssertLessThanOrEqual(reply.data.count, Int(welcome.modelChunkBytes))
                XCTAssertFalse(reply.data.isEmpty)
                bytes.append(reply.data)
            }
            XCTAssertEqual(FileDigest.sha256(bytes), file.sha256, file.path)
            XCTAssertEqual(bytes, try Data(contentsOf: model.appendingPathComponent(file.path)), file.path)
        }

        for (index, (path, code)) in [("../journal.sqlite", FarmErrorCode.unknownFile), ("/etc/passwd", .unknownFile),
                             ("unet/../dreampose.json", .unknownFile), ("not/in/manifest.bin", .unknownFile)].enumerated() {
            var chunk = FarmModelChunkRequest()
            chunk.modelID = manifest.modelID
            chunk.path = path
            chunk.length = 16
            try worker.send(.modelChunkRequest(chunk))
            let error = try worker.expect("error for \(path)") { if case .error(let e) = $0 { return e } else { return nil } }
            XCTAssertEqual(error.code, code, path)
            XCTAssertTrue(coord.events.wait(count: index + 1) { $0 == .modelRequestRefused(worker: "fetcher", request: "chunk") })
        }
        var unknown = FarmModelManifestRequest()
        unknown.modelID = String(repeating: "0", count: 64)
        try worker.send(.modelManifestRequest(unknown))
        let error = try worker.expect("error") { if case .error(let e) = $0 { return e } else { return nil } }
        XCTAssertEqual(error.code, .unknownModel)
    }

    func testFrameFailingOnThreeWorkersFailsTheJobAndStatusSaysWhy() throws {
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: ManualClock())
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        let job = try client.submit(FarmFixtures.submission(model: model, frames: [2], out: root.appendingPathComponent("out")))
        for name in ["a", "b", "c"] {
            let worker = try RawPeer(coord.endpoint, name: name)
            _ = try worker.hello()
            try worker.credit(1)
            let (_, task) = try worker.expectPrepAndTask()
            XCTAssertEqual(task.frame, 2)
            try worker.failure(task, .renderFailed, "out of memory on \(name)")
        }
        var finished: String?
        try client.follow(job: job) { event in
            if case .finished(let state, _) = event { finished = state }
            return true
        }
        XCTAssertEqual(finished, "failed", "frame 2 failed on 3 different workers")
        let status = try XCTUnwrap(client.status(job: job).first)
        XCTAssertEqual(status.failed, 1)
        XCTAssertTrue(status.error?.hasPrefix("1 frame(s) failed: frame 2 (") == true, status.error ?? "")
        for name in ["a", "b", "c"] { XCTAssertTrue(status.error?.contains("out of memory on \(name)") == true, status.error ?? "") }
        XCTAssertTrue(status.perWorker.isEmpty)
    }

    func testCancelSendsCancelToTheWorkerHoldingTheJob() throws {
        let clock = ManualClock()
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: clock)
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let out = root.appendingPathComponent("out")
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        let job = try client.submit(FarmFixtures.submission(model: model, frames: [0, 1, 2, 3], out: out))
        let holder = try RawPeer(coord.endpoint, name: "holder")
        _ = try holder.hello()
        try holder.credit(1)
        let (_, task) = try holder.expectPrepAndTask()
        let idle = try RawPeer(coord.endpoint, name: "idle")
        _ = try idle.hello()

        XCTAssertEqual(try client.cancel(job: job), "cancelled")
        let cancel = try holder.expect("cancel") { if case .cancel(let c) = $0 { return c } else { return nil } }
        XCTAssertEqual(cancel.target, .jobID(UInt64(job)))
        XCTAssertNil(try idle.next(timeout: 0.2), "a worker without the job gets no Cancel")
        try holder.failure(task, .cancelled, "stopped at step 2")
        try holder.credit(1)
        XCTAssertNil(try holder.next(timeout: 0.3), "nothing of a cancelled job is dispatched again")
        let status = try XCTUnwrap(client.status(job: job).first)
        XCTAssertEqual(status.state, "cancelled")
        XCTAssertEqual(status.cancelled, 4)
        XCTAssertEqual(try coord.coordinator.journal.attempt(Int64(task.attemptID))?.result, .cancelled)
        var finished: String?
        try client.follow(job: job) { event in
            if case .finished(let state, _) = event { finished = state }
            return true
        }
        XCTAssertEqual(finished, "cancelled")
    }
}

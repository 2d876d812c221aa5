import DPCoordinator
import DPFileKit
import DPJournal
import DPLog
import DPPipeline
import DPProtocol
import DPTransport
import Foundation
import XCTest

/// Issue 12's coordinator-side hardening, through real sockets, SQLite and files: outputs confined
/// to the output root, results checked, hard limits, poison frames, start-up over a hostile job, and
/// peer text escaped in log lines.
final class SecurityFarmTests: XCTestCase {
    var root: URL!

    override func setUpWithError() throws {
        root = try FarmFixtures.tempDirectory("security")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: root)
    }

    /// A coordinator as `dp-coord serve` runs it: outputs confined to `<root>/outputs`.
    func confined(_ clock: JournalClock = ManualClock(), state: URL? = nil,
                  configure: (inout CoordinatorSettings) -> Void = { _ in }) throws -> RunningCoordinator {
        try RunningCoordinator(state: state ?? root.appendingPathComponent("state"), clock: clock) {
            $0.allowLocalOutputPaths = false
            $0.outputRoot = self.root.appendingPathComponent("outputs")
            configure(&$0)
        }
    }

    func submission(_ model: URL, out: String, frames: [Int] = [0], video: String? = nil) -> JobSubmission {
        var job = FarmFixtures.submission(model: model, frames: frames, out: URL(fileURLWithPath: "/unused"), video: video)
        job.outputDirectory = out
        return job
    }

    func expectRefused(_ client: FarmClient, _ job: JobSubmission, _ part: String,
                       file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try client.submit(job), file: file, line: line) { error in
            XCTAssertTrue("\(error)".contains(part), "\(error)", file: file, line: line)
        }
    }

    // MARK: item 7: log lines

    func testPeerTextIsEscapedAndTruncated() {
        XCTAssertEqual(PeerText.escaped("plain name-1"), "plain name-1")
        XCTAssertEqual(PeerText.escaped("a\nb\rc\td\\e"), "a\\nb\\rc\\td\\\\e")
        XCTAssertEqual(PeerText.escaped("x\u{1b}[31my\u{7f}\u{202e}z"), "x\\u{1b}[31my\\u{7f}\\u{202e}z")
        XCTAssertEqual(PeerText.escaped("héllo wörld ✓"), "héllo wörld ✓")
        let long = String(repeating: "a", count: 1000)
        XCTAssertEqual(PeerText.escaped(long), String(repeating: "a", count: 200) + "...(1000 bytes)")
        XCTAssertEqual(PeerText.escaped("abcdef", limit: 3), "abc...(6 bytes)")
        XCTAssertEqual(PeerText.escaped("abc", limit: 3), "abc")
        let forged = "w1' registered\ncoordinator 0 stopped"
        let line = "worker '\(peer: forged)' says hi"
        XCTAssertFalse(line.contains("\n"))
        XCTAssertEqual(line, "worker 'w1' registered\\ncoordinator 0 stopped' says hi")
    }

    func testForgedLogTextFromPeersStaysOnOneEscapedLine() throws {
        let coord = try confined()
        defer { coord.stop() }
        let peer = try RawPeer(coord.endpoint, name: "evil")
        var hello = FarmHello()
        hello.workerName = "evil\ncoordinator 0 stopped"
        hello.slots = 1
        try peer.send(.hello(hello))
        let error = try peer.expect("error") { if case .error(let e) = $0 { return e } else { return nil } }
        XCTAssertEqual(error.code, .badRequest)
        var report = FarmError(.renderFailed, "boom\nworker 'x' registered" + String(repeating: "!", count: 5000))
        report.jobID = 0
        try peer.send(.error(report))
        XCTAssertNotNil(coord.events.wait { if case .peerError = $0 { true } else { false } })
        // What is tested here is the log line itself: escaped, on one line, cut.
        XCTAssertTrue(coord.logs.all.contains { $0.contains("error from peer") && $0.contains("boom\\nworker") }, "\(coord.logs.all)")
        for line in coord.logs.all {
            XCTAssertFalse(line.contains("\n"), "a log line holds a raw newline: \(line)")
            XCTAssertLessThan(line.count, 2000, "a log line was not truncated: \(line.prefix(300))")
        }
    }

    // MARK: item 2: confinement

    func testOutputNamesOutsideTheRootAreRefusedBeforeAnythingIsJournalled() throws {
        let state = root.appendingPathComponent("state")
        let coord = try confined(state: state) { $0.outputRoot = state }  // a root that holds the state folders
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        let outside = root.appendingPathComponent("outside")
        expectRefused(client, submission(model, out: outside.path), "relative and without")
        expectRefused(client, submission(model, out: "../outside"), "'..' component")
        expectRefused(client, submission(model, out: "a//b"), "empty component")
        expectRefused(client, submission(model, out: "./x"), "'.' component")
        expectRefused(client, submission(model, out: "models/abc"), "inside the coordinator's own state")
        expectRefused(client, submission(model, out: "inputs"), "inside the coordinator's own state")
        expectRefused(client, submission(model, out: "journal.sqlite"), "inside the coordinator's own state")
        expectRefused(client, submission(model, out: "ok", video: "/tmp/x.mp4"), "video path")
        expectRefused(client, submission(model, out: "ok", video: "../x.mp4"), "video path")
        expectRefused(client, submission(model, out: "ok", video: "v.txt"), ".mp4, .mkv or .mov")
        expectRefused(client, submission(model, out: String(repeating: "d", count: 5000)), "more than the 1024 allowed")
        XCTAssertEqual(try coord.coordinator.journal.jobs().count, 0, "a refused job was journalled")
        XCTAssertFalse(FileManager.default.fileExists(atPath: outside.path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: state.appendingPathComponent("ok").path))
    }

    func testExistingFilesInTheRootAreNeverReplaced() throws {
        let coord = try confined()
        defer { coord.stop() }
        let outputs = root.appendingPathComponent("outputs")
        try FileManager.default.createDirectory(at: outputs.appendingPathComponent("taken"), withIntermediateDirectories: true)
        let foreign = outputs.appendingPathComponent("taken/frame_00000.png")
        try Data("someone else's".utf8).write(to: foreign)
        try Data("a video".utf8).write(to: outputs.appendingPathComponent("old.mp4"))
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        expectRefused(client, submission(model, out: "taken"), "already exists in the output root and is not empty")
        expectRefused(client, submission(model, out: "fresh", video: "old.mp4"), "already exists in the output root")
        XCTAssertEqual(try Data(contentsOf: foreign), Data("someone else's".utf8))
        XCTAssertEqual(try Data(contentsOf: outputs.appendingPathComponent("old.mp4")), Data("a video".utf8))

        // A folder that appears after the submit (before the job's output is opened) fails the job,
        // untouched; a symbolic link below the root is never followed.
        let late = try client.submit(submission(model, out: "late"))
        try FileManager.default.createDirectory(at: outputs.appendingPathComponent("late"), withIntermediateDirectories: true)
        try Data("not yours".utf8).write(to: outputs.appendingPathComponent("late/frame_00000.png"))
        let elsewhere = root.appendingPathComponent("elsewhere")
        try FileManager.default.createDirectory(at: elsewhere, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(at: outputs.appendingPathComponent("link"), withDestinationURL: elsewhere)
        let linked = try client.submit(submission(model, out: "link/job"))

        let worker = try RawPeer(coord.endpoint, name: "w1")
        _ = try worker.hello()
        try worker.credit(1)
        for job in [late, linked] {
            let deadline = Date().addingTimeInterval(10)
            while try coord.coordinator.journal.job(job)?.state != .failed, Date() < deadline { usleep(5000) }
            let record = try XCTUnwrap(coord.coordinator.journal.job(job))
            XCTAssertEqual(record.state, .failed)
            XCTAssertTrue((record.error ?? "").contains(job == late ? "is not this job's output folder" : "is a symbolic link"),
                          record.error ?? "")
        }
        XCTAssertEqual(try Data(contentsOf: outputs.appendingPathComponent("late/frame_00000.png")), Data("not yours".utf8))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: outputs.appendingPathComponent("late").path),
                       ["frame_00000.png"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: elsewhere.path), [], "wrote through a link")
    }

    func testConfinedJobWritesInsideTheRoot() throws {
        let coord = try confined()
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        let job = try client.submit(submission(model, out: "shots/one", frames: [0, 1]))
        XCTAssertEqual(try coord.coordinator.journal.job(job)?.outputDir,
                       root.appendingPathComponent("outputs/shots/one").path)
        let worker = try RawPeer(coord.endpoint, name: "w1")
        _ = try worker.hello()
        try worker.credit(2)
        let (_, first) = try worker.expectPrepAndTask()
        let second = try worker.expectTask()
        for task in [first, second] { try worker.result(task, png: FarmFixtures.png(frame: task.frame, by: "w1")) }
        let out = root.appendingPathComponent("outputs/shots/one")
        XCTAssertNotNil(coord.events.wait(for: .jobFinished(job: job, state: .completed)))
        XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("frame_00001.png")), FarmFixtures.png(frame: 1, by: "w1"))
        let manifest = try FarmFixtures.manifest(out)
        XCTAssertEqual(manifest["complete"] as? Bool, true)
    }

    // MARK: item 3: results checked

    func testResultsThatAreNotTheJobsPNGFailTheAttempt() throws {
        let coord = try confined()
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        let job = try client.submit(submission(model, out: "checked", frames: [0]))
        let bad: [(String, Data, String)] = [
            ("not-png", Data("GIF89a not a png at all, long enough to pass the length check......".utf8), "no PNG signature"),
            ("wrong-size", FarmFixtures.png(frame: 0, by: "x", width: 640, height: 480), "640x480 pixels, the job's frames are 48x64"),
            ("grey", FarmFixtures.pngStructure(width: 48, height: 64, payload: Data([1, 2, 3]), colourType: 0), "colour type 0"),
        ]
        var corruptCRC = FarmFixtures.png(frame: 0, by: "y")
        corruptCRC[20] ^= 0x01  // height byte changed: IHDR CRC no longer matches
        let all = bad + [("bad-crc", corruptCRC, "IHDR CRC")]
        for (index, (name, png, why)) in all.prefix(3).enumerated() {
            let worker = try RawPeer(coord.endpoint, name: name)
            _ = try worker.hello()
            try worker.credit(1)
            let (_, task) = try worker.expectPrepAndTask()
            try worker.result(task, png: png)
            let failed = coord.events.wait { if case .frameFailed = $0 { $0.attempt == Int64(task.attemptID) } else { false } }
            // The reason is the attempt's error in the journal (what `dp-coord status` shows).
            XCTAssertTrue(failed?.fields["error"]?.contains(why) == true, "\(name): \(why): \(String(describing: failed))")
            let attempt = try XCTUnwrap(coord.coordinator.journal.attempt(Int64(task.attemptID)))
            XCTAssertEqual(attempt.result, .failed, name)
            if index == 2 {
                XCTAssertNotNil(coord.events.wait(for: .jobFinished(job: job, state: .failed)))
            }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: root.appendingPathComponent("outputs/checked/frame_00000.png").path))
        let record = try XCTUnwrap(coord.coordinator.journal.job(job))
        XCTAssertTrue((record.error ?? "").hasPrefix("1 frame(s) failed: frame 0 ("), record.error ?? "")
        XCTAssertTrue((record.error ?? "").contains("'grey'"), record.error ?? "")
        // And the IHDR CRC check, on a job of its own.
        let second = try client.submit(submission(model, out: "checked-2", frames: [0]))
        let worker = try RawPeer(coord.endpoint, name: "crc")
        _ = try worker.hello()
        try worker.credit(1)
        let (_, task) = try worker.expectPrepAndTask()
        XCTAssertEqual(Int64(task.jobID), second)
        try worker.result(task, png: corruptCRC)
        let failed = coord.events.wait { if case .frameFailed = $0 { $0.attempt == Int64(task.attemptID) } else { false } }
        XCTAssertTrue(failed?.fields["error"]?.contains("IHDR CRC") == true, "\(String(describing: failed))")
    }

    // MARK: item 6: poison frames

    func testFrameThatKillsThreeWorkersFailsAndHandBacksDoNotCount() throws {
        let clock = ManualClock()
        let coord = try confined(clock)
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        let job = try client.submit(submission(model, out: "poison", frames: [0]))

        // A worker that hands the frame back (Goodbye, as on SIGTERM) costs the frame nothing.
        let polite = try RawPeer(coord.endpoint, name: "polite")
        _ = try polite.hello()
        try polite.credit(1)
        let (_, handed) = try polite.expectPrepAndTask()
        var goodbye = FarmGoodbye()
        goodbye.handedBackAttemptIds = [handed.attemptID]
        goodbye.reason = "SIGTERM"
        try polite.send(.goodbye(goodbye))
        XCTAssertNotNil(coord.events.wait(for: .workerDropped(worker: "polite", cause: .goodbye)))
        XCTAssertEqual(try coord.coordinator.journal.attempt(Int64(handed.attemptID))?.result, .lost)

        // Three workers, each takes the frame and its connection goes silent mid-attempt (killed).
        for name in ["k1", "k2", "k3"] {
            var worker: RawPeer? = try RawPeer(coord.endpoint, name: name)
            _ = try worker!.hello()
            try worker!.credit(1)
            let (_, task) = try worker!.expectPrepAndTask()
            XCTAssertEqual(Int64(task.jobID), job)
            worker = nil  // socket closed: the worker is gone
            clock.advance(milliseconds: 100 * 5 + 1)
            XCTAssertNotNil(coord.events.wait(for: .workerDropped(worker: name, cause: .silent)), name)
            XCTAssertEqual(try coord.coordinator.journal.attempt(Int64(task.attemptID))?.result, .failed, name)
        }
        XCTAssertNotNil(coord.events.wait(for: .jobFinished(job: job, state: .failed)))
        let record = try XCTUnwrap(coord.coordinator.journal.job(job))
        XCTAssertEqual(record.state, .failed)
        for name in ["k1", "k2", "k3"] { XCTAssertTrue((record.error ?? "").contains("'\(name)'"), record.error ?? "") }
        // No worker is fed it again.
        let fresh = try RawPeer(coord.endpoint, name: "fresh")
        _ = try fresh.hello()
        try fresh.credit(1)
        XCTAssertNil(try fresh.next(timeout: 0.5), "a failed frame was dispatched again")
    }

    func testStartUpOverAJobWithAHostileModelConfigComesUp() throws {
        let state = root.appendingPathComponent("state")
        // A model whose dreampose.json is hostile (an even pose window, a frame size past any bound),
        // uploaded with a consistent manifest: the coordinator stores it as it stores any model.
        let hostile = try FarmFixtures.model(in: root, seed: 9)
        try Data("""
            {"format": "dreampose-model/1", "height": 1e300, "width": -5, "pose_window": 4,
             "defaults": {"steps": 1e300, "sampler": "pndm", "image_guidance": 8.0, "pose_guidance": 3.0}}
            """.utf8).write(to: hostile.appendingPathComponent("dreampose.json"))
        let good = try FarmFixtures.model(in: root, seed: 2)
        var jobs: [Int64] = []
        do {
            let coord = try confined(state: state)
            let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
            jobs.append(try client.submit(submission(hostile, out: "hostile", frames: [0, 1])))
            jobs.append(try client.submit(submission(good, out: "tampered", frames: [0])))
            client.close()
            coord.stop()
        }
        // And a stored model whose files changed since (a disk fault, an edit by hand).
        let goodID = try ModelManifest.compute(directory: good).modelID
        try Data("grown".utf8).write(to: state.appendingPathComponent("models/\(goodID)/unet/config.json"))
        let again = try confined(state: state)  // RunningCoordinator fails the test if it does not come up
        defer { again.stop() }
        for (job, why) in zip(jobs, ["dreampose.json: height 1e+300", "its files changed"]) {
            let record = try XCTUnwrap(again.coordinator.journal.job(job))
            XCTAssertEqual(record.state, .failed)
            XCTAssertTrue((record.error ?? "").contains("cannot load the job at coordinator start-up"), record.error ?? "")
            XCTAssertTrue((record.error ?? "").contains(why), record.error ?? "")
        }
        // And it serves.
        let client = try FarmClient(endpoint: again.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        XCTAssertEqual(try client.status(job: jobs[0]).first?.state, "failed")
    }

    // MARK: item 5: limits

    func testHelloLimitsAreEnforcedWhileAnotherWorkerIsServed() throws {
        let coord = try confined()
        defer { coord.stop() }
        let bad = try RawPeer(coord.endpoint, name: "bad")
        func refused(_ edit: (inout FarmHello) -> Void, _ part: String, line: UInt = #line) throws {
            var hello = FarmHello()
            hello.workerName = "bad"
            hello.slots = 1
            edit(&hello)
            try bad.send(.hello(hello))
            let error = try bad.expect("error", line: line) { if case .error(let e) = $0 { return e } else { return nil } }
            XCTAssertEqual(error.code, .badRequest, line: line)
            XCTAssertTrue(error.message.contains(part), error.message, line: line)
            // An honest worker is welcomed meanwhile.
            let good = try RawPeer(coord.endpoint, name: "good-\(line)")
            XCTAssertEqual(try good.hello().heartbeatIntervalMs, 100, line: line)
        }
        try refused({ $0.workerName = String(repeating: "n", count: 5000) }, "worker name of 5000 bytes")
        try refused({ $0.slots = 1_000_000 }, "1000000 slots")
        try refused({ $0.slots = 2; $0.runningAttemptIds = Array(1...50) }, "lists 50 running attempts with 2 slot(s)")
        try refused({ $0.cachedModelIds = Array(repeating: String(repeating: "a", count: 64), count: 10_000) }, "cached model ids")
        try refused({ $0.cachedModelIds = ["../../etc"] }, "cached model ids")
        try refused({ $0.host.hostname = String(repeating: "h", count: 100_000) }, "host description")
        try refused({ $0.host.cpuFeatures = Array(repeating: "avx", count: 10_000) }, "host description")
    }

    func testCreditIsCappedAtSlotsTimesPrefetch() throws {
        let coord = try confined()
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        _ = try client.submit(submission(model, out: "many", frames: Array(0..<30)))
        let greedy = try RawPeer(coord.endpoint, name: "greedy")
        _ = try greedy.hello(slots: 1)
        try greedy.credit(1_000_000)
        var tasks = 0
        while let envelope = try greedy.next(timeout: 0.5) {
            if case .frameTask? = envelope.body { tasks += 1 }
        }
        let cap = 1 * (1 + FarmProtocol.defaultLimits.maxPrefetchPerSlot)
        XCTAssertEqual(tasks, cap, "a 1-slot worker holds at most \(cap) frames")
        XCTAssertNotNil(coord.events.wait(for: .creditBeyondCap(worker: "greedy")))
        // The rest go to another worker.
        let other = try RawPeer(coord.endpoint, name: "other")
        _ = try other.hello(slots: 1)
        try other.credit(1)
        _ = try other.expectPrepAndTask()
    }

    func testStepZeroHeartbeatsDoNotHoldOffTheStallTimeout() throws {
        let clock = ManualClock()
        let coord = try confined(clock) {
            $0.stallTimeoutSeconds = 2
            $0.heartbeatLiveness = 1000  // only the stall timeout can end it
        }
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        _ = try client.submit(submission(model, out: "stall", frames: [0]))
        let worker = try RawPeer(coord.endpoint, name: "stuck")
        _ = try worker.hello()
        try worker.credit(1)
        let (_, task) = try worker.expectPrepAndTask()
        for _ in 0..<5 {
            var hb = FarmHeartbeat()
            var p = FarmAttemptProgress()
            p.attemptID = task.attemptID
            p.step = 0
            p.totalSteps = 0
            hb.attempts = [p]
            try worker.send(.heartbeat(hb))
            clock.advance(milliseconds: 500)
            usleep(20_000)
        }
        let cancel = try worker.expect("cancel") { if case .cancel(let c) = $0 { return c } else { return nil } }
        XCTAssertEqual(cancel.attemptID, task.attemptID)
        let stalled = coord.events.wait { if case .frameFailed = $0 { $0.attempt == Int64(task.attemptID) } else { false } }
        XCTAssertTrue(stalled?.fields["error"]?.hasPrefix("stalled: no step progress on worker 'stuck'") == true,
                      "\(String(describing: stalled))")
        XCTAssertEqual(try coord.coordinator.journal.attempt(Int64(task.attemptID))?.result, .failed)
    }

    /// Confined, a video inside the job's own folder is refused (the folder holds only the job's frames and
    /// manifest); with local paths (the embedded farm, the operator's machine) it is taken as given, as the
    /// demo does.
    func testVideoInsideTheOutputFolderOnlyWithLocalPaths() throws {
        let model = try FarmFixtures.model(in: root)
        do {
            let coord = try confined()
            defer { coord.stop() }
            let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
            defer { client.close() }
            expectRefused(client, submission(model, out: "job", video: "job/v.mp4"), "is inside the job's output folder")
            XCTAssertEqual(try coord.coordinator.journal.jobs().count, 0)
        }
        let local = try RunningCoordinator(state: root.appendingPathComponent("local-state"), clock: ManualClock())
        defer { local.stop() }
        let client = try FarmClient(endpoint: local.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        let out = root.appendingPathComponent("local-out").path
        XCTAssertGreaterThan(try client.submit(submission(model, out: out, video: out + "/v.mp4")), 0)
    }

    func testSubmitLimitsAreEnforced() throws {
        let coord = try confined() {
            $0.limits.maxFramesPerJob = 10
        }
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        var long = submission(model, out: "named")
        long.name = String(repeating: "j", count: 100_000)
        expectRefused(client, long, "job name: 100000 bytes, more than the 128 allowed")
        expectRefused(client, submission(model, out: "big", frames: Array(0..<11)), "more than the 10 allowed")
        XCTAssertEqual(try coord.coordinator.journal.jobs().count, 0)
        // Within the limits it is accepted.
        XCTAssertGreaterThan(try client.submit(submission(model, out: "fine", frames: Array(0..<10))), 0)
    }

    // MARK: item 5: uploads and status

    /// A SubmitJob sent by hand (the upload is left to the test): one frame, `subject` bytes as the
    /// subject (distinct subjects = distinct inputs to upload). Returns the reply's body.
    func rawSubmit(_ peer: RawPeer, model: URL, out: String, subject: String, requestID: UInt64) throws -> FarmEnvelope.OneOf_Body {
        let submit = FarmFixtures.rawSubmitJob(manifest: try ModelManifest.compute(directory: model), name: "raw",
                                               subject: Data(subject.utf8), pose: FarmFixtures.pose(0), out: out,
                                               frames: [0])
        try peer.send(.submitJob(submit), requestID: requestID)
        guard let reply = try peer.next(), let body = reply.body else { throw CoordinatorTestError("no reply to submit") }
        XCTAssertEqual(reply.requestID, requestID)
        return body
    }

    func submitted(_ body: FarmEnvelope.OneOf_Body, line: UInt = #line) -> FarmSubmitReply? {
        if case .submitReply(let r) = body { return r }
        XCTFail("expected submit_reply, got \(body)", line: line)
        return nil
    }

    func refusal(_ body: FarmEnvelope.OneOf_Body) -> String {
        if case .error(let e) = body { return e.message }
        return "not an error: \(body)"
    }

    func testUploadLimitsAndTheIdleDeadline() throws {
        let clock = ManualClock()
        let coord = try confined(clock) {
            $0.limits.maxConcurrentUploads = 3
            $0.limits.maxConcurrentUploadsPerClient = 2
            $0.limits.uploadIdleSeconds = 5
            $0.heartbeatLiveness = 1000
        }
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let a = try RawPeer(coord.endpoint, name: "client-a")
        let b = try RawPeer(coord.endpoint, name: "client-b")
        let c = try RawPeer(coord.endpoint, name: "client-c")
        let first = try XCTUnwrap(submitted(try rawSubmit(a, model: model, out: "a1", subject: "a1", requestID: 1)))
        XCTAssertTrue(first.missing.contains { $0.kind == .model }, "the first job uploads the model")
        _ = try XCTUnwrap(submitted(try rawSubmit(a, model: model, out: "a2", subject: "a2", requestID: 2)))
        XCTAssertTrue(refusal(try rawSubmit(a, model: model, out: "a3", subject: "a3", requestID: 3))
            .contains("this connection has 2 jobs uploading"))
        _ = try XCTUnwrap(submitted(try rawSubmit(b, model: model, out: "b1", subject: "b1", requestID: 4)))
        XCTAssertTrue(refusal(try rawSubmit(c, model: model, out: "c1", subject: "c1", requestID: 5))
            .contains("3 jobs are uploading"))
        // Another client is served meanwhile.
        var status = FarmStatusRequest()
        status.jobID = 0
        try c.send(.statusRequest(status), requestID: 6)
        guard case .statusReply(let reply)? = try c.next()?.body else { return XCTFail("no status reply") }
        XCTAssertEqual(reply.jobs.count, 3)
        // A chunk from another connection is refused (and does not keep the upload alive).
        var chunk = FarmUploadChunk()
        chunk.jobID = first.jobID
        chunk.file = first.missing.first { $0.kind == .input }!
        chunk.data = Data("a1".utf8)
        chunk.last = true
        try c.send(.uploadChunk(chunk), requestID: 7)
        XCTAssertTrue(refusal(try XCTUnwrap(try c.next()?.body)).contains("being uploaded by another connection"))

        // Idle past the deadline: every upload is dropped, its job failed, the model upload released.
        clock.advance(milliseconds: 5001)
        let dropped = coord.events.wait { if case .jobFailed = $0 { $0.job == Int64(first.jobID) } else { false } }
        XCTAssertTrue(dropped?.fields["error"]?.hasPrefix("upload dropped: no upload chunk") == true, "\(String(describing: dropped))")
        for id in 1...3 {
            XCTAssertEqual(try coord.coordinator.journal.job(Int64(id))?.state, .failed, "job \(id)")
        }
        XCTAssertNotNil(coord.events.wait { if case .modelUploadReleased = $0 { $0.job == Int64(first.jobID) } else { false } })
        let again = try XCTUnwrap(submitted(try rawSubmit(c, model: model, out: "c1", subject: "c1", requestID: 8)))
        XCTAssertTrue(again.missing.contains { $0.kind == .model }, "the model upload is free again")
    }

    func testCancelledJobReleasesItsModelUpload() throws {
        let coord = try confined()
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let squatter = try RawPeer(coord.endpoint, name: "squatter")
        let first = try XCTUnwrap(submitted(try rawSubmit(squatter, model: model, out: "s1", subject: "s", requestID: 1)))
        XCTAssertTrue(first.missing.contains { $0.kind == .model })
        var cancel = FarmCancelJob()
        cancel.jobID = first.jobID
        try squatter.send(.cancelJob(cancel), requestID: 2)
        guard case .cancelReply(let reply)? = try squatter.next()?.body else { return XCTFail("no cancel reply") }
        XCTAssertEqual(reply.state, .cancelled)
        // Another client submitting the same model is asked for it (it is not waiting on the squatter).
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        let job = try client.submit(submission(model, out: "real"))
        XCTAssertEqual(try coord.coordinator.journal.job(job)?.state, .queued)
    }

    func testStatusRepliesAreCappedWithAMarker() throws {
        let coord = try confined() { $0.limits.maxStatusJobs = 3 }
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        var ids: [Int64] = []
        for n in 0..<5 { ids.append(try client.submit(submission(model, out: "job-\(n)"))) }
        let peer = try RawPeer(coord.endpoint, name: "status")
        var status = FarmStatusRequest()
        status.jobID = 0
        try peer.send(.statusRequest(status), requestID: 9)
        guard case .statusReply(let reply)? = try peer.next()?.body else { return XCTFail("no status reply") }
        XCTAssertEqual(reply.jobs.map(\.jobID), ids.suffix(3).map { UInt64($0) } + [0])
        XCTAssertTrue(reply.jobs.last?.error.contains("truncated: 2 older job(s) not listed") == true)
        status.jobID = UInt64(ids[0])
        try peer.send(.statusRequest(status), requestID: 10)
        guard case .statusReply(let one)? = try peer.next()?.body else { return XCTFail("no status reply") }
        XCTAssertEqual(one.jobs.map(\.jobID), [UInt64(ids[0])])
    }

    func testConfinedVideoIsWrittenBeneathTheRootAndNeverReplacesAForeignFile() throws {
        let coord = try confined()
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        // Real 48x64 PNGs (ffmpeg decodes them).
        func frame(_ n: UInt32) -> Data {
            var image = RGBImage(width: 48, height: 64)
            for i in 0..<image.pixels.count { image.pixels[i] = UInt8(truncatingIfNeeded: i &* Int(n + 3)) }
            return PNGCodec.encodeStored(image)
        }
        func render(_ job: Int64, frames: Int, worker: RawPeer) throws {
            try worker.credit(UInt32(frames))
            var tasks: [FarmFrameTask] = []
            while tasks.count < frames {
                guard let envelope = try worker.next(), let body = envelope.body else { throw CoordinatorTestError("no task") }
                if case .frameTask(let t) = body { tasks.append(t) }
            }
            for t in tasks { XCTAssertEqual(Int64(t.jobID), job); try worker.result(t, png: frame(t.frame)) }
        }
        let worker = try RawPeer(coord.endpoint, name: "w1")
        _ = try worker.hello(slots: 4)
        let job = try client.submit(submission(model, out: "clip", frames: [0, 1, 2], video: "videos/clip.mp4"))
        try render(job, frames: 3, worker: worker)
        XCTAssertNotNil(coord.events.wait(for: .jobFinished(job: job, state: .completed), timeout: 60))
        let video = root.appendingPathComponent("outputs/videos/clip.mp4")
        XCTAssertGreaterThan(try Data(contentsOf: video).count, 0)
        let manifest = try FarmFixtures.manifest(root.appendingPathComponent("outputs/clip"))
        XCTAssertEqual((manifest["video"] as? [String: Any])?["path"] as? String, video.path)
        XCTAssertEqual(try coord.coordinator.journal.job(job)?.videoWritten, true)

        // A video name taken by someone else after the submit: the job's frames are written, its video is
        // refused (reported in JobFinished), and the file is untouched.
        let second = try client.submit(submission(model, out: "clip2", frames: [0], video: "videos/late.mp4"))
        let late = root.appendingPathComponent("outputs/videos/late.mp4")
        try Data("someone's film".utf8).write(to: late)
        try render(second, frames: 1, worker: worker)
        XCTAssertNotNil(coord.events.wait(for: .jobFinished(job: second, state: .completed), timeout: 60))
        // The message its followers get in JobFinished.
        guard case .videoFailed(_, let message)? = coord.events.all.first(where: { $0.job == second && $0.name == "videoFailed" })
        else { return XCTFail("no videoFailed event for job \(second): \(coord.events.all)") }
        XCTAssertTrue(message.contains("video failed") && message.contains("exists and was not written by this job"), message)
        XCTAssertEqual(try Data(contentsOf: late), Data("someone's film".utf8))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: late.deletingLastPathComponent().path).sorted(),
                       ["clip.mp4", "late.mp4"], "no temp file left beside the video")

        // An existing video name is refused at submit; one that appears before the job is opened (its
        // first dispatch, after its uploads) fails the job before a frame is rendered.
        expectRefused(client, submission(model, out: "clip3", frames: [0], video: "videos/clip.mp4"), "already exists")
        var upload = submission(model, out: "clip4", frames: [0], video: "videos/third.mp4")
        upload.subjectPNG = Data("\u{89}PNG another subject".utf8)  // to upload: its context opens at dispatch
        let fourth = try client.submit(upload)
        let third = root.appendingPathComponent("outputs/videos/third.mp4")
        try Data("a third film".utf8).write(to: third)
        try worker.credit(1)
        let deadline = Date().addingTimeInterval(10)
        while try coord.coordinator.journal.job(fourth)?.state != .failed, Date() < deadline { usleep(5000) }
        let record = try XCTUnwrap(coord.coordinator.journal.job(fourth))
        XCTAssertEqual(record.state, .failed)
        XCTAssertTrue((record.error ?? "").contains("exists and was not written by this job"), record.error ?? "")
        XCTAssertEqual(try Data(contentsOf: third), Data("a third film".utf8))
    }

    func testWorkerErrorMessagesAreCutAndManifestLimitsHold() throws {
        let coord = try confined() {
            $0.limits.maxErrorMessageBytes = 100
            $0.limits.maxModelFiles = 2
        }
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)  // 3 files: more than 2
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        expectRefused(client, submission(model, out: "m"), "model manifest lists 3 files, more than the 2 allowed")
        // A hostile manifest declaring 2^63-byte files: refused by checked addition, nothing journalled.
        let peer = try RawPeer(coord.endpoint, name: "hostile-client")
        var submit = FarmSubmitJob()
        submit.spec.name = "huge"
        submit.spec.outputDir = "huge"
        var huge = FarmModelFile()
        huge.path = "a"
        huge.size = 1 << 63
        huge.sha256 = String(repeating: "a", count: 64)
        var other = huge
        other.path = "b"
        submit.model.files = [huge, other]
        submit.model.modelID = String(repeating: "b", count: 64)
        submit.spec.modelID = submit.model.modelID
        var pose = FarmPoseInput()
        pose.file.path = "p.npy"
        pose.file.size = UInt64.max
        pose.file.sha256 = String(repeating: "c", count: 64)
        submit.spec.poses = [pose]
        submit.spec.subject.path = "s.png"
        submit.spec.subject.size = 10
        submit.spec.subject.sha256 = String(repeating: "d", count: 64)
        try peer.send(.submitJob(submit), requestID: 1)
        let message = refusal(try XCTUnwrap(try peer.next()?.body))
        XCTAssertTrue(message.contains("more than the"), message)
        XCTAssertEqual(try coord.coordinator.journal.jobs().count, 0)
    }

    func testLongWorkerErrorMessagesAreCut() throws {
        let coord = try confined() { $0.limits.maxErrorMessageBytes = 100 }
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        _ = try client.submit(submission(model, out: "e"))
        let worker = try RawPeer(coord.endpoint, name: "chatty")
        _ = try worker.hello()
        try worker.credit(1)
        let (_, task) = try worker.expectPrepAndTask()
        try worker.failure(task, .renderFailed, String(repeating: "x", count: 100_000))
        XCTAssertNotNil(coord.events.wait { if case .frameFailed = $0 { $0.attempt == Int64(task.attemptID) } else { false } })
        let error = try XCTUnwrap(coord.coordinator.journal.attempt(Int64(task.attemptID))?.error)
        XCTAssertTrue(error.hasSuffix(String(repeating: "x", count: 100) + "... (cut at 100 bytes)"), error)
        XCTAssertLessThan(error.count, 200)
    }

    func testFollowersAndWorkerListsAreCapped() throws {
        let coord = try confined() {
            $0.limits.maxFollowersPerJob = 2
            $0.limits.maxFollowsPerClient = 3
            $0.limits.maxStatusWorkers = 2
        }
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        let a = try client.submit(submission(model, out: "f1"))
        let b = try client.submit(submission(model, out: "f2"))
        let peer = try RawPeer(coord.endpoint, name: "follower")
        func follow(_ job: Int64, _ rid: UInt64) throws -> FarmEnvelope.OneOf_Body {
            var f = FarmFollowJob()
            f.jobID = UInt64(job)
            try peer.send(.followJob(f), requestID: rid)
            return try XCTUnwrap(try peer.next()?.body)
        }
        for rid in UInt64(1)...2 {
            guard case .jobEvent = try follow(a, rid) else { return XCTFail("no snapshot for follower \(rid)") }
        }
        XCTAssertTrue(refusal(try follow(a, 3)).contains("has 2 followers, the most it takes (2)"))
        guard case .jobEvent = try follow(b, 4) else { return XCTFail("no snapshot") }
        XCTAssertTrue(refusal(try follow(b, 5)).contains("this connection follows 3 jobs, the most one client may (3)"))

        // Worker list: connected workers always, then the 2 most recently seen disconnected ones and a marker.
        for name in ["old-1", "old-2", "old-3", "old-4"] {
            let w = try RawPeer(coord.endpoint, name: name)
            _ = try w.hello()
            var bye = FarmGoodbye()
            bye.reason = "test"
            try w.send(.goodbye(bye))
            XCTAssertNotNil(coord.events.wait(for: .workerDropped(worker: name, cause: .goodbye)))
        }
        let live = try RawPeer(coord.endpoint, name: "live")
        _ = try live.hello()
        try peer.send(.workersRequest(FarmWorkersRequest()), requestID: 6)
        guard case .workersReply(let reply)? = try peer.next()?.body else { return XCTFail("no workers reply") }
        XCTAssertEqual(reply.workers.count, 4, "\(reply.workers.map(\.name))")
        XCTAssertEqual(reply.workers.first?.name, "live")
        XCTAssertTrue(reply.workers.last?.name.hasPrefix("(truncated: 2 disconnected worker(s)") == true,
                      "\(reply.workers.map(\.name))")
    }
}

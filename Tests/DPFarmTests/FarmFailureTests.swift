// The farm under failure, end to end: real `dp-worker --connect` / `dp-coord serve` child processes
// killed with SIGKILL, real sockets on 127.0.0.1, the real SQLite journal and real output files.
// 1. A worker killed mid-frame: the frame is requeued and rendered once by another worker.
// 2. The coordinator killed mid-job and restarted on the same --state and port: the job completes and
//    frames already written are not rendered again.
// 3. A worker without the model fetches it; a corrupted chunk (ModelStore.chunkTransform) is detected
//    and the file re-fetched; the frame is right.
// 4. Determinism: 1 worker, 3 workers and a run with a requeue give byte-identical PNGs.
import DPCoordinator
import DPFileKit
import DPJournal
import DPLog
import DPPipeline
import DPWorker
import Foundation
import Synchronization
import XCTest

final class FarmFailureTests: XCTestCase {
    var temp: URL!
    var children: [FarmChild] = []
    var stops: [() -> Void] = []

    override func setUpWithError() throws {
        temp = FileManager.default.temporaryDirectory.appendingPathComponent("farm-failure-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: temp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        for child in children { child.killHard() }
        children = []
        for stop in stops.reversed() { stop() }
        stops = []
        try? FileManager.default.removeItem(at: temp)
    }

    // MARK: - Helpers

    /// An in-process coordinator on tcp://127.0.0.1:* with short heartbeats (100 ms, dead after 3 missed).
    func startCoordinator(_ label: String, configure: (inout CoordinatorSettings) -> Void = { _ in })
        throws -> (Coordinator, LogSink, EventSink) {
        var settings = CoordinatorSettings(bind: "tcp://127.0.0.1:*", stateDirectory: temp.appendingPathComponent("state-\(label)"))
        settings.heartbeatIntervalMs = 100
        settings.heartbeatLiveness = 3
        settings.restartGraceSeconds = 0.3
        settings.allowLocalOutputPaths = true  // absolute output folders in the test's temp folder
        configure(&settings)
        let logs = LogSink()
        let events = EventSink()
        let coordinator = try Coordinator(settings: settings, logger: .capture(Coordinator.logLabel, logs: logs, events: events))
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            do { try coordinator.run() } catch { logs.append("run() threw: \(error)") }
            done.signal()
        }
        stops.append { coordinator.shutdown(); _ = done.wait(timeout: .now() + 10) }
        XCTAssertNotNil(events.wait { if case .serving = $0 { true } else { false } },
                        "coordinator \(label) did not start: \(logs.all)")
        return (coordinator, logs, events)
    }

    /// An in-process WorkerService with short heartbeats and fast reconnects.
    @discardableResult
    func startWorker(_ endpoint: String, name: String, renderer: FrameRenderer, logs: LogSink = LogSink(),
                     events: EventSink = EventSink()) throws -> WorkerService {
        var settings = WorkerSettings(connect: endpoint, name: name, cacheDirectory: temp.appendingPathComponent("cache-\(name)"))
        settings.heartbeatIntervalMs = 100
        settings.reconnectInitialMs = 20
        settings.reconnectMaxMs = 200
        let worker = try WorkerService(settings: settings, renderer: renderer,
                                       logger: .capture(WorkerService.logLabel, logs: logs, events: events))
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            do { try worker.run() } catch { logs.append("run() threw: \(error)") }
            done.signal()
        }
        stops.append { worker.shutdown(handBack: false); _ = done.wait(timeout: .now() + 10) }
        return worker
    }

    /// A `dp-worker --connect` child process (the real renderer), with its own empty model cache.
    func startWorkerProcess(_ endpoint: String, name: String) throws -> FarmChild {
        let child = try FarmChild("dp-worker", [
            "--connect", endpoint, "--name", name, "--cache", temp.appendingPathComponent("cache-\(name)").path,
            "--threads", "1", "--heartbeat-ms", "100",
            // Failure handling, not authentication (AuthTests): the coordinators here run without keys.
            "--insecure-no-auth",
            "--log-format", "json",
        ], logDirectory: temp, name: name)
        children.append(child)
        return child
    }

    /// Waits until the coordinator lists every one of `names` as connected.
    func waitForWorkers(_ client: FarmClient, _ names: Set<String>, timeout: Double = 30) throws {
        let deadline = Date().addingTimeInterval(timeout)
        var seen: Set<String> = []
        while Date() < deadline {
            seen = Set(try client.workers().filter(\.connected).map(\.name))
            if names.isSubset(of: seen) { return }
            usleep(10_000)
        }
        XCTFail("workers \(names.sorted()) not all connected within \(timeout) s; connected: \(seen.sorted()); "
            + children.map { "\($0.name): \($0.output)" }.joined(separator: "\n"))
        throw CoordinatorTestError("workers not connected")
    }

    struct Followed {
        var state = ""
        var done: [(frame: Int, attempt: Int64, worker: String)] = []
    }

    /// Follows `job` to its end; `onEvent` sees every event first (return false to stop following).
    func follow(_ client: FarmClient, job: Int64, onEvent: (FarmJobEvent) -> Bool = { _ in true }) throws -> Followed {
        var result = Followed()
        try client.follow(job: job) { event in
            guard onEvent(event) else { return false }
            switch event {
            case let .frameDone(frame, attempt, worker, _, _): result.done.append((frame, attempt, worker))
            case let .finished(state, _):
                result.state = state
                return false
            default: break
            }
            return true
        }
        return result
    }

    /// Every frame of `job` done exactly once: one `ok` attempt per frame in the journal, that attempt is
    /// the frame's done attempt and manifest.json's attempt, the PNG on disk has the manifest's SHA-256
    /// and size, and the output folder holds exactly the job's frames. Returns the manifest entries.
    @discardableResult
    func checkExactlyOnce(journal: Journal, job: Int64, frames: [Int], out: URL,
                          file: StaticString = #filePath, line: UInt = #line) throws -> [Int: [String: Any]] {
        let entries = try manifestEntries(out, file: file, line: line)
        XCTAssertEqual(entries.keys.sorted(), frames, "manifest.json frames", file: file, line: line)
        XCTAssertEqual(try FarmFixtures.manifest(out)["complete"] as? Bool, true, "manifest.json complete", file: file, line: line)
        let pngs = try framePNGs(out)
        XCTAssertEqual(pngs.keys.sorted(), frames, "frame files in \(out.path)", file: file, line: line)
        for record in try journal.frames(job: job) {
            let n = record.frame
            XCTAssertEqual(record.state, .done, "journal: frame \(n) state", file: file, line: line)
            let ok = try journal.attempts(job: job, frame: n).filter { $0.result == .ok }
            XCTAssertEqual(ok.count, 1, "journal: frame \(n) has \(ok.count) ok attempts: \(ok)", file: file, line: line)
            XCTAssertEqual(record.doneAttemptID, ok.first?.id, "journal: frame \(n) done attempt", file: file, line: line)
            let entry = try XCTUnwrap(entries[n], "manifest.json lacks frame \(n)", file: file, line: line)
            XCTAssertEqual((entry["attempt"] as? NSNumber)?.int64Value, ok.first?.id, "manifest attempt of frame \(n): \(entry)",
                           file: file, line: line)
            XCTAssertEqual(entry["worker"] as? String, ok.first?.worker, "manifest worker of frame \(n)", file: file, line: line)
            let png = try XCTUnwrap(pngs[n], "no PNG for frame \(n)", file: file, line: line)
            XCTAssertEqual(entry["png_sha256"] as? String, FileDigest.sha256(png), "manifest SHA-256 of frame \(n)", file: file, line: line)
            XCTAssertEqual(entry["png_size"] as? Int, png.count, "manifest size of frame \(n)", file: file, line: line)
        }
        XCTAssertEqual(try journal.frames(job: job).map(\.frame), frames, "journal frames of job \(job)", file: file, line: line)
        return entries
    }

    /// Renders the golden job on `workers` `dp-worker` child processes; returns the PNGs by frame.
    func renderWithWorkerProcesses(_ golden: GoldenFarmJob, workers: Int, label: String) throws -> [Int: Data] {
        let (coordinator, _, _) = try startCoordinator(label)
        let names = (0 ..< workers).map { "\(label)-w\($0)" }
        for name in names { _ = try startWorkerProcess(coordinator.endpoint, name: name) }
        let client = try FarmClient(endpoint: coordinator.endpoint)
        defer { client.close() }
        try waitForWorkers(client, Set(names))
        let out = temp.appendingPathComponent("out-\(label)")
        let job = try client.submit(golden.submission(out: out))
        let followed = try follow(client, job: job)
        XCTAssertEqual(followed.state, "completed", "\(label): " + children.map(\.output).joined(separator: "\n"))
        XCTAssertEqual(followed.done.map(\.frame).sorted(), golden.frames, "\(label): every frame done once")
        try checkExactlyOnce(journal: coordinator.journal, job: job, frames: golden.frames, out: out)
        if workers > 1 { print("\(label): frames per worker \(Dictionary(grouping: followed.done, by: \.worker).mapValues(\.count))") }
        return try framePNGs(out)
    }

    /// Scenario 1: a `dp-worker` child is SIGKILLed once the coordinator has reported Progress of its
    /// attempt; a second child started after the kill renders everything, the victim's frame included.
    /// Checks the requeue and exactly-once output; returns the PNGs.
    func renderWithKilledWorker(_ golden: GoldenFarmJob, label: String) throws -> [Int: Data] {
        let (coordinator, logs, events) = try startCoordinator(label)
        let victimName = "\(label)-victim", survivorName = "\(label)-survivor"
        let victim = try startWorkerProcess(coordinator.endpoint, name: victimName)
        let client = try FarmClient(endpoint: coordinator.endpoint)
        defer { client.close() }
        try waitForWorkers(client, [victimName])
        let out = temp.appendingPathComponent("out-\(label)")
        let job = try client.submit(golden.submission(out: out))

        var killed: (frame: Int, step: Int, total: Int)?
        var survivor: FarmChild?
        var startError: Error?
        let followed = try follow(client, job: job) { event in
            if case let .frameProgress(frame, worker, step, total) = event, worker == victimName, killed == nil {
                // The coordinator has seen this attempt's progress: kill the worker mid-frame.
                victim.killHard()
                killed = (frame, step, total)
                do { survivor = try self.startWorkerProcess(coordinator.endpoint, name: survivorName) } catch {
                    startError = error
                    return false
                }
            }
            return true
        }
        if let startError { throw startError }
        XCTAssertNotNil(survivor)
        let kill = try XCTUnwrap(killed, "the victim never reported progress: \(victim.output)")
        XCTAssertEqual(victim.process.terminationReason, .uncaughtSignal, "victim died of SIGKILL")
        XCTAssertEqual(victim.process.terminationStatus, SIGKILL)
        XCTAssertLessThan(kill.step, kill.total, "the victim was killed after step \(kill.step) of \(kill.total), mid-frame")
        print("\(label): SIGKILLed \(victimName) at frame \(kill.frame), step \(kill.step) of \(kill.total)")
        XCTAssertEqual(followed.state, "completed", "job state; coordinator log: \(logs.all.joined(separator: "\n"))")

        // Every frame done exactly once, all by the survivor; nothing from the victim.
        XCTAssertEqual(followed.done.map(\.frame).sorted(), golden.frames, "FrameDone events: \(followed.done)")
        XCTAssertEqual(Set(followed.done.map(\.worker)), [survivorName], "FrameDone workers: \(followed.done)")
        let entries = try checkExactlyOnce(journal: coordinator.journal, job: job, frames: golden.frames, out: out)
        for (n, entry) in entries {
            XCTAssertEqual(entry["worker"] as? String, survivorName, "manifest worker of frame \(n)")
        }

        // The journal: the victim's attempt of its frame failed (a worker that dies mid-attempt counts
        // toward the frame's budget of 3 different workers, issue 12), the frame was requeued and
        // rendered by a later attempt of the survivor.
        let attempts = try coordinator.journal.attempts(job: job, frame: kill.frame)
        let victimAttempts = attempts.filter { $0.worker == victimName }
        XCTAssertEqual(victimAttempts.count, 1, "victim attempts of frame \(kill.frame): \(attempts)")
        XCTAssertEqual(victimAttempts.first?.result, .failed, "victim attempt of frame \(kill.frame): \(attempts)")
        let ok = attempts.filter { $0.result == .ok }
        XCTAssertEqual(ok.map(\.worker), [survivorName], "frame \(kill.frame) attempts: \(attempts)")
        if let lost = victimAttempts.first, let good = ok.first { XCTAssertGreaterThan(good.id, lost.id) }
        XCTAssertEqual(try coordinator.journal.frame(job: job, frame: kill.frame)?.failures, 1,
                       "a worker killed mid-attempt is one of the frame's 3 failures")
        XCTAssertEqual(try coordinator.journal.workerJobFailures(worker: victimName, job: job).failures, 0,
                       "a killed worker is not banned for it")
        // The victim never got a second frame (it was killed during its first).
        for n in golden.frames where n != kill.frame {
            let others = try coordinator.journal.attempts(job: job, frame: n)
            XCTAssertTrue(others.allSatisfy { $0.worker == survivorName }, "frame \(n) attempts: \(others)")
        }
        // The coordinator saw the death (no result, only silence).
        XCTAssertNotNil(events.wait(timeout: 2) { if case .workerDropped(victimName, _) = $0 { true } else { false } },
                        "the coordinator never dropped the victim: \(logs.all)")
        return try framePNGs(out)
    }

    // MARK: - 1. Worker killed mid-frame

    func testWorkerKilledMidFrameIsRequeuedAndRenderedOnce() throws {
        let golden = try GoldenFarmJob.load()
        let pngs = try renderWithKilledWorker(golden, label: "kill")
        for n in golden.frames {
            let png = try XCTUnwrap(pngs[n], "frame \(n)")
            XCTAssertNil(try golden.mismatch(frame: n, png: png), "frame \(n) vs the golden frame")
        }
    }

    // MARK: - 2. Coordinator killed mid-job

    func testCoordinatorKilledMidJobResumesWithoutRerenderingWrittenFrames() throws {
        let port = try FarmPorts.freeLoopbackPort()
        let endpoint = "tcp://127.0.0.1:\(port)"
        let state = temp.appendingPathComponent("coord-state")
        let serveArgs = ["serve", "--bind", endpoint, "--state", state.path, "--heartbeat-ms", "100", "--grace", "0.3",
                         "--output-root", temp.path,
                         "--insecure-no-auth",  // failure handling, not authentication (AuthTests)
                         "--log-format", "json"]  // the test waits on its events
        let first = try FarmChild("dp-coord", serveArgs, logDirectory: temp, name: "coord-1")
        children.append(first)
        XCTAssertNotNil(first.waitForEvent { if case .serving = $0 { true } else { false } },
                        "dp-coord serve did not start: \(first.output)")

        // Two in-process workers with the synthetic renderer (only the farm matters here), counting renders.
        let renderer = CountingRenderer(SyntheticFrameRenderer(steps: 8, stepDelaySeconds: 0.02, width: 48, height: 64))  // the fixture model's frame size
        for i in 0 ..< 2 { try startWorker(endpoint, name: "rw\(i)", renderer: renderer) }

        let frames = Array(0 ..< 10)
        let out = temp.appendingPathComponent("out")
        let model = try FarmFixtures.model(in: temp)
        let job: Int64
        do {
            let client = try FarmClient(endpoint: endpoint)
            defer { client.close() }
            try waitForWorkers(client, ["rw0", "rw1"])
            var submission = FarmFixtures.submission(model: model, frames: frames, out: out)
            submission.outputDirectory = "out"  // a name inside the served coordinator's --output-root
            job = try client.submit(submission)
            var doneSeen = 0
            _ = try follow(client, job: job) { event in
                if case .frameDone = event { doneSeen += 1 }
                if doneSeen >= 3 {
                    first.killHard()  // mid-job: 3 of 10 frames done, others in flight or queued
                    return false
                }
                return true
            }
        }
        XCTAssertEqual(first.process.terminationReason, .uncaughtSignal, "dp-coord died of SIGKILL")

        // What the dead coordinator had committed: done frames with their attempts, their files.
        var doneBefore: [Int: Int64] = [:]
        do {
            let journal = try Journal(path: state.appendingPathComponent("journal.sqlite").path)
            for record in try journal.frames(job: job) where record.state == .done {
                doneBefore[record.frame] = try XCTUnwrap(record.doneAttemptID, "frame \(record.frame) done without attempt")
            }
        }
        XCTAssertGreaterThanOrEqual(doneBefore.count, 3, "frames done at the kill")
        XCTAssertLessThan(doneBefore.count, frames.count, "the coordinator must die mid-job")
        print("dp-coord SIGKILLed with frames \(doneBefore.keys.sorted()) of \(frames.count) done")
        struct FileState: Equatable { let bytes: Data; let inode: UInt64; let mtime: Date }
        func fileState(_ n: Int) throws -> FileState {
            let url = out.appendingPathComponent(FrameSelection.outputName(frame: n))
            let attrs = try FileManager.default.attributesOfItem(atPath: url.path)
            return FileState(bytes: try Data(contentsOf: url),
                             inode: try XCTUnwrap((attrs[.systemFileNumber] as? NSNumber)?.uint64Value),
                             mtime: try XCTUnwrap(attrs[.modificationDate] as? Date))
        }
        var filesBefore: [Int: FileState] = [:]
        for n in doneBefore.keys { filesBefore[n] = try fileState(n) }
        let rendersBefore = renderer.counts
        for n in doneBefore.keys { XCTAssertEqual(rendersBefore[n], 1, "frame \(n) rendered once before the kill") }

        // Restart on the same --state and port; the workers reconnect by themselves.
        let second = try FarmChild("dp-coord", serveArgs, logDirectory: temp, name: "coord-2")
        children.append(second)
        XCTAssertNotNil(second.waitForEvent { if case .serving = $0 { true } else { false } },
                        "restarted dp-coord serve did not start: \(second.output)")
        let followed: Followed
        do {
            let client = try FarmClient(endpoint: endpoint)
            defer { client.close() }
            followed = try follow(client, job: job)
        }
        XCTAssertEqual(followed.state, "completed", "after restart; coordinator log:\n\(second.output)")
        XCTAssertTrue(Set(followed.done.map(\.frame)).isDisjoint(with: doneBefore.keys),
                      "frames done before the kill reported done again: \(followed.done)")

        // Stop the coordinator cleanly, then read its journal.
        XCTAssertEqual(second.stop(signal: SIGTERM), 0, "dp-coord serve exit status; log:\n\(second.output)")
        let journal = try Journal(path: state.appendingPathComponent("journal.sqlite").path)
        XCTAssertEqual(try journal.job(job)?.state, .completed)
        let entries = try checkExactlyOnce(journal: journal, job: job, frames: frames, out: out)
        let counts = renderer.counts
        for n in frames {
            XCTAssertGreaterThanOrEqual(counts[n, default: 0], 1, "frame \(n) never rendered")
        }
        for (n, attempt) in doneBefore {
            XCTAssertEqual(counts[n], 1, "frame \(n) was written before the kill and must not be rendered again")
            XCTAssertEqual(try journal.frame(job: job, frame: n)?.doneAttemptID, attempt, "frame \(n): done attempt changed")
            XCTAssertEqual(try journal.attempts(job: job, frame: n).map(\.id), [attempt], "frame \(n): attempts after restart")
            XCTAssertEqual((entries[n]?["attempt"] as? NSNumber)?.int64Value, attempt, "frame \(n): manifest attempt")
            XCTAssertEqual(try fileState(n), filesBefore[n], "frame \(n): PNG file rewritten (bytes/inode/mtime changed)")
        }
    }

    // MARK: - 3. Model fetch with a corrupted chunk

    func testWorkerFetchesModelAndRefetchesCorruptedChunk() throws {
        let golden = try GoldenFarmJob.load()
        let source = try ModelManifest.compute(directory: golden.model)
        let target = try XCTUnwrap(source.files.max { $0.size < $1.size }, "model has no files")
        // Small chunks so the largest file comes in several; its second chunk (or its only one) is corrupted once.
        let chunkBytes = 64 << 10
        let corruptOffset: UInt64 = target.size > UInt64(chunkBytes) ? UInt64(chunkBytes) : 0
        let (coordinator, coordLogs, _) = try startCoordinator("fetch") { $0.modelChunkBytes = chunkBytes }

        final class Served: Sendable {
            let state = Mutex((counts: [String: Int](), corrupted: 0))
        }
        let served = Served()
        coordinator.models.chunkTransform = { path, offset, data in
            served.state.withLock { served in
                served.counts["\(path)@\(offset)", default: 0] += 1
                guard path == target.path, offset == corruptOffset, served.corrupted == 0, !data.isEmpty else { return data }
                served.corrupted += 1
                var bad = data
                bad[bad.startIndex + bad.count / 2] ^= 0xFF
                return bad
            }
        }

        let workerLogs = LogSink()
        let workerEvents = EventSink()
        let renderer = CountingRenderer(PipelineFrameRenderer())
        let worker = try startWorker(coordinator.endpoint, name: "fetcher", renderer: renderer, logs: workerLogs,
                                     events: workerEvents)
        _ = worker
        let cacheDir = temp.appendingPathComponent("cache-fetcher")
        XCTAssertFalse(FileManager.default.fileExists(atPath: cacheDir.appendingPathComponent(source.modelID).path),
                       "the worker must start without the model")

        let frame = golden.frames[0]
        let out = temp.appendingPathComponent("out-fetch")
        let client = try FarmClient(endpoint: coordinator.endpoint)
        defer { client.close() }
        let job = try client.submit(golden.submission(out: out, frames: [frame]))
        let followed = try follow(client, job: job)
        XCTAssertEqual(followed.state, "completed", "worker log:\n\(workerLogs.all.joined(separator: "\n"))\n"
            + "coordinator log:\n\(coordLogs.all.joined(separator: "\n"))")

        // The worker fetched every file from the coordinator; the corrupted chunk was served again.
        let (counts, corrupted) = served.state.withLock { ($0.counts, $0.corrupted) }
        XCTAssertEqual(corrupted, 1, "the fault hook corrupted one chunk")
        for file in source.files {
            XCTAssertTrue(counts.keys.contains { $0.hasPrefix(file.path + "@") }, "'\(file.path)' never fetched: \(counts)")
        }
        XCTAssertGreaterThanOrEqual(counts["\(target.path)@\(corruptOffset)", default: 0], 2,
                                    "corrupted chunk of '\(target.path)' at \(corruptOffset) not fetched again: \(counts)")
        XCTAssertNotNil(workerEvents.wait(timeout: 2) { event in
            if case .modelFileCorrupted("fetcher", source.modelID, target.path, false) = event { true } else { false }
        }, "the worker did not report the corrupted file: \(workerLogs.all)")
        // The cached copy is the model, byte for byte.
        let cached = try ModelManifest.compute(directory: cacheDir.appendingPathComponent(source.modelID))
        XCTAssertEqual(cached.modelID, source.modelID, "cached model id")
        XCTAssertEqual(cached.files.map(\.sha256), source.files.map(\.sha256), "cached file hashes")

        // The frame is right (golden acceptance rule), rendered once, and recorded as such.
        XCTAssertEqual(renderer.counts, [frame: 1])
        try checkExactlyOnce(journal: coordinator.journal, job: job, frames: [frame], out: out)
        let png = try XCTUnwrap(try framePNGs(out)[frame])
        XCTAssertNil(try golden.mismatch(frame: frame, png: png), "frame \(frame) vs the golden frame")
    }

    // MARK: - 4. Determinism: 1 worker vs 3 workers vs a requeue

    func testFramesByteIdenticalWithOneThreeWorkersAndARequeue() throws {
        let golden = try GoldenFarmJob.load()
        let one = try renderWithWorkerProcesses(golden, workers: 1, label: "one")
        let three = try renderWithWorkerProcesses(golden, workers: 3, label: "three")
        let requeued = try renderWithKilledWorker(golden, label: "requeue")
        for n in golden.frames {
            let reference = try XCTUnwrap(one[n], "1 worker: frame \(n) missing")
            XCTAssertEqual(three[n].map(FileDigest.sha256), FileDigest.sha256(reference), "frame \(n): 3 workers vs 1 worker")
            XCTAssertEqual(requeued[n].map(FileDigest.sha256), FileDigest.sha256(reference), "frame \(n): requeue run vs 1 worker")
            XCTAssertEqual(three[n], reference)
            XCTAssertEqual(requeued[n], reference)
        }
    }
}

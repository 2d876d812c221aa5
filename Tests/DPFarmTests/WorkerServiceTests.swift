// WorkerService against a scripted coordinator: a real ROUTER socket on tcp://127.0.0.1:* driven by
// the test, so every message the worker sends is checked at the protocol level (Hello, credits,
// progress, results, heartbeats, model fetch, cancel, reconnect, Goodbye).
import DPFileKit
import DPProtocol
import DPTransport
@testable import DPWorker
import Foundation
import XCTest

/// A renderer for these tests: each denoising step waits until the test opens the gate (or a
/// step budget allows it), so the tests decide when steps happen without sleeping. The PNG bytes
/// depend on the job, frame and pose bytes only.
// unchecked: the vars below are used holding `condition` (an NSCondition, which the steps wait on; a Mutex has
// no wait), except spinSecondsPerStep, which a test sets before the worker starts.
final class GatedRenderer: FrameRenderer, @unchecked Sendable {
    let steps: Int
    private let condition = NSCondition()
    private var allowed: Int
    private(set) var stepsRun = 0
    private(set) var stepsAfterCancel = 0
    private(set) var prepares: [(JobRenderSpec, URL)] = []
    /// Busy-spins this long in every step (a stand-in for a long matrix product that holds a core).
    var spinSecondsPerStep: Double = 0

    init(steps: Int, allowedSteps: Int = .max) {
        self.steps = steps
        self.allowed = allowedSteps
    }

    func allow(_ n: Int) {
        condition.lock()
        allowed = allowed == .max ? .max : allowed + n
        condition.broadcast()
        condition.unlock()
    }

    func openAll() {
        condition.lock(); allowed = .max; condition.broadcast(); condition.unlock()
    }

    var counts: (run: Int, afterCancel: Int) {
        condition.lock(); defer { condition.unlock() }
        return (stepsRun, stepsAfterCancel)
    }

    func prepare(job: JobRenderSpec, modelDirectory: URL) throws -> any PreparedFrameRenderer {
        condition.lock(); prepares.append((job, modelDirectory)); condition.unlock()
        return Prepared(owner: self, job: job)
    }

    final class Prepared: PreparedFrameRenderer {
        let owner: GatedRenderer
        let job: JobRenderSpec
        init(owner: GatedRenderer, job: JobRenderSpec) { self.owner = owner; self.job = job }
        var totalSteps: Int { owner.steps }

        func render(frame: Int, poseWindow: [Data], progress: (Int) -> Void,
                    isCancelled: () -> Bool) throws -> (png: Data, seconds: Double) {
            var sawCancel = false
            for step in 1...owner.steps {
                if isCancelled() { throw CancellationError() }
                owner.condition.lock()
                while owner.allowed <= 0 { owner.condition.wait(until: Date().addingTimeInterval(0.01)); if isCancelled() { break } }
                if owner.allowed != .max { owner.allowed -= 1 }
                owner.stepsRun += 1
                if sawCancel { owner.stepsAfterCancel += 1 }
                owner.condition.unlock()
                if owner.spinSecondsPerStep > 0 {
                    let end = Date().addingTimeInterval(owner.spinSecondsPerStep)
                    var x: Double = 1
                    while Date() < end { for _ in 0..<10_000 { x = x * 1.0000001 + 1e-9 } }
                    if x == 0 { print(x) }
                }
                progress(step)
                sawCancel = isCancelled()
            }
            var bytes = Data("PNG:job=\(job.jobID) seed=\(job.request.noise.seed ?? 0) frame=\(frame)".utf8)
            for pose in poseWindow { bytes.append(contentsOf: FileDigest.sha256(pose).utf8.prefix(8)) }
            return (bytes, 0.01)
        }
    }
}

/// The test's side of the wire: a ROUTER bound on 127.0.0.1 that the test drives message by message.
final class ScriptedCoordinator {
    let context: ZMQContext
    let router: ZMQSocket
    let endpoint: String
    private let poller = ZMQPoller()
    /// Heartbeats seen (routing id, arrival time), recorded while skipping them.
    var heartbeats: [(Data, Date)] = []

    init() throws {
        context = try ZMQContext()
        router = try context.socket(.router)
        try router.set(.routerMandatory(true))
        endpoint = try router.bind("tcp://127.0.0.1:*")
        try poller.add(router)
    }

    deinit { router.close(); context.terminate() }

    func send(_ peer: Data, _ body: FarmEnvelope.OneOf_Body, requestID: UInt64 = 0) throws {
        try router.send([peer, try FarmEnvelope(body, requestID: requestID).encoded()])
    }

    /// Whether this side sends heartbeats (every 50 ms to the last peer heard) while the test waits.
    var beating = true
    private var lastPeer: Data?
    private var lastBeat = Date.distantPast
    private var sequence: UInt64 = 0

    private func beatIfDue() throws {
        guard beating, let peer = lastPeer, Date().timeIntervalSince(lastBeat) >= 0.05 else { return }
        lastBeat = Date()
        sequence += 1
        var beat = FarmHeartbeat()
        beat.sequence = sequence
        beat.sentUnixMs = UInt64(Date().timeIntervalSince1970 * 1000)
        do { try send(peer, .heartbeat(beat)) } catch let e as ZMQError where e.isHostUnreachable { lastPeer = nil }
    }

    /// The next non-heartbeat message (heartbeats are recorded), or nil after `timeout` seconds.
    func next(timeout: Double = 5) throws -> (peer: Data, envelope: FarmEnvelope)? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            try beatIfDue()
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return nil }
            _ = try poller.poll(timeoutMilliseconds: max(1, min(20, Int(left * 1000))))
            while let frames = try router.receive(flags: .dontWait) {
                XCTAssertEqual(frames.count, 2, "worker messages are one frame after the routing id")
                let envelope = try FarmEnvelope.decode(frames[1])
                lastPeer = frames[0]
                if case .heartbeat = envelope.body { heartbeats.append((frames[0], Date())); continue }
                return (frames[0], envelope)
            }
        }
    }

    /// The next message, which must be `name` (e.g. "credit"); fails the test otherwise.
    func expect(_ name: String, timeout: Double = 5, file: StaticString = #filePath, line: UInt = #line) throws
        -> (peer: Data, envelope: FarmEnvelope) {
        guard let got = try next(timeout: timeout) else {
            XCTFail("expected \(name) within \(timeout) s, got nothing", file: file, line: line)
            throw XCTSkip("no message")
        }
        XCTAssertEqual(got.envelope.bodyName, name, "unexpected message \(got.envelope)", file: file, line: line)
        return got
    }

    /// Waits `seconds` recording heartbeats, failing on any other message.
    func onlyHeartbeats(for seconds: Double) throws {
        if let got = try next(timeout: seconds) { XCTFail("expected only heartbeats, got \(got.envelope.bodyName)") }
    }

    static func welcome(intervalMs: UInt32 = 50, liveness: UInt32 = 5, chunkBytes: UInt32 = 1 << 20,
                        adopted: [UInt64] = [], id: String = "coord-test") -> FarmEnvelope.OneOf_Body {
        var w = FarmWelcome()
        w.coordinatorID = id
        w.heartbeatIntervalMs = intervalMs
        w.heartbeatLiveness = liveness
        w.maxMessageBytes = UInt64(FarmProtocol.defaultMaxMessageBytes)
        w.modelChunkBytes = chunkBytes
        w.adoptedAttemptIds = adopted
        return .welcome(w)
    }
}

final class WorkerServiceTests: XCTestCase {
    var temp: URL!

    override func setUpWithError() throws {
        temp = FileManager.default.temporaryDirectory.appendingPathComponent("worker-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: temp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: temp)
    }

    /// A small model folder on disk; returns its manifest.
    func makeModel(bytes: Int = 300_000) throws -> (URL, ModelManifest) {
        let dir = temp.appendingPathComponent("model-src", isDirectory: true)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("unet"), withIntermediateDirectories: true)
        try Data("{\"model\":\"test\"}".utf8).write(to: dir.appendingPathComponent("dreampose.json"))
        var weights = Data(count: bytes)
        for i in 0..<bytes { weights[i] = UInt8(truncatingIfNeeded: i &* 2654435761 >> 13) }
        try weights.write(to: dir.appendingPathComponent("unet/weights.bin"))
        return (dir, try ModelManifest.compute(directory: dir))
    }

    func start(_ coordinator: ScriptedCoordinator, renderer: GatedRenderer, slots: Int = 1,
               configure: (inout WorkerSettings) -> Void = { _ in }) throws -> (WorkerService, Thread, DispatchSemaphore, () -> Bool) {
        var settings = WorkerSettings(connect: coordinator.endpoint, name: "w-test",
                                      cacheDirectory: temp.appendingPathComponent("cache"))
        settings.slots = slots
        settings.heartbeatIntervalMs = 50
        settings.heartbeatLiveness = 5
        settings.reconnectInitialMs = 20
        settings.reconnectMaxMs = 100
        settings.modelRequestTimeoutSeconds = 10
        // Every step reported and no prefetch, unless a test is about those (the gated renderer's
        // steps and frames are far shorter than the defaults' thresholds).
        settings.progressIntervalMs = 0
        settings.prefetchBelowSeconds = 0
        configure(&settings)
        let service = try WorkerService(settings: settings, renderer: renderer, log: { print($0) })
        let done = DispatchSemaphore(value: 0)  // signalled when run() returned
        let thread = Thread {
            do { try service.run() } catch { XCTFail("run() threw \(error)") }
            done.signal()
        }
        thread.start()
        let isFinished = { () -> Bool in
            guard done.wait(timeout: .now() + 5) == .success else { return false }
            done.signal()  // later calls see it too
            return true
        }
        return (service, thread, done, isFinished)
    }

    func prep(job: UInt64, modelID: String, seed: UInt64 = 7) -> FarmEnvelope.OneOf_Body {
        var p = FarmJobPrep()
        p.jobID = job
        p.modelID = modelID
        p.settings.steps = 4
        p.settings.seed = seed
        p.subjectPng = Data("subject".utf8)
        p.poseWindow = 5
        return .jobPrep(p)
    }

    func task(job: UInt64, attempt: UInt64, frame: UInt32, modelID: String) -> FarmEnvelope.OneOf_Body {
        var t = FarmFrameTask()
        t.jobID = job
        t.attemptID = attempt
        t.frame = frame
        t.modelID = modelID
        t.poseWindowNpy = (0..<5).map { Data("pose \(Int(frame) + $0 - 2)".utf8) }
        return .frameTask(t)
    }

    /// Seeds the worker's cache with the model so tests that are not about fetching skip it.
    func cacheModel(_ dir: URL, _ manifest: ModelManifest) throws {
        let cache = try ModelCache(directory: temp.appendingPathComponent("cache"), maxBytes: 1 << 30)
        let lease = try ModelFetcher().fetch(manifest, into: cache) { path, offset, length in
            let handle = try FileHandle(forReadingFrom: dir.appendingPathComponent(path))
            defer { try? handle.close() }
            try handle.seek(toOffset: offset)
            return handle.readData(ofLength: length)
        }
        lease.release()
    }

    // MARK: tests

    func testHelloCreditsRenderProgressResultAndHeartbeats() throws {
        let coordinator = try ScriptedCoordinator()
        let (dir, manifest) = try makeModel()
        try cacheModel(dir, manifest)
        let renderer = GatedRenderer(steps: 4)
        let (service, _, _, isFinished) = try start(coordinator, renderer: renderer, slots: 2)

        let (peer, helloEnvelope) = try coordinator.expect("hello")
        guard case .hello(let hello)? = helloEnvelope.body else { return XCTFail("not a hello") }
        XCTAssertEqual(hello.workerName, "w-test")
        XCTAssertEqual(hello.slots, 2)
        XCTAssertEqual(hello.cachedModelIds, [manifest.modelID])
        XCTAssertTrue(hello.runningAttemptIds.isEmpty)
        XCTAssertEqual(helloEnvelope.protocolVersion, FarmProtocol.version)
        XCTAssertFalse(hello.host.hostname.isEmpty)

        try coordinator.send(peer, ScriptedCoordinator.welcome())
        guard case .credit(let credit)? = try coordinator.expect("credit").envelope.body else { return XCTFail() }
        XCTAssertEqual(credit.credits, 2, "credits after Welcome = free slots")

        // Idle: only heartbeats, about every 50 ms.
        let before = coordinator.heartbeats.count
        try coordinator.onlyHeartbeats(for: 0.4)
        XCTAssertGreaterThanOrEqual(coordinator.heartbeats.count - before, 4, "heartbeats every 50 ms while idle")

        try coordinator.send(peer, prep(job: 3, modelID: manifest.modelID))
        try coordinator.send(peer, task(job: 3, attempt: 41, frame: 12, modelID: manifest.modelID))
        var steps: [UInt32] = []
        var result: FarmFrameResult?
        while result == nil, let got = try coordinator.next() {
            switch got.envelope.body {
            case .progress(let p):
                XCTAssertEqual(p.attemptID, 41); XCTAssertEqual(p.frame, 12); XCTAssertEqual(p.totalSteps, 4)
                steps.append(p.step)
            case .frameResult(let r): result = r
            default: XCTFail("unexpected \(got.envelope.bodyName)")
            }
        }
        XCTAssertEqual(steps, [1, 2, 3, 4], "one Progress per denoising step")
        let r = try XCTUnwrap(result)
        XCTAssertFalse(r.hasError, "\(r.error)")
        XCTAssertEqual(r.attemptID, 41)
        XCTAssertEqual(r.workerName, "w-test")
        XCTAssertEqual(r.pngSha256, FileDigest.sha256(r.png))
        XCTAssertTrue(String(decoding: r.png, as: UTF8.self).hasPrefix("PNG:job=3 seed=7 frame=12"))
        XCTAssertEqual(r.credits, 1, "the freed slot is granted back with the result")
        XCTAssertEqual(renderer.prepares.count, 1)
        XCTAssertEqual(renderer.prepares.first?.1.lastPathComponent, manifest.modelID)

        // A second frame of the same job reuses the prepared job.
        try coordinator.send(peer, task(job: 3, attempt: 42, frame: 13, modelID: manifest.modelID))
        while let got = try coordinator.next(), got.envelope.bodyName != "frame_result" {}
        XCTAssertEqual(renderer.prepares.count, 1, "a job is prepared once")

        service.shutdown(handBack: true)
        guard case .goodbye(let bye)? = try coordinator.expect("goodbye").envelope.body else { return XCTFail() }
        XCTAssertTrue(bye.handedBackAttemptIds.isEmpty)
        XCTAssertTrue(isFinished(), "run() returns after Goodbye")
    }

    func testStepsFasterThanTheProgressIntervalAreFoldedIntoTheResult() throws {
        let coordinator = try ScriptedCoordinator()
        let (dir, manifest) = try makeModel()
        try cacheModel(dir, manifest)
        let (service, _, _, isFinished) = try start(coordinator, renderer: GatedRenderer(steps: 6)) {
            $0.progressIntervalMs = 60_000
        }
        let (peer, _) = try coordinator.expect("hello")
        try coordinator.send(peer, ScriptedCoordinator.welcome())
        _ = try coordinator.expect("credit")
        try coordinator.send(peer, prep(job: 3, modelID: manifest.modelID))
        try coordinator.send(peer, task(job: 3, attempt: 5, frame: 0, modelID: manifest.modelID))
        var progress = 0
        var result: FarmFrameResult?
        while result == nil, let got = try coordinator.next() {
            if case .progress? = got.envelope.body { progress += 1 }
            if case .frameResult(let r)? = got.envelope.body { result = r }
        }
        XCTAssertEqual(progress, 0, "6 fast steps within one 60 s interval: no Progress, the result says it all")
        XCTAssertFalse(try XCTUnwrap(result).hasError)
        service.shutdown()
        _ = try coordinator.expect("goodbye")
        XCTAssertTrue(isFinished())
    }

    func testShortFramesArePrefetchedAndAnUnstartedOneIsHandedBackOnShutdown() throws {
        let coordinator = try ScriptedCoordinator()
        let (dir, manifest) = try makeModel()
        try cacheModel(dir, manifest)
        let renderer = GatedRenderer(steps: 1, allowedSteps: 1)
        let (service, _, _, isFinished) = try start(coordinator, renderer: renderer) {
            $0.prefetchBelowSeconds = 30
            $0.prefetchWindowSeconds = 0  // one frame ahead per slot, whatever the frame took
            $0.progressIntervalMs = 60_000
        }
        let (peer, _) = try coordinator.expect("hello")
        try coordinator.send(peer, ScriptedCoordinator.welcome())
        guard case .credit(let first)? = try coordinator.expect("credit").envelope.body else { return XCTFail() }
        XCTAssertEqual(first.credits, 1, "no frame measured yet: one per slot")
        try coordinator.send(peer, prep(job: 8, modelID: manifest.modelID))
        try coordinator.send(peer, task(job: 8, attempt: 1, frame: 0, modelID: manifest.modelID))
        guard case .frameResult(let r1)? = try coordinator.expect("frame_result").envelope.body else { return XCTFail() }
        XCTAssertFalse(r1.hasError)
        XCTAssertEqual(r1.credits, 2, "a frame under the prefetch threshold: the freed slot plus one frame ahead")
        // Attempt 2 renders (held at the renderer's gate), attempt 3 waits on the worker behind it.
        try coordinator.send(peer, task(job: 8, attempt: 2, frame: 1, modelID: manifest.modelID))
        try coordinator.send(peer, task(job: 8, attempt: 3, frame: 2, modelID: manifest.modelID))
        try coordinator.onlyHeartbeats(for: 0.2)
        XCTAssertEqual(service.heldAttemptIDs, [2, 3])
        // Finish mode: the running frame is finished and sent, the unstarted one handed back.
        service.shutdown(handBack: false)
        renderer.openAll()
        guard case .frameResult(let r2)? = try coordinator.expect("frame_result").envelope.body else { return XCTFail() }
        XCTAssertEqual(r2.attemptID, 2)
        XCTAssertFalse(r2.hasError, "\(r2.error)")
        XCTAssertEqual(r2.credits, 0, "no credit while stopping")
        guard case .goodbye(let bye)? = try coordinator.expect("goodbye").envelope.body else { return XCTFail() }
        XCTAssertEqual(bye.handedBackAttemptIds, [3])
        XCTAssertTrue(isFinished())
        XCTAssertEqual(renderer.counts.run, 2, "attempt 3 never ran")
    }

    func testPrefetchDepthCoversTheWindowForShortFramesOnly() {
        var s = WorkerSettings(connect: "tcp://127.0.0.1:1", name: "w", cacheDirectory: temp)
        s.prefetchBelowSeconds = 1
        s.prefetchWindowSeconds = 0.010
        s.maxPrefetchPerSlot = 8
        XCTAssertEqual(s.prefetchDepth(lastFrameSeconds: nil), 0, "nothing rendered yet")
        XCTAssertEqual(s.prefetchDepth(lastFrameSeconds: 0.003), 4, "10 ms of 3 ms frames")
        XCTAssertEqual(s.prefetchDepth(lastFrameSeconds: 0.0001), 8, "capped")
        XCTAssertEqual(s.prefetchDepth(lastFrameSeconds: 0), 8)
        XCTAssertEqual(s.prefetchDepth(lastFrameSeconds: 0.2), 1, "at least one while under the threshold")
        XCTAssertEqual(s.prefetchDepth(lastFrameSeconds: 1.0), 0, "long frames are not prefetched")
        XCTAssertEqual(s.prefetchDepth(lastFrameSeconds: 95 * 60), 0)
        s.prefetchBelowSeconds = 0
        XCTAssertEqual(s.prefetchDepth(lastFrameSeconds: 0.003), 0, "0 turns prefetch off")
    }

    func testFrameTaskWithoutJobPrepIsAnsweredAndCreditReturned() throws {
        let coordinator = try ScriptedCoordinator()
        let (service, _, _, isFinished) = try start(coordinator, renderer: GatedRenderer(steps: 2))
        let (peer, _) = try coordinator.expect("hello")
        try coordinator.send(peer, ScriptedCoordinator.welcome())
        _ = try coordinator.expect("credit")
        try coordinator.send(peer, task(job: 9, attempt: 5, frame: 1, modelID: String(repeating: "a", count: 64)))
        guard case .frameResult(let r)? = try coordinator.expect("frame_result").envelope.body else { return XCTFail() }
        XCTAssertEqual(r.error.code, .jobPrepMissing)
        XCTAssertTrue(r.error.message.contains("job 9"), r.error.message)
        XCTAssertEqual(r.credits, 1, "the slot is granted back with the answer")
        service.shutdown()
        _ = try coordinator.expect("goodbye")
        XCTAssertTrue(isFinished())
    }

    func testCancelStopsWithinOneStepAndAnswersCancelled() throws {
        let coordinator = try ScriptedCoordinator()
        let (dir, manifest) = try makeModel()
        try cacheModel(dir, manifest)
        let renderer = GatedRenderer(steps: 50, allowedSteps: 2)
        let (service, _, _, isFinished) = try start(coordinator, renderer: renderer)
        let (peer, _) = try coordinator.expect("hello")
        try coordinator.send(peer, ScriptedCoordinator.welcome())
        _ = try coordinator.expect("credit")
        try coordinator.send(peer, prep(job: 1, modelID: manifest.modelID))
        try coordinator.send(peer, task(job: 1, attempt: 7, frame: 0, modelID: manifest.modelID))
        _ = try coordinator.expect("progress")
        _ = try coordinator.expect("progress")
        var cancel = FarmCancel()
        cancel.jobID = 1
        cancel.reason = "test"
        try coordinator.send(peer, .cancel(cancel))
        // Let the renderer run freely: it must stop at the next step boundary.
        Thread.sleep(forTimeInterval: 0.05)
        renderer.openAll()
        var result: FarmFrameResult?
        while result == nil, let got = try coordinator.next() {
            if case .frameResult(let r)? = got.envelope.body { result = r }
        }
        XCTAssertEqual(result?.error.code, .cancelled)
        XCTAssertEqual(result?.attemptID, 7)
        XCTAssertLessThanOrEqual(renderer.counts.run, 3, "stopped within one step of the Cancel (50 steps total)")
        XCTAssertEqual(result?.credits, 1)
        // Cancel{job} dropped the job prep: a new task of that job gets JOB_PREP_MISSING.
        try coordinator.send(peer, task(job: 1, attempt: 8, frame: 1, modelID: manifest.modelID))
        guard case .frameResult(let r2)? = try coordinator.expect("frame_result").envelope.body else { return XCTFail() }
        XCTAssertEqual(r2.error.code, .jobPrepMissing)
        XCTAssertEqual(r2.credits, 1)
        service.shutdown()
        _ = try coordinator.expect("goodbye")
        XCTAssertTrue(isFinished())
    }

    func testModelFetchVerifiesAndRefetchesACorruptedChunk() throws {
        let coordinator = try ScriptedCoordinator()
        let (dir, manifest) = try makeModel(bytes: 300_000)
        let renderer = GatedRenderer(steps: 1)
        let (service, _, _, isFinished) = try start(coordinator, renderer: renderer)
        let (peer, helloEnvelope) = try coordinator.expect("hello")
        guard case .hello(let hello)? = helloEnvelope.body else { return XCTFail() }
        XCTAssertTrue(hello.cachedModelIds.isEmpty)
        try coordinator.send(peer, ScriptedCoordinator.welcome(chunkBytes: 64 << 10))
        _ = try coordinator.expect("credit")
        try coordinator.send(peer, prep(job: 2, modelID: manifest.modelID))
        try coordinator.send(peer, task(job: 2, attempt: 11, frame: 4, modelID: manifest.modelID))

        var chunkRequests: [String: Int] = [:]
        var corrupted = false
        var result: FarmFrameResult?
        while result == nil, let got = try coordinator.next() {
            switch got.envelope.body {
            case .modelManifestRequest(let r):
                XCTAssertEqual(r.modelID, manifest.modelID)
                var m = FarmModelManifest()
                m.modelID = manifest.modelID
                m.files = manifest.files.map { f in
                    var w = FarmModelFile(); w.path = f.path; w.size = f.size; w.sha256 = f.sha256; return w
                }
                try coordinator.send(peer, .modelManifest(m), requestID: got.envelope.requestID)
            case .modelChunkRequest(let r):
                XCTAssertLessThanOrEqual(r.length, 64 << 10, "chunks no larger than Welcome.model_chunk_bytes")
                chunkRequests[r.path, default: 0] += 1
                let handle = try FileHandle(forReadingFrom: dir.appendingPathComponent(r.path))
                try handle.seek(toOffset: r.offset)
                var data = handle.readData(ofLength: Int(r.length))
                try handle.close()
                if r.path == "unet/weights.bin" && r.offset > 0 && !corrupted {
                    data[data.startIndex + 10] ^= 0xFF  // one flipped byte in transit
                    corrupted = true
                }
                var c = FarmModelChunk()
                c.modelID = r.modelID; c.path = r.path; c.offset = r.offset; c.data = data
                c.fileSize = manifest.entry(for: r.path)?.size ?? 0
                try coordinator.send(peer, .modelChunk(c), requestID: got.envelope.requestID)
            case .progress: break
            case .frameResult(let r): result = r
            default: XCTFail("unexpected \(got.envelope.bodyName)")
            }
        }
        XCTAssertTrue(corrupted)
        let r = try XCTUnwrap(result)
        XCTAssertFalse(r.hasError, "\(r.error)")
        let chunksPerFetch = (300_000 + (64 << 10) - 1) / (64 << 10)
        XCTAssertEqual(chunkRequests["unet/weights.bin"], 2 * chunksPerFetch, "the corrupted file is fetched again, whole")
        XCTAssertEqual(chunkRequests["dreampose.json"], 1)
        // The installed model is byte-identical to the source and is what the renderer was given.
        let installed = try XCTUnwrap(renderer.prepares.first?.1)
        XCTAssertEqual(try ModelManifest.compute(directory: installed), manifest)
        XCTAssertEqual(r.credits, 1)
        service.shutdown()
        _ = try coordinator.expect("goodbye")
        XCTAssertTrue(isFinished())
    }

    func testSilentCoordinatorReconnectsWithNewIdentityAndListsRunningAttempts() throws {
        let coordinator = try ScriptedCoordinator()
        let (dir, manifest) = try makeModel()
        try cacheModel(dir, manifest)
        let renderer = GatedRenderer(steps: 3, allowedSteps: 1)
        let (service, _, _, isFinished) = try start(coordinator, renderer: renderer)
        let (peer1, _) = try coordinator.expect("hello")
        try coordinator.send(peer1, ScriptedCoordinator.welcome(intervalMs: 50, liveness: 3))
        _ = try coordinator.expect("credit")
        try coordinator.send(peer1, prep(job: 5, modelID: manifest.modelID))
        try coordinator.send(peer1, task(job: 5, attempt: 70, frame: 2, modelID: manifest.modelID))
        _ = try coordinator.expect("progress")
        // The coordinator now says nothing: after 3 x 50 ms the worker reconnects on a new socket.
        coordinator.beating = false
        let silentSince = Date()
        let (peer2, hello2) = try coordinator.expect("hello", timeout: 3)
        coordinator.beating = true
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(silentSince), 0.1)
        XCTAssertNotEqual(peer1, peer2, "a reconnect uses a fresh routing id")
        guard case .hello(let hello)? = hello2.body else { return XCTFail() }
        XCTAssertEqual(hello.runningAttemptIds, [70])
        try coordinator.send(peer2, ScriptedCoordinator.welcome(adopted: [70]))
        renderer.openAll()
        var result: FarmFrameResult?
        while result == nil, let got = try coordinator.next() {
            XCTAssertEqual(got.peer, peer2)
            // No credit before the result: the only slot is still busy with the adopted attempt.
            XCTAssertNotEqual(got.envelope.bodyName, "credit")
            if case .frameResult(let r)? = got.envelope.body { result = r }
        }
        XCTAssertEqual(result?.attemptID, 70)
        XCTAssertFalse(result?.hasError ?? true)
        XCTAssertEqual(result?.credits, 1, "the slot is granted back with the result")
        service.shutdown()
        _ = try coordinator.expect("goodbye")
        XCTAssertTrue(isFinished())
    }

    func testShutdownHandsBackTheRunningFrameInGoodbye() throws {
        let coordinator = try ScriptedCoordinator()
        let (dir, manifest) = try makeModel()
        try cacheModel(dir, manifest)
        let renderer = GatedRenderer(steps: 20, allowedSteps: 1)
        let (service, _, _, isFinished) = try start(coordinator, renderer: renderer)
        let (peer, _) = try coordinator.expect("hello")
        try coordinator.send(peer, ScriptedCoordinator.welcome())
        _ = try coordinator.expect("credit")
        try coordinator.send(peer, prep(job: 4, modelID: manifest.modelID))
        try coordinator.send(peer, task(job: 4, attempt: 90, frame: 6, modelID: manifest.modelID))
        _ = try coordinator.expect("progress")
        service.shutdown(handBack: true)
        renderer.openAll()
        guard case .goodbye(let bye)? = try coordinator.expect("goodbye").envelope.body else { return XCTFail() }
        XCTAssertEqual(bye.handedBackAttemptIds, [90])
        XCTAssertTrue(isFinished())
        XCTAssertLessThanOrEqual(renderer.counts.run, 2, "stopped after the current step")
        XCTAssertNil(try coordinator.next(timeout: 0.2), "nothing after Goodbye")
    }

    func testHeartbeatsKeepComingWhileAStepHoldsACore() throws {
        let coordinator = try ScriptedCoordinator()
        let (dir, manifest) = try makeModel()
        try cacheModel(dir, manifest)
        let renderer = GatedRenderer(steps: 1)
        renderer.spinSecondsPerStep = 0.8
        let (service, _, _, isFinished) = try start(coordinator, renderer: renderer)
        let (peer, _) = try coordinator.expect("hello")
        try coordinator.send(peer, ScriptedCoordinator.welcome())
        _ = try coordinator.expect("credit")
        try coordinator.send(peer, prep(job: 6, modelID: manifest.modelID))
        try coordinator.send(peer, task(job: 6, attempt: 3, frame: 0, modelID: manifest.modelID))
        let start = Date()
        var result = false
        while !result, let got = try coordinator.next() {
            if got.envelope.bodyName == "frame_result" { result = true }
        }
        let during = coordinator.heartbeats.map(\.1).filter { $0 > start }
        XCTAssertGreaterThanOrEqual(during.count, 8, "~16 heartbeats expected in 0.8 s at 50 ms")
        let gaps = zip(during.dropFirst(), during).map { $0.timeIntervalSince($1) }
        XCTAssertLessThan(gaps.max() ?? 0, 0.2, "no heartbeat gap near the 250 ms liveness limit")
        service.shutdown()
        _ = try coordinator.expect("goodbye")
        XCTAssertTrue(isFinished())
    }
}

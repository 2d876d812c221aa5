import DPCoordinator
import DPFileKit
import DPJournal
import DPLog
import DPProtocol
import DPTransport
import Foundation
import Synchronization
import XCTest

/// Collects a coordinator's or worker's typed events (FarmEvent); tests wait for an event instead of sleeping,
/// never for log text.
final class EventSink: Sendable {
    private let events = Mutex<[FarmEvent]>([])

    var closure: @Sendable (FarmEvent) -> Void { { [self] event in append(event) } }

    func append(_ event: FarmEvent) {
        events.withLock { $0.append(event) }
    }

    var all: [FarmEvent] {
        events.withLock { $0 }
    }

    func count(where predicate: (FarmEvent) -> Bool) -> Int { all.filter(predicate).count }

    /// Waits (polling every 5 ms, up to `timeout`) for an event equal to `event`.
    @discardableResult
    func wait(for event: FarmEvent, timeout: Double = 10) -> FarmEvent? {
        wait(timeout: timeout) { $0 == event }
    }

    /// Waits (polling every 5 ms, up to `timeout`) for an event matching `predicate`; returns the first.
    @discardableResult
    func wait(timeout: Double = 10, _ predicate: (FarmEvent) -> Bool) -> FarmEvent? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let event = all.first(where: predicate) { return event }
            if Date() >= deadline { return nil }
            usleep(5000)
        }
    }

    /// Waits for the `n`-th (1-based) event matching `predicate`.
    @discardableResult
    func wait(count n: Int, timeout: Double = 10, _ predicate: (FarmEvent) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if count(where: predicate) >= n { return true }
            if Date() >= deadline { return false }
            usleep(5000)
        }
    }
}

extension FarmEvent {
    /// The ids an event carries (nil when it has none of that kind), for test predicates.
    var job: Int64? { fields["job"].flatMap { Int64($0) } }
    var frame: Int? { fields["frame"].flatMap { Int($0) } }
    var attempt: Int64? { fields["attempt"].flatMap { Int64($0) } }
    var worker: String? { fields["worker"] }
}

extension FarmLog {
    /// A test log: text lines to `logs`, events to `events`.
    static func capture(_ label: String, logs: LogSink, events: EventSink) -> FarmLog {
        FarmLog(label: label, level: .trace, sink: logs.closure, onEvent: events.closure)
    }
}

/// Collects log lines: for failure messages, and for the tests of the log lines themselves (escaping).
final class LogSink: Sendable {
    private let lines = Mutex<[String]>([])

    var closure: @Sendable (String) -> Void { { [self] line in append(line) } }

    func append(_ line: String) {
        lines.withLock { $0.append(line) }
    }

    var all: [String] {
        lines.withLock { $0 }
    }

}

/// A coordinator running on its own thread over a temp state folder.
final class RunningCoordinator: Sendable {
    let coordinator: Coordinator
    let logs: LogSink
    let events: EventSink
    private let done = DispatchSemaphore(value: 0)
    private let stopped = Mutex(false)

    init(state: URL, clock: JournalClock, logs: LogSink = LogSink(), events: EventSink = EventSink(),
         configure: (inout CoordinatorSettings) -> Void = { _ in }) throws {
        var settings = CoordinatorSettings(bind: "tcp://127.0.0.1:*", stateDirectory: state)
        settings.heartbeatIntervalMs = 100
        settings.restartGraceSeconds = 0
        // Most tests submit absolute output folders in their temp folder, as the embedded farm does;
        // the confinement tests (ConfinementTests) turn this off to get `dp-coord serve`'s behaviour.
        settings.allowLocalOutputPaths = true
        configure(&settings)
        self.logs = logs
        self.events = events
        coordinator = try Coordinator(settings: settings, clock: clock,
                                      logger: .capture(Coordinator.logLabel, logs: logs, events: events))
        let coordinator = self.coordinator
        let done = self.done
        let sink = logs
        Thread.detachNewThread {
            do { try coordinator.run() } catch { sink.append("run() threw: \(error)") }
            done.signal()
        }
        XCTAssertNotNil(events.wait { if case .serving = $0 { true } else { false } }, "coordinator did not start: \(logs.all)")
    }

    var endpoint: String { coordinator.endpoint }

    func stop() {
        let first = stopped.withLock { stopped in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        coordinator.shutdown()
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success, "run() did not return after shutdown()")
    }

    deinit { stop() }
}

/// A protocol-level peer (a scripted worker or client) on a raw DEALER socket.
final class RawPeer: Sendable {
    let context: ZMQContext
    let socket: ZMQSocket
    let name: String
    /// The newest delivery receipt read, echoed in every message sent (like a real worker or client,
    /// so a long scripted run is never cut off at the queued-bytes cap).
    let receipts = Mutex(FarmReceiptTracker())

    /// - curve: connect as this CURVE client (AuthTests); nil = no CURVE (an insecure coordinator).
    init(_ endpoint: String, name: String, curve: CurveClientKeys? = nil) throws {
        self.name = name
        context = try ZMQContext()
        socket = try context.socket(.dealer)
        var id = Data("P".utf8)
        for _ in 0..<8 { id.append(UInt8.random(in: 1...255)) }
        try socket.set(.routingID(id))
        if let curve { try socket.set(curve.socketOptions) }
        try socket.connect(endpoint)
    }

    deinit {
        socket.close()
        context.terminate()
    }

    func send(_ body: FarmEnvelope.OneOf_Body, requestID: UInt64 = 0) throws {
        var envelope = FarmEnvelope(body, requestID: requestID)
        receipts.withLock { $0.stamp(&envelope) }
        XCTAssertTrue(try socket.send(try envelope.encoded()))
    }

    func sendRaw(_ frames: [Data]) throws {
        XCTAssertTrue(try socket.send(frames))
    }

    /// The next message that is not a Heartbeat, or nil after `timeout` seconds.
    func next(timeout: Double = 10) throws -> FarmEnvelope? {
        let poller = ZMQPoller()
        try poller.add(socket)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let ready = try poller.poll(timeoutMilliseconds: 20)
            guard ready[0].contains(.readable), let frames = try socket.receive(flags: .dontWait) else { continue }
            XCTAssertEqual(frames.count, 1)
            let envelope = try FarmEnvelope.decode(frames[0])
            if receipts.withLock({ $0.read(envelope, wireBytes: frames[0].count) }) {
                try send(.acknowledge(FarmAcknowledge()))
            }
            if case .heartbeat? = envelope.body { continue }
            return envelope
        }
        return nil
    }

    /// The next non-heartbeat message; fails the test if there is none or `match` rejects it.
    func expect<T>(_ what: String, timeout: Double = 10, file: StaticString = #filePath, line: UInt = #line,
                   _ match: (FarmEnvelope.OneOf_Body) -> T?) throws -> T {
        guard let envelope = try next(timeout: timeout) else {
            XCTFail("\(name): no \(what) within \(timeout) s", file: file, line: line)
            throw CoordinatorTestError("\(name): no \(what)")
        }
        guard let body = envelope.body, let value = match(body) else {
            XCTFail("\(name): expected \(what), got \(envelope.bodyName): \(envelope)", file: file, line: line)
            throw CoordinatorTestError("\(name): expected \(what), got \(envelope.bodyName)")
        }
        return value
    }

    func hello(slots: UInt32 = 1, running: [UInt64] = [], models: [String] = []) throws -> FarmWelcome {
        var hello = FarmHello()
        hello.workerName = name
        hello.slots = slots
        hello.host.hostname = "test-host"
        hello.runningAttemptIds = running
        hello.cachedModelIds = models
        try send(.hello(hello))
        return try expect("welcome") { if case .welcome(let w) = $0 { return w } else { return nil } }
    }

    func credit(_ n: UInt32) throws {
        var credit = FarmCredit()
        credit.credits = n
        try send(.credit(credit))
    }

    func expectTask(timeout: Double = 10, file: StaticString = #filePath, line: UInt = #line) throws -> FarmFrameTask {
        try expect("frame_task", timeout: timeout, file: file, line: line) {
            if case .frameTask(let t) = $0 { return t } else { return nil }
        }
    }

    /// Expects JobPrep then FrameTask.
    func expectPrepAndTask(file: StaticString = #filePath, line: UInt = #line) throws -> (FarmJobPrep, FarmFrameTask) {
        let prep = try expect("job_prep", file: file, line: line) { if case .jobPrep(let p) = $0 { return p } else { return nil } }
        return (prep, try expectTask(file: file, line: line))
    }

    func result(_ task: FarmFrameTask, png: Data, seconds: Double = 0.5) throws {
        var result = FarmFrameResult()
        result.attemptID = task.attemptID
        result.jobID = task.jobID
        result.frame = task.frame
        result.workerName = name
        result.renderSeconds = seconds
        result.png = png
        result.pngSha256 = FileDigest.sha256(png)
        try send(.frameResult(result))
    }

    func failure(_ task: FarmFrameTask, _ code: FarmErrorCode, _ message: String) throws {
        var result = FarmFrameResult()
        result.attemptID = task.attemptID
        result.jobID = task.jobID
        result.frame = task.frame
        result.workerName = name
        result.error = FarmError(code, message, jobID: task.jobID, attemptID: task.attemptID)
        try send(.frameResult(result))
    }
}

struct CoordinatorTestError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

enum FarmFixtures {
    /// A SubmitJob as a client sends it, built by hand (the tests that upload or misbehave themselves): one pose
    /// at frame 0 (`poses/0.npy` holding `pose`), `subject` as `subject.png`, the model's manifest.
    static func rawSubmitJob(manifest: ModelManifest, name: String, subject: Data, pose: Data, out: String,
                             frames: [UInt32] = []) -> FarmSubmitJob {
        func file(_ path: String, _ data: Data) -> FarmInputFile { FarmInputFile(path: path, data: data) }
        var spec = FarmJobSpec()
        spec.name = name
        spec.modelID = manifest.modelID
        spec.subject = file("subject.png", subject)
        var poseInput = FarmPoseInput()
        poseInput.frame = 0
        poseInput.file = file("poses/0.npy", pose)
        spec.poses = [poseInput]
        spec.frames = frames
        spec.outputDir = out
        var submit = FarmSubmitJob()
        submit.spec = spec
        submit.model = FarmModelManifest(manifest)
        return submit
    }

    static func tempDirectory(_ label: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("dp-coord-\(label)-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A small model folder in the dreampose-model/1 layout (the coordinator only reads
    /// dreampose.json; the rest is opaque bytes it stores, hashes and serves).
    static func model(in parent: URL, seed: UInt8 = 1, weightBytes: Int = 300_000) throws -> URL {
        let dir = parent.appendingPathComponent("model-\(seed)", isDirectory: true)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("unet"), withIntermediateDirectories: true)
        let json = """
            {"format": "dreampose-model/1", "name": "test-\(seed)", "height": 64, "width": 48,
             "vae_scaling_factor": 0.18215, "pose_window": 5,
             "defaults": {"steps": 7, "sampler": "pndm", "image_guidance": 8.0, "pose_guidance": 3.0}}
            """
        try Data(json.utf8).write(to: dir.appendingPathComponent("dreampose.json"))
        try Data("{\"in_channels\": 14}".utf8).write(to: dir.appendingPathComponent("unet/config.json"))
        var weights = Data(count: weightBytes)
        var state = UInt32(seed) &* 2_654_435_761 | 1
        for i in 0..<weightBytes {
            state ^= state << 13; state ^= state >> 17; state ^= state << 5
            weights[i] = UInt8(truncatingIfNeeded: state)
        }
        try weights.write(to: dir.appendingPathComponent("unet/diffusion_pytorch_model.safetensors"))
        return dir
    }

    /// A pose .npy stand-in whose bytes name its frame (the coordinator forwards them untouched).
    static func pose(_ n: Int) -> Data { Data("pose-\(n)".utf8) }

    /// A result PNG whose structure passes the coordinator's check (signature, IHDR of the fixture
    /// model's 48x64 8-bit RGB frame size, chunks up to IEND) and whose bytes name the frame and worker.
    /// The pixels are not real (the coordinator never decodes them).
    static func png(frame: UInt32, by worker: String, width: Int = 48, height: Int = 64) -> Data {
        pngStructure(width: width, height: height, payload: Data("frame \(frame) by \(worker)".utf8))
    }

    static func pngStructure(width: Int, height: Int, payload: Data, bitDepth: UInt8 = 8, colourType: UInt8 = 2) -> Data {
        func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
        func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
            let typed = Array(type.utf8) + body
            return be32(UInt32(body.count)) + typed + be32(crc32(typed))
        }
        var out: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        out += chunk("IHDR", be32(UInt32(width)) + be32(UInt32(height)) + [bitDepth, colourType, 0, 0, 0])
        out += chunk("IDAT", Array(payload))
        out += chunk("IEND", [])
        return Data(out)
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            c ^= UInt32(byte)
            for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        return c ^ 0xFFFF_FFFF
    }

    static func submission(model: URL, frames: [Int], out: URL, poses: [Int]? = nil, order: FrameOrder = .frame,
                           video: String? = nil) -> JobSubmission {
        let all = poses ?? frames
        return JobSubmission(name: "test", modelDirectory: model, subjectPNG: Data("\u{89}PNG subject".utf8),
                             poses: Dictionary(uniqueKeysWithValues: all.map { ($0, pose($0)) }),
                             request: RenderRequest(noise: .seed(42), frames: frames, order: order),
                             outputDirectory: out.path, videoPath: video)
    }

    static func manifest(_ out: URL) throws -> [String: Any] {
        let data = try Data(contentsOf: out.appendingPathComponent("manifest.json"))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }
}

// No silent minutes (issue 14, item 7): the submit's upload reports bytes, rate and ETA; a worker's model
// fetch, verification and job preparation reach the job's followers, `dp-coord workers` and `status`;
// a worker's phase is checked like every peer input. Real sockets, real coordinator and worker.
import DPCoordinator
import DPFileKit
import DPJournal
import DPLog
import DPProtocol
import DPWorker
import Foundation
import Synchronization
import XCTest

final class PhaseProgressTests: XCTestCase {
    var root: URL!

    override func setUpWithError() throws {
        root = try FarmFixtures.tempDirectory("phases")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: root)
    }

    // MARK: upload

    func testSubmitReportsUploadProgressUpToTheTotal() throws {
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: ManualClock())
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let manifest = try ModelManifest.compute(directory: model)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        client.chunkBytes = 64 << 10  // the 300 kB weights file goes in 5 chunks
        client.uploadProgressInterval = 0  // every chunk reported
        let submission = FarmFixtures.submission(model: model, frames: [0, 1], out: root.appendingPathComponent("out"))
        var reports: [UploadProgress] = []
        let job = try client.submit(submission) { reports.append($0) }
        XCTAssertNotNil(coord.events.wait(for: .jobQueued(job: job)))

        let inputBytes = UInt64(submission.subjectPNG.count + submission.poses.values.reduce(0) { $0 + $1.count })
        let total = manifest.totalBytes + inputBytes
        guard let first = reports.first, let last = reports.last else { return XCTFail("no upload progress reported") }
        // 3 model files + subject + 2 poses; the first report before any byte, the last at the total.
        XCTAssertEqual(first.bytesSent, 0)
        XCTAssertEqual(first.files, 6)
        XCTAssertEqual(first.bytesTotal, total)
        XCTAssertEqual(last.bytesSent, total)
        XCTAssertEqual(last.filesDone, 6)
        XCTAssertTrue(last.finished)
        XCTAssertEqual(last.etaSeconds, 0)
        XCTAssertGreaterThan(reports.count, 6, "the weights file's chunks are reported one by one")
        XCTAssertEqual(reports.map(\.bytesSent), reports.map(\.bytesSent).sorted(), "bytes never go back")
        XCTAssertTrue(reports.allSatisfy { $0.bytesSent <= $0.bytesTotal })
        // The --json event of the last report.
        let json = last.jsonFields
        XCTAssertEqual(json["event"] as? String, "upload")
        XCTAssertEqual(json["bytes"] as? UInt64, total)
        XCTAssertEqual(json["total_bytes"] as? UInt64, total)
        XCTAssertEqual(json["eta_seconds"] as? Double, 0)
        XCTAssertNotNil(try? JSONSerialization.data(withJSONObject: json), "a valid JSON object")

        // The same job again: nothing to upload, nothing reported.
        var again: [UploadProgress] = []
        _ = try client.submit(FarmFixtures.submission(model: model, frames: [0, 1], out: root.appendingPathComponent("b"))) {
            again.append($0)
        }
        XCTAssertEqual(again, [])
    }

    /// `status` of a job still uploading shows the bytes the coordinator received of those declared.
    func testStatusOfAnUploadingJobShowsItsBytes() throws {
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: ManualClock())
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let manifest = try ModelManifest.compute(directory: model)
        let peer = try RawPeer(coord.endpoint, name: "client")
        let subject = Data(repeating: 7, count: 1000)
        let pose = Data("pose".utf8)
        try peer.send(.submitJob(FarmFixtures.rawSubmitJob(manifest: manifest, name: "raw", subject: subject, pose: pose,
                                                           out: "out")), requestID: 1)
        let reply = try peer.expect("submit_reply") { if case .submitReply(let r) = $0 { return r } else { return nil } }
        let total = manifest.totalBytes + 1000 + UInt64(pose.count)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        var status = try XCTUnwrap(client.status(job: Int64(reply.jobID)).first)
        XCTAssertEqual(status.state, "uploading")
        XCTAssertEqual(status.uploadBytesReceived, 0)
        XCTAssertEqual(status.uploadBytesTotal, total)
        // 400 bytes of the subject, then the whole weights file.
        var chunk = FarmUploadChunk()
        chunk.jobID = reply.jobID
        chunk.file.kind = .input
        chunk.file.path = "subject.png"
        chunk.data = subject.prefix(400)
        try peer.send(.uploadChunk(chunk), requestID: 2)
        _ = try peer.expect("upload_ack") { if case .uploadAck(let a) = $0 { return a } else { return nil } }
        let weights = try XCTUnwrap(manifest.files.first { $0.path.hasSuffix(".safetensors") })
        chunk.file.kind = .model
        chunk.file.path = weights.path
        chunk.data = try Data(contentsOf: model.appendingPathComponent(weights.path))
        chunk.last = true
        try peer.send(.uploadChunk(chunk), requestID: 3)
        let ack = try peer.expect("upload_ack") { if case .uploadAck(let a) = $0 { return a } else { return nil } }
        XCTAssertTrue(ack.fileComplete)
        status = try XCTUnwrap(client.status(job: Int64(reply.jobID)).first)
        XCTAssertEqual(status.uploadBytesReceived, 400 + weights.size)
        XCTAssertEqual(status.uploadBytesTotal, total)
    }

    // MARK: a real worker's model fetch

    func testWorkerFetchAndPreparationReachFollowerWorkersAndStatus() throws {
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: SystemClock()) {
            $0.modelChunkBytes = 32 << 10  // the worker fetches the weights in 10 chunks
        }
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let manifest = try ModelManifest.compute(directory: model)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        let job = try client.submit(FarmFixtures.submission(model: model, frames: [0], out: root.appendingPathComponent("out")))
        XCTAssertNotNil(coord.events.wait(for: .jobQueued(job: job)))

        let follower = PhaseFollower(endpoint: coord.endpoint, job: job)
        XCTAssertEqual(follower.snapshot.wait(timeout: .now() + 10), .success, "no snapshot")

        let gate = DispatchSemaphore(value: 0)
        var settings = WorkerSettings(connect: coord.endpoint, name: "w1", cacheDirectory: root.appendingPathComponent("cache"))
        settings.heartbeatIntervalMs = 100
        settings.progressIntervalMs = 0
        let worker = try WorkerService(settings: settings, renderer: PrepGatedRenderer(gate: gate), log: { _ in })
        let stopped = DispatchSemaphore(value: 0)
        Thread.detachNewThread { try? worker.run(); stopped.signal() }
        defer {
            gate.signal()
            worker.shutdown(handBack: true)
            _ = stopped.wait(timeout: .now() + 10)
        }

        // The renderer holds the preparation: the worker stays in that phase while we look.
        XCTAssertNotNil(coord.events.wait(for: .workerPhaseChanged(worker: "w1", phase: "preparing_job", job: job)),
                        "\(coord.logs.all)")
        let listed = try client.workers().first { $0.name == "w1" }
        XCTAssertEqual(listed?.phase?.phase, "preparing_job")
        XCTAssertEqual(listed?.phase?.job, job)
        XCTAssertEqual(listed?.phase?.modelID, manifest.modelID)
        let status = try client.status(job: job)
        XCTAssertEqual(status.first?.workerPhases.map(\.worker), ["w1"])
        XCTAssertEqual(status.first?.workerPhases.map(\.phase), ["preparing_job"])
        gate.signal()

        XCTAssertEqual(follower.done.wait(timeout: .now() + 20), .success, "the job did not finish")
        XCTAssertEqual(follower.finalState, "completed")
        let phases = follower.phases.filter { $0.worker == "w1" }
        // In order: fetching (bytes of the model's total), verifying (every byte fetched), preparing, none.
        // ("none" may come between two phases, and the end of the preparation may reach the coordinator
        // after the job finished.)
        XCTAssertEqual(Self.dedup(phases.map(\.phase).filter { $0 != "none" }), ["fetching_model", "verifying_model", "preparing_job"])
        let fetch = phases.filter { $0.phase == "fetching_model" }
        XCTAssertTrue(fetch.allSatisfy { $0.bytesTotal == manifest.totalBytes && $0.bytesDone <= $0.bytesTotal && $0.job == job })
        let verify = try XCTUnwrap(phases.first { $0.phase == "verifying_model" })
        XCTAssertEqual(verify.bytesDone, manifest.totalBytes)
        XCTAssertEqual(verify.bytesTotal, manifest.totalBytes)
        XCTAssertEqual(verify.modelID, manifest.modelID)
        XCTAssertEqual(verify.jsonFields["event"] as? String, "worker_phase")
        XCTAssertEqual(verify.jsonFields["eta_seconds"] as? Double, 0)
        // Once ready, `workers` shows no phase.
        XCTAssertNotNil(coord.events.wait(for: .workerPhaseChanged(worker: "w1", phase: "none", job: job)))
        XCTAssertNil(try client.workers().first { $0.name == "w1" }?.phase)
    }

    /// A phase as a hostile coordinator might relay it: the client's text and JSON line stay sane.
    func testPhaseFromHostileValuesGivesValidJSONAndText() throws {
        var wire = FarmWorkerPhase()
        wire.kind = .UNRECOGNIZED(77)
        wire.workerName = "w"
        wire.bytesDone = UInt64.max
        wire.bytesTotal = 1
        wire.seconds = .nan
        let odd = WorkerPhaseInfo(wire)
        XCTAssertEqual(odd.phase, "none")
        XCTAssertEqual(odd.seconds, 0)
        for seconds in [0, 1e-320, 1e-300, .greatestFiniteMagnitude, 3] {
            for (done, total) in [(UInt64.max, UInt64(1)), (0, UInt64.max), (UInt64.max, UInt64.max), (5, 10)] {
                let p = WorkerPhaseInfo(phase: "fetching_model", worker: "w", bytesDone: done, bytesTotal: total, seconds: seconds)
                XCTAssertNotNil(try? JSONSerialization.data(withJSONObject: p.jsonFields), "\(p)")
                XCTAssertFalse(p.summary.isEmpty)
                let u = UploadProgress(filesDone: 1, files: 2, bytesSent: done, bytesTotal: total, seconds: seconds)
                XCTAssertNotNil(try? JSONSerialization.data(withJSONObject: u.jsonFields), "\(u)")
                XCTAssertFalse(u.summary.isEmpty)
            }
        }
        let half = WorkerPhaseInfo(phase: "fetching_model", worker: "w", bytesDone: 1_000_000, bytesTotal: 3_000_000, seconds: 2)
        XCTAssertEqual(half.bytesPerSecond, 500_000)
        XCTAssertEqual(half.etaSeconds, 4)
        XCTAssertEqual(half.summary, "fetching model: 1.0 MB/3.0 MB at 500.0 kB/s, ETA 4s")
    }

    static func dedup(_ names: [String]) -> [String] {
        names.reduce(into: []) { if $0.last != $1 { $0.append($1) } }
    }

    // MARK: a scripted worker: listing, relay and hostile values

    func testScriptedWorkerPhaseIsCheckedListedAndRelayed() throws {
        // A scripted worker sends only what the test sends: a generous liveness keeps its session.
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: SystemClock()) {
            $0.heartbeatLiveness = 200
        }
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let manifest = try ModelManifest.compute(directory: model)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        let job = try client.submit(FarmFixtures.submission(model: model, frames: [0], out: root.appendingPathComponent("out")))
        XCTAssertNotNil(coord.events.wait(for: .jobQueued(job: job)))
        let follower = PhaseFollower(endpoint: coord.endpoint, job: job)
        XCTAssertEqual(follower.snapshot.wait(timeout: .now() + 10), .success, "no snapshot")

        let peer = try RawPeer(coord.endpoint, name: "raw")
        _ = try peer.hello()
        try peer.credit(1)
        let (_, task) = try peer.expectPrepAndTask()
        var sequence: UInt64 = 0
        func beat(_ phase: FarmWorkerPhase?) throws {
            sequence += 1
            var hb = FarmHeartbeat()
            hb.sequence = sequence
            if let phase { hb.phase = phase }
            try peer.send(.heartbeat(hb))
        }
        func phase(_ kind: FarmWorkerPhaseKind = .fetchingModel, model: String? = nil, job j: UInt64? = nil,
                   done: UInt64 = 100, total: UInt64 = 1000, seconds: Double = 2) -> FarmWorkerPhase {
            var p = FarmWorkerPhase()
            p.kind = kind
            p.modelID = model ?? manifest.modelID
            p.jobID = j ?? UInt64(job)
            p.bytesDone = done
            p.bytesTotal = total
            p.seconds = seconds
            p.workerName = "someone-else"  // ignored: the coordinator names the session
            return p
        }

        try beat(phase())
        XCTAssertNotNil(coord.events.wait(for: .workerPhaseChanged(worker: "raw", phase: "fetching_model", job: job)))
        func listed() throws -> WorkerPhaseInfo? { try client.workers().first { $0.name == "raw" }?.phase }
        XCTAssertEqual(try listed(), WorkerPhaseInfo(phase: "fetching_model", worker: "raw", modelID: manifest.modelID,
                                                     job: job, bytesDone: 100, bytesTotal: 1000, seconds: 2))
        XCTAssertEqual(try listed()?.bytesPerSecond, 50)
        XCTAssertEqual(try listed()?.etaSeconds, 18)
        XCTAssertEqual(try client.status(job: job).first?.workerPhases.map(\.bytesDone), [100])
        // A follower that comes later hears the phase right after its snapshot.
        let late = PhaseFollower(endpoint: coord.endpoint, job: job)
        XCTAssertEqual(late.firstPhase.wait(timeout: .now() + 10), .success, "no phase for a late follower")
        XCTAssertEqual(late.phases.first?.phase, "fetching_model")
        XCTAssertEqual(late.phases.first?.bytesDone, 100)

        // Hostile values: each refused (a typed event, a bounded log line); the previous phase stands.
        let hostile: [FarmWorkerPhase] = [
            phase(done: 1001, total: 1000),                                   // more done than the total
            phase(done: 0, total: FarmProtocol.defaultLimits.maxModelUploadBytes + 1),  // over the model size limit
            phase(model: "not-a-model-id"),
            phase(model: String(repeating: "A", count: 64)),                  // upper-case hex
            phase(seconds: .nan),
            phase(seconds: -1),
            phase(seconds: .infinity),
            phase(.UNRECOGNIZED(99)),
        ]
        for (i, p) in hostile.enumerated() {
            try beat(p)
            XCTAssertTrue(coord.events.wait(count: i + 1) { if case .workerPhaseRefused(worker: "raw", _) = $0 { true } else { false } },
                          "hostile phase \(i) not refused: \(p)")
        }
        XCTAssertEqual(try listed()?.bytesDone, 100)

        // A phase for a job the worker holds no JobPrep of is kept without the job (relayed to nobody).
        try beat(phase(job: 987_654))
        XCTAssertNotNil(coord.events.wait(for: .workerPhaseChanged(worker: "raw", phase: "fetching_model", job: 0)))
        XCTAssertEqual(try listed()?.job, 0)
        XCTAssertEqual(try client.status(job: job).first?.workerPhases, [])
        // No phase in the heartbeat: none.
        try beat(nil)
        XCTAssertNotNil(coord.events.wait(for: .workerPhaseChanged(worker: "raw", phase: "none", job: 0)))
        XCTAssertNil(try listed())

        try peer.result(task, png: FarmFixtures.png(frame: task.frame, by: "raw"))
        XCTAssertEqual(follower.done.wait(timeout: .now() + 10), .success, "the job did not finish")
        // The follower saw the phase for its job, then its end when it moved off the job; no hostile one.
        let seen = follower.phases
        XCTAssertEqual(seen.map(\.phase), ["fetching_model", "none"])
        XCTAssertEqual(seen.first?.worker, "raw")
        XCTAssertEqual(seen.first?.bytesDone, 100)
        XCTAssertEqual(seen.first?.bytesTotal, 1000)
    }
}

/// Follows a job on a thread of its own (a FarmClient of its own), recording its worker phases.
private final class PhaseFollower: Sendable {
    let snapshot = DispatchSemaphore(value: 0)
    let done = DispatchSemaphore(value: 0)
    let firstPhase = DispatchSemaphore(value: 0)
    private let state = Mutex((phases: [WorkerPhaseInfo](), finalState: String?.none))
    var phases: [WorkerPhaseInfo] { state.withLock { $0.phases } }
    var finalState: String? { state.withLock { $0.finalState } }

    init(endpoint: String, job: Int64) {
        Thread.detachNewThread { [self] in
            defer { done.signal() }
            guard let client = try? FarmClient(endpoint: endpoint, timeoutSeconds: 10) else { return }
            defer { client.close() }
            try? client.follow(job: job) { event in
                switch event {
                case .snapshot: snapshot.signal()
                case .workerPhase(let p):
                    let first = state.withLock { state in
                        state.phases.append(p)
                        return state.phases.count == 1
                    }
                    if first { firstPhase.signal() }
                case .finished(let s, _): state.withLock { $0.finalState = s }
                default: break
                }
                return true
            }
        }
    }
}

/// The synthetic renderer, holding each job's preparation until `gate` is signalled (at most 20 s).
private final class PrepGatedRenderer: FrameRenderer {
    let gate: DispatchSemaphore
    let inner = SyntheticFrameRenderer(width: 48, height: 64)  // the fixture model's size

    init(gate: DispatchSemaphore) { self.gate = gate }

    func prepare(job: JobRenderSpec, modelDirectory: URL) throws -> any PreparedFrameRenderer {
        _ = gate.wait(timeout: .now() + 20)
        gate.signal()  // open for good
        return try inner.prepare(job: job, modelDirectory: modelDirectory)
    }
}

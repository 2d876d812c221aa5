import DPCoordinator
import DPFileKit
import DPJournal
import DPLog
import DPProtocol
import Foundation
import XCTest

/// FarmClient against a running coordinator: uploads only what is missing, verified uploads, follow.
final class ClientTests: XCTestCase {
    var root: URL!

    override func setUpWithError() throws {
        root = try FarmFixtures.tempDirectory("client")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: root)
    }

    func testSecondSubmitUploadsNothingTheCoordinatorHolds() throws {
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: ManualClock())
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        let first = try client.submit(FarmFixtures.submission(model: model, frames: [0, 1], out: root.appendingPathComponent("a")))
        // 3 model files + subject + 2 poses.
        XCTAssertNotNil(coord.events.wait(for: .jobSubmitted(job: first, frames: 2, uploads: 6, modelHeld: false)))
        XCTAssertNotNil(coord.events.wait(for: .jobQueued(job: first)))
        let manifest = try ModelManifest.compute(directory: model)
        XCTAssertEqual(coord.coordinator.models.modelIDs, [manifest.modelID])
        // Same model and inputs, one new pose: only that pose is uploaded.
        let second = try client.submit(FarmFixtures.submission(model: model, frames: [2], out: root.appendingPathComponent("b"),
                                                               poses: [0, 1, 2]))
        XCTAssertNotNil(coord.events.wait(for: .jobSubmitted(job: second, frames: 1, uploads: 1, modelHeld: true)))
        let status = try client.status(job: nil)
        XCTAssertEqual(status.map(\.id), [first, second])
        XCTAssertEqual(status.map(\.state), ["queued", "queued"])
        XCTAssertEqual(status.map(\.total), [2, 1])
        XCTAssertEqual(status[1].outputDirectory, root.appendingPathComponent("b").standardizedFileURL.path)
    }

    func testCorruptedUploadIsRefusedWithChecksumMismatchAndJobStaysUploading() throws {
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: ManualClock())
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let manifest = try ModelManifest.compute(directory: model)
        let peer = try RawPeer(coord.endpoint, name: "client")
        let subject = Data("subject".utf8)
        let submit = FarmFixtures.rawSubmitJob(manifest: manifest, name: "raw", subject: subject,
                                               pose: Data("pose".utf8), out: "out")
        try peer.send(.submitJob(submit), requestID: 1)
        let reply = try peer.expect("submit_reply") { if case .submitReply(let r) = $0 { return r } else { return nil } }
        XCTAssertEqual(reply.missing.count, manifest.files.count + 2)
        var chunk = FarmUploadChunk()
        chunk.jobID = reply.jobID
        chunk.file.kind = .input
        chunk.file.path = "subject.png"
        chunk.data = Data("subjecX".utf8)  // one byte flipped on the way
        chunk.last = true
        try peer.send(.uploadChunk(chunk), requestID: 2)
        let error = try peer.expect("error") { if case .error(let e) = $0 { return e } else { return nil } }
        XCTAssertEqual(error.code, .checksumMismatch)
        XCTAssertTrue(error.message.contains("subject.png"), error.message)
        // Sent again correctly: accepted.
        chunk.data = subject
        try peer.send(.uploadChunk(chunk), requestID: 3)
        let ack = try peer.expect("upload_ack") { if case .uploadAck(let a) = $0 { return a } else { return nil } }
        XCTAssertTrue(ack.fileComplete)
        XCTAssertFalse(ack.jobQueued, "model and pose still missing")
        // An upload path escaping its folder is refused.
        chunk.file.path = "../journal.sqlite"
        try peer.send(.uploadChunk(chunk), requestID: 4)
        let refused = try peer.expect("error") { if case .error(let e) = $0 { return e } else { return nil } }
        XCTAssertEqual(refused.code, .unknownFile)
        XCTAssertEqual(try coord.coordinator.journal.job(Int64(reply.jobID))?.state, .uploading)
    }

    func testFollowStreamsProgressFramesWithPNGAndFinish() throws {
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: ManualClock())
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        let job = try client.submit(FarmFixtures.submission(model: model, frames: [5], out: root.appendingPathComponent("o")))
        let worker = try RawPeer(coord.endpoint, name: "w")
        _ = try worker.hello()
        try worker.credit(1)
        let (_, task) = try worker.expectPrepAndTask()
        let script = Thread {
            // The follower registers first (its snapshot comes before any of these).
            _ = coord.logs  // keep the sink alive on this thread
            usleep(100_000)
            var progress = FarmProgress()
            progress.attemptID = task.attemptID
            progress.jobID = task.jobID
            progress.frame = task.frame
            progress.step = 3
            progress.totalSteps = 7
            try? worker.send(.progress(progress))
            try? worker.result(task, png: FarmFixtures.png(frame: 5, by: "w"))
        }
        script.start()
        var events: [String] = []
        var png: Data?
        try client.follow(job: job, includePNG: true) { event in
            switch event {
            case .snapshot(let info): events.append("snapshot \(info.total)/\(info.queued + info.inFlight)")
            case let .frameProgress(frame, worker, step, total): events.append("progress \(frame) \(worker) \(step)/\(total)")
            case let .frameDone(frame, _, worker, _, data):
                events.append("done \(frame) \(worker)")
                png = data
            case .frameFailed(let frame, let error): events.append("failed \(frame) \(error)")
            case .notice(let message): events.append("notice \(message)")
            case .workerPhase(let p): events.append("phase \(p.worker) \(p.phase)")
            case .finished(let state, let video): events.append("finished \(state) \(video ?? "-")")
            }
            return true
        }
        XCTAssertEqual(events, ["snapshot 1/1", "progress 5 w 3/7", "done 5 w", "finished completed -"])
        XCTAssertEqual(png, FarmFixtures.png(frame: 5, by: "w"))
    }

    func testFollowerIsToldWhenNoConnectedWorkerMayTakeTheJob() throws {
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: ManualClock())
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        let job = try client.submit(FarmFixtures.submission(model: model, frames: [0, 1, 2, 3], out: root.appendingPathComponent("o")))
        let worker = try RawPeer(coord.endpoint, name: "solo")
        _ = try worker.hello()
        let script = Thread {
            usleep(100_000)  // the follower registers first
            // The only worker fails 3 frames of the job: it is banned from it, and nobody else is connected.
            for i in 0 ..< 3 {
                try? worker.credit(1)
                guard let task = try? (i == 0 ? worker.expectPrepAndTask().1 : worker.expectTask()) else {
                    coord.stop()  // the follower then fails instead of waiting forever
                    return
                }
                try? worker.failure(task, .renderFailed, "bad GPU driver")
            }
        }
        script.start()
        var failures = 0
        var notice: String?
        try client.follow(job: job) { event in
            switch event {
            case .frameFailed: failures += 1
            case .notice(let message): notice = message; return false
            case .finished: return false
            default: break
            }
            return true
        }
        XCTAssertEqual(failures, 3)
        let text = try XCTUnwrap(notice, "no notice: the job would wait silently")
        XCTAssertTrue(text.contains("no connected worker may take job \(job)") && text.contains("solo"), text)
        XCTAssertEqual(coord.events.count { $0 == .noWorkerMayTake(job: job) }, 1)
        XCTAssertEqual(try client.status(job: job).first?.state, "running", "the job waits for another worker")
    }
}

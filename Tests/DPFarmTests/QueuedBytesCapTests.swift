@testable import DPCoordinator
import DPFileKit
import DPJournal
import DPProtocol
import DPTransport
import DPWorker
import Foundation
import XCTest

/// Issue 12, item 5, "bytes queued per peer": delivery receipts and the coordinator's cap on what it has
/// sent a connection beyond the peer's proven read (DeliveryLedger.swift), through real sockets. The
/// tests watch `Coordinator.deliveryCounters` and the journal, never log text.
final class QueuedBytesCapTests: XCTestCase {
    var root: URL!

    override func setUpWithError() throws {
        root = try FarmFixtures.tempDirectory("queued-bytes")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: root)
    }

    static let cap = 1 << 20

    /// A coordinator with a 1 MiB cap (and a 1 MiB message limit, so the cap may be that small).
    func coordinator(messages: Int = 100_000) throws -> RunningCoordinator {
        // A manual clock: raw workers that send no heartbeats are never declared dead.
        try RunningCoordinator(state: root.appendingPathComponent("state"), clock: ManualClock()) {
            $0.maxMessageBytes = Self.cap
            $0.limits.maxQueuedBytesPerPeer = Self.cap
            $0.limits.maxQueuedMessagesPerPeer = messages
        }
    }

    func client(_ coord: RunningCoordinator) throws -> FarmClient {
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        client.chunkBytes = 256 << 10
        return client
    }

    /// Polls `condition` every 5 ms for up to `timeout` seconds.
    func eventually(_ what: String, timeout: Double = 15, file: StaticString = #filePath, line: UInt = #line,
                    _ condition: () throws -> Bool) rethrows {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return }
            usleep(5000)
        }
        XCTFail("timed out waiting for \(what)", file: file, line: line)
    }

    func jobState(_ coord: RunningCoordinator, _ job: Int64) -> JobState? {
        try? coord.coordinator.journal.job(job, includingSpec: false)?.state
    }

    /// Renders every frame of the job on `worker` (one credit at a time), `payload` bytes of PNG each.
    func render(_ worker: RawPeer, frames: Int, payload: Int = 16) throws {
        for i in 0 ..< frames {
            try worker.credit(1)
            let task = i == 0 ? try worker.expectPrepAndTask().1 : try worker.expectTask()
            let png = FarmFixtures.pngStructure(width: 48, height: 64, payload: Data(repeating: UInt8(i & 0xff), count: payload))
            try worker.result(task, png: png)
        }
    }

    // MARK: peers that do not read

    func testClientThatDoesNotReadIsCutOffWhileOthersAreServed() throws {
        let coord = try coordinator()
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try client(coord)
        defer { client.close() }
        let job = try client.submit(FarmFixtures.submission(model: model, frames: [0, 1, 2], out: root.appendingPathComponent("out")))
        let worker = try RawPeer(coord.endpoint, name: "w1")
        _ = try worker.hello()

        // 20,000 status requests (each reply ~200 bytes: 4 MB in all) from a peer that never reads.
        let flooder = try SilentPeer(coord.endpoint)
        for i in 1 ... 20_000 { try flooder.send(.statusRequest(FarmStatusRequest()), requestID: UInt64(i)) }
        try eventually("the flooder to be cut off") { coord.coordinator.deliveryCounters.peersCutOff == 1 }

        // Everyone else is served on time: another client's status, and the worker renders the whole job.
        let asked = Date()
        XCTAssertEqual(try client.status(job: job).first?.id, job)
        XCTAssertLessThan(Date().timeIntervalSince(asked), 2)
        try render(worker, frames: 3)
        try eventually("the job to complete") { jobState(coord, job) == .completed }
        XCTAssertEqual(coord.coordinator.deliveryCounters.peersCutOff, 1, "only the flooder")

        // What the coordinator let out to the flooder is bounded by the cap: read it now (without acking).
        let read = try flooder.drain()
        XCTAssertGreaterThan(read.messages, 100)
        let last = try XCTUnwrap(read.latest)
        XCTAssertLessThanOrEqual(last.bytes, UInt64(Self.cap))
        XCTAssertEqual(last.capBytes, UInt64(Self.cap))

        // Having read, it acks: it is told it was cut off and is served again. Replies the drain left in
        // the connection (a slow machine) come first; every reply sent came before the cut-off.
        try flooder.send(.acknowledge(FarmAcknowledge()), ack: last)
        var replies = read.messages
        var bytes = read.bytes
        var notice: FarmEnvelope?
        while let next = try flooder.next() {
            guard case .statusReply? = next.body else {
                notice = next
                break
            }
            replies += 1
            bytes += flooder.lastWireBytes
        }
        let error = try XCTUnwrap(notice, "no QUEUE_FULL notice")
        guard case .error(let refusal)? = error.body else { return XCTFail("expected an error, got \(error.bodyName)") }
        XCTAssertEqual(refusal.code, .queueFull)
        XCTAssertEqual(error.requestID, 0)
        XCTAssertLessThanOrEqual(bytes, Self.cap)
        let counters = coord.coordinator.deliveryCounters
        XCTAssertEqual(counters.peersRecovered, 1)
        XCTAssertEqual(counters.acksRefused, 0)
        XCTAssertEqual(replies + counters.messagesWithheld, 20_000, "each request answered or withheld")
        var one = FarmStatusRequest()
        one.jobID = UInt64(job)
        try flooder.send(.statusRequest(one), requestID: 99_999, ack: error.receipt)
        let reply = try XCTUnwrap(try flooder.next())
        XCTAssertEqual(reply.requestID, 99_999)
        guard case .statusReply(let status)? = reply.body else { return XCTFail("expected status_reply, got \(reply.bodyName)") }
        XCTAssertEqual(status.jobs.first?.state, .completed)
    }

    func testFollowerThatDoesNotReadLosesItsStreamAndNothingElse() throws {
        // The message cap this time: 16 messages sent and not acknowledged.
        let coord = try coordinator(messages: 16)
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try client(coord)
        defer { client.close() }
        let frames = 40
        let job = try client.submit(FarmFixtures.submission(model: model, frames: Array(0 ..< frames), out: root.appendingPathComponent("out")))
        // Follows and never reads: a FrameDone per frame, 40 of them for a cap of 16.
        let follower = try SilentPeer(coord.endpoint)
        var follow = FarmFollowJob()
        follow.jobID = UInt64(job)
        try follower.send(.followJob(follow), requestID: 7)
        let worker = try RawPeer(coord.endpoint, name: "w1")
        _ = try worker.hello()
        try render(worker, frames: frames)
        try eventually("the job to complete") { jobState(coord, job) == .completed }
        try eventually("the follow stream to be dropped") { coord.coordinator.deliveryCounters.followStreamsDropped == 1 }
        let counters = coord.coordinator.deliveryCounters
        XCTAssertEqual(counters.peersCutOff, 0, "a follow stream over the cap is dropped; nobody is cut off")
        XCTAssertEqual(try client.status(job: job).first?.done, frames)

        let read = try follower.drain()
        // Once it has read and acks, it learns its stream was dropped (on the stream's request id). Events
        // the drain left in the connection (a slow machine) come first.
        try follower.send(.acknowledge(FarmAcknowledge()), ack: try XCTUnwrap(read.latest))
        var events = read.messages
        var notice = try XCTUnwrap(try follower.next(), "no QUEUE_FULL on the stream")
        func isEvent(_ envelope: FarmEnvelope) -> Bool {
            switch envelope.body {
            case .jobEvent?, .jobEvents?: return true
            default: return false
            }
        }
        while isEvent(notice) {
            events += 1
            notice = try XCTUnwrap(try follower.next(), "no QUEUE_FULL on the stream")
        }
        XCTAssertEqual(events, 16, "the stream ended at the cap, long before the job did")
        XCTAssertEqual(notice.requestID, 7)
        guard case .error(let error)? = notice.body else { return XCTFail("expected an error, got \(notice.bodyName)") }
        XCTAssertEqual(error.code, .queueFull)
    }

    func testWorkerThatDoesNotReadLosesItsSessionAndItsAttemptGoesToAnother() throws {
        let coord = try coordinator()
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let manifest = try ModelManifest.compute(directory: model)
        let client = try client(coord)
        defer { client.close() }
        let job = try client.submit(FarmFixtures.submission(model: model, frames: [0], out: root.appendingPathComponent("out")))
        // A worker takes the frame, then asks for 300 KB model chunks in a loop and never reads them.
        let hog = try SilentPeer(coord.endpoint)
        var hello = FarmHello()
        hello.workerName = "hog"
        hello.slots = 1
        try hog.send(.hello(hello))
        var credit = FarmCredit()
        credit.credits = 1
        try hog.send(.credit(credit))
        try eventually("the hog to hold the frame") {
            (try coord.coordinator.journal.runningAttempts()).contains { $0.worker == "hog" }
        }
        let weights = try XCTUnwrap(manifest.files.first { $0.path.hasSuffix(".safetensors") })
        for i in 0 ..< 64 {
            var request = FarmModelChunkRequest()
            request.modelID = manifest.modelID
            request.path = weights.path
            request.length = 300_000
            try hog.send(.modelChunkRequest(request), requestID: UInt64(i + 1))
        }
        try eventually("the hog to be cut off") { coord.coordinator.deliveryCounters.peersCutOff == 1 }
        // Its session ended and its attempt counts as lost; an honest worker renders the frame.
        let worker = try RawPeer(coord.endpoint, name: "w2")
        _ = try worker.hello()
        try render(worker, frames: 1)
        try eventually("the job to complete") { jobState(coord, job) == .completed }
        XCTAssertLessThanOrEqual(try hog.drain().bytes, Self.cap)
    }

    // MARK: peers that read

    func testWorkersAndFollowersThatReadNeverReachTheCap() throws {
        // Small caps (1 MiB, 16 messages), real WorkerServices and a FarmClient following with PNGs: the
        // listening side acks every 4 messages, so nobody is cut off and no stream is dropped.
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: SystemClock()) {
            $0.heartbeatIntervalMs = 50
            $0.maxMessageBytes = Self.cap
            $0.limits.maxQueuedBytesPerPeer = Self.cap
            $0.limits.maxQueuedMessagesPerPeer = 16
        }
        defer { coord.stop() }
        var stops: [() -> Void] = []
        defer { for stop in stops.reversed() { stop() } }
        for i in 0 ..< 2 {
            var settings = WorkerSettings(connect: coord.endpoint, name: "reader-\(i)",
                                          cacheDirectory: root.appendingPathComponent("cache-\(i)"))
            settings.heartbeatIntervalMs = 50
            let worker = try WorkerService(settings: settings,
                                           renderer: SyntheticFrameRenderer(steps: 4, stepDelaySeconds: 0.002, width: 48, height: 64),
                                           log: { _ in })
            let done = DispatchSemaphore(value: 0)
            Thread { try? worker.run(); done.signal() }.start()
            stops.append { worker.shutdown(handBack: true); _ = done.wait(timeout: .now() + 5) }
        }
        let model = try FarmFixtures.model(in: root)
        let client = try client(coord)
        defer { client.close() }
        let frames = Array(0 ..< 40)
        let job = try client.submit(FarmFixtures.submission(model: model, frames: frames, out: root.appendingPathComponent("out")))
        var done: Set<Int> = []
        var events = 0
        var state = ""
        try client.follow(job: job, includePNG: true) { event in
            events += 1
            switch event {
            case let .frameDone(frame, _, _, _, png):
                XCTAssertNotNil(png)
                done.insert(frame)
            case let .finished(s, _):
                state = s
                return false
            default: break
            }
            return true
        }
        XCTAssertEqual(state, "completed")
        XCTAssertEqual(done, Set(frames))
        XCTAssertGreaterThan(events, 16, "more events than the message cap")
        let counters = coord.coordinator.deliveryCounters
        XCTAssertEqual(counters.peersCutOff, 0)
        XCTAssertEqual(counters.followStreamsDropped, 0)
        XCTAssertEqual(counters.messagesWithheld, 0)
        XCTAssertEqual(counters.acksRefused, 0)
        XCTAssertGreaterThan(counters.acksAccepted, 40)
    }

    // MARK: acks

    func testForgedAcksDoNotRaiseTheAllowance() throws {
        let coord = try coordinator(messages: 16)
        defer { coord.stop() }
        // An honest peer that reads every reply and echoes its receipt is never cut off, however many it asks.
        let honest = try SilentPeer(coord.endpoint)
        var latest: FarmReceipt?
        for i in 1 ... 40 {
            try honest.send(.statusRequest(FarmStatusRequest()), requestID: UInt64(i), ack: latest)
            let reply = try XCTUnwrap(try honest.next(), "honest request \(i) unanswered")
            XCTAssertEqual(reply.requestID, UInt64(i))
            XCTAssertTrue(reply.hasReceipt)
            latest = reply.receipt
        }
        XCTAssertEqual(coord.coordinator.deliveryCounters.peersCutOff, 0)
        XCTAssertGreaterThanOrEqual(coord.coordinator.deliveryCounters.acksAccepted, 39)

        // A peer that reads too but acks with forged tokens (or values it was never sent) gains nothing:
        // after 16 unacknowledged replies it is cut off.
        let forger = try SilentPeer(coord.endpoint)
        latest = nil
        var answered = 0
        for i in 1 ... 40 {
            var ack = latest
            if var forged = latest {
                switch i % 3 {
                case 0: forged.token ^= 1
                case 1: forged.sequence += 1  // a message not sent yet (its real token)
                default: forged.bytes += 1
                }
                ack = forged
            }
            try forger.send(.statusRequest(FarmStatusRequest()), requestID: UInt64(i), ack: ack)
            guard let reply = try forger.next(timeout: 1) else { break }
            answered += 1
            latest = reply.receipt
        }
        XCTAssertEqual(answered, 16)
        XCTAssertEqual(coord.coordinator.deliveryCounters.peersCutOff, 1)
        XCTAssertGreaterThanOrEqual(coord.coordinator.deliveryCounters.acksRefused, 15)
        XCTAssertEqual(coord.coordinator.deliveryCounters.peersRecovered, 0)
    }

    func testHostileAckValuesAreIgnoredWithoutATrap() throws {
        let coord = try coordinator(messages: 16)
        defer { coord.stop() }
        let peer = try SilentPeer(coord.endpoint)
        func ack(_ sequence: UInt64, _ bytes: UInt64, _ token: UInt64) -> FarmReceipt {
            var r = FarmReceipt()
            r.sequence = sequence
            r.bytes = bytes
            r.token = token
            r.capBytes = .max
            r.capMessages = .max
            return r
        }
        let hostile = [ack(0, 0, 0), ack(.max, .max, .max), ack(1, .max, 0), ack(.max, 1, 1), ack(1, 0, 0),
                       ack(2, 64, .random(in: 0 ... .max))]
        // Before anything was sent to it (no account yet), and after.
        for (i, a) in hostile.enumerated() {
            try peer.send(.statusRequest(FarmStatusRequest()), requestID: UInt64(i + 1), ack: a)
            let reply = try XCTUnwrap(try peer.next(), "request \(i + 1) unanswered")
            XCTAssertEqual(reply.requestID, UInt64(i + 1))
        }
        try peer.send(.acknowledge(FarmAcknowledge()), ack: ack(.max, .max, .max))
        try peer.send(.acknowledge(FarmAcknowledge()))  // no ack at all
        let counters = coord.coordinator.deliveryCounters
        XCTAssertEqual(counters.acksAccepted, 0)
        XCTAssertGreaterThanOrEqual(counters.acksRefused, 4)
        XCTAssertEqual(counters.peersCutOff, 0)
        // The coordinator is still up and serving.
        let client = try client(coord)
        defer { client.close() }
        XCTAssertEqual(try client.status(job: nil).count, 0)
    }

    func testLedgerArithmetic() {
        var ledger = DeliveryLedger(capBytes: 1000, capMessages: 4)
        let peer = Data([1, 2, 3])
        guard case .send(let first) = ledger.admit(peer, bytes: 100, now: 0) else { return XCTFail("first refused") }
        XCTAssertEqual(first.sequence, 1)
        XCTAssertEqual(first.bytes, UInt64(100 + DeliveryLedger.receiptReserve))
        guard case .send(let second) = ledger.admit(peer, bytes: 100, now: 0) else { return XCTFail("second refused") }
        // A message that would pass the byte cap is refused; the peer is not cut off until told.
        guard case .overCap(false, let queued, 2) = ledger.admit(peer, bytes: 900, now: 0) else { return XCTFail("not over cap") }
        XCTAssertEqual(queued, second.bytes)
        // Acks: hostile values are refused or stale, never trapped on; the real one moves the mark.
        for bad in [(UInt64.max, UInt64.max, UInt64.max), (2, second.bytes, second.token ^ 1), (3, second.bytes, second.token),
                    (2, second.bytes + 1, second.token), (1, 0, first.token)] {
            var a = FarmReceipt()
            (a.sequence, a.bytes, a.token) = bad
            XCTAssertEqual(ledger.acknowledge(peer, a, now: 0), .refused, "\(bad)")
        }
        var zero = FarmReceipt()
        zero.sequence = 0
        XCTAssertEqual(ledger.acknowledge(peer, zero, now: 0), .stale)
        XCTAssertEqual(ledger.acknowledge(Data([9]), second, now: 0), .stale, "no account for that peer")
        XCTAssertEqual(ledger.acknowledge(peer, second, now: 0), .accepted(recovered: nil))
        XCTAssertEqual(ledger.acknowledge(peer, first, now: 0), .stale, "older than the mark")
        XCTAssertEqual(ledger.queues[peer]?.queuedBytes, 0)
        // The message cap, then a cut-off, then recovery.
        for _ in 0 ..< 4 { guard case .send = ledger.admit(peer, bytes: 1, now: 0) else { return XCTFail("refused") } }
        guard case .overCap(false, _, 4) = ledger.admit(peer, bytes: 1, now: 0) else { return XCTFail("message cap") }
        ledger.cutOff(peer)
        guard case .overCap(true, _, _) = ledger.admit(peer, bytes: 1, now: 0) else { return XCTFail("not cut off") }
        guard case .send(let probe) = ledger.admit(peer, bytes: 1, now: 0, force: true) else { return XCTFail("probe") }
        guard case .accepted(let recovered?) = ledger.acknowledge(peer, probe, now: 0) else { return XCTFail("no recovery") }
        XCTAssertTrue(recovered.wasCutOff)
        XCTAssertEqual(recovered.withheld, 3)
        // A forgotten and remade account does not take the old account's receipts.
        ledger.forget(peer)
        guard case .send = ledger.admit(peer, bytes: 1, now: 0) else { return XCTFail("refused") }
        XCTAssertEqual(ledger.acknowledge(peer, probe, now: 0), .refused)
        // Idle accounts: fully acked ones are forgotten, others probed once per period.
        let other = Data([7])
        guard case .send(let o) = ledger.admit(other, bytes: 1, now: 0) else { return XCTFail("refused") }
        XCTAssertEqual(ledger.acknowledge(other, o, now: 0), .accepted(recovered: nil))
        XCTAssertEqual(ledger.sweep(now: 60_000, idleMs: 60_000), [peer])
        XCTAssertNil(ledger.queues[other])
        XCTAssertEqual(ledger.sweep(now: 60_001, idleMs: 60_000), [])
    }

    func testReceiptTrackerAcksAtAQuarterOfTheCap() {
        var tracker = FarmReceiptTracker()
        var envelope = FarmEnvelope(.heartbeat(FarmHeartbeat()))
        XCTAssertFalse(tracker.read(envelope, wireBytes: 10), "no receipt: nothing to ack")
        var receipt = FarmReceipt()
        receipt.capBytes = 64 << 10
        receipt.capMessages = 8
        var due: [Bool] = []
        for i in 1 ... 4 {
            receipt.sequence = UInt64(i)
            envelope.receipt = receipt
            due.append(tracker.read(envelope, wireBytes: 10))
        }
        XCTAssertEqual(due, [false, true, true, true], "every 2 messages (8 / 4)")
        var out = FarmEnvelope(.acknowledge(FarmAcknowledge()))
        tracker.stamp(&out)
        XCTAssertEqual(out.ack.sequence, 4)
        XCTAssertFalse(tracker.read(envelope, wireBytes: 10))
        XCTAssertTrue(tracker.read(envelope, wireBytes: 16 << 10), "a quarter of 64 KiB read")
        // Hostile caps are clamped: neither an ack per byte nor never.
        receipt.capBytes = 1
        receipt.capMessages = .max
        envelope.receipt = receipt
        _ = tracker.read(envelope, wireBytes: 0)
        XCTAssertEqual(tracker.ackEveryBytes, FarmReceiptTracker.minimumAckEveryBytes)
        receipt.capBytes = .max
        envelope.receipt = receipt
        _ = tracker.read(envelope, wireBytes: 0)
        XCTAssertEqual(tracker.ackEveryBytes, FarmReceiptTracker.maximumAckEveryBytes)
    }
}

/// A raw DEALER peer that reads only when told to (a receive high-water mark of 1: libzmq pulls almost
/// nothing off the connection for it) and acks only what a test hands it.
final class SilentPeer {
    let context: ZMQContext
    let socket: ZMQSocket
    /// The encoded size of the message `next()` returned last.
    private(set) var lastWireBytes = 0

    init(_ endpoint: String) throws {
        context = try ZMQContext()
        socket = try context.socket(.dealer)
        var id = Data("S".utf8)
        for _ in 0 ..< 8 { id.append(UInt8.random(in: 1 ... 255)) }
        try socket.set([.routingID(id), .receiveHighWaterMark(1)])
        try socket.connect(endpoint)
    }

    deinit {
        socket.close()
        context.terminate()
    }

    func send(_ body: FarmEnvelope.OneOf_Body, requestID: UInt64 = 0, ack: FarmReceipt? = nil) throws {
        var envelope = FarmEnvelope(body, requestID: requestID)
        if let ack { envelope.ack = ack }
        XCTAssertTrue(try socket.send(try envelope.encoded()))
    }

    /// The next message that is not a Heartbeat, or nil after `timeout` seconds.
    func next(timeout: Double = 10) throws -> FarmEnvelope? {
        let poller = ZMQPoller()
        try poller.add(socket)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let ready = try poller.poll(timeoutMilliseconds: 20)
            guard ready[0].contains(.readable), let frames = try socket.receive(flags: .dontWait) else { continue }
            let envelope = try FarmEnvelope.decode(frames[0])
            if case .heartbeat? = envelope.body { continue }
            lastWireBytes = frames[0].count
            return envelope
        }
        return nil
    }

    /// Reads everything that arrives until the connection is quiet for a second.
    func drain() throws -> (messages: Int, bytes: Int, latest: FarmReceipt?) {
        let poller = ZMQPoller()
        try poller.add(socket)
        var messages = 0
        var bytes = 0
        var latest: FarmReceipt?
        var quietSince = Date()
        while Date().timeIntervalSince(quietSince) < 1 {
            let ready = try poller.poll(timeoutMilliseconds: 20)
            guard ready[0].contains(.readable), let frames = try socket.receive(flags: .dontWait) else { continue }
            quietSince = Date()
            messages += 1
            bytes += frames[0].count
            let envelope = try FarmEnvelope.decode(frames[0], maxBytes: 64 << 20)
            if envelope.hasReceipt { latest = envelope.receipt }
        }
        return (messages, bytes, latest)
    }
}

// The farm coordinator: one thread (the one in `run()`) owns the ROUTER socket and every piece of
// state - worker sessions, credits, job contexts, uploads, followers - in the zguide Majordomo
// style: poll the socket with a short timeout, handle what arrived, then a timer tick (heartbeats,
// dead/stalled workers, the restart grace period) and dispatch. Journal calls run inline; the
// journal is the source of truth for frames and attempts (fencing by attempt id).
// Message flow: DESIGN.md next to this file.
import CDPSys
import DPFileKit
import DPJournal
import DPLog
import DPProtocol
import DPTransport
import Foundation
import Synchronization

// unchecked: the loop state below is owned by the thread in `run()` (nothing else touches it); what other
// threads share with the loop (stop request, finished outputs, the rewrite flag) is behind a Mutex.
public final class Coordinator: @unchecked Sendable {
    public let settings: CoordinatorSettings
    public let journal: Journal
    public let models: ModelStore
    /// The bound endpoint (ZMQ_LAST_ENDPOINT), e.g. tcp://127.0.0.1:40123.
    public let endpoint: String

    let clock: JournalClock
    /// The coordinator's log (label dp.coord) and its typed events (`FarmLog.onEvent`).
    let log: FarmLog
    let context: ZMQContext
    let router: ZMQSocket
    let coordinatorID: String
    let inputsDirectory: URL
    /// The authorized keys (nil: `--insecure-no-auth`); `reloadAuthorizedKeys()` re-reads them.
    public let authorizedKeys: AuthorizedKeys?
    /// The ZAP handler's socket, served by the loop thread (nil: insecure).
    let zap: ZAPHandler?

    /// `shutdown()` was called / `run()` is running (any thread).
    private let runState = Mutex((stopRequested: false, running: false))

    // MARK: loop state (touched only by the thread in run())
    var sessions: [Data: WorkerSession] = [:]
    var sessionByName: [String: Data] = [:]
    /// The authenticated sender of the message being handled (set by `handle` for each message;
    /// nobody, with no rights, outside one).
    var sender = PeerIdentity.nobody
    /// Malformed-message lines: a peer sending garbage in a loop gets a bounded number of them.
    var rejectLog = LogLimiter()
    /// Bytes and messages queued per peer, by delivery receipts (DeliveryLedger.swift), and its lines.
    var ledger: DeliveryLedger
    var queueLog = LogLimiter()
    /// Refused acks have their own lines, so a peer forging them cannot crowd out the cut-off lines.
    var ackLog = LogLimiter()
    var lastLedgerSweepMs: Int64 = 0
    /// What `ledger` counted, for `deliveryCounters` (read from any thread).
    let deliveryStats = Mutex(DeliveryCounters())
    var jobContexts: [Int64: JobContext] = [:]
    var uploads: [Int64: JobUpload] = [:]
    var modelUploads: [String: ModelUpload] = [:]
    var followers: [Int64: [Follower]] = [:]
    var startedMs: Int64 = 0
    var graceDone = false
    var dispatchNeeded = true
    var heartbeatSequence: UInt64 = 0
    /// Messages of the current loop turn, sent after its journal commit (nil outside a turn).
    var outbox: [OutgoingMessage]?
    var lastManifestFlushMs: Int64 = 0
    /// manifest.json of a running job is rewritten at most this often (and when it ends or the
    /// coordinator stops); the journal is the record in between (DESIGN.md, "Durability and batching").
    let manifestIntervalSeconds = 1.0
    /// Finished jobs whose final outputs (manifest.json, video) are being written off the loop
    /// (`finishJob`); their followers get JobFinished when `finishedOutputs` reports them.
    var finishing: Set<Int64> = []
    /// Filled by the background output work, drained by the loop.
    let finishedOutputs = Mutex<[FinishedOutputs]>([])
    let videoQueue = DispatchQueue(label: "dp-coord.video")
    /// A pipe in the loop's poll set: background work that leaves something for the loop (finished
    /// outputs) and `shutdown()` write a byte to it, so the loop does not sleep out its poll timeout.
    private let wakePipe: WakePipe
    /// Periodic manifest.json rewrites, off the loop thread (see `flushOutputs`).
    let manifestQueue = DispatchQueue(label: "dp-coord.manifest")
    let manifestRewritePending = LockedFlag()

    /// A coordinator whose log lines (text format) go to `log`; its events go nowhere.
    public convenience init(settings: CoordinatorSettings, clock: JournalClock = SystemClock(),
                            log: @escaping @Sendable (String) -> Void) throws {
        try self.init(settings: settings, clock: clock, logger: FarmLog(label: Coordinator.logLabel, sink: log))
    }

    /// The swift-log label of the coordinator's records.
    public static let logLabel = "dp.coord"

    public init(settings: CoordinatorSettings, clock: JournalClock = SystemClock(), logger log: FarmLog) throws {
        self.settings = settings
        self.clock = clock
        self.log = log
        guard settings.heartbeatIntervalMs > 0, settings.heartbeatLiveness > 0 else {
            throw CoordinatorError("heartbeat interval (\(settings.heartbeatIntervalMs) ms) and liveness "
                + "(\(settings.heartbeatLiveness)) must be positive")
        }
        let state = settings.stateDirectory.standardizedFileURL
        inputsDirectory = state.appendingPathComponent("inputs", isDirectory: true)
        do {
            try FileManager.default.createDirectory(at: inputsDirectory, withIntermediateDirectories: true)
        } catch {
            throw CoordinatorError("cannot create state folder \(state.path): \(error)")
        }
        journal = try Journal(path: state.appendingPathComponent("journal.sqlite").path, clock: clock)
        let chunkLimit = max(64 << 10, min(16 << 20, settings.maxMessageBytes - (64 << 10)))
        models = try ModelStore(directory: state.appendingPathComponent("models", isDirectory: true),
                                maxChunkBytes: chunkLimit)
        // The queued-bytes cap must let the largest message the coordinator sends through (a model
        // chunk and its envelope), or a worker fetching a model would be cut off by its first chunk.
        let limits = settings.limits
        guard limits.maxQueuedBytesPerPeer >= chunkLimit + (64 << 10), limits.maxQueuedMessagesPerPeer >= 16 else {
            throw CoordinatorError("max queued bytes per peer (\(limits.maxQueuedBytesPerPeer)) must be at least the "
                + "largest model chunk plus 64 KiB (\(chunkLimit + (64 << 10)) bytes with a \(settings.maxMessageBytes)-byte "
                + "message limit), and max queued messages per peer (\(limits.maxQueuedMessagesPerPeer)) at least 16")
        }
        ledger = DeliveryLedger(capBytes: limits.maxQueuedBytesPerPeer, capMessages: limits.maxQueuedMessagesPerPeer)
        context = try ZMQContext()
        switch settings.auth {
        case .insecureNoAuth:
            authorizedKeys = nil
            zap = nil
        case .curve(let auth):
            let keys = try AuthorizedKeys(auth)
            authorizedKeys = keys
            // Bound before the ROUTER: libzmq admits every CURVE client while no handler is bound.
            zap = try ZAPHandler(context: context, keys: keys, now: { [clock] in clock.nowMilliseconds() }, log: log)
        }
        router = try context.socket(.router)
        try router.set([.routerMandatory(true), .maxMessageSize(Int64(settings.maxMessageBytes) + 4096),
                        .sendHighWaterMark(100_000), .receiveHighWaterMark(100_000)])
        if case .curve(let auth) = settings.auth {
            do {
                try router.set([.curveServer(true), .curveSecretKey(auth.serverKeys.secretKey),
                                .curvePublicKey(auth.serverKeys.publicKey), .zapDomain(ZAPHandler.domain)])
            } catch {
                router.close()
                zap?.socket.close()
                throw CoordinatorError("cannot make the ROUTER a CURVE server (libzmq built without CURVE?): \(error)")
            }
        }
        do {
            endpoint = try router.bind(settings.bind)
        } catch {
            router.close()
            zap?.socket.close()
            throw CoordinatorError("cannot bind \(settings.bind): \(error)")
        }
        coordinatorID = String(format: "%016llx", UInt64.random(in: 0 ... .max))
        do {
            wakePipe = try WakePipe()
        } catch {
            router.close()
            zap?.socket.close()
            throw CoordinatorError("cannot create the loop's wake pipe: \(error)")
        }
    }

    /// Re-reads the authorized key folders (SIGHUP). Thread-safe. On an error the keys in use
    /// stay; nil in insecure mode. Connections of removed keys lose their rights at their next message.
    @discardableResult
    public func reloadAuthorizedKeys() throws -> AuthorizedKeys.Counts? {
        guard let authorizedKeys else { return nil }
        let counts = try authorizedKeys.reload()
        log.notice("authorized keys reloaded: \(counts)", .keysReloaded)
        return counts
    }

    /// What the queued-bytes cap did since start-up (thread-safe).
    public var deliveryCounters: DeliveryCounters {
        deliveryStats.withLock { $0 }
    }

    /// Makes the loop run a turn now (thread-safe).
    func wakeLoop() {
        wakePipe.wake()
    }

    /// Runs the loop on the calling thread until `shutdown()`. Owns the ROUTER socket.
    public func run() throws {
        let alreadyRunning = runState.withLock { state in
            defer { state.running = true }
            return state.running
        }
        guard !alreadyRunning else { throw CoordinatorError("run() is already running") }
        defer {
            router.close()
            zap?.socket.close()
            context.terminate()
        }
        startedMs = clock.nowMilliseconds()
        setLoopThreadNice()
        try startUp()
        let poller = ZMQPoller()
        try poller.add(router)
        poller.add(fileDescriptor: wakePipe.readDescriptor)
        if let zap { try poller.add(zap.socket) }
        let pollMs = max(5, min(100, settings.heartbeatIntervalMs / 4))
        logServing()
        defer { flushOutputs(force: true) }
        var lastTurnNs: UInt64 = 0
        let minTurnNs = UInt64(max(0, settings.minTurnIntervalMicroseconds)) * 1000
        let maxTurnNs = UInt64(max(0, settings.maxTurnMicroseconds)) * 1000
        while !isStopping {
            if minTurnNs > 0 {
                let sinceLast = DispatchTime.now().uptimeNanoseconds &- lastTurnNs
                if sinceLast < minTurnNs { Self.pause(nanoseconds: minTurnNs - sinceLast) }
            }
            let ready = try poller.poll(timeoutMilliseconds: pollMs)
            if ready[1].contains(.readable) { wakePipe.drain() }
            // Handshakes first: they wait for no journal.
            if ready.count > 2, ready[2].contains(.readable) { try serveHandshake() }
            lastTurnNs = DispatchTime.now().uptimeNanoseconds
            // One loop turn = one journal transaction; its messages go out after the commit.
            try turn {
                if ready[0].contains(.readable) {
                    var handled = 0
                    while handled < 1024, let message = try router.receiveMessage(flags: .dontWait) {
                        handle(message.frames, userID: message.userID)
                        handled += 1
                        if maxTurnNs > 0, DispatchTime.now().uptimeNanoseconds &- lastTurnNs >= maxTurnNs { break }
                    }
                }
                tick()
                if dispatchNeeded { dispatch() }
            }
            flushOutputs(force: false)
        }
        // Let final manifests and videos being written finish (a video's journal write too) before
        // the state goes away; the next start-up marks their jobs' outputs final.
        manifestQueue.sync {}
        videoQueue.sync {}
        log.notice("coordinator \(coordinatorID) stopped", .coordinatorStopped)
    }

    /// Answers a CURVE handshake's ZAP request. Fails closed: a handshake without an answer never completes.
    func serveHandshake() throws {
        guard let zap else { return }
        do {
            try zap.serve()
        } catch let error as ZMQError where error.isContextTerminated {
            throw error
        } catch {
            // Fails closed: a handshake without an answer never completes.
            log.error("ZAP handler: \(error)")
        }
    }

    /// Sleeps `nanoseconds` (the group-commit pause between busy loop turns).
    static func pause(nanoseconds: UInt64) {
        var request = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }

    /// Runs one loop turn's work in one journal transaction (`Journal.batch`), holding back every
    /// message it sends (`outbox`) until the commit: no worker gets an attempt id and no follower a
    /// FrameDone that a crash could still take back. If the commit fails, the turn's messages are
    /// dropped and `run()` stops with the error (a restart resumes from the journal).
    func turn(_ body: () throws -> Void) throws {
        outbox = []
        do {
            try journal.batch { try body() }
        } catch {
            outbox = nil
            throw CoordinatorError("journal transaction of a loop turn failed (its messages were not sent): \(error)")
        }
        let messages = outbox ?? []
        outbox = nil
        // Follower events: counts filled in once per job, and a follower's events of this turn go
        // out together (JobEvents) at the place of its first one, so a busy turn costs a follower
        // one message, not one per finished frame.
        var jobCounts: [Int64: FarmJobCounts] = [:]
        var streams: [FollowerStream: [DPProtocol.FarmJobEvent]] = [:]
        var order: [(FollowerStream?, OutgoingMessage)] = []
        for m in messages {
            guard let job = m.countsOfJob, case .jobEvent(var event) = m.body else {
                order.append((nil, m))
                continue
            }
            if jobCounts[job] == nil { jobCounts[job] = counts(job) }
            event.counts = jobCounts[job]!
            let stream = FollowerStream(peer: m.peer, requestID: m.requestID)
            if streams[stream] == nil { order.append((stream, m)) }
            streams[stream, default: []].append(event)
        }
        for (stream, m) in order {
            guard let stream, let events = streams[stream] else {
                sendNow(m.peer, m.body, requestID: m.requestID)
                continue
            }
            sendEvents(events, to: stream)
        }
    }

    /// Thread-safe; `run()` returns within one poll interval.
    public func shutdown() {
        runState.withLock { $0.stopRequested = true }
        wakeLoop()
    }

    var isStopping: Bool {
        runState.withLock { $0.stopRequested }
    }

    var now: Int64 { clock.nowMilliseconds() }

    // MARK: receiving

    func peerName(_ routingID: Data) -> String {
        let hex = routingID.map { String(format: "%02x", $0) }.joined()
        if let s = sessions[routingID] {
            return "peer \(hex.prefix(64)) (worker '\(peer: s.name)'\(s.key.map { ", key \($0.prefix(8))…" } ?? ""))"
        }
        return "peer \(hex.prefix(64))"
    }

    func handle(_ frames: [Data], userID: String? = nil) {
        guard let identity = identify(frames.first ?? Data(), userID: userID) else { return }
        sender = identity
        defer { sender = .nobody }
        guard frames.count == 2 else {
            let peer = frames.first ?? Data()
            let why = FarmProtocolError.malformed(
                "expected 2 frames [routing id, envelope], got \(frames.count)")
            reject(peer, why)
            return
        }
        let routingID = frames[0]
        let envelope: FarmEnvelope
        do {
            envelope = try FarmEnvelope.decode(frames[1], maxBytes: settings.maxMessageBytes)
        } catch let error as FarmProtocolError {
            reject(routingID, error)
            return
        } catch {
            reject(routingID, .malformed("\(error)"))
            return
        }
        if let session = sessions[routingID] { session.lastHeardMs = now }
        noteAck(routingID, envelope.hasAck ? envelope.ack : nil)
        do {
            try route(routingID, envelope)
        } catch {
            log.error("error handling \(envelope.bodyName) from \(peerName(routingID)): \(peer: "\(error)", limit: 400)")
            send(routingID, .error(FarmError(.internal, "coordinator error handling \(envelope.bodyName): \(error)")),
                 requestID: envelope.requestID)
        }
    }

    func reject(_ routingID: Data, _ error: FarmProtocolError) {
        let event = FarmEvent.messageRejected(peer: peerName(routingID), reason: error.description)
        if let line = rejectLog.line("rejected message from \(peerName(routingID)): \(peer: error.description, limit: 400)",
                                     nowMilliseconds: now) {
            log.warning(line, event)
        } else {
            log.report(event)  // the line is held back (LogLimiter), the event is not
        }
        guard !routingID.isEmpty else { return }
        send(routingID, .error(FarmError(error)))
    }

    func route(_ peer: Data, _ envelope: FarmEnvelope) throws {
        let rid = envelope.requestID
        guard let body = envelope.body else { return }
        guard senderMaySend(body, peer: peer, requestID: rid) else { return }
        switch body {
        case .hello(let hello):
            try onHello(peer, hello)
        case .credit, .progress, .frameResult, .goodbye, .heartbeat, .modelManifestRequest, .modelChunkRequest:
            guard let session = sessions[peer] else {
                log.warning("\(body.name) from unregistered \(peerName(peer)): answered NOT_REGISTERED",
                    .unregisteredMessage(peer: peerName(peer), message: body.name))
                send(peer, .error(FarmError(.notRegistered, "send Hello first: no session for this connection")),
                     requestID: rid)
                return
            }
            try onWorkerMessage(session, body, requestID: rid)
        case .error(let error):
            log.warning("error from \(peerName(peer)): \(error.code) \(peer: error.message, limit: 400)",
                .peerError(peer: peerName(peer), code: "\(error.code)"))
        case .acknowledge:
            break  // its ack was read by `handle`
        case .submitJob(let submit):
            try onSubmit(peer, rid, submit)
        case .uploadChunk(let chunk):
            try onUpload(peer, rid, chunk)
        case .followJob(let follow):
            try onFollow(peer, rid, follow)
        case .statusRequest(let request):
            try onStatus(peer, rid, request)
        case .cancelJob(let cancel):
            try onCancel(peer, rid, cancel)
        case .workersRequest:
            try onWorkers(peer, rid)
        default:
            log.warning("rejected \(body.name) from \(peerName(peer)): not a message a coordinator receives")
            send(peer, .error(FarmError(.badRequest, "\(body.name) is not a message a coordinator receives")),
                 requestID: rid)
        }
    }

    func dropPeer(_ peer: Data, reason: String) {
        if let session = sessions[peer] { endSession(session, reason: reason) }
        for (job, list) in followers {
            let kept = list.filter { $0.peer != peer }
            followers[job] = kept.isEmpty ? nil : kept
        }
    }
}

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
        if let nice = settings.loopThreadNice {
            if dp_set_thread_nice(Int32(clamping: nice)) == 0 {
                log.info("coordinator loop thread at nice \(nice)", .loopThreadNice(nice: nice, applied: true))
            } else {
                log.warning("coordinator loop thread: cannot set nice \(nice) (\(String(cString: strerror(errno)))); running at the "
                    + "inherited priority (a lower nice value needs CAP_SYS_NICE)", .loopThreadNice(nice: nice, applied: false))
            }
        }
        try startUp()
        let poller = ZMQPoller()
        try poller.add(router)
        poller.add(fileDescriptor: wakePipe.readDescriptor)
        if let zap { try poller.add(zap.socket) }
        let pollMs = max(5, min(100, settings.heartbeatIntervalMs / 4))
        log.notice("coordinator \(coordinatorID) serving on \(endpoint) (state \(settings.stateDirectory.path))", .serving(endpoint: endpoint))
        switch settings.auth {
        case .insecureNoAuth:
            for i in 0 ..< 3 {
                log.warning("WARNING: --insecure-no-auth: NO AUTHENTICATION. Anyone who can reach \(endpoint) can submit, "
                    + "cancel and read every job and register as a worker. Use CURVE keys (dp-coord keygen).",
                        i == 0 ? .insecureNoAuth(endpoint: endpoint) : nil)
            }
        case .curve(let auth):
            log.notice("CURVE authentication on: server public key \(auth.serverKeys.publicKey); "
                + "\(authorizedKeys?.counts.description ?? "")")
        }
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
            if let zap, ready.count > 2, ready[2].contains(.readable) {
                do {
                    try zap.serve()
                } catch let error as ZMQError where error.isContextTerminated {
                    throw error
                } catch {
                    // Fails closed: a handshake without an answer never completes.
                    log.error("ZAP handler: \(error)")
                }
            }
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

    /// Rewrites the manifest.json of every job with frames written since its last rewrite, at most
    /// once per `manifestIntervalSeconds` unless `force`d (the coordinator is stopping).
    ///
    /// The periodic rewrites run on `manifestQueue`, off the loop thread: for a job of 10,000 frames
    /// one takes ~10 ms, which would hold up dispatching (OutputWriter snapshots under its lock and
    /// writes outside it). At most one batch of them is pending; a forced flush waits for it first.
    func flushOutputs(force: Bool) {
        let t = now
        guard force || Double(t - lastManifestFlushMs) >= manifestIntervalSeconds * 1000 else { return }
        lastManifestFlushMs = t
        let due = jobContexts.filter { $0.value.output.needsFlush }.map { ($0.key, $0.value.output) }
        let log = self.log
        let rewrite: @Sendable () -> Void = {
            for (id, output) in due {
                do {
                    try output.flush(durable: force)
                } catch {
                    log.error("job \(id): cannot rewrite manifest.json: \(error)", job: id)
                }
            }
        }
        if force {
            manifestQueue.sync {}
            rewrite()
            return
        }
        guard !due.isEmpty, !manifestRewritePending.exchange(true) else { return }
        let pending = manifestRewritePending
        manifestQueue.async {
            rewrite()
            _ = pending.exchange(false)
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

    // MARK: start-up

    func startUp() throws {
        // Temp files of uploads that a stop interrupted (their jobs are failed below).
        for name in (try? FileManager.default.contentsOfDirectory(atPath: inputsDirectory.path)) ?? []
        where name.hasPrefix(".upload-") {
            try? FileManager.default.removeItem(at: inputsDirectory.appendingPathComponent(name))
        }
        for (id, why) in models.refusedAtStart.sorted(by: { $0.key < $1.key }) {
            log.warning("model \(id) is not served: \(why)")
        }
        for job in try journal.jobs(states: [.uploading], includingSpec: false) {
            _ = try journal.failJob(job.id, error: "upload interrupted by a coordinator restart; submit the job again")
            log.warning("job \(job.id) '\(peer: job.name)': was uploading when the coordinator stopped; marked failed", job: job.id)
        }
        // A crash (or a stop) between a job's end and its last manifest rewrite or video: finish them now.
        for job in try journal.jobs(states: [.completed, .failed, .cancelled], includingSpec: false) where !job.outputsFinal {
            let video = job.state == .completed && (job.videoPath ?? "") != "" && !job.videoWritten
            log.notice("job \(job.id) '\(peer: job.name)': \(job.state.rawValue) before its final manifest.json"
                + (video ? " and video" : "") + " were written; writing them now", .jobOutputsResumed(job: job.id))
            finishJob(job.id)
        }
        // Open every unfinished job's output now: its done frames' PNGs are checked against the
        // journal (a missing or corrupt one is requeued) before anything is dispatched.
        for job in try journal.jobs(states: [.queued, .running], includingSpec: false) {
            do {
                _ = try jobContext(job.id)
            } catch {
                // A job that cannot be loaded (its model's dreampose.json refused, its output folder in
                // the way, ...) fails with the reason; the coordinator comes up (no crash loop).
                log.error("job \(job.id) '\(peer: job.name)': cannot load it at start-up: \(error); marking it failed", job: job.id)
                failJob(job.id, error: "cannot load the job at coordinator start-up: \(error)")
            }
        }
        let inFlight = try journal.runningAttempts()
        if !inFlight.isEmpty {
            log.notice("\(inFlight.count) attempt(s) in flight from before the restart: requeued after "
                + "\(settings.restartGraceSeconds) s unless their workers re-adopt them", .restartAttemptsInFlight(attempts: inFlight.count))
        }
        if settings.restartGraceSeconds <= 0 { endGrace() }
    }

    func endGrace() {
        graceDone = true
        let keep = Set(sessions.values.flatMap { $0.attempts.keys })
        do {
            let requeued = try journal.requeueInFlightAttempts(
                keeping: keep, reason: "not re-adopted within the \(settings.restartGraceSeconds) s restart grace period")
            if !requeued.isEmpty {
                log.notice("restart grace over: requeued \(requeued.count) attempt(s) "
                    + requeued.map { "\($0.id) (job \($0.jobID) frame \($0.frame), worker \(peer: $0.worker))" }
                    .joined(separator: ", "), .restartGraceOver(requeued: requeued.count))
                dispatchNeeded = true
            }
        } catch {
            log.error("restart grace over: cannot requeue in-flight attempts: \(error)")
        }
    }

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

    // MARK: sending

    /// Sends one Envelope to `peer`; false if it could not be queued (then the peer may be dropped).
    /// Inside a loop turn (`turn`) the message is held until the turn's journal commit (true).
    @discardableResult
    func send(_ peer: Data, _ body: FarmEnvelope.OneOf_Body, requestID: UInt64 = 0) -> Bool {
        if outbox != nil {
            outbox!.append(OutgoingMessage(peer: peer, body: body, requestID: requestID))
            return true
        }
        return sendNow(peer, body, requestID: requestID)
    }

    /// Every message gets its delivery receipt here, and none goes out that would take the peer past
    /// its queued-bytes cap (`withhold`). `probe`: sent even then (the ledger's idle probe).
    @discardableResult
    func sendNow(_ peer: Data, _ body: FarmEnvelope.OneOf_Body, requestID: UInt64, probe: Bool = false) -> Bool {
        // Never more than the cap (it could not be sent), nor than the peer takes, with room for the receipt.
        let maxBytes = min(sessions[peer]?.maxMessageBytes ?? FarmProtocol.defaultMaxMessageBytes,
                           settings.limits.maxQueuedBytesPerPeer) - DeliveryLedger.receiptReserve
        do {
            var data = try FarmEnvelope(body, requestID: requestID).encoded(maxBytes: maxBytes)
            switch ledger.admit(peer, bytes: data.count, now: now, force: probe) {
            case .send(let receipt):
                data.append(try DeliveryLedger.encodedReceipt(receipt))
            case let .overCap(alreadyCutOff, queued, unacked):
                withhold(peer, body, requestID: requestID, alreadyCutOff: alreadyCutOff, queued: queued, unacked: unacked)
                return false
            }
            guard try router.send([peer, data], flags: .dontWait) else {
                log.warning("send queue to \(peerName(peer)) is full: dropped \(body.name)")
                return false
            }
            sessions[peer]?.lastSentMs = now
            return true
        } catch let error as ZMQError where error.isHostUnreachable {
            ledger.forget(peer)
            if probe { return false }  // a client that left: nothing else to drop
            log.warning("\(peerName(peer)) is gone (sending \(body.name)): dropping it")
            dropPeer(peer, reason: "connection gone")
            return false
        } catch {
            log.error("cannot send \(body.name) to \(peerName(peer)): \(error)")
            return false
        }
    }

    /// A message `sendNow` did not send: `peer` has the cap's worth of messages it has not acknowledged
    /// reading. A follow event drops its follow stream (told QUEUE_FULL once the peer reads again);
    /// anything else cuts the peer off: its session ends (its attempts count as lost, as for a dead
    /// worker), its follow streams go, and it gets nothing until it acks. Logged once per cut-off.
    func withhold(_ peer: Data, _ body: FarmEnvelope.OneOf_Body, requestID: UInt64, alreadyCutOff: Bool,
                  queued: UInt64, unacked: UInt64) {
        deliveryStats.withLock { $0.messagesWithheld += 1 }
        guard !alreadyCutOff else { return }
        let limits = settings.limits
        let state = "\(queued) bytes in \(unacked) message(s) sent and not acknowledged (the caps are "
            + "\(limits.maxQueuedBytesPerPeer) bytes and \(limits.maxQueuedMessagesPerPeer) messages per peer)"
        switch body {
        case .jobEvent, .jobEvents:
            var dropped = 0
            for (job, list) in followers {
                let kept = list.filter { !($0.peer == peer && $0.requestID == requestID) }
                dropped += list.count - kept.count
                followers[job] = kept.isEmpty ? nil : kept
            }
            guard dropped > 0 else { return }
            ledger.droppedStream(peer, requestID: requestID, limit: limits.maxFollowsPerClient)
            deliveryStats.withLock { $0.followStreamsDropped += 1 }
            if let line = queueLog.line("follow stream \(requestID) of \(peerName(peer)) dropped: it does not read "
                                        + "its socket; \(state)", nowMilliseconds: now) {
                log(line)
            }
        default:
            ledger.cutOff(peer)
            deliveryStats.withLock { $0.peersCutOff += 1 }
            if let line = queueLog.line("\(peerName(peer)) cut off: it does not read its socket (withheld "
                                        + "\(body.name)); \(state); nothing more is sent to it until it acks",
                                        nowMilliseconds: now) {
                log(line)
            }
            dropPeer(peer, reason: "cut off at the queued-bytes cap (it does not read its socket)")
        }
    }

    /// Reads the ack a peer's message carries (`DeliveryLedger.acknowledge`). A peer that was cut off
    /// or lost follow streams and now reads again is told so: QUEUE_FULL on each dropped stream, and
    /// once unsolicited for a cut-off (a worker's next message then gets NOT_REGISTERED: Hello again).
    func noteAck(_ peer: Data, _ ack: FarmReceipt?) {
        switch ledger.acknowledge(peer, ack, now: now) {
        case .stale:
            return
        case .refused:
            deliveryStats.withLock { $0.acksRefused += 1 }
            if let line = ackLog.line("ignored an ack from \(peerName(peer)): its token, sequence or byte count "
                                      + "matches nothing sent on this connection", nowMilliseconds: now) {
                log(line)
            }
        case .accepted(let recovered):
            deliveryStats.withLock {
                $0.acksAccepted += 1
                if recovered?.wasCutOff == true { $0.peersRecovered += 1 }
            }
            guard let recovered else { return }
            for stream in recovered.droppedStreams {
                send(peer, .error(FarmError(.queueFull, "this follow stream was dropped: the coordinator had the "
                    + "most it queues for one connection waiting for you to read; follow the job again")),
                     requestID: stream)
            }
            if recovered.wasCutOff {
                send(peer, .error(FarmError(.queueFull, "this connection was cut off: \(recovered.withheld) message(s) "
                    + "were not sent because it did not read the ones before; a worker must say Hello again")))
            }
        }
    }

    func dropPeer(_ peer: Data, reason: String) {
        if let session = sessions[peer] { endSession(session, reason: reason) }
        for (job, list) in followers {
            let kept = list.filter { $0.peer != peer }
            followers[job] = kept.isEmpty ? nil : kept
        }
    }

    // MARK: timer

    func tick() {
        let t = now
        if !graceDone, Double(t - startedMs) >= settings.restartGraceSeconds * 1000 { endGrace() }
        let deadline = Int64(settings.heartbeatIntervalMs * settings.heartbeatLiveness)
        for session in Array(sessions.values) where t - session.lastHeardMs > deadline {
            endSession(session, cause: .silent, reason: "silent for \(t - session.lastHeardMs) ms "
                + "(\(settings.heartbeatLiveness) x \(settings.heartbeatIntervalMs) ms heartbeats)")
        }
        let stallMs = Int64(settings.stallTimeoutSeconds * 1000)
        for session in Array(sessions.values) {
            for attempt in Array(session.attempts.values) where t - attempt.lastProgressMs > stallMs {
                session.attempts[attempt.id] = nil
                workerLostAttempt(attempt.id, worker: session.name, reason: "stalled: no step progress on worker "
                    + "'\(session.name)' for \(t - attempt.lastProgressMs) ms")
                var cancel = FarmCancel()
                cancel.attemptID = UInt64(attempt.id)
                cancel.reason = "stalled"
                send(session.routingID, .cancel(cancel))
            }
        }
        let interval = Int64(settings.heartbeatIntervalMs)
        for session in Array(sessions.values) where t - session.lastSentMs >= interval {
            heartbeatSequence += 1
            var hb = FarmHeartbeat()
            hb.sequence = heartbeatSequence
            hb.sentUnixMs = UInt64(max(0, t))
            send(session.routingID, .heartbeat(hb))
        }
        expireIdleUploads()
        drainFinishedOutputs()
        // Receipt accounts of connections that went away: forgotten, or probed (DeliveryLedger.sweep).
        if t - lastLedgerSweepMs >= 1000 {
            lastLedgerSweepMs = t
            let idle = max(60_000, 2 * deadline)
            for peer in ledger.sweep(now: t, idleMs: idle) {
                heartbeatSequence += 1
                var hb = FarmHeartbeat()
                hb.sequence = heartbeatSequence
                hb.sentUnixMs = UInt64(max(0, t))
                sendNow(peer, .heartbeat(hb), requestID: 0, probe: true)
            }
        }
    }
}

/// A follower's event stream: its connection and the request id of its FollowJob.
struct FollowerStream: Hashable {
    let peer: Data
    let requestID: UInt64
}

/// A coordinator failure at start-up or in `run()`.
public struct CoordinatorError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// One connected worker (one routing id, from its Hello until death, Goodbye or a newer Hello).
final class WorkerSession {
    let routingID: Data
    let name: String
    let slots: Int
    let threads: Int
    let host: FarmHostInfo
    let maxMessageBytes: Int
    /// The public key the session authenticated with (nil: insecure mode). Owns the session's attempts.
    let key: String?
    var credit = 0
    var preps: Set<Int64> = []
    var attempts: [Int64: LiveAttempt] = [:]
    var models: Set<String>
    var lastHeardMs: Int64
    var lastSentMs: Int64
    /// Credit beyond the cap was asked for (logged once per session).
    var warnedCredit = false
    var phaseState = WorkerPhaseState()  // Coordinator+Phases.swift

    init(routingID: Data, hello: FarmHello, key: String?, now: Int64) {
        self.routingID = routingID
        self.key = key
        name = hello.workerName
        slots = Int(hello.slots)
        threads = Int(hello.threads)
        host = hello.host
        maxMessageBytes = hello.maxMessageBytes > 0 ? Int(min(hello.maxMessageBytes, UInt64(Int.max)))
            : FarmProtocol.defaultMaxMessageBytes
        models = Set(hello.cachedModelIds)
        lastHeardMs = now
        lastSentMs = now
    }
}

struct LiveAttempt {
    let id: Int64
    let jobID: Int64
    let frame: Int
    var step: Int
    var total: Int
    var lastProgressMs: Int64
}

struct OutgoingMessage {
    let peer: Data
    let body: FarmEnvelope.OneOf_Body
    let requestID: UInt64
    /// A JobEvent whose counts are filled in when it is sent (after the turn's commit).
    var countsOfJob: Int64? = nil
}

struct Follower {
    let peer: Data
    let requestID: UInt64
    let includePNG: Bool
}


/// A Bool shared between threads.
final class LockedFlag: Sendable {
    private let value = Mutex(false)

    /// Sets the flag to `newValue` and returns what it was.
    func exchange(_ newValue: Bool) -> Bool {
        value.withLock { value in
            defer { value = newValue }
            return value
        }
    }
}

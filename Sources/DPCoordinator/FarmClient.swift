// A client of a running coordinator: `dp-coord submit/status/cancel/workers` and the embedded mode.
// One DEALER socket, used only by the thread that calls the methods (a FarmClient is a single-thread
// object, like its socket).
import DPFileKit
import DPProtocol
import DPTransport
import Foundation

public enum FarmClientError: Error, CustomStringConvertible {
    /// The coordinator did not answer in time.
    case timeout(String)
    /// The coordinator answered with an Error.
    case remote(code: FarmErrorCode, message: String)
    /// The request could not be built (bad submission, unreadable model folder, ...).
    case invalid(String)
    /// The coordinator sent something unexpected.
    case protocolError(String)
    /// No secure session with the coordinator: it refused this key, or it does not hold the
    /// secret key of the pinned server key (says which, from the socket's handshake events).
    case handshake(String)

    public var description: String {
        switch self {
        case .timeout(let what): return "coordinator timeout: \(what)"
        case let .remote(code, message): return "coordinator refused (\(code)): \(message)"
        case .invalid(let why): return why
        case .protocolError(let why): return "protocol error: \(why)"
        case .handshake(let why): return "no secure connection: \(why)"
        }
    }
}

public final class FarmClient {
    public let endpoint: String
    let context: ZMQContext
    let socket: ZMQSocket
    let timeoutMs: Int
    private var nextRequestID: UInt64 = 1
    /// Messages that arrived while waiting for another reply (e.g. JobEvents during a status probe).
    private var pending: [FarmEnvelope] = []
    /// The newest delivery receipt read, echoed in every message sent (the coordinator's cap on bytes
    /// queued per peer: a client that reads is never cut off; DESIGN.md, "Bytes queued per peer").
    private var receipts = FarmReceiptTracker()
    /// Upload chunk size.
    public var chunkBytes = FarmProtocol.defaultChunkBytes
    /// `submit`'s upload progress is reported at most this often (the first and the last report always).
    public var uploadProgressInterval: Double = 0.25
    /// The CURVE handshake's events (nil without keys).
    private let monitor: ZMQMonitor?
    private var handshake = ZMQHandshakeState()
    private let usingCurve: Bool

    /// - curve: this client's key pair and the coordinator's pinned public key (`--key`,
    ///   `--server-key`); nil = no CURVE (a coordinator run with `--insecure-no-auth`).
    public init(endpoint: String, timeoutSeconds: Double = 30, curve: CurveClientKeys? = nil) throws {
        self.endpoint = endpoint
        timeoutMs = max(1, Int(timeoutSeconds * 1000))
        context = try ZMQContext()
        socket = try context.socket(.dealer)
        var id = Data([0x43])  // 'C': never starts with 0 (reserved by libzmq)
        for _ in 0..<15 { id.append(UInt8.random(in: 0 ... 255)) }
        // A send never blocks past the timeout (then it reports the request as not queued).
        try socket.set([.routingID(id), .maxMessageSize(Int64(FarmProtocol.defaultMaxMessageBytes) + 4096),
                        .sendTimeout(milliseconds: Int32(clamping: timeoutMs))])
        if let curve { try socket.set(curve.socketOptions) }
        usingCurve = curve != nil
        monitor = try ZMQMonitor(socket)
        try socket.connect(endpoint)
    }

    deinit { close() }

    public func close() {
        monitor?.socket.close()
        socket.close()
    }

    /// Reads the handshake events; throws once the coordinator refused this key (no point waiting).
    private func checkHandshake() throws {
        guard let monitor else { return }
        // Drained even when done with it (a readable monitor would keep the poll from sleeping).
        let events = try monitor.drain()
        guard !handshake.succeeded else { return }
        handshake.record(events)
        if handshake.succeeded {
            // A session: nothing more to diagnose.
            monitor.stop()
            return
        }
        if handshake.refusedByAuth != nil, !handshake.succeeded,
           let problem = handshake.problem(endpoint: endpoint, usingCurve: usingCurve) {
            throw FarmClientError.handshake(problem)
        }
    }

    /// The error for a request that got no reply in time: the handshake's problem when there was one.
    private func noReply(_ what: String) -> FarmClientError {
        if let monitor, !handshake.succeeded {
            handshake.record((try? monitor.drain()) ?? [])
            if !handshake.succeeded, handshake.reachedPeer, let problem = handshake.problem(endpoint: endpoint, usingCurve: usingCurve) {
                return .handshake(problem + " (no reply to \(what) in \(timeoutMs) ms)")
            }
        }
        return .timeout("no reply to \(what) from \(endpoint) in \(timeoutMs) ms")
    }

    // MARK: requests

    func send(_ body: FarmEnvelope.OneOf_Body) throws -> UInt64 {
        let id = nextRequestID
        nextRequestID += 1
        var envelope = FarmEnvelope(body, requestID: id)
        receipts.stamp(&envelope)
        let data = try envelope.encoded()
        guard try socket.send(data) else { throw FarmClientError.timeout("cannot queue \(body.name) to \(endpoint)") }
        return id
    }

    /// Tells the coordinator what this client has read (an Acknowledge: while it only listens).
    private func acknowledge() throws {
        var envelope = FarmEnvelope(.acknowledge(FarmAcknowledge()))
        receipts.stamp(&envelope)
        _ = try socket.send(try envelope.encoded())
    }

    /// Next envelope (pending first), or nil after `timeoutMs` without one.
    func receive(timeoutMs: Int) throws -> FarmEnvelope? {
        if !pending.isEmpty { return pending.removeFirst() }
        return try receiveSocket(timeoutMs: timeoutMs)
    }

    /// Next envelope from the socket, or nil after `timeoutMs` without one.
    private func receiveSocket(timeoutMs: Int) throws -> FarmEnvelope? {
        let poller = ZMQPoller()
        try poller.add(socket)
        if let monitor { try poller.add(monitor.socket) }
        let deadline = Date().addingTimeInterval(Double(timeoutMs) / 1000)
        while true {
            try checkHandshake()
            let left = Int(deadline.timeIntervalSinceNow * 1000)
            if left < 0 { return nil }
            let ready = try poller.poll(timeoutMilliseconds: max(0, left))
            guard ready[0].contains(.readable), let frames = try socket.receive(flags: .dontWait) else { continue }
            guard frames.count == 1 else {
                throw FarmClientError.protocolError("expected 1 frame from \(endpoint), got \(frames.count)")
            }
            let envelope: FarmEnvelope
            do {
                envelope = try FarmEnvelope.decode(frames[0])
            } catch {
                throw FarmClientError.protocolError("from \(endpoint): \(error)")
            }
            if receipts.read(envelope, wireBytes: frames[0].count) { try acknowledge() }
            // The coordinator's probe of an idle connection: nothing to answer.
            if case .heartbeat? = envelope.body { continue }
            return envelope
        }
    }

    /// Sends a request and waits for the reply with its request id; an Error reply throws.
    func request(_ body: FarmEnvelope.OneOf_Body) throws -> FarmEnvelope {
        let id = try send(body)
        let deadline = Date().addingTimeInterval(Double(timeoutMs) / 1000)
        while true {
            let left = Int(deadline.timeIntervalSinceNow * 1000)
            guard left >= 0, let reply = try receiveSocket(timeoutMs: left) else {
                throw noReply(body.name)
            }
            if reply.requestID == id {
                if case .error(let e)? = reply.body { throw FarmClientError.remote(code: e.code, message: e.message) }
                return reply
            }
            if reply.requestID == 0, case .error(let e)? = reply.body {
                throw FarmClientError.remote(code: e.code, message: e.message)
            }
            pending.append(reply)
        }
    }

    // MARK: follow, status, cancel, workers

    /// Streams the job's events to `onEvent` until the job finishes or `onEvent` returns false.
    /// A coordinator silent for the client timeout is probed with a status request; no answer throws.
    public func follow(job: Int64, includePNG: Bool = false, onEvent: (FarmJobEvent) -> Bool) throws {
        var info = try status(job: job).first ?? JobStatusInfo(id: job, name: "", state: "unknown")
        var follow = FarmFollowJob()
        follow.jobID = UInt64(job)
        follow.includePng = includePNG
        var id = try send(.followJob(follow))
        while true {
            guard let envelope = try receive(timeoutMs: timeoutMs) else {
                _ = try status(job: job)  // throws when the coordinator is gone
                continue
            }
            guard envelope.requestID == id else { continue }
            let events: [DPProtocol.FarmJobEvent]
            switch envelope.body {
            case .error(let e)? where e.code == .queueFull:
                // The stream was dropped while this client was not reading: follow again (a snapshot first).
                id = try send(.followJob(follow))
                continue
            case .error(let e)?:
                throw FarmClientError.remote(code: e.code, message: e.message)
            case .jobEvent(let event)?:
                events = [event]
            case .jobEvents(let batch)?:
                events = batch.events
            default:
                continue
            }
            for event in events {
                let c = event.counts
                info.total = Int(c.total)
                info.done = Int(c.done)
                info.failed = Int(c.failed)
                info.inFlight = Int(c.inFlight)
                info.queued = Int(c.queued)
                info.cancelled = Int(c.cancelled)
                let converted: FarmJobEvent
                var last = false
                switch event.event {
                case nil:
                    converted = .snapshot(info)
                case .frameDone(let d)?:
                    info.perWorker[d.workerName, default: 0] += 1
                    converted = .frameDone(frame: Int(d.frame), attempt: Int64(d.attemptID), worker: d.workerName,
                                           seconds: d.renderSeconds, png: includePNG ? d.png : nil)
                case .frameProgress(let p)?:
                    converted = .frameProgress(frame: Int(p.frame), worker: p.workerName, step: Int(p.step),
                                               total: Int(p.totalSteps))
                case .frameFailed(let f)?:
                    converted = .frameFailed(frame: Int(f.frame), error: "\(f.error.code) on worker '\(f.workerName)': "
                        + f.error.message + (f.final ? " (frame given up)" : " (requeued)"))
                case .jobNotice(let n)?:
                    converted = .notice(n.message)
                case .workerPhase(let p)?:
                    converted = .workerPhase(WorkerPhaseInfo(p))
                case .jobFinished(let f)?:
                    info.state = FarmNames.state(f.state)
                    info.video = f.videoPath.isEmpty ? nil : f.videoPath
                    converted = .finished(state: FarmNames.state(f.state), video: info.video)
                    last = true
                }
                if !onEvent(converted) || last { return }
            }
        }
    }

    public func status(job: Int64?) throws -> [JobStatusInfo] {
        var request = FarmStatusRequest()
        request.jobID = UInt64(job ?? 0)
        let reply = try self.request(.statusRequest(request))
        guard case .statusReply(let status)? = reply.body else {
            throw FarmClientError.protocolError("expected status_reply, got \(reply.bodyName)")
        }
        return status.jobs.map(JobStatusInfo.init)
    }

    /// Cancels a job; returns its state afterwards ("cancelled", or its final state if it had ended).
    public func cancel(job: Int64) throws -> String {
        var request = FarmCancelJob()
        request.jobID = UInt64(job)
        let reply = try self.request(.cancelJob(request))
        guard case .cancelReply(let cancelled)? = reply.body else {
            throw FarmClientError.protocolError("expected cancel_reply, got \(reply.bodyName)")
        }
        return FarmNames.state(cancelled.state)
    }

    public func workers() throws -> [WorkerInfo] {
        let reply = try request(.workersRequest(FarmWorkersRequest()))
        guard case .workersReply(let list)? = reply.body else {
            throw FarmClientError.protocolError("expected workers_reply, got \(reply.bodyName)")
        }
        let now = UInt64(max(0, Date().timeIntervalSince1970 * 1000))
        return list.workers.map { WorkerInfo($0, nowMs: now) }
    }
}

// The worker's I/O thread: its session with the coordinator (open, Hello, serve until lost or stopped),
// stopping with hand-backs, the inbox of compute-thread events, credits, heartbeats and model requests.
import CDPSys
import DPFileKit
import DPLog
import DPProtocol
import DPTransport
import Foundation
import Synchronization

extension WorkerService {
    // MARK: session

    enum SessionOutcome { case stopped, lost(String) }

    func openSession() throws {
        let s = try context.socket(.dealer)
        var id = Data([0x57])  // 'W' + 15 random bytes: never starts with 0 (reserved by libzmq)
        for _ in 0..<15 { id.append(UInt8.random(in: 0...255)) }
        try s.set([.routingID(id),
                   .maxMessageSize(Int64(settings.maxMessageBytes) + 4096),
                   .sendHighWaterMark(0), .receiveHighWaterMark(0)])
        monitor?.socket.close()
        monitor = nil
        handshake = ZMQHandshakeState()
        if let curve = settings.curve { try s.set(curve.socketOptions) }
        monitor = try ZMQMonitor(s)
        try s.connect(settings.connect)
        socket = s
        receipts.reset()
        welcomed = false
        let now = Date()
        lastHeard = now
        helloSentAt = now
        try sendHello()
    }

    func sendHello() throws {
        var hello = FarmHello()
        hello.workerName = settings.name
        hello.slots = UInt32(settings.slots)
        hello.cachedModelIds = cache.modelIDs
        hello.threads = UInt32(settings.threads ?? ProcessInfo.processInfo.activeProcessorCount)
        hello.host = WorkerHost.info()
        hello.maxMessageBytes = UInt64(settings.maxMessageBytes)
        hello.runningAttemptIds = shared.withLock { $0.tasks.keys.sorted() }
        try send(FarmEnvelope(.hello(hello)))
        helloSentAt = Date()
    }

    func send(_ envelope: FarmEnvelope) throws {
        guard let socket else { return }
        var envelope = envelope
        receipts.stamp(&envelope)
        let bytes = try envelope.encoded(maxBytes: settings.maxMessageBytes)
        _ = try socket.send(bytes, flags: .dontWait)
        lastSent = Date()
    }

    func serveSession() throws -> SessionOutcome {
        guard let socket else { return .lost("no socket") }
        let poller = ZMQPoller()
        try poller.add(socket)
        poller.add(fileDescriptor: wakePipe.readDescriptor)
        if let monitor { try poller.add(monitor.socket) }
        while true {
            // Stop handling first: it may end the session.
            if let done = try handleStop() { return done }
            // Drained every turn (a readable monitor would otherwise keep the poll from sleeping).
            if let monitor {
                let events = try monitor.drain()
                if !handshake.succeeded {
                    handshake.record(events)
                    // This socket's session is up: no more events wanted (a reconnect gets a new socket).
                    if handshake.succeeded { monitor.stop() }
                }
            }
            if !welcomed {
                if handshake.refusedByAuth != nil, !handshake.succeeded,
                   let problem = handshake.problem(endpoint: settings.connect, usingCurve: settings.curve != nil) {
                    setProblem(.handshake(problem))
                    return .lost(problem)
                }
            }

            let now = Date()
            let silentMs = now.timeIntervalSince(lastHeard) * 1000
            let deadMs = Double(heartbeatIntervalMs * heartbeatLiveness)
            if silentMs >= deadMs {
                if !welcomed {
                    if let monitor {
                        handshake.record((try? monitor.drain()) ?? [])
                    }
                    if !handshake.succeeded, handshake.reachedPeer,
                       let problem = handshake.problem(endpoint: settings.connect, usingCurve: settings.curve != nil) {
                        setProblem(.handshake(problem))
                        return .lost("no Welcome from \(settings.connect) within \(Int(silentMs)) ms: \(problem)")
                    }
                    if case .refused? = connectionProblem {} else {
                        setProblem(.noWelcome("no Welcome from \(settings.connect) within \(Int(silentMs)) ms"))
                    }
                }
                return .lost(welcomed
                    ? "coordinator \(settings.connect) silent for \(Int(silentMs)) ms (liveness \(heartbeatLiveness) x \(heartbeatIntervalMs) ms)"
                    : "no Welcome from \(settings.connect) within \(Int(silentMs)) ms")
            }
            if welcomed, now.timeIntervalSince(lastSent) * 1000 >= Double(heartbeatIntervalMs) || phaseReportDue(now) {
                try sendHeartbeat()
                while hasPhaseBacklog { try sendHeartbeat() }  // short phases no heartbeat carried yet, in order
            }
            let untilBeat = welcomed ? Double(heartbeatIntervalMs) - Date().timeIntervalSince(lastSent) * 1000 : deadMs
            let untilDead = deadMs - Date().timeIntervalSince(lastHeard) * 1000
            let timeout = max(1, Int(min(untilBeat, untilDead).rounded(.up)))
            let ready = try poller.poll(timeoutMilliseconds: timeout)
            if ready[1].contains(.readable) { drainWakePipe() }
            try processInbox()
            if ready[0].contains(.readable) {
                while let frames = try socket.receive(flags: .dontWait) {
                    try handle(frames)
                    if socket.isClosed { break }
                }
            }
        }
    }

    // MARK: stopping

    /// nil = keep serving; otherwise the session (and run) ends.
    func handleStop() throws -> SessionOutcome? {
        guard let mode = shared.withLock({ $0.stopMode }) else { return nil }
        if stopStartedAt == nil {
            stopStartedAt = Date()
            log.notice("worker \(settings.name): stopping (\(mode))", .workerStopping(worker: settings.name, handBack: mode == .handBack))
        }
        switch mode {
        case .abandon:
            socket?.close()
            socket = nil
            return .stopped
        case .finish, .handBack:
            let unfinished = shared.withLock { $0.tasks.values.filter { $0.result == nil } }
            // Wait for the compute threads to reach the end of their current step (handBack) or of
            // their frame (finish), within a bound: a frame stuck in a model load is handed back.
            let waitedMs = Date().timeIntervalSince(stopStartedAt!) * 1000
            let boundMs = mode == .handBack ? Double(heartbeatIntervalMs * heartbeatLiveness) : Double.infinity
            if !unfinished.isEmpty && waitedMs < boundMs { return nil }
            if !welcomed {
                // No session to say goodbye on: the coordinator requeues after its liveness timeout.
                return .stopped
            }
            // Finished frames go out before the Goodbye (a handed-back one is listed in it instead).
            try flushResults()
            var bye = FarmGoodbye()
            bye.reason = mode == .handBack ? "shutting down (SIGTERM): frames handed back" : "shutting down"
            let handedBack = self.handedBack
            bye.handedBackAttemptIds = shared.withLock { shared in
                // Anything still held is handed back (cancelled frames, or ones whose results were not sent).
                let ids = Array(Set(shared.tasks.keys).union(handedBack)).sorted()
                for task in shared.tasks.values { task.cancel(.shuttingDown) }
                shared.tasks.removeAll()
                return ids
            }
            try send(FarmEnvelope(.goodbye(bye)))
            log.notice("worker \(settings.name): Goodbye sent, handed back attempts \(bye.handedBackAttemptIds)",
                .handedBack(worker: settings.name, attempts: bye.handedBackAttemptIds.map { Int64(truncatingIfNeeded: $0) }))
            socket?.close()
            socket = nil
            return .stopped
        }
    }

    /// Waits up to `milliseconds` for a stop request; true when one came.
    func waitForStop(milliseconds: Int) -> Bool {
        let deadline = Date().addingTimeInterval(Double(milliseconds) / 1000)
        while true {
            if shared.withLock({ $0.stopMode != nil }) { return true }
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return false }
            var pfd = pollfd(fd: wakePipe.readDescriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, Int32(max(1, (left * 1000).rounded(.up))))
            drainWakePipe()
            // Compute threads keep running while disconnected; their events wait in the inbox.
        }
    }

    func finishWhileDisconnected() {
        shared.withLock { shared in
            for task in shared.tasks.values where task.result == nil { task.cancelReason = .shuttingDown }
        }
        log.notice("worker \(settings.name): stopped while disconnected; the coordinator requeues its attempts")
    }

    // MARK: inbox

    func processInbox() throws {
        let events = shared.withLock { shared in
            defer { shared.inbox.removeAll() }
            return shared.inbox
        }
        for event in events {
            switch event {
            case .progress(let attemptID, let step):
                guard welcomed else { continue }
                let task = shared.withLock { $0.tasks[attemptID] }
                let total = task?.totalSteps ?? 0
                let cancelled = task?.cancelReason != nil
                guard let task, !cancelled else { continue }
                var p = FarmProgress()
                p.attemptID = attemptID
                p.jobID = task.jobID
                p.frame = task.frame
                p.step = UInt32(step)
                p.totalSteps = UInt32(total)
                try send(FarmEnvelope(.progress(p)))
            case .finished:
                try flushResults()
            case .modelRequest(let request):
                try sendModelRequest(request)
            }
        }
    }

    /// Sends the FrameResult of every finished attempt (only on a welcomed session), each granting
    /// the credits its freed slot makes wanted (`FrameResult.credits`, see `grantCredits`).
    func flushResults() throws {
        guard welcomed else { return }
        let (finished, mode) = shared.withLock { shared in
            (shared.tasks.values.filter { $0.result != nil }.sorted { $0.attemptID < $1.attemptID }, shared.stopMode)
        }
        for task in finished {
            guard var result = task.result else { continue }
            if mode != nil, result.hasError, result.error.code == .shuttingDown {
                // Handed back: listed in the Goodbye instead of answered.
                handedBack.insert(task.attemptID)
                shared.withLock { _ = $0.tasks.removeValue(forKey: task.attemptID) }
                continue
            }
            result.workerName = settings.name
            shared.withLock { _ = $0.tasks.removeValue(forKey: task.attemptID) }
            result.credits = UInt32(grantCredits())
            try send(FarmEnvelope(.frameResult(result)))
        }
        evictIdleJobs()
    }

    /// Frames the worker wants assigned at once: one per slot, plus `settings.prefetchDepth(...)`
    /// queued per slot while its frames are short (a queued frame starts the moment a slot frees,
    /// hiding the round trip to the coordinator), or none while stopping. Returns how many credits
    /// to grant now (wanted - held - granted and unused) and counts them as granted.
    func grantCredits() -> Int {
        shared.withLock { shared in
            guard shared.stopMode == nil else { return 0 }
            let wanted = settings.slots * (1 + settings.prefetchDepth(lastFrameSeconds: shared.lastFrameSeconds))
            let n = max(0, wanted - shared.tasks.count - shared.creditsOutstanding)
            shared.creditsOutstanding += n
            return n
        }
    }

    func sendCredit(_ n: Int) throws {
        guard n > 0 else { return }
        var credit = FarmCredit()
        credit.credits = UInt32(n)
        try send(FarmEnvelope(.credit(credit)))
    }

    func sendHeartbeat() throws {
        heartbeatSequence += 1
        var beat = FarmHeartbeat()
        beat.sequence = heartbeatSequence
        beat.sentUnixMs = UInt64(Date().timeIntervalSince1970 * 1000)
        let (tasks, freeSlots) = shared.withLock { shared in
            (shared.tasks.values.sorted { $0.attemptID < $1.attemptID }, max(0, settings.slots - shared.tasks.count))
        }
        beat.attempts = tasks.map { task in
            var a = FarmAttemptProgress()
            a.attemptID = task.attemptID
            a.step = UInt32(task.step)
            a.totalSteps = UInt32(task.totalSteps)
            return a
        }
        beat.freeSlots = UInt32(freeSlots)
        if let phase = takePhaseReport() { beat.phase = phase }
        try send(FarmEnvelope(.heartbeat(beat)))
    }

    // MARK: model requests (compute thread -> I/O thread -> coordinator)

    func sendModelRequest(_ request: ModelRequest) throws {
        if request.requestID == 0 {
            request.requestID = nextRequestID
            nextRequestID += 1
        }
        pendingModelRequests[request.requestID] = request
        if welcomed { try send(FarmEnvelope(request.body, requestID: request.requestID)) }
    }

    func answerModelRequest(_ envelope: FarmEnvelope) {
        var match: ModelRequest?
        if envelope.requestID != 0 { match = pendingModelRequests[envelope.requestID] }
        if match == nil {
            match = pendingModelRequests.values.sorted { $0.requestID < $1.requestID }.first { $0.matches(envelope) }
        }
        guard let match else {
            log.warning("worker \(settings.name): dropped an unrequested \(envelope.bodyName) (request \(envelope.requestID))")
            return
        }
        pendingModelRequests[match.requestID] = nil
        match.complete(.success(envelope))
    }
}

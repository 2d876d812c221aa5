// The farm worker (`dp-worker --connect tcp://HOST:5555`): one DEALER session with the coordinator,
// frames rendered on compute threads. The message flow is Sources/DPCoordinator/DESIGN.md.
//
// Threads:
//   * the I/O thread (the caller of `run()`) owns the DEALER socket: it is the only thread that sends
//     or receives on it. It also sends the heartbeats, so a long matrix product on a compute thread
//     can never starve them (the I/O thread does no compute and sleeps in zmq_poll).
//   * `slots` compute threads (started by `run()`), each taking frame tasks from a queue in arrival
//     order: fetches the model if the cache lacks it, prepares the job once (cached per job),
//     renders with per-step progress (coalesced to one Progress per `progressIntervalMs`), and
//     polls the attempt's cancel flag between denoising steps.
//   Compute threads hand messages to the I/O thread through an inbox behind the `shared` Mutex and wake it
//   through a pipe that zmq_poll watches next to the socket.
//
// Session: a fresh DEALER (fresh random routing id) per connection, Hello -> Welcome, then credits:
// the worker asks for as many frames as it has slots (plus 1-8 queued per slot while its frames
// take under a second: prefetch, see WorkerSettings.prefetchDepth), granting them in Credit
// messages and in FrameResult.credits. A coordinator silent for liveness x interval (or a Hello unanswered as long) ends
// the session: the socket is closed and a new one connects after an exponential backoff; its
// Hello lists the attempts still held, and results finished meanwhile are sent once welcomed.
import CDPSys
import DPFileKit
import DPLog
import DPProtocol
import DPTransport
import Foundation
import Synchronization

// unchecked: the I/O thread state below (socket, session, timers) is owned by the thread in `run()`;
// everything the compute threads and callers share with it is in `shared`, behind a Mutex.
public final class WorkerService: @unchecked Sendable {
    public let settings: WorkerSettings
    public let renderer: FrameRenderer
    /// The worker's log (label dp.worker, `worker` metadata) and its typed events (`FarmLog.onEvent`).
    let log: FarmLog
    let context: ZMQContext
    let cache: ModelCache

    // MARK: state shared with compute threads and callers
    struct Shared {
        var inbox: [Event] = []
        var stopMode: StopMode?
        var running = false
        /// Attempts held: received and not yet answered on a welcomed session.
        var tasks: [UInt64: AttemptTask] = [:]
        /// Job preps by job id.
        var jobs: [UInt64: HeldJob] = [:]
        /// Chunk size for model fetches (Welcome.model_chunk_bytes).
        var modelChunkBytes = FarmProtocol.defaultChunkBytes
        /// Frame tasks waiting for a compute thread, oldest first; `workSignal` is signalled once per
        /// task queued and once per compute thread to stop when `run()` ends.
        var queued: [AttemptTask] = []
        var computeOpen = false
        /// Render seconds of the last frame rendered: decides prefetch.
        var lastFrameSeconds: Double?
        /// What the compute threads did; see `slotStatistics`.
        var slotStats = SlotStatistics()
        /// Bumped by `resetSlotStatistics()`.
        var slotStatsGeneration = 0
        /// Credits granted on this session and not yet used by a FrameTask.
        var creditsOutstanding = 0
        /// Why the last try to get a session failed (nil once welcomed).
        var sessionProblem: WorkerSessionProblem?
        /// The long phase a compute thread is in (model fetch, verification, job preparation) and
        /// whether the coordinator has yet to hear it (WorkerService+Phases.swift).
        var phase = WorkerPhaseReport()
    }
    let shared = Mutex(Shared())
    private let wakePipe: WakePipe
    /// Serialises model fetches: one model downloads at a time, a second frame of the same model waits.
    let fetchLock = Mutex(())
    private let workSignal = DispatchSemaphore(value: 0)
    /// The compute threads `run()` started, until each has left its loop (`waitForComputeThreads`).
    private let computeThreads = DispatchGroup()

    // MARK: I/O thread state
    private var socket: ZMQSocket?
    /// The CURVE handshake's events of the current socket (nil without keys).
    private var monitor: ZMQMonitor?
    private var handshake = ZMQHandshakeState()
    private var welcomed = false
    private var heartbeatIntervalMs: Int
    private var heartbeatLiveness: Int
    private var lastHeard = Date()
    private var lastSent = Date()
    private var helloSentAt = Date()
    private var heartbeatSequence: UInt64 = 0
    private var backoffMs: Int
    private var nextRequestID: UInt64 = 1
    private var pendingModelRequests: [UInt64: ModelRequest] = [:]
    private var coordinatorID = ""
    private var stopStartedAt: Date?
    private var handedBack: Set<UInt64> = []
    /// The newest delivery receipt read on this socket, echoed in every message (the coordinator's cap
    /// on bytes queued per peer; DESIGN.md, "Bytes queued per peer"). New socket, new receipts.
    private var receipts = FarmReceiptTracker()

    /// - context: the ZeroMQ context for the worker's sockets. Several workers in one process (the
    ///   embedded farm) can share one, as zguide advises (one context per process): one I/O thread
    ///   for all of them instead of one each (at thousands of frames a second that one thread is the
    ///   limit, see PERF.md). nil = a context of its own.
    public convenience init(settings: WorkerSettings, renderer: FrameRenderer, context: ZMQContext? = nil,
                            log: @escaping @Sendable (String) -> Void) throws {
        try self.init(settings: settings, renderer: renderer, context: context,
                      logger: FarmLog(label: WorkerService.logLabel, sink: log))
    }

    /// The swift-log label of the worker's records.
    public static let logLabel = "dp.worker"

    /// - logger: every record gets the worker's name as `worker` metadata.
    public init(settings: WorkerSettings, renderer: FrameRenderer, context: ZMQContext? = nil,
                logger: FarmLog) throws {
        try settings.validate()
        self.settings = settings
        self.renderer = renderer
        self.log = logger.with("worker", settings.name)
        self.cache = try ModelCache(directory: settings.cacheDirectory, maxBytes: UInt64(settings.cacheBytes))
        self.context = try context ?? ZMQContext()
        do {
            wakePipe = try WakePipe()
        } catch {
            throw WorkerServiceError.badSettings("cannot create the wake pipe: \(error)")
        }
        heartbeatIntervalMs = settings.heartbeatIntervalMs
        heartbeatLiveness = settings.heartbeatLiveness
        backoffMs = settings.reconnectInitialMs
    }

    // MARK: public control

    /// Connects, serves frames and reconnects until `shutdown(handBack:)` (or `abandon()`) has
    /// finished; then returns. Call it on a thread of its own (it becomes the I/O thread).
    public func run() throws {
        let alreadyRunning = shared.withLock { shared in
            if shared.running { return true }
            shared.running = true
            shared.computeOpen = true
            return false
        }
        if alreadyRunning { throw WorkerServiceError.alreadyRunning(settings.name) }
        for i in 0 ..< settings.slots {
            // Named from inside with prctl (Foundation's Thread.name did not always reach the OS thread):
            // `top -H` shows "dp-compute 1" (Linux keeps 15 bytes).
            computeThreads.enter()
            let thread = Thread { [self] in
                _ = dp_set_thread_name("dp-compute \(i + 1)")
                computeLoop()
                computeThreads.leave()
            }
            thread.stackSize = settings.computeThreadStackBytes
            thread.start()
        }
        defer {
            monitor?.socket.close()
            monitor = nil
            socket?.close()
            socket = nil
            shared.withLock { $0.running = false; $0.computeOpen = false }
            for _ in 0 ..< settings.slots { workSignal.signal() }
        }
        log.info("worker \(settings.name): \(settings.slots) slot(s), cache \(settings.cacheDirectory.path), "
            + "coordinator \(settings.connect)", .workerStarting(worker: settings.name, slots: settings.slots))
        while true {
            try openSession()
            let outcome = try serveSession()
            switch outcome {
            case .stopped:
                return
            case .lost(let why):
                socket?.close()
                socket = nil
                welcomed = false
                log.warning("worker \(settings.name): \(why); reconnecting in \(backoffMs) ms", .reconnecting(worker: settings.name))
                if waitForStop(milliseconds: backoffMs) { finishWhileDisconnected(); return }
                backoffMs = min(backoffMs * 2, settings.reconnectMaxMs)
            }
        }
    }

    /// SIGTERM path, thread-safe, does not block: with `handBack` the running frames stop after
    /// their current denoising step and are handed back in a Goodbye; without it they are finished
    /// and sent first. No new frames are taken either way. `run()` returns once the Goodbye is sent.
    public func shutdown(handBack: Bool = true) {
        shared.withLock { shared in
            if shared.stopMode == nil { shared.stopMode = handBack ? .handBack : .finish }
            // Frames not started yet (prefetched) are always handed back.
            for task in shared.tasks.values where task.result == nil && (handBack || !task.started) {
                task.cancelReason = .shuttingDown
            }
        }
        wake()
    }

    /// Ends the session like a killed process would: the socket is closed without a Goodbye,
    /// heartbeats stop, running frames are abandoned (their results are never sent) and `run()`
    /// returns. For failure tests of the farm; a real worker is stopped with `shutdown`.
    public func abandon() {
        shared.withLock { shared in
            shared.stopMode = .abandon
            for task in shared.tasks.values where task.result == nil { task.cancelReason = .shuttingDown }
        }
        wake()
    }

    /// How the compute threads spent their time since `run()` started (or the last
    /// `resetSlotStatistics()`), summed over slots: `computing` from taking a frame to posting its
    /// result, `waiting` from one frame's end to the next frame's start (an empty queue: the
    /// coordinator did not keep this worker fed; the wait before a slot's first frame is not
    /// counted, nor the one still going on).
    public var slotStatistics: SlotStatistics {
        shared.withLock { $0.slotStats }
    }

    /// Starts `slotStatistics` afresh: the wait until each slot's next frame is not counted either
    /// (a benchmark's pause between two jobs is not the coordinator's doing).
    public func resetSlotStatistics() {
        shared.withLock { shared in
            shared.slotStats = SlotStatistics()
            shared.slotStatsGeneration += 1
        }
    }

    public struct SlotStatistics: Sendable {
        public var frames = 0
        public var computingNs: UInt64 = 0
        public var waitingNs: UInt64 = 0
        /// Uptime (DispatchTime nanoseconds) of the first counted frame's start and the last one's
        /// end, over all slots (0: no frame).
        public var firstStartNs: UInt64 = 0
        public var lastEndNs: UInt64 = 0
        public init() {}
    }

    /// Why the worker has no session with the coordinator (nil: welcomed, or still trying for the
    /// first time): a refused or failed CURVE handshake, a refused Hello, or no Welcome in time.
    public var connectionProblem: WorkerSessionProblem? {
        shared.withLock { $0.sessionProblem }
    }

    private func setProblem(_ problem: WorkerSessionProblem?) {
        shared.withLock { $0.sessionProblem = problem }
    }

    /// Attempt ids currently held (rendering, or finished and not yet answered).
    public var heldAttemptIDs: [UInt64] {
        shared.withLock { $0.tasks.keys.sorted() }
    }

    // MARK: events from compute threads

    enum Event: Sendable {
        case progress(attemptID: UInt64, step: Int)
        case finished(attemptID: UInt64)
        case modelRequest(ModelRequest)
    }

    enum StopMode: Sendable { case handBack, finish, abandon }

    func post(_ event: Event) {
        shared.withLock { $0.inbox.append(event) }
        wake()
    }

    func wake() { wakePipe.wake() }

    private func drainWakePipe() { wakePipe.drain() }

    // MARK: session

    private enum SessionOutcome { case stopped, lost(String) }

    private func openSession() throws {
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

    private func sendHello() throws {
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

    private func send(_ envelope: FarmEnvelope) throws {
        guard let socket else { return }
        var envelope = envelope
        receipts.stamp(&envelope)
        let bytes = try envelope.encoded(maxBytes: settings.maxMessageBytes)
        _ = try socket.send(bytes, flags: .dontWait)
        lastSent = Date()
    }

    private func serveSession() throws -> SessionOutcome {
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
    private func handleStop() throws -> SessionOutcome? {
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
    private func waitForStop(milliseconds: Int) -> Bool {
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

    private func finishWhileDisconnected() {
        shared.withLock { shared in
            for task in shared.tasks.values where task.result == nil { task.cancelReason = .shuttingDown }
        }
        log.notice("worker \(settings.name): stopped while disconnected; the coordinator requeues its attempts")
    }

    // MARK: inbox

    private func processInbox() throws {
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
    private func flushResults() throws {
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
    private func grantCredits() -> Int {
        shared.withLock { shared in
            guard shared.stopMode == nil else { return 0 }
            let wanted = settings.slots * (1 + settings.prefetchDepth(lastFrameSeconds: shared.lastFrameSeconds))
            let n = max(0, wanted - shared.tasks.count - shared.creditsOutstanding)
            shared.creditsOutstanding += n
            return n
        }
    }

    private func sendCredit(_ n: Int) throws {
        guard n > 0 else { return }
        var credit = FarmCredit()
        credit.credits = UInt32(n)
        try send(FarmEnvelope(.credit(credit)))
    }

    private func sendHeartbeat() throws {
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

    private func sendModelRequest(_ request: ModelRequest) throws {
        if request.requestID == 0 {
            request.requestID = nextRequestID
            nextRequestID += 1
        }
        pendingModelRequests[request.requestID] = request
        if welcomed { try send(FarmEnvelope(request.body, requestID: request.requestID)) }
    }

    private func answerModelRequest(_ envelope: FarmEnvelope) {
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

    // MARK: incoming messages

    private func handle(_ frames: [Data]) throws {
        guard frames.count == 1 else {
            log.warning("worker \(settings.name): dropped a \(frames.count)-frame message from the coordinator (expected 1 frame)")
            return
        }
        let envelope: FarmEnvelope
        do {
            envelope = try FarmEnvelope.decode(frames[0], maxBytes: settings.maxMessageBytes)
        } catch let error as FarmProtocolError {
            log.warning("worker \(settings.name): refused a message from coordinator \(settings.connect): \(error)")
            try send(FarmEnvelope(.error(FarmError(error))))
            return
        }
        lastHeard = Date()
        // Read a quarter of the coordinator's cap since the last message sent: say so now.
        if receipts.read(envelope, wireBytes: frames[0].count) { try send(FarmEnvelope(.acknowledge(FarmAcknowledge()))) }
        switch envelope.body {
        case .welcome(let w):
            try handleWelcome(w)
        case .jobPrep(let prep):
            handleJobPrep(prep)
        case .frameTask(let task):
            try handleFrameTask(task)
        case .cancel(let cancel):
            handleCancel(cancel)
        case .modelManifest, .modelChunk:
            answerModelRequest(envelope)
        case .heartbeat:
            break
        case .error(let error):
            try handleError(error, requestID: envelope.requestID)
        default:
            log.warning("worker \(settings.name): ignored unexpected \(envelope.bodyName) from the coordinator")
        }
    }

    private func handleWelcome(_ w: FarmWelcome) throws {
        welcomed = true
        setProblem(nil)
        backoffMs = settings.reconnectInitialMs
        if w.heartbeatIntervalMs > 0 { heartbeatIntervalMs = Int(w.heartbeatIntervalMs) }
        if w.heartbeatLiveness > 0 { heartbeatLiveness = Int(w.heartbeatLiveness) }
        let adopted = Set(w.adoptedAttemptIds)
        let (dropped, mode) = shared.withLock { shared in
            if w.modelChunkBytes > 0 { shared.modelChunkBytes = Int(w.modelChunkBytes) }
            var dropped: [UInt64] = []
            for task in shared.tasks.values where !adopted.contains(task.attemptID) && task.result == nil {
                // The coordinator no longer counts this attempt: stop rendering it.
                task.cancelReason = .cancelled
                dropped.append(task.attemptID)
            }
            return (dropped, shared.stopMode)
        }
        if coordinatorID != w.coordinatorID {
            log.notice("worker \(settings.name): welcomed by coordinator \(w.coordinatorID) (heartbeat \(heartbeatIntervalMs) ms x \(heartbeatLiveness))",
                .welcomed(worker: settings.name, coordinator: w.coordinatorID))
            coordinatorID = w.coordinatorID
        }
        if !dropped.isEmpty { log.warning("worker \(settings.name): attempts \(dropped.sorted()) not adopted; cancelling them") }
        // A new session: the coordinator's credit for this worker starts at 0.
        shared.withLock { $0.creditsOutstanding = 0 }
        if mode == nil { try sendCredit(grantCredits()) }
        // Model requests of compute threads waiting across the reconnect go out again.
        for request in pendingModelRequests.values.sorted(by: { $0.requestID < $1.requestID }) {
            try send(FarmEnvelope(request.body, requestID: request.requestID))
        }
        try flushResults()
    }

    private func handleError(_ error: FarmError, requestID: UInt64) throws {
        switch error.code {
        case .notRegistered:
            log.warning("worker \(settings.name): coordinator says not registered; sending Hello again")
            welcomed = false
            try sendHello()
        case .badRequest where !welcomed && requestID == 0:
            // The coordinator refused our Hello (e.g. this key is not a worker key, or the name
            // belongs to another key): no session; retried after the backoff.
            setProblem(.refused(error.message))
            log.error("worker \(settings.name): coordinator refused this worker: \(error.message)", .refusedByCoordinator(worker: settings.name))
        case .unknownModel, .unknownFile, .badRequest, .checksumMismatch, .tooLarge:
            // An answer to a model request fails it; other errors are only logged.
            var failed: [ModelRequest] = []
            if requestID != 0, let r = pendingModelRequests[requestID] { failed = [r] }
            else if error.code == .unknownModel || error.code == .unknownFile {
                failed = Array(pendingModelRequests.values)
            }
            for r in failed {
                pendingModelRequests[r.requestID] = nil
                r.complete(.failure(WorkerServiceError.modelUnavailable(
                    "coordinator refused \(r.what): \(error.code) \(error.message)")))
            }
            log.warning("worker \(settings.name): coordinator error \(error.code): \(error.message)")
        default:
            log.warning("worker \(settings.name): coordinator error \(error.code): \(error.message)")
        }
    }

    private func handleJobPrep(_ prep: FarmJobPrep) {
        shared.withLock { shared in
            if let existing = shared.jobs[prep.jobID], existing.prep == prep {
                existing.lastUsed = Date()
            } else {
                shared.jobs[prep.jobID] = HeldJob(prep: prep)
            }
        }
        evictIdleJobs()
    }

    private func handleFrameTask(_ frameTask: FarmFrameTask) throws {
        func answer(_ code: FarmErrorCode, _ message: String) throws {
            var result = FarmFrameResult()
            result.attemptID = frameTask.attemptID
            result.jobID = frameTask.jobID
            result.frame = frameTask.frame
            result.workerName = settings.name
            result.error = FarmError(code, message, jobID: frameTask.jobID, attemptID: frameTask.attemptID)
            result.credits = UInt32(grantCredits())
            try send(FarmEnvelope(.frameResult(result)))
        }
        let (stopping, duplicate, job) = shared.withLock { shared in
            shared.creditsOutstanding = max(0, shared.creditsOutstanding - 1)  // every FrameTask used one credit
            return (shared.stopMode != nil, shared.tasks[frameTask.attemptID] != nil, shared.jobs[frameTask.jobID])
        }
        if duplicate {
            log.warning("worker \(settings.name): ignored a second FrameTask for attempt \(frameTask.attemptID)",
                attempt: Int64(truncatingIfNeeded: frameTask.attemptID))
            return
        }
        if stopping {
            try answer(.shuttingDown, "worker \(settings.name) is shutting down; frame \(frameTask.frame) handed back")
            return
        }
        guard let job else {
            log.warning("worker \(settings.name): FrameTask attempt \(frameTask.attemptID) (job \(frameTask.jobID) frame \(frameTask.frame)) without a JobPrep",
                job: Int64(truncatingIfNeeded: frameTask.jobID), frame: Int(frameTask.frame),
                attempt: Int64(truncatingIfNeeded: frameTask.attemptID))
            try answer(.jobPrepMissing, "worker \(settings.name) holds no JobPrep for job \(frameTask.jobID) "
                       + "(frame \(frameTask.frame), attempt \(frameTask.attemptID))")
            return
        }
        let task = AttemptTask(task: frameTask, job: job)
        shared.withLock { shared in
            shared.tasks[frameTask.attemptID] = task
            shared.queued.append(task)
            job.lastUsed = Date()
        }
        workSignal.signal()
    }

    /// After `run()` returned: waits until every compute thread has left its loop (a frame in progress is
    /// handed back within a denoising step). A process should not exit while they still run: `dp-worker`
    /// calls this before it returns, so exit handlers (OpenBLAS's among them) never race a frame. False when
    /// `timeoutSeconds` passed first.
    public func waitForComputeThreads(timeoutSeconds: Double) -> Bool {
        computeThreads.wait(timeout: .now() + timeoutSeconds) == .success
    }

    /// A compute thread: renders queued tasks in arrival order until `run()` ends.
    private func computeLoop() {
        var lastEnd: (ns: UInt64, generation: Int)?
        while true {
            workSignal.wait()
            let previousEnd = lastEnd
            // The next queued task (with its start time and statistics generation), or whether to go on.
            let (next, open) = shared.withLock { shared -> ((AttemptTask, UInt64, Int)?, Bool) in
                guard !shared.queued.isEmpty else { return (nil, shared.computeOpen) }
                let task = shared.queued.removeFirst()
                task.started = true
                let start = DispatchTime.now().uptimeNanoseconds
                let generation = shared.slotStatsGeneration
                if let previousEnd, previousEnd.generation == generation {
                    shared.slotStats.waitingNs += start - previousEnd.ns
                }
                return ((task, start, generation), true)
            }
            if let (task, start, generation) = next {
                compute(task)
                let end = DispatchTime.now().uptimeNanoseconds
                lastEnd = shared.withLock { shared in
                    if generation == shared.slotStatsGeneration {  // a frame that straddles a reset is not counted
                        shared.slotStats.frames += 1
                        shared.slotStats.computingNs += end - start
                        if shared.slotStats.firstStartNs == 0 || start < shared.slotStats.firstStartNs {
                            shared.slotStats.firstStartNs = start
                        }
                        shared.slotStats.lastEndNs = max(shared.slotStats.lastEndNs, end)
                    }
                    return (end, shared.slotStatsGeneration)
                }
                continue
            }
            if !open { return }
        }
    }

    private func handleCancel(_ cancel: FarmCancel) {
        let hit = shared.withLock { shared in
            var hit: [UInt64] = []
            switch cancel.target {
            case .attemptID(let id):
                if let task = shared.tasks[id], task.result == nil {
                    task.cancelReason = .cancelled
                    hit.append(id)
                }
            case .jobID(let jobID):
                for task in shared.tasks.values where task.jobID == jobID && task.result == nil {
                    task.cancelReason = .cancelled
                    hit.append(task.attemptID)
                }
                shared.jobs[jobID] = nil
            case nil:
                break
            }
            return hit
        }
        log.info("worker \(settings.name): Cancel \(String(describing: cancel.target)) (\(cancel.reason)): stopping attempts \(hit.sorted())")
    }

    /// Drops job preps that hold no attempt, least recently used first, beyond `maxIdleJobPreps`.
    private func evictIdleJobs() {
        shared.withLock { shared in
            guard shared.jobs.count > settings.maxIdleJobPreps else { return }  // nothing could be evicted
            let busy = Set(shared.tasks.values.map(\.jobID))
            let idle = shared.jobs.values.filter { !busy.contains($0.prep.jobID) }.sorted { $0.lastUsed < $1.lastUsed }
            let excess = idle.count - settings.maxIdleJobPreps
            guard excess > 0 else { return }
            for job in idle.prefix(excess) { shared.jobs[job.prep.jobID] = nil }
        }
    }
}

/// Why a worker has no session with its coordinator (`WorkerService.connectionProblem`).
public enum WorkerSessionProblem: Sendable, Equatable, CustomStringConvertible {
    /// The CURVE handshake failed or was refused: wrong pinned server key, or key not authorized.
    case handshake(String)
    /// The coordinator answered Hello with an error.
    case refused(String)
    /// No Welcome in time (nothing known about why).
    case noWelcome(String)

    public var description: String {
        switch self {
        case .handshake(let why): return "CURVE handshake: \(why)"
        case .refused(let why): return "Hello refused: \(why)"
        case .noWelcome(let why): return why
        }
    }
}

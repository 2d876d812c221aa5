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
    let wakePipe: WakePipe
    /// Serialises model fetches: one model downloads at a time, a second frame of the same model waits.
    let fetchLock = Mutex(())
    let workSignal = DispatchSemaphore(value: 0)
    /// The compute threads `run()` started, until each has left its loop (`waitForComputeThreads`).
    let computeThreads = DispatchGroup()

    // MARK: I/O thread state
    var socket: ZMQSocket?
    /// The CURVE handshake's events of the current socket (nil without keys).
    var monitor: ZMQMonitor?
    var handshake = ZMQHandshakeState()
    var welcomed = false
    var heartbeatIntervalMs: Int
    var heartbeatLiveness: Int
    var lastHeard = Date()
    var lastSent = Date()
    var helloSentAt = Date()
    var heartbeatSequence: UInt64 = 0
    var backoffMs: Int
    var nextRequestID: UInt64 = 1
    var pendingModelRequests: [UInt64: ModelRequest] = [:]
    var coordinatorID = ""
    var stopStartedAt: Date?
    var handedBack: Set<UInt64> = []
    /// The newest delivery receipt read on this socket, echoed in every message (the coordinator's cap
    /// on bytes queued per peer; DESIGN.md, "Bytes queued per peer"). New socket, new receipts.
    var receipts = FarmReceiptTracker()

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

    func setProblem(_ problem: WorkerSessionProblem?) {
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

    func drainWakePipe() { wakePipe.drain() }

    /// After `run()` returned: waits until every compute thread has left its loop (a frame in progress is
    /// handed back within a denoising step). A process should not exit while they still run: `dp-worker`
    /// calls this before it returns, so exit handlers (OpenBLAS's among them) never race a frame. False when
    /// `timeoutSeconds` passed first.
    public func waitForComputeThreads(timeoutSeconds: Double) -> Bool {
        computeThreads.wait(timeout: .now() + timeoutSeconds) == .success
    }

    /// A compute thread: renders queued tasks in arrival order until `run()` ends.
    func computeLoop() {
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

    func handleCancel(_ cancel: FarmCancel) {
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
    func evictIdleJobs() {
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

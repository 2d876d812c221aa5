// The coordinator's in-memory view of its workers: sessions by routing id, credits, cached models,
// the attempts each one holds with their step progress, and liveness. Pure state: no sockets, no
// threads, no wall clock - the coordinator loop feeds it events and asks `expire(now:)` once per
// loop turn which workers are dead and which attempts must be requeued.
//
// Liveness follows zguide's Majordomo broker: workers are kept in order of when they were last heard
// from, so purging walks from the oldest and stops at the first one still alive. Failure budgets
// (3 failed frames of a job bans a worker from it, a frame fails after 3 different workers) are NOT
// kept here: they must survive a restart, so they live in the journal (`Journal.failAttempt`,
// `Journal.nextFrames(worker:)`); this registry only reports lost attempts (no failure counted).
import DPJournal
import DPProtocol
import Foundation

/// The liveness settings (named, with documented defaults).
public struct LivenessSettings: Sendable, Equatable {
    /// Each side sends a Heartbeat when it sent nothing else for this long. Default 1000 ms
    /// (`FarmProtocol.defaultHeartbeatIntervalMilliseconds`); sent to workers in Welcome.
    public var heartbeatIntervalMilliseconds: Int64
    /// A worker silent for this many intervals is dead. Default 5 (`FarmProtocol.defaultHeartbeatLiveness`).
    public var heartbeatLiveness: Int64
    /// An attempt that has started denoising but whose step count has not gone up for this long is
    /// stalled and requeued, though its worker still heartbeats. Default 10 minutes: a DreamPose step
    /// on a small CPU takes up to ~40 s, so this is ~15 steps' worth.
    public var stallTimeoutMilliseconds: Int64
    /// Like `stallTimeoutMilliseconds`, for an attempt still before its first step (the worker may be
    /// fetching and loading the model). Default 30 minutes.
    public var firstStepTimeoutMilliseconds: Int64

    public init(heartbeatIntervalMilliseconds: Int64 = Int64(FarmProtocol.defaultHeartbeatIntervalMilliseconds),
                heartbeatLiveness: Int64 = Int64(FarmProtocol.defaultHeartbeatLiveness),
                stallTimeoutMilliseconds: Int64 = 10 * 60 * 1000,
                firstStepTimeoutMilliseconds: Int64 = 30 * 60 * 1000) {
        precondition(heartbeatIntervalMilliseconds > 0 && heartbeatLiveness > 0
            && stallTimeoutMilliseconds > 0 && firstStepTimeoutMilliseconds > 0,
            "liveness settings must be positive")
        self.heartbeatIntervalMilliseconds = heartbeatIntervalMilliseconds
        self.heartbeatLiveness = heartbeatLiveness
        self.stallTimeoutMilliseconds = stallTimeoutMilliseconds
        self.firstStepTimeoutMilliseconds = firstStepTimeoutMilliseconds
    }

    /// Silence after which a worker is dead: interval x liveness (default 5 s).
    public var deadAfterMilliseconds: Int64 { heartbeatIntervalMilliseconds * heartbeatLiveness }
}

/// An attempt a worker holds.
public struct InFlightAttempt: Sendable, Equatable {
    public var attemptID: Int64
    public var jobID: Int64
    public var frame: Int
    public var routingID: Data
    public var workerName: String
    public var startedAtMs: Int64
    /// Denoising steps finished (0 before the first) and the attempt's total.
    public var step: Int
    public var totalSteps: Int
    /// When `step` last went up (or when the attempt started).
    public var lastProgressAtMs: Int64
}

/// A connected worker session.
public struct RegisteredWorker: Sendable, Equatable {
    public var routingID: Data
    public var name: String
    public var slots: Int
    /// FrameTasks it may be sent now (sum of Credit grants minus tasks sent, since Hello).
    public var credits: Int
    public var cachedModelIDs: Set<String>
    public var connectedAtMs: Int64
    public var lastHeardMs: Int64
    /// When the coordinator last sent it anything (for outgoing heartbeats).
    public var lastSentMs: Int64
    /// When it last went from no credit to some credit, or last got a task: the dispatch order
    /// among equally suitable workers (least recently served first, like Majordomo's waiting list).
    public var lastServedMs: Int64
    public var attemptIDs: Set<Int64>
}

/// Why an attempt has to go back to the queue (the journal's `loseAttempt(reason:)`).
public struct LostAttempt: Sendable, Equatable {
    public enum Reason: Sendable, Equatable {
        /// Its worker was silent for the liveness period (or disconnected / was replaced / said Goodbye).
        case workerGone(String)
        /// Its worker is alive but the step count did not go up for the stall timeout.
        case stalled(sinceMs: Int64, step: Int)
    }

    public var attempt: InFlightAttempt
    public var reason: Reason

    public var description: String {
        switch reason {
        case let .workerGone(why):
            return "attempt \(attempt.attemptID) (job \(attempt.jobID) frame \(attempt.frame)) lost: worker "
                + "'\(attempt.workerName)' \(why)"
        case let .stalled(since, step):
            return "attempt \(attempt.attemptID) (job \(attempt.jobID) frame \(attempt.frame)) on worker "
                + "'\(attempt.workerName)' stalled at step \(step)/\(attempt.totalSteps) since \(since) ms"
        }
    }
}

/// What `expire(now:)` found.
public struct ExpiryReport: Sendable, Equatable {
    /// Workers declared dead, oldest silence first (already removed from the registry).
    public var deadWorkers: [RegisteredWorker] = []
    /// Attempts to requeue: those of dead workers, and stalled ones (removed from the registry; the
    /// loop also sends Cancel{attempt_id} to the live worker of a stalled attempt).
    public var lostAttempts: [LostAttempt] = []
    public var isEmpty: Bool { deadWorkers.isEmpty && lostAttempts.isEmpty }
}

/// An event the registry cannot apply; `description` names the peer/attempt.
public enum WorkerRegistryError: Error, CustomStringConvertible, Equatable {
    case unknownPeer(Data)
    case noCredit(worker: String)
    case duplicateAttempt(Int64)

    public var description: String {
        switch self {
        case let .unknownPeer(id): return "no worker session for routing id \(id.map { String(format: "%02x", $0) }.joined())"
        case let .noCredit(name): return "worker '\(name)' has no credit for another frame task"
        case let .duplicateAttempt(id): return "attempt \(id) is already in flight"
        }
    }
}

public final class WorkerRegistry {
    public let settings: LivenessSettings
    public let clock: JournalClock

    private var workers: [Data: RegisteredWorker] = [:]
    private var byName: [String: Data] = [:]
    /// Routing ids, least recently heard first (Majordomo's purge order).
    private var heardOrder: [Data] = []
    private var attempts: [Int64: InFlightAttempt] = [:]

    public init(settings: LivenessSettings = LivenessSettings(), clock: JournalClock) {
        self.settings = settings
        self.clock = clock
    }

    private var now: Int64 { clock.nowMilliseconds() }

    // MARK: - Sessions

    /// A Hello: starts a session (credits 0). A session of the same worker name on another routing
    /// id is replaced; it is returned with the attempts it held, which the caller requeues unless
    /// the new Hello lists them in `running_attempt_ids` (then `adopt` them).
    @discardableResult
    public func register(routingID: Data, name: String, slots: Int,
                         cachedModelIDs: [String]) -> (replaced: RegisteredWorker?, lost: [LostAttempt]) {
        var replaced: RegisteredWorker?
        var lost: [LostAttempt] = []
        if let old = byName[name] {
            (replaced, lost) = removeSession(old, why: "reconnected (new session)")
        }
        if workers[routingID] != nil {  // a second Hello on the same socket also resets it
            let (again, more) = removeSession(routingID, why: "sent Hello again")
            replaced = replaced ?? again
            lost += more
        }
        let t = now
        workers[routingID] = RegisteredWorker(routingID: routingID, name: name, slots: slots, credits: 0,
                                              cachedModelIDs: Set(cachedModelIDs), connectedAtMs: t,
                                              lastHeardMs: t, lastSentMs: t, lastServedMs: t, attemptIDs: [])
        byName[name] = routingID
        heardOrder.append(routingID)
        return (replaced, lost)
    }

    /// Ends a session (Goodbye, send failure): returns it and its attempts to requeue.
    @discardableResult
    public func remove(routingID: Data, why: String) -> (worker: RegisteredWorker?, lost: [LostAttempt]) {
        let (worker, lost) = removeSession(routingID, why: why)
        return (worker, lost)
    }

    public func worker(routingID: Data) -> RegisteredWorker? { workers[routingID] }

    public func worker(named name: String) -> RegisteredWorker? { byName[name].flatMap { workers[$0] } }

    /// Every session, by name.
    public var allWorkers: [RegisteredWorker] { workers.values.sorted { $0.name < $1.name } }

    /// Any message from a peer: it is alive. Returns false for an unknown routing id (the caller
    /// answers NOT_REGISTERED).
    @discardableResult
    public func heard(from routingID: Data) -> Bool {
        guard workers[routingID] != nil else { return false }
        workers[routingID]!.lastHeardMs = now
        if heardOrder.last != routingID {
            heardOrder.removeAll { $0 == routingID }
            heardOrder.append(routingID)
        }
        return true
    }

    /// The coordinator sent the peer something (resets the outgoing heartbeat timer).
    public func sent(to routingID: Data) {
        workers[routingID]?.lastSentMs = now
    }

    /// Sessions that were sent nothing for a heartbeat interval: send them a Heartbeat.
    public func heartbeatsDue(now: Int64) -> [Data] {
        workers.values.filter { now - $0.lastSentMs >= settings.heartbeatIntervalMilliseconds }
            .sorted { $0.lastSentMs < $1.lastSentMs }.map(\.routingID)
    }

    /// A Credit message.
    public func grant(_ credits: Int, to routingID: Data) throws {
        guard let worker = workers[routingID] else { throw WorkerRegistryError.unknownPeer(routingID) }
        if worker.credits <= 0, credits > 0 { workers[routingID]!.lastServedMs = now }
        workers[routingID]!.credits += credits
    }

    /// The worker now holds `modelID` (it fetched it).
    public func addCachedModel(_ modelID: String, to routingID: Data) {
        workers[routingID]?.cachedModelIDs.insert(modelID)
    }

    /// Workers that can take a FrameTask now, best first: those holding `modelID` (if given), then
    /// the least recently served.
    public func workersWithCredit(preferring modelID: String? = nil) -> [RegisteredWorker] {
        workers.values.filter { $0.credits > 0 }.sorted { a, b in
            if let modelID {
                let ha = a.cachedModelIDs.contains(modelID), hb = b.cachedModelIDs.contains(modelID)
                if ha != hb { return ha }
            }
            return (a.lastServedMs, a.name) < (b.lastServedMs, b.name)
        }
    }

    // MARK: - Attempts

    /// A FrameTask was sent: consumes one credit and tracks the attempt.
    public func dispatched(attemptID: Int64, jobID: Int64, frame: Int, totalSteps: Int = 0,
                           to routingID: Data) throws {
        guard let worker = workers[routingID] else { throw WorkerRegistryError.unknownPeer(routingID) }
        guard worker.credits > 0 else { throw WorkerRegistryError.noCredit(worker: worker.name) }
        try track(attemptID: attemptID, jobID: jobID, frame: frame, totalSteps: totalSteps, on: routingID)
        workers[routingID]!.credits -= 1
        workers[routingID]!.lastServedMs = now
    }

    /// An attempt a reconnecting worker still renders (Hello.running_attempt_ids kept by the
    /// journal): tracked without consuming credit.
    public func adopt(attemptID: Int64, jobID: Int64, frame: Int, step: Int = 0, totalSteps: Int = 0,
                      on routingID: Data) throws {
        guard workers[routingID] != nil else { throw WorkerRegistryError.unknownPeer(routingID) }
        try track(attemptID: attemptID, jobID: jobID, frame: frame, totalSteps: totalSteps, on: routingID)
        attempts[attemptID]!.step = step
    }

    private func track(attemptID: Int64, jobID: Int64, frame: Int, totalSteps: Int, on routingID: Data) throws {
        guard attempts[attemptID] == nil else { throw WorkerRegistryError.duplicateAttempt(attemptID) }
        let t = now
        attempts[attemptID] = InFlightAttempt(attemptID: attemptID, jobID: jobID, frame: frame, routingID: routingID,
                                              workerName: workers[routingID]!.name, startedAtMs: t, step: 0,
                                              totalSteps: totalSteps, lastProgressAtMs: t)
        workers[routingID]!.attemptIDs.insert(attemptID)
    }

    /// A Progress message (or a Heartbeat's AttemptProgress). The stall timer restarts only when the
    /// step count goes up. Returns nil when the attempt is not in flight on that peer (the caller
    /// sends Cancel{attempt_id}).
    @discardableResult
    public func progress(attemptID: Int64, step: Int, totalSteps: Int, from routingID: Data) -> InFlightAttempt? {
        guard var attempt = attempts[attemptID], attempt.routingID == routingID else { return nil }
        if step > attempt.step {
            attempt.step = step
            attempt.lastProgressAtMs = now
        }
        attempt.totalSteps = totalSteps
        attempts[attemptID] = attempt
        return attempt
    }

    /// A FrameResult (or the journal ended the attempt): stops tracking it. Returns nil if it was not
    /// in flight (stale: already requeued).
    @discardableResult
    public func finished(attemptID: Int64) -> InFlightAttempt? {
        guard let attempt = attempts.removeValue(forKey: attemptID) else { return nil }
        workers[attempt.routingID]?.attemptIDs.remove(attemptID)
        return attempt
    }

    public func attempt(_ attemptID: Int64) -> InFlightAttempt? { attempts[attemptID] }

    /// Attempts in flight, by id.
    public var inFlight: [InFlightAttempt] { attempts.values.sorted { $0.attemptID < $1.attemptID } }

    // MARK: - Expiry

    /// Declares dead every worker silent for `settings.deadAfterMilliseconds` (purged oldest first,
    /// stopping at the first live one) and collects the attempts to requeue: those of dead workers,
    /// and stalled ones of live workers. Everything reported is removed from the registry.
    public func expire(now: Int64) -> ExpiryReport {
        var report = ExpiryReport()
        while let oldest = heardOrder.first, let worker = workers[oldest],
              now - worker.lastHeardMs >= settings.deadAfterMilliseconds {
            let silent = now - worker.lastHeardMs
            let (gone, lost) = removeSession(oldest, why: "silent for \(silent) ms (dead after \(settings.deadAfterMilliseconds) ms)")
            if let gone { report.deadWorkers.append(gone) }
            report.lostAttempts += lost
        }
        for attempt in attempts.values.sorted(by: { $0.attemptID < $1.attemptID }) {
            let limit = attempt.step == 0 ? settings.firstStepTimeoutMilliseconds : settings.stallTimeoutMilliseconds
            if now - attempt.lastProgressAtMs >= limit {
                finished(attemptID: attempt.attemptID)
                report.lostAttempts.append(LostAttempt(attempt: attempt,
                                                       reason: .stalled(sinceMs: attempt.lastProgressAtMs, step: attempt.step)))
            }
        }
        return report
    }

    /// `expire(now:)` at the clock's time.
    public func expire() -> ExpiryReport { expire(now: now) }

    private func removeSession(_ routingID: Data, why: String) -> (RegisteredWorker?, [LostAttempt]) {
        guard let worker = workers.removeValue(forKey: routingID) else { return (nil, []) }
        if byName[worker.name] == routingID { byName[worker.name] = nil }
        heardOrder.removeAll { $0 == routingID }
        let lost = worker.attemptIDs.sorted().compactMap { id -> LostAttempt? in
            guard let attempt = attempts.removeValue(forKey: id) else { return nil }
            return LostAttempt(attempt: attempt, reason: .workerGone(why))
        }
        return (worker, lost)
    }
}

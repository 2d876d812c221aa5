// The worker's long phases (issue 14, "no silent minutes"): fetching a model (bytes of the total),
// verifying it, preparing a job. A compute thread sets the phase; the I/O thread tells the coordinator in
// a Heartbeat (Heartbeat.phase): at once when the phase itself changes, and at most every
// `progressIntervalMs` while only its bytes move. Every heartbeat carries the current phase (none = absent).
import DPProtocol
import Foundation

/// The phase a compute thread is in, and what the coordinator has heard of it (in WorkerService.Shared).
struct WorkerPhaseReport {
    /// The current phase (nil: none) and the token of the `beginPhase` that set it.
    var phase: FarmWorkerPhase?
    var token: UInt64 = 0
    var startedAt = Date()
    /// The coordinator has not heard the latest bytes / the latest change of phase.
    var dirty = false
    var changed = false
    var lastSentAt = Date.distantPast
    /// Phases replaced before any heartbeat carried them (a short verification, say), oldest first: the
    /// next heartbeats carry them, one each, so the coordinator sees every phase in order.
    var unsent: [FarmWorkerPhase] = []
    static let maxUnsent = 4

    /// Called before the phase is replaced: keeps it for the next heartbeats if none carried it yet.
    mutating func keepIfUnsent(now: Date) {
        guard changed, var p = phase else { return }
        p.seconds = max(0, now.timeIntervalSince(startedAt))
        unsent.append(p)
        if unsent.count > Self.maxUnsent { unsent.removeFirst(unsent.count - Self.maxUnsent) }
    }
}

extension WorkerService {
    /// Starts a phase (replacing any other: the newest one is reported); returns its token for
    /// `updatePhase` and `endPhase`.
    @discardableResult
    func beginPhase(_ kind: FarmWorkerPhaseKind, model: String, job: UInt64, bytesDone: UInt64 = 0,
                    bytesTotal: UInt64 = 0) -> UInt64 {
        let token = shared.withLock { shared in
            var p = FarmWorkerPhase()
            p.kind = kind
            p.modelID = model
            p.jobID = job
            p.bytesTotal = bytesTotal
            p.bytesDone = min(bytesDone, bytesTotal)
            p.workerName = settings.name
            shared.phase.keepIfUnsent(now: Date())
            shared.phase.token &+= 1
            shared.phase.phase = p
            shared.phase.startedAt = Date()
            shared.phase.dirty = true
            shared.phase.changed = true
            return shared.phase.token
        }
        wake()
        return token
    }

    /// New byte count of phase `token` (ignored once another phase replaced it).
    func updatePhase(_ token: UInt64, bytesDone: UInt64, bytesTotal: UInt64) {
        shared.withLock { shared in
            guard shared.phase.token == token, shared.phase.phase != nil else { return }
            shared.phase.phase!.bytesTotal = bytesTotal
            shared.phase.phase!.bytesDone = min(bytesDone, bytesTotal)
            shared.phase.dirty = true
        }
    }

    /// Ends phase `token` (nothing when another phase replaced it).
    func endPhase(_ token: UInt64) {
        let ended = shared.withLock { shared in
            guard shared.phase.token == token, shared.phase.phase != nil else { return false }
            shared.phase.keepIfUnsent(now: Date())
            shared.phase.phase = nil
            shared.phase.dirty = true
            shared.phase.changed = true
            return true
        }
        if ended { wake() }
    }

    /// The current phase, for `dp-worker`'s own display and tests.
    public var currentPhase: FarmWorkerPhase? { shared.withLock { $0.phase.phase } }

    /// A heartbeat is due for the phase: it changed, or its bytes moved and the progress interval passed.
    func phaseReportDue(_ now: Date) -> Bool {
        shared.withLock { shared in
            shared.phase.changed
                || (shared.phase.dirty && now.timeIntervalSince(shared.phase.lastSentAt) * 1000 >= Double(settings.progressIntervalMs))
        }
    }

    /// Phases replaced before a heartbeat carried them wait for heartbeats of their own.
    var hasPhaseBacklog: Bool { shared.withLock { !$0.phase.unsent.isEmpty } }

    /// The phase for the heartbeat being sent (nil: none); the coordinator has now heard it. An unsent
    /// earlier phase goes first (and the current one stays due).
    func takePhaseReport() -> FarmWorkerPhase? {
        shared.withLock { shared in
            let now = Date()
            if !shared.phase.unsent.isEmpty {
                shared.phase.lastSentAt = now
                return shared.phase.unsent.removeFirst()
            }
            shared.phase.dirty = false
            shared.phase.changed = false
            shared.phase.lastSentAt = now
            guard var p = shared.phase.phase else { return nil }
            p.seconds = max(0, now.timeIntervalSince(shared.phase.startedAt))
            return p
        }
    }
}

// The farm's lifecycle moments as typed values (issue 14, item 5): each is the `event` of one log record (its
// stable name, with its fields as the record's metadata, so `--log-format json` lines carry them), and the
// coordinator and worker also hand them, as values, to an in-process subscriber (`FarmLog.onEvent`). Tests
// wait on these, never on log wording: a subprocess test decodes the JSON lines (`init?(name:fields:)`), an
// in-process one subscribes.
//
// Names are stable (renaming one breaks whoever reads the JSON lines); fields are strings in the log record
// (`fields`), typed here.

/// Why the coordinator ended a worker's session.
public enum WorkerDropCause: String, Sendable, Equatable, CaseIterable {
    /// The worker said Goodbye.
    case goodbye
    /// No message for `heartbeatLiveness` heartbeat intervals.
    case silent
    /// Its connection went away (a send found the peer gone).
    case gone
}

/// What dp-worker does on a stop signal.
public enum StopSignalAction: String, Sendable, Equatable, CaseIterable {
    /// The first SIGTERM/SIGINT: hand the work back after the current step, then exit.
    case handBack
    /// A repeated SIGTERM while handing back: carry on.
    case carryOn
    /// A second SIGINT: exit at once, nothing handed back.
    case exitNow
}

/// How a job ended.
public enum JobEnd: String, Sendable, Equatable, CaseIterable {
    case completed, failed, cancelled
}

public enum FarmEvent: Sendable, Equatable {
    // MARK: coordinator (label dp.coord)

    /// The coordinator's loop runs and its ROUTER is bound to `endpoint`.
    case serving(endpoint: String)
    /// Started with `--insecure-no-auth` (logged as a WARNING).
    case insecureNoAuth(endpoint: String)
    /// The coordinator's loop returned.
    case coordinatorStopped
    /// The loop thread's `--loop-nice` was applied (or could not be).
    case loopThreadNice(nice: Int, applied: Bool)
    /// The authorized key folders were re-read.
    case keysReloaded
    /// A worker's Hello was accepted.
    case workerRegistered(worker: String, slots: Int)
    /// A Hello was refused (`peer`: the connection, as the log names it).
    case helloRejected(peer: String)
    /// A worker's session ended; its attempts were failed or requeued.
    case workerDropped(worker: String, cause: WorkerDropCause)
    /// A worker asked for more credit than its slots allow.
    case creditBeyondCap(worker: String)
    /// An attempt went back to the queue at no cost to the frame (handed back, cancelled, re-adopted too late).
    case attemptRequeued(job: Int64, frame: Int, attempt: Int64)
    /// A result for an attempt that is no longer the frame's current one: recorded, PNG dropped.
    case staleResult(job: Int64, frame: Int, attempt: Int64, worker: String)
    /// A frame's PNG was checked and written.
    case frameDone(job: Int64, frame: Int, attempt: Int64, worker: String)
    /// An attempt failed (`error`: the reason the journal keeps); `final`: the frame is given up;
    /// `workerBanned`: the worker gets no more frames of the job.
    case frameFailed(job: Int64, frame: Int, attempt: Int64, worker: String, final: Bool, workerBanned: Bool,
                     error: String)
    /// Every connected worker is banned from `job`: its queued frames wait.
    case noWorkerMayTake(job: Int64)
    /// A frame the journal had as done has no valid PNG in the output folder (missing, or not the bytes
    /// recorded: `reason`); `requeued`: it is rendered again (an unfinished job).
    case frameOutputLost(job: Int64, frame: Int, requeued: Bool, reason: String)
    /// A job was accepted; `uploads`: files the client still sends (the job waits for them); `modelHeld`:
    /// the coordinator already holds its model.
    case jobSubmitted(job: Int64, frames: Int, uploads: Int, modelHeld: Bool)
    /// Every upload of a held job arrived: it is queued.
    case jobQueued(job: Int64)
    /// A job failed as a whole (not a frame's fate).
    case jobFailed(job: Int64, error: String)
    /// A completed job's video could not be written (`error`: what its followers are told in JobFinished).
    case videoFailed(job: Int64, error: String)
    /// A job ended and its final outputs were written.
    case jobFinished(job: Int64, state: JobEnd)
    /// A client asked to cancel a job.
    case jobCancelRequested(job: Int64)
    /// At start-up: a job had ended before its final outputs were written; they are written now.
    case jobOutputsResumed(job: Int64)
    /// A model uploaded with a job was verified and installed / failed verification / was released unfinished.
    case modelInstalled(model: String, job: Int64)
    case modelUploadFailed(model: String, job: Int64)
    case modelUploadReleased(model: String, job: Int64)
    /// At start-up: `attempts` attempts were in flight before the restart (requeued after the grace period).
    case restartAttemptsInFlight(attempts: Int)
    /// The restart grace period ended; `requeued` attempts were not re-adopted.
    case restartGraceOver(requeued: Int)
    /// A message that failed to decode or passed a limit (`reason`: what the peer was told).
    case messageRejected(peer: String, reason: String)
    /// A worker message from a connection that has not said Hello (answered NOT_REGISTERED).
    case unregisteredMessage(peer: String, message: String)
    /// A peer sent an Error message.
    case peerError(peer: String, code: String)
    /// A worker's model manifest or chunk request was refused (`request`: "manifest" or "chunk").
    case modelRequestRefused(worker: String, request: String)
    /// A worker's long phase changed (`phase`: "fetching_model", "verifying_model", "preparing_job", or
    /// "none" when it ended; `job`: the job it is for, 0 = none). Byte updates within a phase are not events.
    case workerPhaseChanged(worker: String, phase: String, job: Int64)
    /// A worker's Heartbeat.phase failed a check (`reason`); its previous phase stands.
    case workerPhaseRefused(worker: String, reason: String)

    // MARK: worker (label dp.worker)

    /// A worker service starts (before its first connection).
    case workerStarting(worker: String, slots: Int)
    /// The coordinator accepted this worker's Hello.
    case welcomed(worker: String, coordinator: String)
    /// The connection was lost or refused; the worker retries.
    case reconnecting(worker: String)
    /// The coordinator refused this worker for good.
    case refusedByCoordinator(worker: String)
    /// The worker stops (`handBack`: it hands back its attempts first).
    case workerStopping(worker: String, handBack: Bool)
    /// Goodbye sent with these attempts handed back.
    case handedBack(worker: String, attempts: [Int64])
    /// A model is not in the worker's cache: fetching it / fetched and verified.
    case modelFetching(worker: String, model: String)
    case modelFetched(worker: String, model: String, bytes: UInt64, files: Int)
    /// A fetched model file did not have the manifest's SHA-256: fetched again, or (`givingUp`) the fetch fails.
    case modelFileCorrupted(worker: String, model: String, path: String, givingUp: Bool)
    /// dp-worker got SIGTERM or SIGINT (`signal`: "SIGTERM", "SIGINT").
    case stopSignal(signal: String, action: StopSignalAction)
    /// The worker service returned (dp-worker serve).
    case workerStopped(worker: String)
}

extension FarmEvent {
    /// The stable name: the `event` of the log record.
    public var name: String {
        switch self {
        case .serving: "serving"
        case .insecureNoAuth: "insecureNoAuth"
        case .coordinatorStopped: "coordinatorStopped"
        case .loopThreadNice: "loopThreadNice"
        case .keysReloaded: "keysReloaded"
        case .workerRegistered: "workerRegistered"
        case .helloRejected: "helloRejected"
        case .workerDropped: "workerDropped"
        case .creditBeyondCap: "creditBeyondCap"
        case .attemptRequeued: "attemptRequeued"
        case .staleResult: "staleResult"
        case .frameDone: "frameDone"
        case .frameFailed: "frameFailed"
        case .noWorkerMayTake: "noWorkerMayTake"
        case .frameOutputLost: "frameOutputLost"
        case .jobSubmitted: "jobSubmitted"
        case .jobQueued: "jobQueued"
        case .jobFailed: "jobFailed"
        case .videoFailed: "videoFailed"
        case .jobFinished: "jobFinished"
        case .jobCancelRequested: "jobCancelRequested"
        case .jobOutputsResumed: "jobOutputsResumed"
        case .modelInstalled: "modelInstalled"
        case .modelUploadFailed: "modelUploadFailed"
        case .modelUploadReleased: "modelUploadReleased"
        case .restartAttemptsInFlight: "restartAttemptsInFlight"
        case .restartGraceOver: "restartGraceOver"
        case .messageRejected: "messageRejected"
        case .unregisteredMessage: "unregisteredMessage"
        case .peerError: "peerError"
        case .modelRequestRefused: "modelRequestRefused"
        case .workerPhaseChanged: "workerPhaseChanged"
        case .workerPhaseRefused: "workerPhaseRefused"
        case .workerStarting: "workerStarting"
        case .welcomed: "welcomed"
        case .reconnecting: "reconnecting"
        case .refusedByCoordinator: "refusedByCoordinator"
        case .workerStopping: "workerStopping"
        case .handedBack: "handedBack"
        case .modelFetching: "modelFetching"
        case .modelFetched: "modelFetched"
        case .modelFileCorrupted: "modelFileCorrupted"
        case .stopSignal: "stopSignal"
        case .workerStopped: "workerStopped"
        }
    }

    /// The fields, as the log record's metadata. Keys shared by many events keep one meaning: job, frame,
    /// attempt (ids), worker (a worker's name), peer (a connection as the log names it), model (a model id).
    public var fields: [String: String] {
        switch self {
        case .serving(let endpoint), .insecureNoAuth(let endpoint): ["endpoint": endpoint]
        case .coordinatorStopped, .keysReloaded: [:]
        case .loopThreadNice(let nice, let applied): ["nice": String(nice), "applied": String(applied)]
        case .workerRegistered(let worker, let slots): ["worker": worker, "slots": String(slots)]
        case .helloRejected(let peer): ["peer": peer]
        case .workerDropped(let worker, let cause): ["worker": worker, "cause": cause.rawValue]
        case .creditBeyondCap(let worker): ["worker": worker]
        case .attemptRequeued(let job, let frame, let attempt):
            ["job": String(job), "frame": String(frame), "attempt": String(attempt)]
        case .staleResult(let job, let frame, let attempt, let worker), .frameDone(let job, let frame, let attempt, let worker):
            ["job": String(job), "frame": String(frame), "attempt": String(attempt), "worker": worker]
        case .frameFailed(let job, let frame, let attempt, let worker, let final, let banned, let error):
            ["job": String(job), "frame": String(frame), "attempt": String(attempt), "worker": worker,
             "final": String(final), "workerBanned": String(banned), "error": error]
        case .noWorkerMayTake(let job), .jobQueued(let job), .jobCancelRequested(let job), .jobOutputsResumed(let job):
            ["job": String(job)]
        case .frameOutputLost(let job, let frame, let requeued, let reason):
            ["job": String(job), "frame": String(frame), "requeued": String(requeued), "reason": reason]
        case .jobSubmitted(let job, let frames, let uploads, let held):
            ["job": String(job), "frames": String(frames), "uploads": String(uploads), "modelHeld": String(held)]
        case .jobFailed(let job, let error), .videoFailed(let job, let error): ["job": String(job), "error": error]
        case .jobFinished(let job, let state): ["job": String(job), "state": state.rawValue]
        case .modelInstalled(let model, let job), .modelUploadFailed(let model, let job),
             .modelUploadReleased(let model, let job):
            ["model": model, "job": String(job)]
        case .restartAttemptsInFlight(let attempts): ["attempts": String(attempts)]
        case .restartGraceOver(let requeued): ["requeued": String(requeued)]
        case .messageRejected(let peer, let reason): ["peer": peer, "reason": reason]
        case .unregisteredMessage(let peer, let message): ["peer": peer, "message": message]
        case .peerError(let peer, let code): ["peer": peer, "code": code]
        case .modelRequestRefused(let worker, let request): ["worker": worker, "request": request]
        case .workerPhaseChanged(let worker, let phase, let job): ["worker": worker, "phase": phase, "job": String(job)]
        case .workerPhaseRefused(let worker, let reason): ["worker": worker, "reason": reason]
        case .workerStarting(let worker, let slots): ["worker": worker, "slots": String(slots)]
        case .welcomed(let worker, let coordinator): ["worker": worker, "coordinator": coordinator]
        case .reconnecting(let worker), .refusedByCoordinator(let worker), .workerStopped(let worker): ["worker": worker]
        case .workerStopping(let worker, let handBack): ["worker": worker, "handBack": String(handBack)]
        case .handedBack(let worker, let attempts):
            ["worker": worker, "attempts": attempts.map(String.init).joined(separator: ",")]
        case .modelFetching(let worker, let model): ["worker": worker, "model": model]
        case .modelFileCorrupted(let worker, let model, let path, let givingUp):
            ["worker": worker, "model": model, "path": path, "givingUp": String(givingUp)]
        case .stopSignal(let signal, let action): ["signal": signal, "action": action.rawValue]
        case .modelFetched(let worker, let model, let bytes, let files):
            ["worker": worker, "model": model, "bytes": String(bytes), "files": String(files)]
        }
    }

    /// The event back from a log record's `event` name and metadata (a JSON line); nil for an unknown name
    /// or a field missing or not of its type.
    public init?(name: String, fields f: [String: String]) {
        func s(_ k: String) -> String? { f[k] }
        func i(_ k: String) -> Int? { f[k].flatMap { Int($0) } }
        func i64(_ k: String) -> Int64? { f[k].flatMap { Int64($0) } }
        func u64(_ k: String) -> UInt64? { f[k].flatMap { UInt64($0) } }
        func b(_ k: String) -> Bool? { f[k].flatMap { Bool($0) } }
        func ids(_ k: String) -> [Int64]? {
            guard let text = f[k] else { return nil }
            if text.isEmpty { return [] }
            let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { Int64($0) }
            return parts.contains(nil) ? nil : parts.compactMap { $0 }
        }
        let event: FarmEvent?
        switch name {
        case "serving": event = s("endpoint").map { .serving(endpoint: $0) }
        case "insecureNoAuth": event = s("endpoint").map { .insecureNoAuth(endpoint: $0) }
        case "coordinatorStopped": event = .coordinatorStopped
        case "keysReloaded": event = .keysReloaded
        case "loopThreadNice":
            guard let n = i("nice"), let a = b("applied") else { return nil }
            event = .loopThreadNice(nice: n, applied: a)
        case "workerRegistered":
            guard let w = s("worker"), let n = i("slots") else { return nil }
            event = .workerRegistered(worker: w, slots: n)
        case "helloRejected": event = s("peer").map { .helloRejected(peer: $0) }
        case "workerDropped":
            guard let w = s("worker"), let c = s("cause").flatMap(WorkerDropCause.init(rawValue:)) else { return nil }
            event = .workerDropped(worker: w, cause: c)
        case "creditBeyondCap": event = s("worker").map { .creditBeyondCap(worker: $0) }
        case "attemptRequeued":
            guard let j = i64("job"), let fr = i("frame"), let a = i64("attempt") else { return nil }
            event = .attemptRequeued(job: j, frame: fr, attempt: a)
        case "staleResult", "frameDone":
            guard let j = i64("job"), let fr = i("frame"), let a = i64("attempt"), let w = s("worker") else { return nil }
            event = name == "frameDone" ? .frameDone(job: j, frame: fr, attempt: a, worker: w)
                : .staleResult(job: j, frame: fr, attempt: a, worker: w)
        case "frameFailed":
            guard let j = i64("job"), let fr = i("frame"), let a = i64("attempt"), let w = s("worker"),
                  let fin = b("final"), let ban = b("workerBanned"), let e = s("error") else { return nil }
            event = .frameFailed(job: j, frame: fr, attempt: a, worker: w, final: fin, workerBanned: ban, error: e)
        case "noWorkerMayTake": event = i64("job").map { .noWorkerMayTake(job: $0) }
        case "frameOutputLost":
            guard let j = i64("job"), let fr = i("frame"), let r = b("requeued"), let why = s("reason") else { return nil }
            event = .frameOutputLost(job: j, frame: fr, requeued: r, reason: why)
        case "jobSubmitted":
            guard let j = i64("job"), let n = i("frames"), let u = i("uploads"), let h = b("modelHeld") else { return nil }
            event = .jobSubmitted(job: j, frames: n, uploads: u, modelHeld: h)
        case "jobQueued": event = i64("job").map { .jobQueued(job: $0) }
        case "jobFailed":
            guard let j = i64("job"), let e = s("error") else { return nil }
            event = .jobFailed(job: j, error: e)
        case "videoFailed":
            guard let j = i64("job"), let e = s("error") else { return nil }
            event = .videoFailed(job: j, error: e)
        case "jobFinished":
            guard let j = i64("job"), let st = s("state").flatMap(JobEnd.init(rawValue:)) else { return nil }
            event = .jobFinished(job: j, state: st)
        case "jobCancelRequested": event = i64("job").map { .jobCancelRequested(job: $0) }
        case "jobOutputsResumed": event = i64("job").map { .jobOutputsResumed(job: $0) }
        case "modelInstalled", "modelUploadFailed", "modelUploadReleased":
            guard let m = s("model"), let j = i64("job") else { return nil }
            event = name == "modelInstalled" ? .modelInstalled(model: m, job: j)
                : name == "modelUploadFailed" ? .modelUploadFailed(model: m, job: j) : .modelUploadReleased(model: m, job: j)
        case "restartAttemptsInFlight": event = i("attempts").map { .restartAttemptsInFlight(attempts: $0) }
        case "restartGraceOver": event = i("requeued").map { .restartGraceOver(requeued: $0) }
        case "messageRejected":
            guard let p = s("peer"), let r = s("reason") else { return nil }
            event = .messageRejected(peer: p, reason: r)
        case "unregisteredMessage":
            guard let p = s("peer"), let m = s("message") else { return nil }
            event = .unregisteredMessage(peer: p, message: m)
        case "peerError":
            guard let p = s("peer"), let c = s("code") else { return nil }
            event = .peerError(peer: p, code: c)
        case "modelRequestRefused":
            guard let w = s("worker"), let r = s("request") else { return nil }
            event = .modelRequestRefused(worker: w, request: r)
        case "workerPhaseChanged":
            guard let w = s("worker"), let ph = s("phase"), let j = i64("job") else { return nil }
            event = .workerPhaseChanged(worker: w, phase: ph, job: j)
        case "workerPhaseRefused":
            guard let w = s("worker"), let r = s("reason") else { return nil }
            event = .workerPhaseRefused(worker: w, reason: r)
        case "workerStarting":
            guard let w = s("worker"), let n = i("slots") else { return nil }
            event = .workerStarting(worker: w, slots: n)
        case "welcomed":
            guard let w = s("worker"), let c = s("coordinator") else { return nil }
            event = .welcomed(worker: w, coordinator: c)
        case "reconnecting": event = s("worker").map { .reconnecting(worker: $0) }
        case "refusedByCoordinator": event = s("worker").map { .refusedByCoordinator(worker: $0) }
        case "workerStopping":
            guard let w = s("worker"), let h = b("handBack") else { return nil }
            event = .workerStopping(worker: w, handBack: h)
        case "handedBack":
            guard let w = s("worker"), let a = ids("attempts") else { return nil }
            event = .handedBack(worker: w, attempts: a)
        case "modelFetching":
            guard let w = s("worker"), let m = s("model") else { return nil }
            event = .modelFetching(worker: w, model: m)
        case "modelFetched":
            guard let w = s("worker"), let m = s("model"), let by = u64("bytes"), let n = i("files") else { return nil }
            event = .modelFetched(worker: w, model: m, bytes: by, files: n)
        case "modelFileCorrupted":
            guard let w = s("worker"), let m = s("model"), let path = s("path"), let g = b("givingUp") else { return nil }
            event = .modelFileCorrupted(worker: w, model: m, path: path, givingUp: g)
        case "stopSignal":
            guard let sig = s("signal"), let a = s("action").flatMap(StopSignalAction.init(rawValue:)) else { return nil }
            event = .stopSignal(signal: sig, action: a)
        case "workerStopped": event = s("worker").map { .workerStopped(worker: $0) }
        default: event = nil
        }
        guard let event else { return nil }
        self = event
    }
}

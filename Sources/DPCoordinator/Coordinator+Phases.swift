// Worker phases (issue 14, "no silent minutes"): a worker's Heartbeat.phase says it is fetching a model
// (bytes of the total), verifying it or preparing a job. The coordinator checks it like every peer input,
// keeps the latest per session (`dp-coord workers`, and per job in `dp-coord status`) and relays it to the
// followers of the job it is for (JobEvent.worker_phase), at most every `relayIntervalMs` per worker
// unless the phase itself changed; a new follower hears the current ones after its snapshot. Hooks: the
// heartbeat case of `onWorkerMessage`, `onFollow`, `jobStatus`, `onWorkers`, and `WorkerSession.phaseState`.
import DPLog
import DPProtocol
import Foundation

/// A session's phase and its relay bookkeeping (one per WorkerSession, owned by the loop thread).
struct WorkerPhaseState {
    /// The latest checked phase (nil: none).
    var phase: FarmWorkerPhase?
    /// When it was last relayed to the job's followers.
    var relayedMs: Int64 = 0
    /// Refused phases of this session: a bounded number of log lines.
    var refusedLog = LogLimiter(linesPerWindow: 10)

    /// A relayed phase event at most this often per worker, unless the kind, model or job changed.
    static let relayIntervalMs: Int64 = 250
    /// A phase longer than this (seconds) is refused as nonsense (a fetch of days is not a phase).
    static let maxSeconds = 30.0 * 24 * 3600
}

extension Coordinator {
    /// The checked form of a worker's phase: nil for "none"; throws (a reason) for a phase that cannot be
    /// right. The job id is kept only for a job the session holds a JobPrep of (otherwise 0: relayed to
    /// nobody); the worker name is the session's.
    func checkedPhase(_ session: WorkerSession, _ p: FarmWorkerPhase) throws(PhaseRefusal) -> FarmWorkerPhase? {
        switch p.kind {
        case .unspecified: return nil
        case .fetchingModel, .verifyingModel, .preparingJob: break
        default: throw PhaseRefusal("unknown phase kind \(p.kind.rawValue)")
        }
        if !p.modelID.isEmpty, !Self.isModelID(p.modelID) {
            throw PhaseRefusal("model id '\(peer: p.modelID, limit: 80)' is not 64 lowercase hex digits")
        }
        guard p.bytesDone <= p.bytesTotal else {
            throw PhaseRefusal("bytes done \(p.bytesDone) over the total \(p.bytesTotal)")
        }
        guard p.bytesTotal <= settings.limits.maxModelUploadBytes else {
            throw PhaseRefusal("total \(p.bytesTotal) bytes over the model size limit \(settings.limits.maxModelUploadBytes)")
        }
        guard p.seconds.isFinite, p.seconds >= 0, p.seconds <= WorkerPhaseState.maxSeconds else {
            throw PhaseRefusal("phase time \(p.seconds) s is not between 0 and \(Int(WorkerPhaseState.maxSeconds)) s")
        }
        var checked = p
        checked.workerName = session.name
        checked.unknownFields = .init()
        if checked.jobID != 0, !session.preps.contains(Int64(truncatingIfNeeded: checked.jobID)) { checked.jobID = 0 }
        return checked
    }

    static func isModelID(_ s: String) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// A Heartbeat's phase (absent = none): checked, kept, relayed to the job's followers.
    func onWorkerPhase(_ session: WorkerSession, _ heartbeat: FarmHeartbeat) {
        let new: FarmWorkerPhase?
        do {
            new = heartbeat.hasPhase ? try checkedPhase(session, heartbeat.phase) : nil
        } catch {
            if let line = session.phaseState.refusedLog.line("worker '\(session.name)': phase refused: \(error.reason)",
                                                             nowMilliseconds: now) {
                log.warning(line, .workerPhaseRefused(worker: session.name, reason: error.reason))
            }
            return  // the previous phase stands
        }
        let old = session.phaseState.phase
        session.phaseState.phase = new
        let changed = old?.kind != new?.kind || old?.jobID != new?.jobID || old?.modelID != new?.modelID
        if changed {
            let job = Int64(truncatingIfNeeded: new?.jobID ?? old?.jobID ?? 0)
            let name = WorkerPhaseInfo.name(new?.kind ?? .unspecified)
            log.debug("worker '\(session.name)': \(new.map { WorkerPhaseInfo($0).summary } ?? "phase ended")",
                     .workerPhaseChanged(worker: session.name, phase: name, job: job), job: job == 0 ? nil : job)
        }
        if let new, new.jobID != 0 {
            guard changed || now - session.phaseState.relayedMs >= WorkerPhaseState.relayIntervalMs else { return }
            session.phaseState.relayedMs = now
            emit(job: Int64(truncatingIfNeeded: new.jobID), .workerPhase(new))
        } else if changed, let old, old.jobID != 0 {
            // The phase ended (or moved off the job): its followers hear "none" for it.
            var ended = FarmWorkerPhase()
            ended.kind = .unspecified
            ended.workerName = session.name
            ended.jobID = old.jobID
            ended.modelID = old.modelID
            ended.bytesDone = old.bytesTotal
            ended.bytesTotal = old.bytesTotal
            session.phaseState.relayedMs = now
            emit(job: Int64(truncatingIfNeeded: old.jobID), .workerPhase(ended))
        }
    }

    /// A new follower of a running job hears the phases workers are in for it right after its snapshot
    /// (a fetch that started before it followed is not silent either).
    func sendWorkerPhases(_ follower: Follower, job: Int64) {
        for phase in workerPhases(job: job) { sendEvent(follower, job: job, .workerPhase(phase)) }
    }

    /// A job's phases in its StatusReply entry: the workers' (fetching, verifying, preparing for it) and,
    /// while it uploads, the bytes received of those declared.
    func addPhases(_ status: inout FarmJobStatus, job: Int64) {
        status.workerPhases = workerPhases(job: job)
        if let (received, total) = uploadBytes(job: job) {
            status.uploadBytesReceived = received
            status.uploadBytesTotal = total
        }
    }

    /// Bytes of `job`'s upload received / declared (nil: not uploading). What is still missing: each
    /// pending input less what arrived of it, and, when this job uploads its model, each file not yet
    /// complete less what arrived of it (saturating: a count can never go below 0 or past the total).
    func uploadBytes(job: Int64) -> (UInt64, UInt64)? {
        guard let upload = uploads[job] else { return nil }
        var missing: UInt64 = 0
        func add(_ n: UInt64) { missing = missing.addingReportingOverflow(n).overflow ? .max : missing + n }
        for (path, file) in upload.pendingInputs {
            let got = upload.received[path] ?? 0
            add(file.size > got ? file.size - got : 0)
        }
        if let model = modelUploads[upload.modelID], model.ownerJob == job {
            for file in model.staging.manifest.files where !model.complete.contains(file.path) {
                let got = model.received[file.path] ?? 0
                add(file.size > got ? file.size - got : 0)
            }
        }
        let total = upload.declaredBytes
        return (total > missing ? total - missing : 0, total)
    }

    /// The phases of connected workers working toward `job` (JobStatus.worker_phases), by worker name.
    func workerPhases(job: Int64) -> [FarmWorkerPhase] {
        sessions.values.compactMap { $0.phaseState.phase }
            .filter { $0.jobID == UInt64(bitPattern: job) && job != 0 }
            .sorted { $0.workerName < $1.workerName }
    }
}

/// Why a worker's phase was refused (logged, bounded; the previous phase stands).
struct PhaseRefusal: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}

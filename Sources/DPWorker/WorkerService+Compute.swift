// The compute side of WorkerService: one thread per frame task. Gets the job's model (cache, or a
// chunked fetch from the coordinator through the I/O thread), prepares the job once, renders with
// per-step progress and a cancel check between steps, and hands the FrameResult to the I/O thread.
import DPFileKit
import DPLog
import DPPipeline
import DPProtocol
import Foundation
import Synchronization

/// One attempt held by the worker. Its mutable state (read by the I/O thread, written by the compute
/// thread rendering it) is behind its own Mutex; the service's lock, when both are held, is taken first.
final class AttemptTask: Sendable {
    let task: FarmFrameTask
    let job: HeldJob
    var attemptID: UInt64 { task.attemptID }
    var jobID: UInt64 { task.jobID }
    var frame: UInt32 { task.frame }

    private struct State {
        var started = false
        var step = 0
        var totalSteps = 0
        var cancelReason: FarmErrorCode?
        var result: FarmFrameResult?
    }
    private let state = Mutex(State())

    /// Taken by a compute thread (false while queued behind another frame).
    var started: Bool {
        get { state.withLock { $0.started } }
        set { state.withLock { $0.started = newValue } }
    }
    var step: Int {
        get { state.withLock { $0.step } }
        set { state.withLock { $0.step = newValue } }
    }
    var totalSteps: Int {
        get { state.withLock { $0.totalSteps } }
        set { state.withLock { $0.totalSteps = newValue } }
    }
    /// Set when the attempt must stop (Cancel, shutdown, not adopted after a reconnect).
    var cancelReason: FarmErrorCode? {
        get { state.withLock { $0.cancelReason } }
        set { state.withLock { $0.cancelReason = newValue } }
    }
    /// Sets the cancel reason unless one is set already.
    func cancel(_ reason: FarmErrorCode) {
        state.withLock { $0.cancelReason = $0.cancelReason ?? reason }
    }
    /// Set once the compute thread finished; sent by the I/O thread when a session is welcomed.
    var result: FarmFrameResult? {
        get { state.withLock { $0.result } }
        set { state.withLock { $0.result = newValue } }
    }

    init(task: FarmFrameTask, job: HeldJob) {
        self.task = task
        self.job = job
    }
}

/// A job prep held by the worker and, once a frame of it ran, its prepared renderer.
final class HeldJob: Sendable {
    let prep: FarmJobPrep
    private let used = Mutex(Date())
    var lastUsed: Date {
        get { used.withLock { $0 } }
        set { used.withLock { $0 = newValue } }
    }

    struct Preparation {
        var prepared: (any PreparedFrameRenderer)?
        var lease: ModelLease?
    }
    /// Held while preparing: the first frame prepares, the others wait and reuse it.
    let preparation = Mutex(Preparation())

    init(prep: FarmJobPrep) { self.prep = prep }
}

/// A model manifest or chunk request waiting for the coordinator's reply.
final class ModelRequest: Sendable {
    let body: FarmEnvelope.OneOf_Body
    let what: String
    private let id = Mutex<UInt64>(0)
    /// Assigned by the I/O thread.
    var requestID: UInt64 {
        get { id.withLock { $0 } }
        set { id.withLock { $0 = newValue } }
    }
    private let outcome = Mutex<Result<FarmEnvelope, any Error>?>(nil)
    /// Signalled once, when the first outcome is set.
    private let answered = DispatchSemaphore(value: 0)

    init(body: FarmEnvelope.OneOf_Body, what: String) {
        self.body = body
        self.what = what
    }

    func matches(_ reply: FarmEnvelope) -> Bool {
        switch (body, reply.body) {
        case let (.modelManifestRequest(r), .modelManifest(m)):
            return r.modelID == m.modelID
        case let (.modelChunkRequest(r), .modelChunk(c)):
            return r.modelID == c.modelID && r.path == c.path && r.offset == c.offset
        default:
            return false
        }
    }

    func complete(_ result: Result<FarmEnvelope, any Error>) {
        let first = outcome.withLock { outcome in
            guard outcome == nil else { return false }
            outcome = result
            return true
        }
        if first { answered.signal() }
    }

    func wait(timeoutSeconds: Double) throws -> FarmEnvelope {
        if answered.wait(timeout: .now() + timeoutSeconds) == .timedOut, outcome.withLock({ $0 == nil }) {
            throw WorkerServiceError.modelUnavailable("no reply to \(what) within \(Int(timeoutSeconds)) s")
        }
        return try outcome.withLock { $0 }!.get()
    }
}

extension WorkerService {
    /// Runs on a compute thread: renders `task` and posts its FrameResult.
    func compute(_ task: AttemptTask) {
        let started = Date()
        var result = FarmFrameResult()
        result.attemptID = task.attemptID
        result.jobID = task.jobID
        result.frame = task.frame
        result.workerName = settings.name
        let label = "job \(task.jobID) frame \(task.frame) (attempt \(task.attemptID))"
        let cancelReason: () -> FarmErrorCode? = { task.cancelReason }
        do {
            let prepared = try preparedRenderer(for: task.job, label: label, cancelReason: cancelReason)
            let total = prepared.totalSteps
            task.totalSteps = total
            // One Progress per interval at most; the steps in between reach the coordinator with the
            // next Progress, a Heartbeat (task.step) or the FrameResult.
            let intervalNs = UInt64(settings.progressIntervalMs) * 1_000_000
            var lastReportNs = DispatchTime.now().uptimeNanoseconds
            let output = try prepared.render(
                frame: Int(task.frame), poseWindow: task.task.poseWindowNpy,
                progress: { [self] step in
                    task.step = step
                    let t = DispatchTime.now().uptimeNanoseconds
                    guard t - lastReportNs >= intervalNs else { return }
                    lastReportNs = t
                    post(.progress(attemptID: task.attemptID, step: step))
                },
                isCancelled: { cancelReason() != nil })
            if let reason = cancelReason() {
                result.error = Self.stopError(reason, label: label, worker: settings.name)
            } else {
                result.png = output.png
                result.pngSha256 = FileDigest.sha256(output.png)
                result.renderSeconds = output.seconds
                shared.withLock { $0.lastFrameSeconds = output.seconds }
            }
        } catch {
            if let reason = cancelReason() {
                result.error = Self.stopError(reason, label: label, worker: settings.name)
            } else if let e = error as? WorkerServiceError, case .modelUnavailable(let why) = e {
                result.error = FarmError(.modelUnavailable, "worker \(settings.name), \(label): model \(task.job.prep.modelID) unavailable: \(why)",
                                         jobID: task.jobID, attemptID: task.attemptID)
            } else {
                result.error = FarmError(.renderFailed, "worker \(settings.name), \(label): \(error)",
                                         jobID: task.jobID, attemptID: task.attemptID)
            }
        }
        if result.renderSeconds == 0 { result.renderSeconds = Date().timeIntervalSince(started) }
        if result.hasError {
            log.warning("worker \(settings.name): \(label) ended: \(result.error.code) \(result.error.message)")
        }
        task.result = result
        post(.finished(attemptID: task.attemptID))
    }

    static func stopError(_ reason: FarmErrorCode, label: String, worker: String) -> FarmError {
        let message = reason == .shuttingDown
            ? "worker \(worker) is shutting down; \(label) handed back"
            : "\(label) cancelled on worker \(worker)"
        return FarmError(reason, message)
    }

    /// The job's prepared renderer, preparing it (and getting its model) on first use.
    private func preparedRenderer(for job: HeldJob, label: String,
                                  cancelReason: () -> FarmErrorCode?) throws -> PreparedFrameRenderer {
        try job.preparation.withLock { preparation in
            if let prepared = preparation.prepared { return prepared }
            let lease = try acquireModel(job.prep.modelID, job: job.prep.jobID, cancelled: { cancelReason() != nil })
            let spec = try Self.renderSpec(job.prep)
            // A phase the coordinator relays to the job's followers (loading weights takes a while).
            let phase = beginPhase(.preparingJob, model: job.prep.modelID, job: job.prep.jobID)
            defer { endPhase(phase) }
            let prepared = try renderer.prepare(job: spec, modelDirectory: lease.directory)
            preparation.lease = lease
            preparation.prepared = prepared
            return prepared
        }
    }

    /// The renderer's view of a JobPrep: its render request, checked as the coordinator checked it at submit
    /// (the noise .npy is checked against the model's latent shape when the job is prepared).
    static func renderSpec(_ prep: FarmJobPrep) throws -> JobRenderSpec {
        let request: RenderRequest
        do { request = try RenderRequest(wire: prep.settings) } catch {
            throw FrameRenderError("job \(prep.jobID): \(error)")
        }
        return JobRenderSpec(jobID: String(prep.jobID), modelID: prep.modelID, subjectPNG: prep.subjectPng,
                             request: request)
    }

    // MARK: models

    /// A lease on `modelID`, fetched from the coordinator first when the cache lacks it.
    /// - job: the job that needs it (its followers see the fetch's progress; 0 = none).
    func acquireModel(_ modelID: String, job: UInt64 = 0, cancelled: () -> Bool) throws -> ModelLease {
        if let lease = try cache.lease(modelID) { return lease }
        return try fetchLock.withLock { _ in try fetchModel(modelID, job: job, cancelled: cancelled) }
    }

    /// `acquireModel`'s fetch, holding `fetchLock`.
    private func fetchModel(_ modelID: String, job: UInt64, cancelled: () -> Bool) throws -> ModelLease {
        if let lease = try cache.lease(modelID) { return lease }  // fetched while we waited
        log.notice("worker \(settings.name): model \(modelID) not cached; fetching it from the coordinator",
            .modelFetching(worker: settings.name, model: modelID))
        let started = Date()
        var manifestRequest = FarmModelManifestRequest()
        manifestRequest.modelID = modelID
        let reply = try request(.modelManifestRequest(manifestRequest), what: "manifest request for model \(modelID)")
        guard case .modelManifest(let wire)? = reply.body else {
            throw WorkerServiceError.modelUnavailable("expected a model_manifest for \(modelID), got \(reply.bodyName)")
        }
        for file in wire.files {
            if let problem = RelativePath.problem(file.path) {
                throw WorkerServiceError.modelUnavailable("model \(modelID): manifest path '\(file.path)' refused: \(problem)")
            }
        }
        let manifest = ModelManifest(wire: wire)
        guard manifest.modelID == modelID else {
            throw WorkerServiceError.modelUnavailable("asked for model \(modelID), the coordinator sent manifest \(manifest.modelID)")
        }
        do { try manifest.validate() } catch {
            throw WorkerServiceError.modelUnavailable("model \(modelID): bad manifest from the coordinator: \(error)")
        }
        let chunkBytes = shared.withLock { $0.modelChunkBytes }
        let fetcher = ModelFetcher(chunkBytes: chunkBytes, maxAttemptsPerFile: 3, onCorrupted: { [log, settings] bad in
            log.warning("worker \(settings.name): \(bad)", .modelFileCorrupted(worker: settings.name, model: bad.modelID,
                                                                              path: bad.path, givingUp: bad.givingUp))
        })
        // The fetch's phases (bytes of the total, then the check of the whole folder) for the coordinator.
        var phase = beginPhase(.fetchingModel, model: modelID, job: job, bytesTotal: manifest.totalBytes)
        defer { endPhase(phase) }
        let lease = try fetcher.fetch(manifest, into: cache, progress: { [self] done, total in
            updatePhase(phase, bytesDone: done, bytesTotal: total)
        }, verifying: { [self] in
            // Every byte is fetched: the phase's bytes are the model's, checked once more from disk.
            phase = beginPhase(.verifyingModel, model: modelID, job: job, bytesDone: manifest.totalBytes,
                               bytesTotal: manifest.totalBytes)
        }) { path, offset, length in
            if cancelled() { throw WorkerServiceError.modelUnavailable("fetch of model \(modelID) stopped: attempt cancelled") }
            var r = FarmModelChunkRequest()
            r.modelID = modelID
            r.path = path
            r.offset = offset
            r.length = UInt32(length)
            let reply = try request(.modelChunkRequest(r), what: "chunk '\(path)' @\(offset)+\(length) of model \(modelID)")
            guard case .modelChunk(let chunk)? = reply.body else {
                throw WorkerServiceError.modelUnavailable("expected a model_chunk for '\(path)' of \(modelID), got \(reply.bodyName)")
            }
            return chunk.data
        }
        log.notice(String(format: "worker %@: model %@ fetched and verified (%llu bytes, %d files) in %.2f s",
                   settings.name, modelID, manifest.totalBytes, manifest.files.count, Date().timeIntervalSince(started)),
                       .modelFetched(worker: settings.name, model: modelID, bytes: manifest.totalBytes, files: manifest.files.count))
        return lease
    }

    private func request(_ body: FarmEnvelope.OneOf_Body, what: String) throws -> FarmEnvelope {
        let r = ModelRequest(body: body, what: what)
        post(.modelRequest(r))
        return try r.wait(timeoutSeconds: settings.modelRequestTimeoutSeconds)
    }
}

/// What the worker tells the coordinator about its machine (Hello.host).
enum WorkerHost {
    static let version = "dp-worker 0.1 (dpfarm.v\(FarmProtocol.version))"

    static func info() -> FarmHostInfo {
        var host = FarmHostInfo()
        let p = ProcessInfo.processInfo
        host.hostname = p.hostName
        var uts = utsname()
        if uname(&uts) == 0 {
            func field<T>(_ value: T) -> String {
                withUnsafeBytes(of: value) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            }
            host.os = "\(field(uts.sysname)) \(field(uts.release)) \(field(uts.machine))"
        }
        host.logicalCores = UInt32(p.activeProcessorCount)
        host.memoryBytes = p.physicalMemory
        if let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) {
            for line in cpuinfo.split(separator: "\n") {
                let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                guard parts.count == 2 else { continue }
                if parts[0] == "model name", host.cpuModel.isEmpty { host.cpuModel = parts[1] }
                if parts[0] == "flags", host.cpuFeatures.isEmpty {
                    let flags = Set(parts[1].split(separator: " ").map(String.init))
                    host.cpuFeatures = ["avx", "avx2", "fma", "f16c", "avx512f"].filter(flags.contains)
                }
            }
        }
        host.workerVersion = version
        return host
    }
}

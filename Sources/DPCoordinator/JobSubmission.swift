import DPFileKit
import DPProtocol
import Foundation

/// A job as `dp-coord submit` hands it to `FarmClient.submit`.
public struct JobSubmission: Sendable {
    public var name: String
    /// The model folder (read by the client; its id is `ModelManifest.compute(directory:)`'s).
    public var modelDirectory: URL
    public var subjectPNG: Data
    /// Every pose frame of the sequence: frame number -> .npy bytes (window neighbours come from here).
    public var poses: [Int: Data]
    /// Sampling settings, noise, frames (a subset of `poses`' keys; empty = every pose) and their order.
    public var request: RenderRequest
    public var priority: Int
    /// Absolute path on the coordinator's machine (relative = under its state folder).
    public var outputDirectory: String
    public var videoPath: String?
    public var fps: Int

    public init(name: String, modelDirectory: URL, subjectPNG: Data, poses: [Int: Data],
                request: RenderRequest = RenderRequest(), priority: Int = 0, outputDirectory: String,
                videoPath: String? = nil, fps: Int = 30) {
        self.name = name
        self.modelDirectory = modelDirectory
        self.subjectPNG = subjectPNG
        self.poses = poses
        self.request = request
        self.priority = priority
        self.outputDirectory = outputDirectory
        self.videoPath = videoPath
        self.fps = fps
    }
}

/// One event of a followed job (`FarmClient.follow`). Named like the contract; inside code that
/// also imports DPProtocol, the wire message is `DPProtocol.FarmJobEvent`.
public enum FarmJobEvent: Sendable {
    case snapshot(JobStatusInfo)
    case frameDone(frame: Int, attempt: Int64, worker: String, seconds: Double, png: Data?)
    case frameProgress(frame: Int, worker: String, step: Int, total: Int)
    case frameFailed(frame: Int, error: String)
    /// Not a frame's fate: e.g. no connected worker may take the job any more.
    case notice(String)
    /// A worker's model fetch / verification / job preparation for this job (`phase` "none": it ended).
    case workerPhase(WorkerPhaseInfo)
    case finished(state: String, video: String?)
}

/// A job's state and counts (`dp-coord status`).
public struct JobStatusInfo: Sendable, Codable, Equatable {
    public var id: Int64
    public var name: String
    /// "uploading", "queued", "running", "completed", "failed", "cancelled".
    public var state: String
    public var modelID: String
    public var priority: Int
    public var order: String
    public var total: Int
    public var done: Int
    public var failed: Int
    public var inFlight: Int
    public var queued: Int
    public var cancelled: Int
    public var outputDirectory: String
    /// The written video, once written.
    public var video: String?
    /// Frames done per worker (from the status reply; `FarmClient.follow` adds its FrameDone events).
    public var perWorker: [String: Int]
    /// Why a failed job failed.
    public var error: String?
    public var renderSeconds: Double
    public var createdUnixMs: UInt64
    public var updatedUnixMs: UInt64
    /// Connected workers in a long phase (model fetch, verification, preparation) for this job.
    public var workerPhases: [WorkerPhaseInfo] = []
    /// While the job uploads: bytes the coordinator received of those declared (nil otherwise).
    public var uploadBytesReceived: UInt64?
    public var uploadBytesTotal: UInt64?

    public init(id: Int64, name: String, state: String, modelID: String = "", priority: Int = 0,
                order: String = "frame", total: Int = 0, done: Int = 0, failed: Int = 0, inFlight: Int = 0,
                queued: Int = 0, cancelled: Int = 0, outputDirectory: String = "", video: String? = nil,
                perWorker: [String: Int] = [:], error: String? = nil, renderSeconds: Double = 0,
                createdUnixMs: UInt64 = 0, updatedUnixMs: UInt64 = 0) {
        self.id = id
        self.name = name
        self.state = state
        self.modelID = modelID
        self.priority = priority
        self.order = order
        self.total = total
        self.done = done
        self.failed = failed
        self.inFlight = inFlight
        self.queued = queued
        self.cancelled = cancelled
        self.outputDirectory = outputDirectory
        self.video = video
        self.perWorker = perWorker
        self.error = error
        self.renderSeconds = renderSeconds
        self.createdUnixMs = createdUnixMs
        self.updatedUnixMs = updatedUnixMs
    }
}

/// A worker as the coordinator knows it (`dp-coord workers`).
public struct WorkerInfo: Sendable, Codable, Equatable {
    public var name: String
    public var host: String
    public var slots: Int
    public var busy: Int
    public var connected: Bool
    public var lastSeenSecondsAgo: Double
    public var modelIDs: [String]
    public var framesDone: Int
    public var cores: Int
    public var cpuModel: String
    /// Its long phase (model fetch, verification, job preparation), if in one.
    public var phase: WorkerPhaseInfo?

    public init(name: String, host: String, slots: Int, busy: Int, connected: Bool, lastSeenSecondsAgo: Double,
                modelIDs: [String], framesDone: Int, cores: Int = 0, cpuModel: String = "") {
        self.name = name
        self.host = host
        self.slots = slots
        self.busy = busy
        self.connected = connected
        self.lastSeenSecondsAgo = lastSeenSecondsAgo
        self.modelIDs = modelIDs
        self.framesDone = framesDone
        self.cores = cores
        self.cpuModel = cpuModel
    }
}

/// Wire names of job states and orders.
enum FarmNames {
    static func state(_ s: FarmJobState) -> String {
        switch s {
        case .uploading: return "uploading"
        case .queued: return "queued"
        case .running: return "running"
        case .completed: return "completed"
        case .failed: return "failed"
        case .cancelled: return "cancelled"
        default: return "unknown"
        }
    }

    static func order(_ o: FarmOrderMode) -> String { o == .preview ? "preview" : "frame" }
}

extension JobStatusInfo {
    init(_ s: FarmJobStatus) {
        self.init(id: Int64(s.jobID), name: s.name, state: FarmNames.state(s.state), modelID: s.modelID,
                  priority: Int(s.priority), order: FarmNames.order(s.order), total: Int(s.counts.total),
                  done: Int(s.counts.done), failed: Int(s.counts.failed), inFlight: Int(s.counts.inFlight),
                  queued: Int(s.counts.queued), cancelled: Int(s.counts.cancelled), outputDirectory: s.outputDir,
                  video: s.videoPath.isEmpty ? nil : s.videoPath,
                  perWorker: Dictionary(s.framesByWorker.map { ($0.worker, Int($0.frames)) }, uniquingKeysWith: +),
                  error: s.error.isEmpty ? nil : s.error,
                  renderSeconds: s.renderSeconds, createdUnixMs: s.createdUnixMs, updatedUnixMs: s.updatedUnixMs)
        workerPhases = s.workerPhases.map(WorkerPhaseInfo.init)
        if s.uploadBytesTotal > 0 {
            uploadBytesReceived = min(s.uploadBytesReceived, s.uploadBytesTotal)
            uploadBytesTotal = s.uploadBytesTotal
        }
    }
}

extension WorkerInfo {
    init(_ w: FarmWorkerStatus, nowMs: UInt64) {
        let ago = w.lastSeenUnixMs == 0 || nowMs < w.lastSeenUnixMs ? 0 : Double(nowMs - w.lastSeenUnixMs) / 1000
        self.init(name: w.name, host: w.host.hostname, slots: Int(w.slots), busy: Int(w.busy), connected: w.connected,
                  lastSeenSecondsAgo: ago, modelIDs: w.cachedModelIds, framesDone: Int(w.framesDone),
                  cores: Int(w.host.logicalCores), cpuModel: w.host.cpuModel)
        phase = w.hasPhase ? WorkerPhaseInfo(w.phase) : nil
    }
}

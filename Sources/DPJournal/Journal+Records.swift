import Foundation

public enum JobState: String, Sendable, CaseIterable {
    case uploading, queued, running, completed, failed, cancelled
    /// Nothing more will happen to the job's frames.
    public var isFinished: Bool { self == .completed || self == .failed || self == .cancelled }
}

public enum FrameState: String, Sendable, CaseIterable {
    case queued, dispatched, done, failed, cancelled
}

/// How an attempt ended. `stale`: its result arrived after it stopped being the frame's current
/// attempt (recorded, never applied). `lost`: its worker died/disconnected/stalled or handed it back.
public enum AttemptResult: String, Sendable, CaseIterable {
    case ok, failed, stale, lost, cancelled
}

public enum JournalError: Error, CustomStringConvertible, Equatable {
    case unknownJob(Int64)
    case unknownFrame(job: Int64, frame: Int)
    case unknownAttempt(Int64)
    case notDispatchable(job: Int64, frame: Int, reason: String)
    case invalidJob(String)
    case schemaMismatch(path: String, String)

    public var description: String {
        switch self {
        case .unknownJob(let id): return "journal: no job \(id)"
        case let .unknownFrame(job, frame): return "journal: job \(job) has no frame \(frame)"
        case .unknownAttempt(let id): return "journal: no attempt \(id)"
        case let .notDispatchable(job, frame, reason): return "journal: job \(job) frame \(frame) cannot be dispatched: \(reason)"
        case .invalidJob(let why): return "journal: invalid job: \(why)"
        case let .schemaMismatch(path, why): return "journal \(path): \(why)"
        }
    }
}

/// What `createJob` needs.
public struct NewJob: Sendable {
    public var name: String
    public var spec: Data
    public var modelID: String
    public var priority: Int
    public var order: DispatchOrder
    public var outputDir: String
    public var videoPath: String?
    public var videoFPS: Int
    /// Pose frame numbers to render (distinct, >= 0; any order).
    public var frames: [Int]
    /// `.uploading` while the coordinator still waits for uploads (not dispatched until `markJobQueued`).
    public var initialState: JobState
    /// The submitting client's public key (Z85); nil: submitted without authentication.
    public var ownerKey: String?

    public init(name: String = "", spec: Data, modelID: String, priority: Int = 0, order: DispatchOrder = .frame,
                outputDir: String, videoPath: String? = nil, videoFPS: Int = 30, frames: [Int],
                initialState: JobState = .queued, ownerKey: String? = nil) {
        self.ownerKey = ownerKey
        self.name = name
        self.spec = spec
        self.modelID = modelID
        self.priority = priority
        self.order = order
        self.outputDir = outputDir
        self.videoPath = videoPath
        self.videoFPS = videoFPS
        self.frames = frames
        self.initialState = initialState
    }
}

public struct JobRecord: Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var spec: Data
    public var modelID: String
    public var priority: Int
    public var order: DispatchOrder
    public var state: JobState
    public var outputDir: String
    public var videoPath: String?
    public var videoFPS: Int
    public var videoWritten: Bool
    /// A finished job's final manifest.json (and video, if asked for) are written (migration 3).
    public var outputsFinal: Bool
    public var framesTotal: Int
    public var framesDone: Int
    public var framesFailed: Int
    public var error: String?
    public var createdAtMs: Int64
    public var updatedAtMs: Int64
    public var finishedAtMs: Int64?
    /// The submitting client's public key (migration 5); nil: none recorded (insecure mode or older journal).
    public var ownerKey: String?
}

public struct FrameRecord: Sendable, Equatable {
    public var jobID: Int64
    public var frame: Int
    public var dispatchRank: Int
    public var state: FrameState
    public var currentAttemptID: Int64?
    /// Distinct workers this frame failed on.
    public var failures: Int
    public var outputSHA256: String?
    public var outputSize: Int?
    public var renderSeconds: Double?
    public var worker: String?
    public var doneAttemptID: Int64?
    public var updatedAtMs: Int64
}

public struct AttemptRecord: Sendable, Equatable {
    public var id: Int64
    public var jobID: Int64
    public var frame: Int
    public var worker: String
    /// nil while running.
    public var result: AttemptResult?
    public var startedAtMs: Int64
    public var finishedAtMs: Int64?
    public var renderSeconds: Double?
    public var error: String?
    public var isRunning: Bool { result == nil }
}

/// A frame ready to go out (from `nextFrames`).
public struct DispatchCandidate: Sendable, Equatable {
    public var jobID: Int64
    public var frame: Int
    public var modelID: String
    public var priority: Int
    /// The job's state when the candidate was read (queued or running).
    public var jobState: JobState
}

/// What the coordinator stored for an accepted frame.
public struct FrameOutput: Sendable, Equatable {
    public var sha256: String
    public var size: Int
    public var renderSeconds: Double

    public init(sha256: String, size: Int, renderSeconds: Double) {
        self.sha256 = sha256
        self.size = size
        self.renderSeconds = renderSeconds
    }
}

/// What a result/failure/loss did.
public struct AttemptOutcome: Sendable, Equatable {
    /// false: the attempt was no longer current; it was recorded and nothing else changed.
    public var applied: Bool
    public var attemptID: Int64
    public var jobID: Int64
    public var frame: Int
    public var frameState: FrameState
    public var jobState: JobState
    /// This change finished the job (all frames done/failed): write the video now if asked for.
    public var jobFinished: Bool
    /// The failing worker reached its failure budget for this job.
    public var workerBannedFromJob: Bool
    /// Why it was not applied (when `applied` is false).
    public var staleReason: String?
}

public struct JobProgress: Sendable, Equatable {
    public var total = 0
    public var queued = 0
    public var dispatched = 0
    public var done = 0
    public var failed = 0
    public var cancelled = 0
    /// Sum over done frames.
    public var renderSeconds = 0.0
}

public struct WorkerRecord: Sendable, Equatable {
    public var name: String
    public var host: String
    public var slots: Int
    public var threads: Int
    public var framesDone: Int
    public var framesFailed: Int
    public var firstSeenMs: Int64
    public var lastSeenMs: Int64
    /// The public key the name was last registered with (migration 5); nil: none (insecure mode).
    public var key: String?
}

public struct ModelFileRecord: Codable, Sendable, Equatable {
    public var path: String
    public var size: Int64
    public var sha256: String
    public init(path: String, size: Int64, sha256: String) {
        self.path = path
        self.size = size
        self.sha256 = sha256
    }
}

public struct ModelRecord: Sendable, Equatable {
    public var id: String
    public var directory: String
    public var files: [ModelFileRecord]
    public var totalBytes: Int64
    public var addedAtMs: Int64
    public var lastUsedMs: Int64
}

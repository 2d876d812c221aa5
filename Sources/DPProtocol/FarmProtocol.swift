// The farm protocol's constants, in one place (the zguide Majordomo habit).
// The messages themselves are generated from Protos/dpfarm/v1/farm.proto into dpfarm/v1/farm.pb.swift;
// the message flow is described in Sources/DPCoordinator/DESIGN.md.

public enum FarmProtocol {
    /// The protocol version every Envelope carries. Bump it (and the proto package) on any
    /// incompatible change; a peer with another version is refused with `UNSUPPORTED_VERSION`.
    public static let version: UInt32 = 1

    /// Largest encoded Envelope a peer accepts by default (64 MiB). Sockets set ZMQ_MAXMSGSIZE to
    /// this (plus a little for the routing frame) so an oversized message drops the connection
    /// before it is buffered, and `FarmEnvelope.decode` re-checks it.
    public static let defaultMaxMessageBytes = 64 << 20

    /// Preferred size of one model/upload chunk (1 MiB); always far below the message limit.
    public static let defaultChunkBytes = 1 << 20

    /// Heartbeat interval: each side sends a Heartbeat at least this often (Welcome carries the
    /// coordinator's value).
    public static let defaultHeartbeatIntervalMilliseconds: UInt32 = 1000

    /// A peer that sent nothing for this many heartbeat intervals is dead.
    public static let defaultHeartbeatLiveness: UInt32 = 5

    /// Poses per FrameTask: frame n uses poses n-2 ... n+2 (docs/dreampose-inference.md).
    public static let defaultPoseWindow = 5

    /// The failure budgets of the farm issue: a frame is given up after failing on this many
    /// different workers; a worker that fails this many frames of a job gets no more of it.
    public static let maxFailedWorkersPerFrame = 3
    public static let maxFailedFramesPerWorkerPerJob = 3
}

/// Hard limits on what a peer may send (issue 12, item 5). Every string and list a peer hands the
/// coordinator is checked against these before it is stored, logged or answered; a message over a
/// limit is refused with BAD_REQUEST naming the field, the limit and what arrived. The table with
/// the defaults is in Sources/DPCoordinator/DESIGN.md ("Limits"). `CoordinatorSettings.limits`
/// holds the coordinator's copy (tests lower them).
public struct FarmLimits: Sendable, Equatable {
    /// Worker names (Hello), job names (SubmitJob), in UTF-8 bytes.
    public var maxNameBytes = 128
    /// Each HostInfo string (hostname, os, cpu model, version, each cpu feature), in UTF-8 bytes.
    public var maxHostFieldBytes = 256
    /// HostInfo.cpu_features entries.
    public var maxCPUFeatures = 64
    /// Hello.cached_model_ids entries (each must be a model id, 64 hex digits).
    public var maxCachedModels = 256
    /// Paths a peer sends (job output folder, video path, input and model file paths), UTF-8 bytes.
    public var maxPathBytes = 1024
    /// Error messages from a worker (FrameResult.error, Error): longer ones are cut to this.
    public var maxErrorMessageBytes = 4096
    /// Hello.slots.
    public var maxSlots = 256
    /// Prefetch a worker may ask credit for, per slot (the worker's own cap is 8): a worker's
    /// credit is capped at slots x (1 + this); credit beyond it is ignored (logged once per Hello).
    public var maxPrefetchPerSlot = 8
    /// Frames (and poses) of one job.
    public var maxFramesPerJob = 100_000
    /// Model files in one manifest.
    public var maxModelFiles = 4096
    /// Jobs uploading at once, in all (each holds temp files and a journal row).
    public var maxConcurrentUploads = 16
    /// Jobs uploading at once from one connection.
    public var maxConcurrentUploadsPerClient = 4
    /// Bytes the uploads of one client connection may declare at once (inputs and models).
    public var maxUploadBytesPerClient: UInt64 = 64 << 30
    /// Bytes one model upload may declare (sum of its manifest's file sizes).
    public var maxModelUploadBytes: UInt64 = 64 << 30
    /// Bytes one job's inputs may declare (subject + poses + noise).
    public var maxInputBytesPerJob: UInt64 = 16 << 30
    /// An upload that receives no chunk for this long is dropped and its job failed.
    public var uploadIdleSeconds: Double = 300
    /// Jobs per StatusReply for "every job" (the newest); when more exist, the reply's last entry is a
    /// marker (job id 0) whose error says how many were left out.
    public var maxStatusJobs = 500
    /// Workers in a WorkersReply that are not connected (the most recently seen); connected ones are
    /// always listed. When more are recorded, the last entry is a marker named "(truncated: N ...)".
    public var maxStatusWorkers = 500
    /// Followers of one job (each gets every event of it), and follow streams of one connection.
    public var maxFollowersPerJob = 64
    public var maxFollowsPerClient = 64
    /// Bytes the coordinator may have sent one connection beyond what the peer acknowledged reading
    /// (Envelope.ack; DESIGN.md, "Bytes queued per peer"). A follow event over it drops that follow
    /// stream; any other message cuts the peer off (a worker's session ends) until it acks. At least
    /// the largest message the coordinator sends (a model chunk plus 64 KiB; checked at start-up).
    public var maxQueuedBytesPerPeer = 64 << 20
    /// Messages the coordinator may have sent one connection beyond its acknowledged read, likewise.
    public var maxQueuedMessagesPerPeer = 4096

    public init() {}
}

extension FarmProtocol {
    /// The limits every peer is held to unless the coordinator is configured otherwise.
    public static let defaultLimits = FarmLimits()
}

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

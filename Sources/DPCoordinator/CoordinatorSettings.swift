import DPProtocol
import Foundation

/// The coordinator's named settings (`dp-coord serve` flags), with the farm issue's defaults.
public struct CoordinatorSettings: Sendable {
    /// ROUTER endpoint to bind; "tcp://127.0.0.1:*" picks a free port (read `Coordinator.endpoint`).
    public var bind: String
    /// Holds journal.sqlite, models/ and inputs/ (and, by default, the output root).
    public var stateDirectory: URL
    /// Every job's output folder and video live inside this folder (`--output-root`; nil = 
    /// `<state>/outputs`). A job names them relative to it; absolute paths, `..`, empty components
    /// and anything that would land in the state's own files are refused at submit, and files are
    /// opened beneath it without following symbolic links (DESIGN.md, "Output confinement").
    public var outputRoot: URL? = nil
    /// The embedded farm of `dp-coord submit` (no `--coordinator`: the operator's own machine, one
    /// in-process client): absolute output folders and video paths are taken as given, as before
    /// confinement. Never set by `dp-coord serve`.
    public var allowLocalOutputPaths = false
    /// Hard limits on what peers may send (DESIGN.md, "Limits").
    public var limits: FarmLimits = FarmProtocol.defaultLimits
    /// Each side sends a Heartbeat at least this often (sent to workers in Welcome).
    public var heartbeatIntervalMs: Int = Int(FarmProtocol.defaultHeartbeatIntervalMilliseconds)
    /// A worker that sent nothing for this many intervals is dead; its attempts are requeued.
    public var heartbeatLiveness: Int = Int(FarmProtocol.defaultHeartbeatLiveness)
    /// An attempt without step progress for this long is stalled: requeued and cancelled on its worker.
    public var stallTimeoutSeconds: Double = 600
    /// After start-up, how long reconnecting workers may re-adopt their attempts before every other
    /// in-flight attempt of the journal is requeued.
    public var restartGraceSeconds: Double = 5
    /// A frame fails after failing on this many different workers.
    public var maxFailedWorkersPerFrame: Int = FarmProtocol.maxFailedWorkersPerFrame
    /// A worker that fails this many frames of a job gets no more frames of it.
    public var maxFailedFramesPerWorkerJob: Int = FarmProtocol.maxFailedFramesPerWorkerPerJob
    /// ffmpeg executable (a path, or a name looked up in PATH) for job videos.
    public var ffmpegPath: String = "ffmpeg"
    /// Largest Envelope accepted from a peer; bigger ones are refused with TOO_LARGE (and far bigger
    /// ones drop the peer's connection at the socket, see `Coordinator`).
    public var maxMessageBytes: Int = FarmProtocol.defaultMaxMessageBytes
    /// Model chunk size offered to workers in Welcome.
    public var modelChunkBytes: Int = FarmProtocol.defaultChunkBytes
    /// Group commit: a loop turn (one journal commit, then its messages) starts at most this long
    /// after the previous one started; messages arriving meanwhile wait in the socket and are handled
    /// together. A quiet farm sees no delay (the previous turn is long past); a busy one commits
    /// once per ~this interval instead of once per message or two. Adds at most this much to a
    /// dispatch's latency, which prefetch hides for short frames. 0 = no pause.
    public var minTurnIntervalMicroseconds: Int = 500
    /// A loop turn stops reading messages once it has run this long; the rest wait in the socket for
    /// the next turn. Every message a turn sends waits for its commit, so after a stall (a backlog of
    /// results) one long turn would hold every new attempt back until it had handled them all; short
    /// turns send their dispatches out as they go. 0 = no limit (only the 1024-message cap).
    public var maxTurnMicroseconds: Int = 2000
    /// The loop thread's nice value (nil: leave it as inherited). On a machine it shares with busy
    /// threads (a co-located dp-worker's BLAS, or the farm benchmark's simulated workers), a
    /// negative value keeps dispatch and heartbeats prompt; lowering it needs CAP_SYS_NICE (root,
    /// or systemd's `Nice=`, which covers the whole process). Refused: logged, and the loop runs on.
    public var loopThreadNice: Int? = nil
    /// Who may connect and what each key may do (Auth.swift). `.insecureNoAuth` (the default here,
    /// for in-process tests about other things) admits anyone with every role; `dp-coord serve`
    /// refuses to start without keys unless told `--insecure-no-auth`.
    public var auth: CoordinatorAuth = .insecureNoAuth

    /// `outputRoot`, or `<state>/outputs` when it is not set.
    public var resolvedOutputRoot: URL {
        (outputRoot ?? stateDirectory.appendingPathComponent("outputs", isDirectory: true)).standardizedFileURL
    }

    public init(bind: String, stateDirectory: URL) {
        self.bind = bind
        self.stateDirectory = stateDirectory
    }
}

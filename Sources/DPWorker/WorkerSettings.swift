// The settings of a farm worker (`dp-worker --connect ...`), with their documented defaults.
import DPProtocol
import DPTransport
import Foundation

public struct WorkerSettings: Sendable {
    /// The coordinator's endpoint, e.g. "tcp://render-host:5555".
    public var connect: String
    /// Unique per worker: the coordinator's journal key. Default `WorkerSettings.defaultName`
    /// (hostname-pid).
    public var name: String
    /// Frames rendered at once (each on its own compute thread).
    public var slots: Int = 1
    /// The on-disk model cache (`--cache`); default `WorkerSettings.defaultCacheDirectory`
    /// (~/.cache/dp-farm/models).
    public var cacheDirectory: URL
    /// Upper bound on the bytes of cached model files (least recently used evicted), 20 GiB.
    public var cacheBytes: Int64 = 20 << 30
    /// Engine threads per frame (`--threads`); nil = the renderer's default. Reported in Hello.
    public var threads: Int?
    /// Heartbeat interval and liveness used until the coordinator's Welcome says otherwise
    /// (Welcome's values win once a session is up).
    public var heartbeatIntervalMs: Int = Int(FarmProtocol.defaultHeartbeatIntervalMilliseconds)
    public var heartbeatLiveness: Int = Int(FarmProtocol.defaultHeartbeatLiveness)
    /// Reconnect backoff: the first wait after a lost or unanswered session, doubled per failed
    /// try up to the maximum; reset by a Welcome.
    public var reconnectInitialMs: Int = 250
    public var reconnectMaxMs: Int = 10_000
    /// Largest Envelope accepted from the coordinator (ZMQ_MAXMSGSIZE and decode limit).
    public var maxMessageBytes: Int = FarmProtocol.defaultMaxMessageBytes
    /// Job preps kept while they hold no attempt (least recently used dropped first).
    public var maxIdleJobPreps: Int = 4
    /// How long a model manifest/chunk request may wait for its reply before the fetch fails
    /// (MODEL_UNAVAILABLE). Requests are re-sent after a reconnect.
    public var modelRequestTimeoutSeconds: Double = 120
    /// Stack size of each compute thread (the engine's recursion is shallow; its buffers are heap).
    public var computeThreadStackBytes: Int = 16 << 20
    /// Progress is sent at most this often per attempt (default 100 ms): a step that
    /// ends sooner after the attempt started or after its last Progress is folded into the next
    /// Progress, Heartbeat or the FrameResult. A DreamPose step takes seconds, so every real step is
    /// reported; only sub-100 ms steps (tiny models, test renderers) are coalesced. 0 = every step.
    public var progressIntervalMs: Int = 100
    /// Prefetch: while this worker's last frame took less than `prefetchBelowSeconds` (default 1 s),
    /// each slot keeps about `prefetchWindowSeconds` (default 10 ms) of frames queued on the worker
    /// - at least 1, at most `maxPrefetchPerSlot` (8) - so a freed slot starts its next frame at
    /// once and the round trip to the coordinator (well under a millisecond on an idle network, a
    /// few on a loaded machine) never leaves it idle. Longer frames are asked for when the slot is
    /// free: a frame queued behind a long one would wait while another worker may be idle at the
    /// end of a job. `prefetchBelowSeconds` 0 = never prefetch.
    public var prefetchBelowSeconds: Double = 1.0
    public var prefetchWindowSeconds: Double = 0.010
    public var maxPrefetchPerSlot: Int = 8
    /// CURVE: this worker's key pair and the coordinator's pinned public key (`--key`,
    /// `--server-key`); nil = no CURVE (only a coordinator run with `--insecure-no-auth` accepts that).
    public var curve: CurveClientKeys?

    /// Frames queued per slot beyond the one rendering, after a frame of `lastFrameSeconds`
    /// (nil: none rendered yet, so nothing is known and nothing prefetched).
    public func prefetchDepth(lastFrameSeconds: Double?) -> Int {
        guard let last = lastFrameSeconds, last < prefetchBelowSeconds else { return 0 }
        guard last > 0 else { return maxPrefetchPerSlot }
        return min(maxPrefetchPerSlot, max(1, Int((prefetchWindowSeconds / last).rounded(.up))))
    }

    public init(connect: String, name: String, cacheDirectory: URL) {
        self.connect = connect
        self.name = name
        self.cacheDirectory = cacheDirectory
    }

    /// "hostname-pid".
    public static var defaultName: String {
        "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
    }

    /// ~/.cache/dp-farm/models (XDG_CACHE_HOME respected).
    public static var defaultCacheDirectory: URL {
        let env = ProcessInfo.processInfo.environment
        let base: URL
        if let xdg = env["XDG_CACHE_HOME"], !xdg.isEmpty {
            base = URL(fileURLWithPath: xdg, isDirectory: true)
        } else {
            base = FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache", isDirectory: true)
        }
        return base.appendingPathComponent("dp-farm/models", isDirectory: true)
    }

    /// Checks the numbers; the error names the setting and the value found.
    public func validate() throws {
        func bad(_ what: String) -> WorkerServiceError { .badSettings(what) }
        guard slots >= 1 else { throw bad("slots must be at least 1, got \(slots)") }
        guard cacheBytes > 0 else { throw bad("cache bytes must be positive, got \(cacheBytes)") }
        if let threads, threads < 1 { throw bad("threads must be at least 1, got \(threads)") }
        guard heartbeatIntervalMs >= 1 else { throw bad("heartbeat interval must be >= 1 ms, got \(heartbeatIntervalMs)") }
        guard heartbeatLiveness >= 1 else { throw bad("heartbeat liveness must be >= 1, got \(heartbeatLiveness)") }
        guard reconnectInitialMs >= 1, reconnectMaxMs >= reconnectInitialMs else {
            throw bad("reconnect backoff must satisfy 1 <= initial (\(reconnectInitialMs) ms) <= max (\(reconnectMaxMs) ms)")
        }
        guard progressIntervalMs >= 0 else { throw bad("progress interval must be >= 0 ms, got \(progressIntervalMs)") }
        guard prefetchBelowSeconds >= 0 else { throw bad("prefetch threshold must be >= 0 s, got \(prefetchBelowSeconds)") }
        guard prefetchWindowSeconds >= 0 else { throw bad("prefetch window must be >= 0 s, got \(prefetchWindowSeconds)") }
        guard maxPrefetchPerSlot >= 1 else { throw bad("prefetch per slot must be at least 1, got \(maxPrefetchPerSlot)") }
        guard !name.isEmpty else { throw bad("worker name is empty") }
        guard connect.contains("://") else { throw bad("connect endpoint '\(connect)' is not transport://address") }
    }
}

public enum WorkerServiceError: Error, CustomStringConvertible {
    case badSettings(String)
    case alreadyRunning(String)
    case modelUnavailable(String)
    case connectionLost(String)

    public var description: String {
        switch self {
        case let .badSettings(why): return "worker settings: \(why)"
        case let .alreadyRunning(name): return "worker \(name): run() is already running"
        case let .modelUnavailable(why): return why
        case let .connectionLost(why): return why
        }
    }
}

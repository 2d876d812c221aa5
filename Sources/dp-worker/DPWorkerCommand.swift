import ArgumentParser
import Dispatch
import DPCLISupport
import DPCoordinator
import DPLog
import DPPipeline
import DPTransport
import DPWorker
import Foundation
import Synchronization

/// `dp-worker`: renders DreamPose frames for a coordinator (`--connect`), or alone (`render`).
///
///     dp-worker --connect tcp://HOST:5555 [--cache DIR] [--name NAME] [--threads N] [--slots N]
///     dp-worker render --model DIR --subject PNG --poses DIR --out DIR ...
///     dp-worker demo-assets --out DIR [--frames N]
struct DPWorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dp-worker",
        abstract: "Render DreamPose frames for a coordinator (--connect), or on this machine alone (render).",
        subcommands: [RenderCommand.self, DemoAssetsCommand.self, HealthCommand.self, KeygenCommand.self])

    @Option(help: "Coordinator endpoint to work for, e.g. tcp://render-host:5555 (also $DP_COORDINATOR).")
    var connect: String?
    @Option(help: "Model cache folder (default: ~/.cache/dp-farm/models).") var cache: String?
    @Option(name: .customLong("cache-gb"), help: "Largest size of the model cache in GiB (default 20).") var cacheGB: Double?
    @Option(help: "Worker name, unique on the farm (default: hostname-pid).") var name: String?
    @Option(help: "Engine threads per frame (default: all cores divided by --slots).") var threads: Int?
    @Option(help: "Frames rendered at once (default 1).") var slots = 1
    @Option(name: .customLong("heartbeat-ms"), help: "Heartbeat interval in milliseconds until the coordinator's Welcome (default 1000).")
    var heartbeatMs: Int?
    @Option(name: .customLong("progress-ms"),
            help: "Send step progress at most this often per frame, in ms; faster steps are folded into the next report (default 100).")
    var progressMs: Int?
    @Option(name: .customLong("prefetch-below"),
            help: "Ask for the next frames ahead of time while frames take less than this many seconds (default 1; 0 = never).")
    var prefetchBelow: Double?
    @Option(help: "This worker's secret key file (NAME.key from `dp-worker keygen NAME`; its NAME.pub goes in the coordinator's --authorized-workers folder).")
    var key: String?
    @Option(name: .customLong("server-key"), help: "The coordinator's public key file, pinned: a coordinator without its secret key is refused.")
    var serverKey: String?
    @Flag(name: .customLong("insecure-no-auth"), help: "Connect without CURVE keys (only a coordinator run with --insecure-no-auth accepts that).")
    var insecureNoAuth = false
    @OptionGroup var logging: LogOptions

    func validate() throws {
        if slots < 1 { throw ValidationError("--slots must be at least 1") }
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
        if let g = cacheGB, !(g > 0) { throw ValidationError("--cache-gb must be positive") }
        if let h = heartbeatMs, h < 1 { throw ValidationError("--heartbeat-ms must be at least 1") }
        if let p = progressMs, p < 0 { throw ValidationError("--progress-ms must be zero or positive") }
        if let p = prefetchBelow, !(p >= 0) { throw ValidationError("--prefetch-below must be zero or positive") }
        if insecureNoAuth, key != nil || serverKey != nil {
            throw ValidationError("--insecure-no-auth cannot be combined with --key/--server-key")
        }
        if (key == nil) != (serverKey == nil) {
            throw ValidationError("--key and --server-key go together (this worker's secret key file, the coordinator's public key file)")
        }
    }

    func run() throws {
        let env = ProcessInfo.processInfo.environment
        guard let endpoint = connect ?? env["DP_COORDINATOR"].flatMap({ $0.isEmpty ? nil : $0 }) else {
            throw CleanExit.helpRequest(self)
        }
        var settings = WorkerSettings(
            connect: endpoint, name: name ?? WorkerSettings.defaultName,
            cacheDirectory: cache.map { URL(fileURLWithPath: ($0 as NSString).expandingTildeInPath) }
                ?? WorkerSettings.defaultCacheDirectory)
        settings.slots = slots
        settings.threads = threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount / slots)
        if let cacheGB { settings.cacheBytes = Int64(cacheGB * Double(1 << 30)) }
        if let heartbeatMs { settings.heartbeatIntervalMs = heartbeatMs }
        if let progressMs { settings.progressIntervalMs = progressMs }
        if let prefetchBelow { settings.prefetchBelowSeconds = prefetchBelow }
        if let key, let serverKey {
            do {
                settings.curve = try CurveClientKeys.load(keyFile: key, serverKeyFile: serverKey)
            } catch {
                throw CLIError("\(error)")
            }
        } else if !insecureNoAuth {
            throw CLIError("""
                no keys: pass --key NAME.key (make it with `dp-worker keygen NAME`, then put NAME.pub in the \
                coordinator's --authorized-workers folder) and --server-key COORDINATOR.pub, or --insecure-no-auth \
                for a coordinator run without authentication
                """)
        }
        do { try settings.validate() } catch { throw CLIError("\(error)") }

        let log = try logging.makeLog(label: WorkerService.logLabel, textPrefix: "dp-worker \(settings.name): ")
            .with("worker", settings.name)
        let service = try WorkerService(settings: settings, renderer: PipelineFrameRenderer(), logger: log)
        log.info("connecting to \(endpoint), \(settings.slots) slot(s) x \(settings.threads ?? 0) thread(s), cache \(settings.cacheDirectory.path)")

        // SIGTERM/SIGINT: stop after the current denoising step and hand the frame back (Goodbye).
        // Schedulers may send SIGTERM more than once for one stop (Slurm signals every process of a step
        // and srun forwards the same signal; Kubernetes and systemd may signal again before their kill
        // timeout): a repeated SIGTERM is logged and the hand-back goes on. Only a second Ctrl-C (SIGINT),
        // a person at the terminal, exits at once without handing anything back.
        let sources = WorkerSignals.install(log: log) { service.shutdown(handBack: true) }
        defer { sources.forEach { $0.cancel() } }
        try service.run()
        // The frames in progress stop within a denoising step; exit only once they have.
        if !service.waitForComputeThreads(timeoutSeconds: 300) {
            log.warning("a frame did not stop within 300 s of the shutdown; exiting anyway")
        }
        log.info("stopped", .workerStopped(worker: settings.name))
    }
}

/// The worker's SIGTERM/SIGINT handling (see `DPWorkerCommand.run`).
enum WorkerSignals {
    static func install(log: FarmLog, stop: @escaping @Sendable () -> Void) -> [DispatchSourceSignal] {
        final class State: Sendable { let value = Mutex((stopping: false, terms: 0)) }
        let state = State()
        let queue = DispatchQueue(label: "dp-worker.signals")
        return [SIGTERM, SIGINT].map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler {
                let name = sig == SIGINT ? "SIGINT" : "SIGTERM"
                // (stopping before this signal, repeats counted so far)
                let (wasStopping, terms) = state.value.withLock { value in
                    defer { value.stopping = true }
                    if value.stopping && sig != SIGINT { value.terms += 1 }
                    return (value.stopping, value.terms)
                }
                if wasStopping {
                    if sig == SIGINT { log.warning("second SIGINT: exiting now, nothing handed back",
                        .stopSignal(signal: name, action: .exitNow)); Foundation.exit(130) }
                    log.notice("\(name) again (\(terms) repeat(s)): already handing back work, carrying on",
                        .stopSignal(signal: name, action: .carryOn))
                    return
                }
                log.notice("\(name): handing back work after the current denoising step and disconnecting",
                           .stopSignal(signal: name, action: .handBack))
                DispatchQueue.global().async { stop() }
            }
            source.resume()
            return source
        }
    }
}

/// `dp-worker health`: asks the coordinator whether this worker is registered and connected, for probes
/// (Kubernetes readiness and liveness). Distinct exit codes let a probe tell the worker's fault from the
/// coordinator's absence.
struct HealthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health",
        abstract: "Exit 0 when the coordinator lists --worker NAME as connected (for readiness/liveness probes).",
        discussion: """
            Exit status: 0 = the coordinator answered and lists the worker as connected; 1 = the coordinator \
            answered and does not (the worker is not registered, or it lost its session); 2 = the coordinator \
            did not answer within --timeout (the worker itself may be fine: it reconnects with backoff). A \
            liveness probe should fail on 1 only; a readiness probe on anything but 0.
            """)

    // Not --connect/--name: those are the parent command's options, which the parser would take for them.
    @Option(help: "Coordinator endpoint (default: $DP_COORDINATOR).") var coordinator: String?
    @Option(help: "The worker's --name.") var worker: String
    @Option(help: "Seconds to wait for the coordinator's reply.") var timeout: Double = 5
    @Flag(help: "Print nothing when healthy.") var quiet = false
    // Not --key/--server-key either (the parent's): the worker's own key files under other names.
    @Option(name: .customLong("worker-key"), help: "Secret key file to ask with: the worker's --key (or a client key).")
    var key: String?
    @Option(name: .customLong("coordinator-key"), help: "The coordinator's public key file: the worker's --server-key.")
    var serverKey: String?

    func run() throws {
        let env = ProcessInfo.processInfo.environment
        guard let endpoint = coordinator ?? env["DP_COORDINATOR"].flatMap({ $0.isEmpty ? nil : $0 }) else {
            throw ValidationError("--coordinator or $DP_COORDINATOR is needed")
        }
        let name = worker
        let workers: [WorkerInfo]
        do {
            var curve: CurveClientKeys?
            if let key, let serverKey { curve = try CurveClientKeys.load(keyFile: key, serverKeyFile: serverKey) }
            else if key != nil || serverKey != nil { throw ValidationError("--worker-key and --coordinator-key go together") }
            let client = try FarmClient(endpoint: endpoint, timeoutSeconds: timeout, curve: curve)
            defer { client.close() }
            workers = try client.workers()
        } catch {
            FileHandle.standardError.write(Data("dp-worker health: coordinator \(endpoint) did not answer within \(timeout) s: \(error)\n".utf8))
            throw ExitCode(2)
        }
        guard let me = workers.first(where: { $0.name == name }), me.connected else {
            let known = workers.filter(\.connected).map(\.name).sorted()
            FileHandle.standardError.write(Data(("dp-worker health: coordinator \(endpoint) does not list worker \"\(name)\" as connected "
                + "(\(known.count) connected: \(known.prefix(10).joined(separator: ", "))\(known.count > 10 ? ", ..." : ""))\n").utf8))
            throw ExitCode(1)
        }
        if !quiet { print("worker \(name): connected to \(endpoint), \(me.busy)/\(me.slots) slot(s) busy, \(me.framesDone) frame(s) done") }
    }
}

/// `dp-worker demo-assets`: writes the self-contained demo job (a tiny random-weight model, a synthetic
/// subject photo and a short pose sequence) that the README's demo command renders.
struct DemoAssetsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-assets",
        abstract: "Write a tiny demo model (random weights), subject photo and pose sequence into a folder.",
        discussion: "Frames rendered from these show the pipeline running, not a meaningful video: the weights are random, not trained.")

    @Option(help: "Folder to write model/, subject.png and poses/ into (created if missing).") var out: String
    @Option(help: "Pose frames in the sequence.") var frames = 8

    func validate() throws {
        if frames < 1 { throw ValidationError("--frames must be at least 1") }
    }

    func run() throws {
        let dir = URL(fileURLWithPath: (out as NSString).expandingTildeInPath)
        let paths: DemoAssets.Paths
        do { paths = try DemoAssets.write(to: dir, frames: frames) } catch let e as PipelineError { throw CLIError(e.description) }
        print("model   \(paths.model.path)")
        print("subject \(paths.subject.path)")
        print("poses   \(paths.poses.path)")
    }
}

/// `dp-worker keygen NAME`: this worker's CURVE key pair.
struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Make this worker's CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub (public).",
        discussion: """
            Run it on the render machine; pass --key NAME.key to the worker and copy NAME.pub into the coordinator's \
            --authorized-workers folder (then `systemctl reload dp-coord`, or SIGHUP). Existing files are never replaced.
            """)
    @Argument(help: "Path and name of the pair, without extension (e.g. /etc/dp-farm/keys/worker).") var name: String

    func run() throws {
        try KeygenOutput.run(name)
    }
}

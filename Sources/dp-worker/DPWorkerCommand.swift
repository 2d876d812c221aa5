import ArgumentParser
import Dispatch
import DPPipeline
import DPWorker
import Foundation

/// `dp-worker`: renders DreamPose frames for a coordinator (`--connect`), or alone (`render`).
///
///     dp-worker --connect tcp://HOST:5555 [--cache DIR] [--name NAME] [--threads N] [--slots N]
///     dp-worker render --model DIR --subject PNG --poses DIR --out DIR ...
///     dp-worker demo-assets --out DIR [--frames N]
struct DPWorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dp-worker",
        abstract: "Render DreamPose frames for a coordinator (--connect), or on this machine alone (render).",
        subcommands: [RenderCommand.self, DemoAssetsCommand.self])

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

    func validate() throws {
        if slots < 1 { throw ValidationError("--slots must be at least 1") }
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
        if let g = cacheGB, !(g > 0) { throw ValidationError("--cache-gb must be positive") }
        if let h = heartbeatMs, h < 1 { throw ValidationError("--heartbeat-ms must be at least 1") }
        if let p = progressMs, p < 0 { throw ValidationError("--progress-ms must be zero or positive") }
        if let p = prefetchBelow, !(p >= 0) { throw ValidationError("--prefetch-below must be zero or positive") }
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
        do { try settings.validate() } catch { throw CLIError("\(error)") }

        let workerName = settings.name
        let log: @Sendable (String) -> Void = { line in
            FileHandle.standardError.write(Data(("dp-worker \(workerName): " + line + "\n").utf8))
        }
        let service = try WorkerService(settings: settings, renderer: PipelineFrameRenderer(), log: log)
        log("connecting to \(endpoint), \(settings.slots) slot(s) x \(settings.threads ?? 0) thread(s), cache \(settings.cacheDirectory.path)")

        // SIGTERM/SIGINT: stop after the current denoising step and hand the frame back (Goodbye).
        // A second signal exits at once.
        var fired = false
        let queue = DispatchQueue(label: "dp-worker.signals")
        let sources: [DispatchSourceSignal] = [SIGTERM, SIGINT].map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler {
                if fired { log("second signal: exiting now"); Foundation.exit(130) }
                fired = true
                log("\(sig == SIGINT ? "SIGINT" : "SIGTERM"): handing back work and disconnecting")
                DispatchQueue.global().async { service.shutdown(handBack: true) }
            }
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }
        try service.run()
        log("stopped")
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

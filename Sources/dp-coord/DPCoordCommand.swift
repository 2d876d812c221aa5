import ArgumentParser
import DPCLISupport
import DPCoordinator
import DPFileKit
import DPLog
import DPPipeline
import DPTransport
import Foundation

/// `dp-coord`: the render farm's coordinator (`serve`) and its clients (`submit`, `status`, `cancel`, `workers`).
struct DPCoordCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dp-coord",
        abstract: "Run a DreamPose render farm coordinator, or submit and watch jobs.",
        subcommands: [Serve.self, Submit.self, Status.self, Cancel.self, Workers.self, Finalize.self, Health.self,
                      Keygen.self])

    /// The coordinator a client command talks to: `--coordinator`, else `$DP_COORDINATOR`, else local port 5555.
    static func coordinatorEndpoint(_ option: String?) -> String {
        givenCoordinator(option) ?? "tcp://127.0.0.1:5555"
    }

    /// `--coordinator`, else `$DP_COORDINATOR`, else nil: the one rule every client command follows (`submit`
    /// renders with an embedded farm when it is nil; the others talk to local port 5555).
    static func givenCoordinator(_ option: String?) -> String? {
        if let option, !option.isEmpty { return option }
        if let env = ProcessInfo.processInfo.environment["DP_COORDINATOR"], !env.isEmpty { return env }
        return nil
    }

    static func stderrLine(_ s: String) {
        FileHandle.standardError.write(Data((s + "\n").utf8))
    }
}

struct ClientOptions: ParsableArguments {
    @Option(help: "Coordinator endpoint (default: $DP_COORDINATOR, else tcp://127.0.0.1:5555).")
    var coordinator: String?
    @Option(help: "Seconds to wait for the coordinator's reply.") var timeout: Double = 30
    @OptionGroup var keys: ClientKeyOptions

    func client() throws -> FarmClient {
        try FarmClient(endpoint: DPCoordCommand.coordinatorEndpoint(coordinator), timeoutSeconds: timeout,
                       curve: keys.load())
    }
}

/// `--key` / `--server-key` of the client commands (a client key: `dp-coord keygen`).
struct ClientKeyOptions: ParsableArguments {
    @Option(help: "This client's secret key file (NAME.key from `dp-coord keygen NAME`; default: $DP_CLIENT_KEY).")
    var key: String?
    @Option(name: .customLong("server-key"),
            help: "The coordinator's public key file, pinned (its NAME.pub; default: $DP_SERVER_KEY).")
    var serverKey: String?

    /// The keys, or nil when neither is given (a coordinator run with --insecure-no-auth).
    func load() throws -> CurveClientKeys? {
        let env = ProcessInfo.processInfo.environment
        let key = self.key ?? env["DP_CLIENT_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        let server = serverKey ?? env["DP_SERVER_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        switch (key, server) {
        case (nil, nil): return nil
        case let (k?, s?):
            do { return try CurveClientKeys.load(keyFile: k, serverKeyFile: s) } catch { throw CLIError("\(error)") }
        case (nil, _): throw CLIError("--server-key needs --key (this client's secret key file)")
        case (_, nil): throw CLIError("--key needs --server-key (the coordinator's public key file)")
        }
    }
}

// MARK: - serve

extension DPCoordCommand {
    struct Serve: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the coordinator until SIGTERM/SIGINT (workers connect to --bind).")

        @Option(help: "ZeroMQ endpoint to bind (tcp://HOST:PORT; port * picks a free one).") var bind = "tcp://0.0.0.0:5555"
        @Option(help: "State folder: journal.sqlite, uploaded models and job inputs (created if missing).") var state: String
        @Option(name: .customLong("heartbeat-ms"), help: "Heartbeat interval in milliseconds (default 1000).") var heartbeatMs: Int?
        @Option(help: "Missed heartbeat intervals before a worker is declared dead (default 5).") var liveness: Int?
        @Option(name: .customLong("stall-timeout"), help: "Seconds without step progress before a frame is requeued (default 600).")
        var stallTimeout: Double?
        @Option(help: "Seconds after start before frames in flight at the last shutdown are requeued (default 5).") var grace: Double?
        @Option(help: "ffmpeg executable used for --video jobs.") var ffmpeg: String?
        @Option(name: .customLong("turn-interval-us"),
                help: "Group commit: microseconds between the starts of busy loop turns (one journal commit each; default 500, 0 = none).")
        var turnIntervalUs: Int?
        @Option(name: .customLong("loop-nice"),
                help: "Nice value for the coordinator's loop thread, e.g. -5 on a machine shared with a dp-worker (below 0 needs CAP_SYS_NICE).")
        var loopNice: Int?
        @Option(name: .customLong("output-root"),
                help: "Folder that holds every job's output folder and video (default <state>/outputs); jobs name them relative to it.")
        var outputRoot: String?
        @Option(name: .customLong("max-queued-bytes-per-peer"),
                help: "Bytes sent to one connection and not yet acknowledged as read, at most (default 67108864 = 64 MiB; at least 16842752, a model chunk + 64 KiB). A peer that does not read is cut off there.")
        var maxQueuedBytesPerPeer: Int?
        @Option(help: "The coordinator's secret key file (NAME.key from `dp-coord keygen NAME`); workers and clients pin its NAME.pub.")
        var key: String?
        @Option(name: .customLong("authorized-workers"),
                help: "Folder of worker public keys (*.pub, one key per file) admitted as workers; re-read on SIGHUP.")
        var authorizedWorkers: String?
        @Option(name: .customLong("authorized-clients"),
                help: "Folder of client public keys (*.pub) admitted as clients (submit, status, cancel, follow their own jobs); re-read on SIGHUP.")
        var authorizedClients: String?
        @Option(name: .customLong("admin-clients"),
                help: "Folder of client public keys (*.pub) that may see and cancel every job; re-read on SIGHUP.")
        var adminClients: String?
        @Flag(name: .customLong("insecure-no-auth"),
              help: "Run WITHOUT authentication: anyone who can reach --bind may submit, cancel, read every job and register as a worker.")
        var insecureNoAuth = false
        @OptionGroup var logging: LogOptions

        func validate() throws {
            if let h = heartbeatMs, h < 1 { throw ValidationError("--heartbeat-ms must be at least 1") }
            if let l = liveness, l < 1 { throw ValidationError("--liveness must be at least 1") }
            if let s = stallTimeout, !(s > 0) { throw ValidationError("--stall-timeout must be positive") }
            if let g = grace, !(g >= 0) { throw ValidationError("--grace must be zero or positive") }
            if let t = turnIntervalUs, t < 0 { throw ValidationError("--turn-interval-us must be 0 or more") }
            if let n = loopNice, !(-20...19).contains(n) { throw ValidationError("--loop-nice must be between -20 and 19") }
            // The largest message serve sends: a 16 MiB model chunk and its envelope (DESIGN.md, "Bytes queued per peer").
            if let q = maxQueuedBytesPerPeer, q < (16 << 20) + (64 << 10) {
                throw ValidationError("--max-queued-bytes-per-peer must be at least 16842752 (a 16 MiB model chunk + 64 KiB)")
            }
            if insecureNoAuth, key != nil || authorizedWorkers != nil || authorizedClients != nil || adminClients != nil {
                throw ValidationError("--insecure-no-auth cannot be combined with --key or the authorized key folders")
            }
        }

        /// The authentication settings, or the error that says how to make keys.
        func auth() throws -> CoordinatorAuth {
            if insecureNoAuth { return .insecureNoAuth }
            let howTo = """
                dp-coord serve needs keys (every peer is authenticated, on loopback too: other users of the machine are peers):
                  dp-coord keygen /etc/dp-farm/keys/coordinator          # coordinator.key (secret, 0600) + coordinator.pub
                  dp-worker keygen /etc/dp-farm/keys/worker-NAME         # on each render machine; copy its .pub to:
                  mkdir -p /etc/dp-farm/workers.d /etc/dp-farm/clients.d /etc/dp-farm/admins.d
                  cp worker-NAME.pub /etc/dp-farm/workers.d/             # and each client's NAME.pub to clients.d/
                  dp-coord serve --key /etc/dp-farm/keys/coordinator.key --authorized-workers /etc/dp-farm/workers.d \\
                      --authorized-clients /etc/dp-farm/clients.d [--admin-clients /etc/dp-farm/admins.d] ...
                Workers and clients then pass --key THEIR.key --server-key coordinator.pub.
                (Or --insecure-no-auth, for a closed test setup only.)
                """
            guard let key else { throw CLIError("no --key given.\n" + howTo) }
            guard authorizedWorkers != nil || authorizedClients != nil || adminClients != nil else {
                throw CLIError("no --authorized-workers, --authorized-clients or --admin-clients folder: nobody could connect.\n" + howTo)
            }
            let pair: ZMQCurveKeyPair
            do { pair = try CurveKeyFile.readSecret(key) } catch { throw CLIError("\(error)\n" + howTo) }
            func source(_ dir: String?) -> AuthorizedKeySource {
                dir.map { .directory(SubmitInputs.absoluteURL($0)) } ?? .none
            }
            return .curve(CurveAuthSettings(serverKeys: pair, workers: source(authorizedWorkers),
                                            clients: source(authorizedClients), admins: source(adminClients)))
        }

        func run() throws {
            let auth = try auth()
            let stateURL = SubmitInputs.absoluteURL(state)
            try FileManager.default.createDirectory(at: stateURL, withIntermediateDirectories: true)
            var settings = CoordinatorSettings(bind: bind, stateDirectory: stateURL)
            settings.auth = auth
            if let heartbeatMs { settings.heartbeatIntervalMs = heartbeatMs }
            if let liveness { settings.heartbeatLiveness = liveness }
            if let stallTimeout { settings.stallTimeoutSeconds = stallTimeout }
            if let maxQueuedBytesPerPeer { settings.limits.maxQueuedBytesPerPeer = maxQueuedBytesPerPeer }
            if let grace { settings.restartGraceSeconds = grace }
            if let ffmpeg { settings.ffmpegPath = ffmpeg }
            if let turnIntervalUs { settings.minTurnIntervalMicroseconds = turnIntervalUs }
            if let loopNice { settings.loopThreadNice = loopNice }
            if let outputRoot { settings.outputRoot = SubmitInputs.absoluteURL(outputRoot) }
            let log = try logging.makeLog(label: Coordinator.logLabel)
            let coordinator = try Coordinator(settings: settings, logger: log)
            let trap = SignalTrap { sig in
                log.notice("dp-coord: \(sig == SIGINT ? "SIGINT" : "SIGTERM"), shutting down")
                coordinator.shutdown()
            }
            defer { trap.cancel() }
            // SIGHUP: re-read the authorized key folders (a bad folder keeps the keys in use).
            let hup = SignalTrap([SIGHUP], repeats: true) { _ in
                do {
                    if let counts = try coordinator.reloadAuthorizedKeys() {
                        log.notice("dp-coord: SIGHUP: authorized keys reloaded (\(counts))")
                    } else {
                        log.notice("dp-coord: SIGHUP: nothing to reload (--insecure-no-auth)")
                    }
                } catch {
                    log.error("dp-coord: SIGHUP: keys NOT reloaded, the previous ones stay in use: \(error)")
                }
            }
            defer { hup.cancel() }
            // Announced once the signals are handled: a SIGTERM right after this line stops it cleanly. (The
            // coordinator's own "serving" event follows, once its loop runs.)
            log.notice("dp-coord: serving on \(coordinator.endpoint), state \(stateURL.path)")
            if auth.isInsecure {
                log.warning("dp-coord: WARNING: --insecure-no-auth: NO AUTHENTICATION on \(coordinator.endpoint); "
                    + "anyone who can reach it controls the farm")
            }
            try coordinator.run()
            log.notice("dp-coord: stopped")
        }
    }
}

// MARK: - submit

extension DPCoordCommand {
    struct Submit: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Submit a job: to --coordinator, or (default) render it here with an embedded coordinator and --workers local workers.")

        /// --model, --subject, --poses, --frames, --steps, --sampler, --image-guidance, --pose-guidance, --seed,
        /// --noise: the same declaration (and file-free checks) as `dp-worker render`.
        @OptionGroup var render: RenderOptions
        @Option(help: "Output folder for frame_<n>.png and manifest.json: a local path, or with --coordinator a name inside its --output-root.") var out: String
        @Option(help: "Job priority (higher goes first).") var priority = 0
        @Option(help: "Dispatch order: frame (ascending) or preview (first, last, middle, then halves).") var order = FrameOrder.frame
        @Option(help: "Write an H.264 video of the finished sequence to this file (with --coordinator: a name inside its --output-root).") var video: String?
        @Option(help: "Frames per second of --video.") var fps = 30
        @Option(help: "Job name shown by status (default: model:subject).") var name: String?
        @Option(help: "Coordinator to submit to (default: $DP_COORDINATOR); without either the job runs here with an embedded coordinator.")
        var coordinator: String?
        @Flag(help: "Return once the job is queued (print its id) instead of following it.") var detach = false
        @Flag(help: "Print one JSON object per event on stdout instead of progress on stderr.") var json = false
        @Option(help: "Embedded mode: local workers (default 1).") var workers = 1
        @Option(help: "Embedded mode: engine threads in all, split between the workers (default: all cores).") var threads: Int?
        @Option(help: "Seconds to wait for the coordinator's replies.") var timeout: Double = 30
        @Flag(help: "Embedded mode: show the embedded coordinator's and workers' log lines (--log-level, --log-format).") var verbose = false
        @OptionGroup var keys: ClientKeyOptions
        @OptionGroup var logging: LogOptions

        func validate() throws {
            if workers < 1 { throw ValidationError("--workers must be at least 1") }
            if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
        }

        func run() throws {
            let endpoint = DPCoordCommand.givenCoordinator(coordinator)
            let inputs = try SubmitInputs.load(.init(
                render: render, out: out, priority: priority, order: order, video: video, fps: fps, name: name,
                remote: endpoint != nil))
            let display = FollowDisplay(json: json)
            if !json { display.line("dp-coord submit: \(inputs.summary)") }

            if let endpoint {
                try submitRemote(inputs, endpoint: endpoint, display: display)
            } else {
                if detach {
                    throw CLIError("--detach needs a coordinator (--coordinator or $DP_COORDINATOR): the embedded farm lives only as long as this command")
                }
                let quiet = json || !verbose
                let sink: @Sendable (String) -> Void = { line in if !quiet { display.line(line) } }
                let (level, format) = try logging.resolved()
                let farm = try EmbeddedFarm(outputDirectory: URL(fileURLWithPath: inputs.submission.outputDirectory),
                                            workers: workers, threads: threads, timeout: timeout,
                                            log: { label, prefix in
                                                FarmLog(label: label, level: level, format: format, textPrefix: prefix, sink: sink)
                                            })
                let trap = SignalTrap { _ in
                    display.line("dp-coord submit: interrupted, stopping the embedded farm (the job stays in \(farm.stateDirectory.path))")
                    farm.shutdown()
                    Foundation.exit(130)
                }
                defer { trap.cancel() }
                let state: String
                do {
                    state = try farm.runJob(inputs.submission, display: display)
                } catch {
                    farm.shutdown()
                    throw error
                }
                farm.shutdown()
                try finish(state: state)
            }
        }

        func submitRemote(_ inputs: SubmitInputs, endpoint: String, display: FollowDisplay) throws {
            let client = try FarmClient(endpoint: endpoint, timeoutSeconds: timeout, curve: keys.load())
            defer { client.close() }
            let id = try client.submit(inputs.submission, onUpload: { display.upload($0) })
            if detach {
                if json { display.emit(["event": "submitted", "job": id]) } else { print(id) }
                return
            }
            if json { display.emit(["event": "submitted", "job": id]) } else { display.line("job \(id) submitted to \(endpoint)") }
            try client.follow(job: id) { display.handle($0) }
            try finish(state: display.finalState)
        }

        func finish(state: String?) throws {
            guard let state else { throw CLIError("the coordinator stopped sending events before the job finished") }
            if state != "completed" { throw ExitCode(state == "cancelled" ? 3 : 2) }
        }
    }
}

// MARK: - status, cancel, workers

extension DPCoordCommand {
    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one job, or every job.")
        @Argument(help: "Job id (default: every job).") var job: Int64?
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var client: ClientOptions

        func run() throws {
            let c = try client.client()
            defer { c.close() }
            let jobs = try c.status(job: job)
            if json {
                printJSON(jobs.map { FollowDisplay.jsonObject($0) })
                return
            }
            if jobs.isEmpty { print(job.map { "no job \($0)" } ?? "no jobs"); return }
            print(pad(["JOB", "STATE", "PRI", "DONE", "FAILED", "FLIGHT", "QUEUED", "NAME", "OUTPUT"]))
            for j in jobs {
                print(pad(["\(j.id)", j.state, "\(j.priority)", "\(j.done)/\(j.total)", "\(j.failed)", "\(j.inFlight)",
                           "\(j.queued)", j.name, j.outputDirectory + (j.video.map { "  video \($0)" } ?? "")]))
                if let error = j.error { print("    error: \(error)") }
                if let got = j.uploadBytesReceived, let total = j.uploadBytesTotal {
                    print("    upload: \(PhaseRate.bytes(got))/\(PhaseRate.bytes(total)) received")
                }
                for p in j.workerPhases { print("    \(p.worker): \(p.summary)") }
                if job != nil, !j.perWorker.isEmpty {
                    for (w, n) in j.perWorker.sorted(by: { $0.key < $1.key }) { print("    \(w): \(n) frame(s)") }
                }
            }
        }
    }

    struct Cancel: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel a job (workers stop within a denoising step).")
        @Argument(help: "Job id.") var job: Int64
        @OptionGroup var client: ClientOptions

        func run() throws {
            let c = try client.client()
            defer { c.close() }
            let state = try c.cancel(job: job)
            print("job \(job): \(state)")
        }
    }

    struct Workers: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the workers connected to the coordinator.")
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var client: ClientOptions

        func run() throws {
            let c = try client.client()
            defer { c.close() }
            let workers = try c.workers()
            if json {
                printJSON(workers.map { FollowDisplay.jsonObject($0) })
                return
            }
            if workers.isEmpty { print("no workers connected"); return }
            print(pad(["WORKER", "HOST", "SLOTS", "BUSY", "FRAMES", "SEEN", "MODELS"]))
            for w in workers {
                print(pad([w.name, w.host, "\(w.slots)", "\(w.busy)", "\(w.framesDone)",
                           String(format: "%.1fs ago", w.lastSeenSecondsAgo),
                           w.modelIDs.map { String($0.prefix(12)) }.joined(separator: ",")]))
                if let phase = w.phase { print("    \(phase.summary)") }
            }
        }
    }
}

// MARK: - finalize, health

extension DPCoordCommand {
    struct Finalize: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a folder rendered by `dp-worker render` tasks (a Slurm array) and write manifest.json and the video.",
            discussion: """
                Every expected frame (default: every frame of the job's pose sequence, as recorded by the render \
                tasks in DIR/.dp-render) must be in DIR as a decodable frame_<n>.png matching its task's record; \
                otherwise nothing is written and the command fails, naming the missing frames. Then manifest.json \
                (the coordinator's format, job id 0) and, with --video, an H.264 video of the ordered sequence.
                """)

        @Option(help: "The render tasks' shared --out folder.") var out: String
        @Option(help: "Write an H.264 video of the sequence to this file (.mp4, .mkv or .mov).") var video: String?
        @Option(help: "Frames per second of --video.") var fps = 30
        @Option(help: "Expected frames (0-99 or 3,5,8; default: every frame of the job's pose sequence).") var frames: String?
        @Option(help: "ffmpeg executable used for --video.") var ffmpeg = "ffmpeg"
        @Flag(help: "Print the result as JSON on stdout.") var json = false

        func validate() throws {
            if fps < 1 { throw ValidationError("--fps must be at least 1") }
            if let video, ![".mp4", ".mkv", ".mov"].contains(where: { video.lowercased().hasSuffix($0) }) {
                throw ValidationError("--video \(video): expected a .mp4, .mkv or .mov file name")
            }
        }

        func run() throws {
            let outURL = SubmitInputs.absoluteURL(out)
            let expected: [UInt32]?
            do {
                expected = try frames.map { try FrameSelection.parse($0).map { UInt32($0) } }
            } catch let e as PipelineError { throw CLIError(e.description) }
            let result: RenderRecords.Finalized
            do {
                result = try RenderRecords.finalize(out: outURL, frames: expected, video: video.map(SubmitInputs.absoluteURL),
                                                    fps: fps, ffmpeg: ffmpeg, decode: { _ = try PNGCodec.read($0) })
            } catch let e as RenderRecordError {
                throw CLIError(e.description)
            } catch let e as OutputError {
                throw CLIError(e.description)
            }
            let m = result.manifest
            if json {
                var object: [String: Any] = ["out": outURL.path, "manifest": result.manifestURL.path, "frames": m.frames.count,
                                             "complete": m.complete, "model_id": m.modelID]
                if let v = result.video { object["video"] = v.path; object["video_sha256"] = v.sha256 }
                printJSON(object)
            } else {
                print("\(outURL.path): \(m.frames.count) frame(s) complete (\(FrameRanges.describe(m.framesExpected))), "
                    + "model \(m.modelID.prefix(12)); wrote \(result.manifestURL.path)"
                    + (result.video.map { "; video \($0.path) (\($0.frames) frames at \($0.fps) fps)" } ?? ""))
            }
        }
    }

    struct Health: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Exit 0 when the coordinator answers a request (for probes: systemd, Kubernetes, scripts).",
            discussion: """
                Sends the coordinator a real request (the worker list) on its one port and waits --timeout seconds \
                for the reply. Exit status: 0 = it answered; 1 = no answer or an error (printed on stderr).
                """)
        @Option(help: "Coordinator endpoint (default: $DP_COORDINATOR, else tcp://127.0.0.1:5555).") var coordinator: String?
        @Option(help: "Seconds to wait for the reply.") var timeout: Double = 5
        @Flag(help: "Print nothing when healthy.") var quiet = false
        @OptionGroup var keys: ClientKeyOptions

        func run() throws {
            let endpoint = DPCoordCommand.coordinatorEndpoint(coordinator)
            let curve = try keys.load()
            do {
                let c = try FarmClient(endpoint: endpoint, timeoutSeconds: timeout, curve: curve)
                defer { c.close() }
                let workers = try c.workers()
                if !quiet { print("coordinator \(endpoint): answering, \(workers.filter(\.connected).count) worker(s) connected") }
            } catch {
                throw CLIError("coordinator \(endpoint) did not answer within \(timeout) s: \(error)")
            }
        }
    }
}

// MARK: - keygen

extension DPCoordCommand {
    struct Keygen: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub (public).",
            discussion: """
                For the coordinator (serve --key NAME.key; workers and clients pin NAME.pub with --server-key) and \
                for clients (submit/status/cancel/workers --key NAME.key; put NAME.pub in the coordinator's \
                --authorized-clients or --admin-clients folder). Workers make theirs with `dp-worker keygen`. The files \
                use czmq's certificate format (ZPL, Z85 keys). Existing files are never replaced.
                """)
        @Argument(help: "Path and name of the pair, without extension (e.g. /etc/dp-farm/keys/coordinator).") var name: String

        func run() throws {
            try KeygenOutput.run(name)
        }
    }
}

/// Shared by `dp-coord keygen` and `dp-worker keygen`.
enum KeygenOutput {
    static func run(_ name: String) throws {
        do {
            let made = try CurveKeyFile.generate(base: (name as NSString).expandingTildeInPath)
            print("secret key  \(made.secretPath)  (mode 0600: keep it on this machine)")
            print("public key  \(made.publicPath)  \(made.pair.publicKey)")
        } catch {
            throw CLIError("\(error)")
        }
    }
}

func printJSON(_ object: Any) {
    guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted]) else { return }
    print(String(decoding: data, as: UTF8.self))
}

/// Columns of a table row, left-aligned at fixed widths.
func pad(_ cols: [String]) -> String {
    let widths = [8, 11, 5, 11, 7, 7, 7, 20]
    return cols.enumerated().map { i, c in
        i < widths.count && i < cols.count - 1 ? c.padding(toLength: max(widths[i], c.count + 1), withPad: " ", startingAt: 0) : c
    }.joined()
}

import ArgumentParser
import DPCLISupport
import DPCoordinator
import DPFileKit
import DPLog
import DPPipeline
import DPTransport
import Foundation

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

import ArgumentParser
import DPCLISupport
import DPCoordinator
import DPFileKit
import DPLog
import DPPipeline
import DPTransport
import Foundation

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

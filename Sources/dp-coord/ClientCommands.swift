import ArgumentParser
import DPCLISupport
import DPCoordinator
import DPFileKit
import DPLog
import DPPipeline
import DPTransport
import Foundation

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

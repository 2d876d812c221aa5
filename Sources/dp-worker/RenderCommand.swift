import ArgumentParser
import DPCLISupport
import DPCoordinator
import DPFileKit
import DPPipeline
import DPTensor
import Foundation

/// `dp-worker render`: the single-machine renderer (also what a Slurm array task runs, no coordinator).
struct RenderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "render",
        abstract: "Render frames of one job on this machine, without a coordinator.")

    /// --model, --subject, --poses, --frames, --steps, --sampler, --image-guidance, --pose-guidance, --seed,
    /// --noise: the same declaration (and file-free checks) as `dp-coord submit`.
    @OptionGroup var options: RenderOptions
    @Option(help: "Output folder for frame_<n>.png (created if missing).") var out: String
    @Option(help: "Threads for the engine (default: all cores).") var threads: Int?

    func validate() throws {
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        do {
            try render()
        } catch let e as PipelineError {
            throw CLIError(e.description)
        } catch let e as RenderCancelled {
            throw CLIError(e.description)
        } catch let e as RenderRecordError {
            throw CLIError(e.description)
        } catch let e as RenderRequestError {
            throw CLIError(e.description)
        }
    }

    func render() throws {
        let o = options
        if let threads { EngineThreads.configure(threads) }
        let log = ProgressLog()
        let subjectURL = URL(fileURLWithPath: o.subject)
        let subjectImage = try PNGCodec.read(subjectURL)
        let poseSource = try PoseSource(url: URL(fileURLWithPath: o.poses))
        let wanted = try o.frames.map(FrameSelection.parse) ?? poseSource.frameNumbers
        let missing = wanted.filter { !poseSource.frameNumbers.contains($0) }
        guard missing.isEmpty else {
            throw PipelineError("--frames asks for frame(s) \(missing.prefix(10).map(String.init).joined(separator: ", ")) that have no pose in \(o.poses)")
        }
        log.line("loading model \(o.model)")
        let loaded = try DreamPoseModel(directory: URL(fileURLWithPath: o.model))
        let latentShape = [1, loaded.latentChannels, loaded.latentHeight, loaded.latentWidth]
        let request = try o.request(latentShape: latentShape, frames: wanted)
        // Read every window's poses up front, so a bad pose file fails before any frame is rendered.
        for n in wanted { _ = try poseSource.window(center: n, size: loaded.config.poseWindow) }
        let outDir = URL(fileURLWithPath: out)
        try FileManager.default.createDirectory(at: outDir, withIntermediateDirectories: true)

        let prepStart = Date()
        let job = try PreparedJob(model: loaded, subject: subjectImage, settings: request, poses: poseSource)
        let r = job.settings
        // The job's record in OUT/.dp-render (what `dp-coord finalize` checks the frames against): every
        // task of an array job writes the same one, and refuses a folder holding another job's.
        let outputSettings = OutputJobSettings(r)
        try RenderRecords.recordJob(RenderJobRecord(modelID: loaded.id, settings: outputSettings,
                                                    poseFrames: poseSource.frameNumbers.map { UInt32($0) }), out: outDir)
        let renderer = RenderCommand.rendererName()
        let attempt = UInt64(ProcessInfo.processInfo.environment["SLURM_RESTART_COUNT"].flatMap { UInt64($0) } ?? 0) + 1
        log.line("model \(loaded.id.prefix(12)) \(loaded.height)x\(loaded.width), \(r.summary) "
            + "(\(job.totalSteps) UNet calls/frame); "
            + "job prepared in \(String(format: "%.2f", Date().timeIntervalSince(prepStart))) s")

        var stepSeconds: [Double] = []
        for (i, n) in wanted.enumerated() {
            let frame = try job.render(frame: n, progress: { p in
                stepSeconds.append(p.stepSeconds)
                let recent = stepSeconds.suffix(20)
                let perStep = recent.reduce(0, +) / Double(recent.count)
                let stepsLeft = (wanted.count - i - 1) * job.totalSteps + (p.totalSteps - p.step)
                log.progress("frames \(i)/\(wanted.count)  frame \(n) step \(p.step)/\(p.totalSteps)  "
                    + "\(String(format: "%.2f", perStep)) s/step  ETA \(ProgressLog.duration(perStep * Double(stepsLeft)))")
            })
            let url = outDir.appendingPathComponent(FrameSelection.outputName(frame: n))
            try DurableFile.write(frame.png, to: url)
            try RenderRecords.recordFrame(OutputFrameRecord(
                frame: UInt32(n), file: url.lastPathComponent, attempt: attempt, worker: renderer, modelID: loaded.id,
                seed: outputSettings.seed, sampler: outputSettings.sampler, steps: outputSettings.steps,
                imageGuidance: outputSettings.imageGuidance, poseGuidance: outputSettings.poseGuidance,
                renderSeconds: frame.renderSeconds, pngSHA256: FileDigest.sha256(frame.png), pngSize: frame.png.count), out: outDir)
            log.line("frames \(i + 1)/\(wanted.count)  wrote \(url.path) (\(String(format: "%.1f", frame.renderSeconds)) s)")
        }
    }
}

extension RenderCommand {
    /// Who rendered a frame, for its record: the host, and the Slurm job (array task) when run by Slurm.
    static func rendererName() -> String {
        let env = ProcessInfo.processInfo.environment
        var name = ProcessInfo.processInfo.hostName
        if let array = env["SLURM_ARRAY_JOB_ID"], let task = env["SLURM_ARRAY_TASK_ID"] {
            name += " slurm-\(array)_\(task)"
        } else if let job = env["SLURM_JOB_ID"] {
            name += " slurm-\(job)"
        }
        return name
    }
}

/// Progress output on stderr: a rewritten line on a terminal, plain lines otherwise.
final class ProgressLog {
    private let isTTY = isatty(STDERR_FILENO) != 0
    private var pending = false

    func line(_ s: String) {
        if pending { FileHandle.standardError.write("\n".data(using: .utf8)!); pending = false }
        FileHandle.standardError.write((s + "\n").data(using: .utf8)!)
    }

    func progress(_ s: String) {
        if isTTY {
            FileHandle.standardError.write(("\r\u{1B}[K" + s).data(using: .utf8)!)
            pending = true
        } else {
            FileHandle.standardError.write((s + "\n").data(using: .utf8)!)
        }
    }

    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "?" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", (s % 3600) / 60))m"
            : s >= 60 ? "\(s / 60)m\(String(format: "%02d", s % 60))s" : "\(s)s"
    }
}

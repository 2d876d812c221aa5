import DPFileKit
import ArgumentParser
import DPPipeline
import DPSampling
import DPTensor
import Foundation

/// `dp-bench quality`: renders a synthetic case (Scripts/demo/synth.py: poses, truth frames, subject) with a
/// model through the same `PreparedJob` path as `dp-worker render`, and prints per frame and on average the
/// PSNR and SSIM against the truth, plus a temporal figure: the mean absolute change between consecutive
/// rendered frames minus that between the same truth frames (0 = the video moves exactly as much as the truth;
/// positive = flicker the truth does not have; negative = frames that move less than the truth).
struct QualityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quality",
        abstract: "PSNR, SSIM and temporal change of a model's frames against a synthetic case's truth.")

    @Option(help: "dreampose-model/1 folder.") var model: String
    @Option(help: "Case folder written by Scripts/demo/synth.py (subject.png, poses/, truth/).") var `case`: String
    @Option(help: "Frames to render, e.g. 0-15 or 3,5,8 (default: every frame that has a truth).") var frames: String?
    @Option(help: "Denoising steps (default: the model's).") var steps: Int?
    @Option(help: "pndm, ddim or dpm (default: the model's).") var sampler: String?
    @Option(help: "Image guidance s_I (default: the model's).") var imageGuidance: Float?
    @Option(help: "Pose guidance s_P (default: the model's).") var poseGuidance: Float?
    @Option(help: "Job noise seed.") var seed: UInt64 = 0
    @Option(help: "Write the rendered frames here as frame_<nnnnn>.png.") var save: String?
    @Flag(help: "Print one JSON object instead of the table.") var json = false
    @OptionGroup var threads: ThreadOption

    func run() throws {
        threads.apply()
        var samplerKind: SamplerKind?
        if let sampler {
            guard let k = SamplerKind(rawValue: sampler) else {
                throw ValidationError("unknown sampler \(sampler) (pndm, ddim, dpm)")
            }
            samplerKind = k
        }
        let caseDir = URL(fileURLWithPath: `case`)
        let qc = try QualityCase(directory: caseDir)
        let dpModel = try DreamPoseModel(directory: URL(fileURLWithPath: model))
        var wanted = qc.frames
        if let frames {
            wanted = try FrameSelection.parse(frames)
            let have = Set(qc.frames)
            if let missing = wanted.first(where: { !have.contains($0) }) {
                throw PipelineError("frame \(missing): \(`case`) has no pose and truth for it (frames with both: \(qc.frames.first!)...\(qc.frames.last!))")
            }
        }
        let settings = RenderRequest(steps: steps, sampler: samplerKind, imageGuidance: imageGuidance,
                                     poseGuidance: poseGuidance, noise: .seed(seed))
        let prepStart = Date()
        let job = try PreparedJob(model: dpModel, subject: qc.subject, settings: settings, poses: qc.poses)
        let prepSeconds = Date().timeIntervalSince(prepStart)
        let s = job.settings
        let saveDir = save.map { URL(fileURLWithPath: $0, isDirectory: true) }
        if let saveDir { try FileManager.default.createDirectory(at: saveDir, withIntermediateDirectories: true) }
        if !json {
            print(String(format: "quality: %@ on %@, %d frames, %@ %d steps, s_I %g, s_P %g, seed %llu, threads %d",
                         model, `case`, wanted.count, s.sampler.rawValue, s.steps, Double(s.imageGuidance),
                         Double(s.poseGuidance), seed, EngineThreads.count))
            print("frame    PSNR dB    SSIM    seconds")
        }

        struct Row { var frame: Int; var psnr: Double; var ssim: Double; var seconds: Double }
        var rows: [Row] = []
        var rendered: [Int: RGBImage] = [:]
        var truths: [Int: RGBImage] = [:]
        for n in wanted {
            let frame = try job.render(frame: n)
            let truth = try qc.truth(n)
            guard truth.width == frame.image.width, truth.height == frame.image.height else {
                throw PipelineError("frame \(n): truth is \(truth.width)x\(truth.height), the model renders \(frame.image.width)x\(frame.image.height)")
            }
            let row = Row(frame: n, psnr: try ImageQuality.psnr(frame.image, truth),
                          ssim: try ImageQuality.ssim(frame.image, truth), seconds: frame.renderSeconds)
            rows.append(row)
            rendered[n] = frame.image
            truths[n] = truth
            if let saveDir {
                try PNGCodec.write(frame.image, to: saveDir.appendingPathComponent(String(format: "frame_%05d.png", n)))
            }
            if !json { print(String(format: "%5d    %7.2f    %.4f    %.2f", n, row.psnr, row.ssim, row.seconds)) }
        }
        // Temporal figure over consecutive frame numbers that were both rendered.
        var renderedChange = 0.0, truthChange = 0.0, pairs = 0
        for n in wanted where rendered[n + 1] != nil {
            renderedChange += try ImageQuality.meanAbsoluteDifference(rendered[n]!, rendered[n + 1]!)
            truthChange += try ImageQuality.meanAbsoluteDifference(truths[n]!, truths[n + 1]!)
            pairs += 1
        }
        let meanPSNR = rows.map(\.psnr).reduce(0, +) / Double(rows.count)
        let meanSSIM = rows.map(\.ssim).reduce(0, +) / Double(rows.count)
        let meanSeconds = rows.map(\.seconds).reduce(0, +) / Double(rows.count)
        let temporal: Double? = pairs > 0 ? (renderedChange - truthChange) / Double(pairs) : nil
        if json {
            var obj: [String: Any] = [
                "model": model, "case": `case`, "sampler": s.sampler.rawValue, "steps": s.steps,
                "image_guidance": Double(s.imageGuidance), "pose_guidance": Double(s.poseGuidance),
                "seed": seed, "threads": EngineThreads.count, "frames": rows.map(\.frame),
                "psnr": rows.map(\.psnr), "ssim": rows.map(\.ssim), "seconds": rows.map(\.seconds),
                "mean_psnr": meanPSNR, "mean_ssim": meanSSIM, "mean_seconds": meanSeconds,
                "prepare_seconds": prepSeconds,
            ]
            if let temporal {
                obj["temporal"] = temporal
                obj["rendered_change"] = renderedChange / Double(pairs)
                obj["truth_change"] = truthChange / Double(pairs)
            }
            let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(String(format: " mean    %7.2f    %.4f    %.2f", meanPSNR, meanSSIM, meanSeconds))
            if let temporal {
                print(String(format: "temporal: %+.2f levels (consecutive-frame change: rendered %.2f, truth %.2f, %d pairs)",
                             temporal, renderedChange / Double(pairs), truthChange / Double(pairs), pairs))
            } else {
                print("temporal: n/a (no two consecutive frames rendered)")
            }
            print(String(format: "job preparation %.2f s; %.2f s per frame", prepSeconds, meanSeconds))
        }
    }
}

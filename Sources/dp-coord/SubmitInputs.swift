import DPCLISupport
import DPCoordinator
import DPFileKit
import DPModels
import DPPipeline
import DPProtocol
import Foundation

/// The local files of a `dp-coord submit`, read and checked on the submitting machine before anything is
/// sent or created, so a bad input fails here with a clear message and leaves no output behind.
struct SubmitInputs {
    var submission: JobSubmission
    /// Human summary for the first log line.
    var summary: String

    struct Options {
        /// The shared rendering options, already through `RenderOptions.validate()` (sampler name, steps,
        /// finite guidance, --seed or --noise).
        var render: RenderOptions
        var out: String
        var priority: Int
        var order: FrameOrder
        var video: String?
        var fps: Int
        var name: String?
        /// Submitting to a coordinator elsewhere (`--coordinator`): --out and --video are names inside
        /// its output root (`dp-coord serve --output-root`), sent as given; absolute paths are refused.
        var remote = false
    }

    /// Reads and validates every input named by `o` (paths relative to the current directory).
    static func load(_ o: Options) throws -> SubmitInputs {
        let r = o.render
        let fm = FileManager.default
        let modelURL = absoluteURL(r.model)
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: modelURL.path, isDirectory: &isDir), isDir.boolValue else {
            throw CLIError("--model \(modelURL.path): no such folder (expected a dreampose-model/1 folder)")
        }
        // The model's own settings: frame size, pose window, latent shape (for the noise file).
        let config = try DreamPoseConfig.load(modelURL.appendingPathComponent("dreampose.json"))
        let vaeConfig = try AutoencoderKLConfig.load(modelURL.appendingPathComponent("vae/config.json"))
        let latentShape = [1, vaeConfig.latentChannels, config.height / 8, config.width / 8]

        // Subject: decoded once to prove it is a readable PNG; the original bytes travel.
        let subjectURL = absoluteURL(r.subject)
        _ = try PNGCodec.read(subjectURL)
        let subjectPNG: Data
        do { subjectPNG = try Data(contentsOf: subjectURL) } catch {
            throw CLIError("--subject \(subjectURL.path): cannot read: \(error.localizedDescription)")
        }

        // Poses: every pose of the sequence as (2, H, W) .npy bytes (a window needs its neighbours).
        let posesURL = absoluteURL(r.poses)
        let source = try PoseSource(url: posesURL)
        var poses: [Int: Data] = [:]
        var poseSize: (Int, Int)?
        for n in source.frameNumbers {
            let pose = try source.pose(n)
            if let size = poseSize, size != (pose.height, pose.width) {
                throw CLIError("poses \(posesURL.path): frame \(n) is \(pose.height)x\(pose.width), "
                    + "earlier frames are \(size.0)x\(size.1) (every pose of a sequence must have one size)")
            }
            poseSize = (pose.height, pose.width)
            switch source.origin {
            case .directory(let dir):
                // Send the file as it is (already checked to be a (2, H, W) float array).
                poses[n] = try Data(contentsOf: dir.appendingPathComponent(PoseSource.fileName(frame: n)))
            case .stacked:
                poses[n] = NPY.encode(shape: [2, pose.height, pose.width], values: pose.values)
            }
        }

        let frames = try r.frames.map(FrameSelection.parse) ?? source.frameNumbers
        let missing = frames.filter { poses[$0] == nil }
        guard missing.isEmpty else {
            throw CLIError("--frames asks for frame(s) \(missing.prefix(10).map(String.init).joined(separator: ", "))"
                + "\(missing.count > 10 ? ", ..." : "") that have no pose in \(posesURL.path)")
        }

        guard o.fps >= 1 else { throw CLIError("--fps must be at least 1 (got \(o.fps))") }

        // The render request; a --noise file is read here, against the model's latent shape.
        let request = try r.request(latentShape: latentShape, frames: frames, order: o.order, url: absoluteURL)
        let resolved = try request.resolved(for: config)

        let out: URL
        let video: String?
        if o.remote {
            // Names inside the coordinator's output root; it checks them again (and owns the root).
            for (flag, value) in [("--out", o.out), ("--video", o.video)] {
                if let value, let problem = RelativePath.problem(value) {
                    throw CLIError("\(flag) \(value): with --coordinator it names a folder or file inside the coordinator's "
                        + "output root (dp-coord serve --output-root), relative and without '..': \(problem)")
                }
            }
            out = URL(fileURLWithPath: o.out, relativeTo: URL(fileURLWithPath: "/")).standardizedFileURL
            video = o.video
        } else {
            out = absoluteURL(o.out)
            var outIsDir: ObjCBool = false
            if fm.fileExists(atPath: out.path, isDirectory: &outIsDir), !outIsDir.boolValue {
                throw CLIError("--out \(out.path) exists and is not a folder")
            }
            video = o.video.map { absoluteURL($0).path }
        }
        if let video, !video.lowercased().hasSuffix(".mp4") && !video.lowercased().hasSuffix(".mkv")
            && !video.lowercased().hasSuffix(".mov") {
            throw CLIError("--video \(video): expected a .mp4, .mkv or .mov file name")
        }

        let name = o.name ?? "\(modelURL.lastPathComponent):\(subjectURL.deletingPathExtension().lastPathComponent)"
        let job = JobSubmission(name: name, modelDirectory: modelURL, subjectPNG: subjectPNG, poses: poses,
                                request: request, priority: o.priority, outputDirectory: o.remote ? o.out : out.path,
                                videoPath: video, fps: o.fps)
        let summary = "\(frames.count) frame(s) of \(poses.count) pose(s), model \(config.name) \(config.height)x\(config.width), "
            + "\(resolved.summary) -> \(o.remote ? o.out + " (in the coordinator's output root)" : out.path)"
        return SubmitInputs(submission: job, summary: summary)
    }

    static func absoluteURL(_ path: String) -> URL {
        let expanded = (path as NSString).expandingTildeInPath
        return URL(fileURLWithPath: expanded, relativeTo: URL(fileURLWithPath: fm.currentDirectoryPath, isDirectory: true))
            .standardizedFileURL
    }

    private static var fm: FileManager { .default }
}

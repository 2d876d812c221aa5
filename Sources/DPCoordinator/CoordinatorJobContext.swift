// What the coordinator keeps in memory per active job: its spec, the JobPrep it sends workers, the
// pose files (content-addressed in <state>/inputs) and its OutputWriter.
import DPFileKit
import DPJournal
import DPProtocol
import Foundation

final class JobContext {
    let id: Int64
    let spec: FarmJobSpec
    let modelID: String
    let prep: FarmJobPrep
    let output: OutputWriter
    let poseWindowSize: Int
    /// The inputs folder's path, and each frame's pose file in it (its SHA-256).
    private let inputsPath: String
    private let poseFiles: [UInt32: String]
    private let available: Set<UInt32>
    /// Pose bytes by file (SHA-256): a frame's window shares 4 poses with the previous frame's, and
    /// repeated poses are one file.
    private var poseCache: [String: Data] = [:]

    /// `doneFrames`: the job's done frames in the journal, which vouch for their PNGs (see
    /// `OutputWriter`'s `recorded`). `spec`: the job's spec when the caller has it decoded (a job just
    /// submitted); nil = decoded from the record.
    /// The frame size every result must have (the model's dreampose.json `width` x `height`).
    let frameWidth: Int
    let frameHeight: Int

    init(record: JobRecord, spec decoded: FarmJobSpec? = nil, doneFrames: [FrameRecord], models: ModelStore,
         inputs: URL, placement: OutputPlacement) throws {
        id = record.id
        if let decoded {
            spec = decoded
        } else {
            do {
                spec = try FarmJobSpec(serializedBytes: record.spec)
            } catch {
                throw CoordinatorError("job \(record.id): its journaled spec does not decode: \(error)")
            }
        }
        modelID = record.modelID
        guard models.contains(modelID) else {
            throw CoordinatorError("job \(record.id): model \(modelID) is not held by this coordinator"
                + (models.refusedAtStart[modelID].map { " (\($0))" } ?? ""))
        }
        let model = try Self.readDreamPose(folder: models.folder(for: modelID), modelID: modelID)
        poseWindowSize = model.poseWindow
        frameWidth = model.width
        frameHeight = model.height
        inputsPath = inputs.path
        var files: [UInt32: String] = [:]
        files.reserveCapacity(spec.poses.count)
        for pose in spec.poses {
            files[pose.frame] = pose.file.sha256
        }
        poseFiles = files
        available = Set(files.keys)
        let subjectURL = inputs.appendingPathComponent(spec.subject.sha256)
        let subject: Data
        do {
            subject = try Data(contentsOf: subjectURL)
        } catch {
            throw CoordinatorError("job \(record.id): cannot read its subject image \(subjectURL.path): \(error)")
        }
        var prep = FarmJobPrep()
        prep.jobID = UInt64(record.id)
        prep.modelID = modelID
        prep.settings = spec.settings
        prep.subjectPng = subject
        prep.poseWindow = UInt32(poseWindowSize)
        self.prep = prep

        let outputSettings: OutputJobSettings
        do {
            outputSettings = OutputJobSettings(try RenderRequest(spec: spec).resolved(defaults: model))
        } catch {
            throw CoordinatorError("job \(record.id): \(error)")
        }
        let recorded = JobContext.recorded(doneFrames, modelID: modelID, settings: outputSettings)
        // Confined to the output root unless local paths are allowed (the embedded farm); a stored
        // path outside the root (the root changed) is refused here and fails the job.
        if placement.root != nil { _ = try placement.relative(record.outputDir, what: "output folder") }
        output = try OutputWriter(directory: URL(fileURLWithPath: record.outputDir), jobID: UInt64(record.id),
                                  modelID: modelID, settings: outputSettings,
                                  frames: spec.frames.isEmpty ? spec.poses.map(\.frame) : spec.frames,
                                  durability: .batched, recorded: recorded, confinedTo: placement.root)
        if let video = record.videoPath, !video.isEmpty, !record.videoWritten {
            try output.checkVideoTarget(URL(fileURLWithPath: video))
        }
    }

    /// The journal's done frames as the output's records, which vouch for their PNGs.
    static func recorded(_ doneFrames: [FrameRecord], modelID model: String,
                         settings outputSettings: OutputJobSettings) -> [OutputFrameRecord] {
        doneFrames.filter { $0.state == .done }.map { f in
            OutputFrameRecord(frame: UInt32(f.frame), file: OutputWriter.fileName(frame: UInt32(f.frame)),
                              attempt: UInt64(f.doneAttemptID ?? 0), worker: f.worker ?? "", modelID: model,
                              seed: outputSettings.seed, sampler: outputSettings.sampler, steps: outputSettings.steps,
                              imageGuidance: outputSettings.imageGuidance, poseGuidance: outputSettings.poseGuidance,
                              renderSeconds: f.renderSeconds ?? 0, pngSHA256: f.outputSHA256 ?? "",
                              pngSize: f.outputSize ?? -1)
        }
    }

    /// The .npy bytes of poses n-2 ... n+2 (centre-pose fallback applied) for frame `frame`.
    func poseWindow(for frame: UInt32) throws -> [Data] {
        let numbers = PoseWindow.frames(for: frame, available: available, size: poseWindowSize)
        if poseCache.count > 256 { poseCache.removeAll(keepingCapacity: true) }
        return try numbers.map { n in
            guard let file = poseFiles[n] else {
                throw CoordinatorError("job \(id): frame \(frame) needs pose \(n), which the job does not list")
            }
            if let data = poseCache[file] { return data }
            let data: Data
            do {
                data = try FileRead.contents(ofFile: inputsPath + "/" + file)
            } catch {
                throw CoordinatorError("job \(id): cannot read pose \(n): \(error)")
            }
            poseCache[file] = data
            return data
        }
    }
}

extension JobContext {
    /// The model's dreampose.json, read through DPFileKit's `DreamPoseFile`, which checks every value against
    /// `DreamPoseLimits` (the pipeline reads it the same way): a hostile file (`steps: 1e300`, a pose_window
    /// past UInt32.max) is an error for that model, never a trap in the coordinator.
    static func readDreamPose(folder: URL, modelID: String) throws -> DreamPoseFile {
        do {
            return try DreamPoseFile.read(folder.appendingPathComponent("dreampose.json"))
        } catch {
            throw CoordinatorError("model \(modelID): \(error)")
        }
    }
}

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
        let defaults = try ModelDefaults(folder: models.folder(for: modelID), modelID: modelID)
        poseWindowSize = defaults.poseWindow
        frameWidth = defaults.width
        frameHeight = defaults.height
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

        let s = spec.settings
        var seed: UInt64?
        var noiseSHA: String?
        switch s.noise {
        case .noiseNpy(let data)?: noiseSHA = FileDigest.sha256(data)
        case .seed(let value)?: seed = value
        case nil: seed = 0
        }
        let outputSettings = OutputJobSettings(
            seed: seed, noiseSHA256: noiseSHA, sampler: s.sampler.isEmpty ? defaults.sampler : s.sampler,
            steps: s.steps == 0 ? defaults.steps : Int(s.steps),
            imageGuidance: s.hasImageGuidance_p ? s.imageGuidance : defaults.imageGuidance,
            poseGuidance: s.hasPoseGuidance_p ? s.poseGuidance : defaults.poseGuidance)
        let model = modelID
        let recorded = doneFrames.filter { $0.state == .done }.map { f in
            OutputFrameRecord(frame: UInt32(f.frame), file: OutputWriter.fileName(frame: UInt32(f.frame)),
                              attempt: UInt64(f.doneAttemptID ?? 0), worker: f.worker ?? "", modelID: model,
                              seed: outputSettings.seed, sampler: outputSettings.sampler, steps: outputSettings.steps,
                              imageGuidance: outputSettings.imageGuidance, poseGuidance: outputSettings.poseGuidance,
                              renderSeconds: f.renderSeconds ?? 0, pngSHA256: f.outputSHA256 ?? "",
                              pngSize: f.outputSize ?? -1)
        }
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

/// The defaults of a model's dreampose.json (docs/model-format.md) that manifest.json reports.
struct ModelDefaults {
    var steps: Int
    var sampler: String
    var imageGuidance: Float
    var poseGuidance: Float
    var poseWindow: Int
    /// The frame size (dreampose.json `width`, `height`): results are checked against it.
    var width: Int
    var height: Int

    init(folder: URL, modelID: String) throws {
        let url = folder.appendingPathComponent("dreampose.json")
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: try Data(contentsOf: url))
        } catch {
            throw CoordinatorError("model \(modelID): cannot read \(url.path): \(error)")
        }
        guard let root = object as? [String: Any], let defaults = root["defaults"] as? [String: Any] else {
            throw CoordinatorError("model \(modelID): \(url.path) has no \"defaults\" object")
        }
        func number(_ key: String) throws -> Double {
            guard let v = defaults[key] as? NSNumber, v.doubleValue.isFinite else {
                throw CoordinatorError("model \(modelID): \(url.path): defaults.\(key) missing or not a finite number")
            }
            return v.doubleValue
        }
        // Checked conversions: a hostile value (`steps: 1e300`) is an error naming the key, never a trap.
        let stepsValue = try number("steps")
        guard let whole = Int(exactly: stepsValue), (1...100_000).contains(whole) else {
            throw CoordinatorError("model \(modelID): \(url.path): defaults.steps \(stepsValue) is not a whole number from 1 to 100000")
        }
        steps = whole
        guard let sampler = defaults["sampler"] as? String else {
            throw CoordinatorError("model \(modelID): \(url.path): defaults.sampler missing or not a string")
        }
        self.sampler = sampler
        imageGuidance = Float(try number("image_guidance"))
        poseGuidance = Float(try number("pose_guidance"))
        let windowValue = (root["pose_window"] as? NSNumber)?.doubleValue ?? Double(FarmProtocol.defaultPoseWindow)
        guard let window = Int(exactly: windowValue), (1...1001).contains(window), window % 2 == 1 else {
            throw CoordinatorError("model \(modelID): \(url.path): pose_window \(windowValue) must be odd and positive "
                + "(at most 1001)")
        }
        poseWindow = window
        func size(_ key: String) throws -> Int {
            guard let v = root[key] as? NSNumber, let n = Int(exactly: v.doubleValue), (1...ResultPNGCheck.maxSide).contains(n) else {
                throw CoordinatorError("model \(modelID): \(url.path): \(key) missing or not a whole number of pixels "
                    + "from 1 to \(ResultPNGCheck.maxSide)")
            }
            return n
        }
        width = try size("width")
        height = try size("height")
    }
}

// The whole-job kind of a pipeline golden case ("dreampose_pipeline", shared/golden/README.md §7): renders the
// case's job.json through DPPipeline's `PreparedJob` (the code path of `dp-worker render`) and compares every
// tensor the manifest lists (subject conditioning, x_T, per-frame windows, step-0 batch, trajectories, decoded
// frames) within the tolerance, and every final PNG frame under the acceptance rule of §7.5.

import DPFileKit
import DPPipeline
import DPSampling
import DPTensor
import Foundation

/// The frame acceptance rule of golden/README.md §7.5: at most 3 levels off in any channel, and at most 2 % of
/// pixels whose worst channel is off by more than 1 level.
public struct FrameAcceptance: CustomStringConvertible {
    public static let maxLevels = 3
    public static let maxFractionOffByMoreThanOne = 0.02

    public var maxLevels = 0
    public var pixelsOffByMoreThanOne = 0
    public var pixels = 0

    public init(_ a: RGBImage, _ b: RGBImage) {
        precondition(a.width == b.width && a.height == b.height, "frame sizes differ")
        pixels = a.width * a.height
        for p in 0..<pixels {
            var worst = 0
            for c in 0..<3 { worst = max(worst, abs(Int(a.pixels[p * 3 + c]) - Int(b.pixels[p * 3 + c]))) }
            maxLevels = max(maxLevels, worst)
            if worst > 1 { pixelsOffByMoreThanOne += 1 }
        }
    }

    public var accepted: Bool {
        maxLevels <= Self.maxLevels && Double(pixelsOffByMoreThanOne) <= Self.maxFractionOffByMoreThanOne * Double(pixels)
    }

    public var description: String { "max \(maxLevels) levels, \(pixelsOffByMoreThanOne)/\(pixels) px off by >1" }
}

/// `job.json` of a pipeline golden case.
public struct PipelineJobFile: Decodable {
    public struct Noise: Decodable { public var file: String; public var shape: [Int] }
    public var model: String
    public var subject: String
    public var posesDir: String
    public var frames: [Int]
    public var noise: Noise
    public var sampler: String
    public var steps: Int
    public var sImage: Float
    public var sPose: Float

    enum CodingKeys: String, CodingKey {
        case model, subject, frames, noise, sampler, steps
        case posesDir = "poses_dir", sImage = "s_image", sPose = "s_pose"
    }

    public static func load(_ url: URL) throws -> PipelineJobFile {
        do { return try JSONDecoder().decode(PipelineJobFile.self, from: Data(contentsOf: url)) } catch {
            throw GoldenError.malformed(file: url.path, reason: "\(error)")
        }
    }

    /// The job's render settings (noise read from its raw float32 file).
    public func settings(in dir: URL, latentShape: [Int]) throws -> RenderRequest {
        guard let kind = SamplerKind(rawValue: sampler) else { throw ParitySkip("sampler \"\(sampler)\" is not one of ours") }
        let noise = try NoiseRequest.rawFile(dir.appendingPathComponent(self.noise.file), latentShape: latentShape)
        return RenderRequest(steps: steps, sampler: kind, imageGuidance: sImage, poseGuidance: sPose, noise: noise)
    }
}

extension ParityRunner {
    /// Adds the whole-job handler.
    public func registerPipelineHandler() {
        register(kind: "dreampose_pipeline", handler: Self.dreamposePipeline)
    }

    static func dreamposePipeline(_ c: ParityContext) throws -> [ParityMeasurement] {
        let golden = c.golden
        let job = try PipelineJobFile.load(golden.url(c.golden.manifest["job"]?.string ?? "job.json"))
        let model = try DreamPoseModel(directory: golden.url(job.model))
        let latentShape = [1, model.latentChannels, model.latentHeight, model.latentWidth]
        var ms: [ParityMeasurement] = []
        var produced = Set<String>()
        func check(_ name: String, _ actual: Tensor) {
            guard golden.hasTensor(name) else { return }
            produced.insert(name)
            do {
                ms.append(ParityMeasurement.compare(name, actual: actual, expected: try golden.tensor(name)))
            } catch {
                ms.append(ParityMeasurement(name: name, maxAbsError: .infinity, maxAbsExpected: 0, problem: "\(error)"))
            }
        }
        let prepared = try PreparedJob(model: model, subject: PNGCodec.read(golden.url(job.subject)),
                                       settings: job.settings(in: golden.directory, latentShape: latentShape),
                                       poses: PoseSource(url: golden.url(job.posesDir)),
                                       intermediates: { check($0, $1) })
        for n in job.frames {
            let frame = try prepared.render(frame: n, intermediates: { check("frame_\(n).\($0)", $1) })
            let expected = try PNGCodec.read(golden.url("expected/frame_\(n).png"))
            let verdict = FrameAcceptance(frame.image, expected)
            ms.append(ParityMeasurement(name: "frame_\(n).png \(verdict)", maxAbsError: Float(verdict.maxLevels),
                                        maxAbsExpected: 255, accepted: verdict.accepted))
        }
        // Every expected tensor of the case (resampling vectors aside: the IO tests check those) must be compared.
        for name in golden.tensorNames where !name.hasPrefix("resample.") && !produced.contains(name) {
            ms.append(ParityMeasurement(name: name, maxAbsError: .infinity, maxAbsExpected: 0,
                                        problem: "listed by the case but not produced by the pipeline"))
        }
        return ms
    }
}

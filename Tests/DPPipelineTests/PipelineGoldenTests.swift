import DPGolden
import DPPipeline
import DPSampling
import DPTensor
import Foundation
import XCTest

/// Runs every pipeline case under ../shared/golden (format "dreampose-pipeline-golden/1", produced by
/// diffusers 0.42 / transformers 5.23 / Pillow from the DreamPose reference, see golden/README.md §7)
/// through the real renderer and checks every intermediate it provides and the final PNG frames.
final class PipelineGoldenTests: XCTestCase {
    func testEveryPipelineCase() throws {
        let cases = try GoldenCase.discover(format: GoldenCase.pipelineFormat)
        XCTAssertFalse(cases.isEmpty, "no pipeline golden case found under \(GoldenCase.goldenRoot.path)")
        for golden in cases {
            try runCase(golden)
        }
    }

    func runCase(_ golden: GoldenCase) throws {
        let dir = golden.directory
        let job = try PipelineJobFile.load(dir.appendingPathComponent("job.json"))
        let model = try DreamPoseModel(directory: dir.appendingPathComponent(job.model))
        let subject = try PNGCodec.read(dir.appendingPathComponent(job.subject))
        let latentShape = [1, model.latentChannels, model.latentHeight, model.latentWidth]
        let noise = try NoiseSource.file(dir.appendingPathComponent(job.noiseFile), shape: latentShape)
        let settings = RenderSettings(steps: job.steps, sampler: SamplerKind(rawValue: job.sampler),
                                      imageGuidance: job.sImage, poseGuidance: job.sPose, noise: noise)
        let poses = try PoseSource(url: dir.appendingPathComponent(job.posesDir))

        var checked = 0
        func check(_ name: String, _ actual: Tensor) {
            guard golden.hasTensor(name) else { return }
            do {
                let expected = try golden.tensor(name)
                XCTAssertEqual(actual.count, expected.count, "\(golden.name) \(name): \(actual.shape) vs \(expected.shape)")
                guard actual.count == expected.count else { return }
                let rel = actual.maxAbsDifference(expected) / max(expected.maxAbs, 1e-12)
                print("\(golden.name) \(name): rel err \(rel)")
                XCTAssertLessThanOrEqual(rel, 1e-4, "\(golden.name) \(name)")
                checked += 1
            } catch {
                XCTFail("\(golden.name) \(name): \(error)")
            }
        }
        let prepared = try PreparedJob(model: model, subject: subject, settings: settings, poses: poses,
                                       intermediates: { name, t in check(name, t) })
        XCTAssertEqual(prepared.timesteps, job.timesteps ?? prepared.timesteps, "\(golden.name): timesteps")

        for n in job.frames {
            let frame = try prepared.render(frame: n, intermediates: { name, t in check("frame_\(n).\(name)", t) })
            let expected = try PNGCodec.read(dir.appendingPathComponent("expected/frame_\(n).png"))
            let verdict = FrameComparison(frame.image, expected)
            print("\(golden.name) frame \(n): max level diff \(verdict.maxLevels), pixels off by >1: \(verdict.pixelsOffByMoreThanOne)/\(verdict.pixels)")
            // golden/README.md §7.5: at most 3 levels in any channel, at most 2 % of pixels off by more than 1.
            XCTAssertLessThanOrEqual(verdict.maxLevels, 3, "\(golden.name) frame \(n)")
            XCTAssertLessThanOrEqual(Double(verdict.pixelsOffByMoreThanOne), 0.02 * Double(verdict.pixels), "\(golden.name) frame \(n)")
        }
        // Every tensor the case provides (other than inputs and resampling vectors) was compared.
        let provided = golden.tensorNames.filter { !$0.hasPrefix("resample.") }
        XCTAssertEqual(checked, provided.count, "\(golden.name): compared \(checked) of \(provided.count) tensors: "
            + "not compared: \(provided.filter { _ in true }.sorted())")
    }
}

/// The acceptance measure of golden/README.md §7.5.
struct FrameComparison {
    var maxLevels = 0
    var pixelsOffByMoreThanOne = 0
    var pixels = 0

    init(_ a: RGBImage, _ b: RGBImage) {
        precondition(a.width == b.width && a.height == b.height, "frame sizes differ")
        pixels = a.width * a.height
        for p in 0..<pixels {
            var worst = 0
            for c in 0..<3 { worst = max(worst, abs(Int(a.pixels[p * 3 + c]) - Int(b.pixels[p * 3 + c]))) }
            maxLevels = max(maxLevels, worst)
            if worst > 1 { pixelsOffByMoreThanOne += 1 }
        }
    }
}

/// `job.json` of a pipeline golden case.
struct PipelineJobFile: Decodable {
    struct Noise: Decodable { var file: String; var shape: [Int] }
    var model: String
    var subject: String
    var posesDir: String
    var frames: [Int]
    var noise: Noise
    var sampler: String
    var steps: Int
    var sImage: Float
    var sPose: Float
    var timesteps: [Int]?
    var noiseFile: String { noise.file }

    enum CodingKeys: String, CodingKey {
        case model, subject, frames, noise, sampler, steps, timesteps
        case posesDir = "poses_dir", sImage = "s_image", sPose = "s_pose"
    }

    static func load(_ url: URL) throws -> PipelineJobFile {
        try JSONDecoder().decode(PipelineJobFile.self, from: Data(contentsOf: url))
    }
}

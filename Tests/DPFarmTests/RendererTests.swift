// The worker's renderer interface: the synthetic renderer's determinism, progress and cancel (with
// an injected sleeper), and the real pipeline renderer on every pipeline golden case under
// ../shared/golden (driven by each case's job.json; frames checked against expected/frame_<n>.png
// with golden/README.md §7.5's acceptance rule, produced by diffusers/transformers/Pillow).
import DPFileKit
import DPPipeline
import DPProtocol
@testable import DPWorker
import Foundation
import Synchronization
import XCTest

final class RendererTests: XCTestCase {
    private func spec(job: String = "1", seed: UInt64 = 9, steps: Int? = nil, noise: Data? = nil) -> JobRenderSpec {
        JobRenderSpec(jobID: job, modelID: String(repeating: "c", count: 64), subjectPNG: Data([1, 2, 3]),
                      request: RenderRequest(steps: steps, sampler: .ddim, imageGuidance: 2, poseGuidance: 1,
                                             noise: noise.map { .npy($0) } ?? .seed(seed)))
    }

    private let poses = (0 ..< 5).map { Data("pose \($0)".utf8) }

    func testSyntheticFramesDependOnlyOnSettingsFrameAndPoses() throws {
        let folder = URL(fileURLWithPath: "/nonexistent")
        let a = try SyntheticFrameRenderer(width: 6, height: 4).prepare(job: spec(), modelDirectory: folder)
        let b = try SyntheticFrameRenderer(width: 6, height: 4).prepare(job: spec(job: "other job id"), modelDirectory: folder)
        func png(_ r: any PreparedFrameRenderer, _ frame: Int, _ window: [Data]) throws -> Data {
            try r.render(frame: frame, poseWindow: window, progress: { _ in }, isCancelled: { false }).png
        }
        let reference = try png(a, 3, poses)
        XCTAssertEqual(try png(a, 3, poses), reference, "same inputs, same bytes")
        XCTAssertEqual(try png(b, 3, poses), reference, "the job id is not an input")
        XCTAssertNotEqual(try png(a, 4, poses), reference)
        var otherPoses = poses
        otherPoses[4] = Data("pose 4'".utf8)
        XCTAssertNotEqual(try png(a, 3, otherPoses), reference)
        let reseeded = try SyntheticFrameRenderer(width: 6, height: 4).prepare(job: spec(seed: 10), modelDirectory: folder)
        XCTAssertNotEqual(try png(reseeded, 3, poses), reference)
        let noisy = try SyntheticFrameRenderer(width: 6, height: 4).prepare(job: spec(noise: Data([0, 0, 128, 63])),
                                                                             modelDirectory: folder)
        XCTAssertNotEqual(try png(noisy, 3, poses), reference)
        let image = try PNGCodec.decode(reference)
        XCTAssertEqual([image.width, image.height], [6, 4])
        XCTAssertGreaterThan(Set(image.pixels).count, 8, "not a constant image")
    }

    func testSyntheticStepsProgressDelayAndCancel() throws {
        // The fake time and the sleeps asked for (the renderer may call these from any thread).
        final class FakeTime: Sendable {
            let state = Mutex((slept: [Double](), clock: UInt64(1_000_000_000)))
            var slept: [Double] {
                get { state.withLock { $0.slept } }
                set { state.withLock { $0.slept = newValue } }
            }
            func advance(nanoseconds: UInt64) { state.withLock { $0.clock += nanoseconds } }
        }
        let time = FakeTime()
        let renderer = SyntheticFrameRenderer(steps: 4, stepDelaySeconds: 0.25, sleeper: { seconds in
            time.state.withLock {
                $0.slept.append(seconds)
                $0.clock += UInt64((seconds * 1e9).rounded())
            }
        }, clock: { time.state.withLock { $0.clock } })
        let prepared = try renderer.prepare(job: spec(), modelDirectory: URL(fileURLWithPath: "/x"))
        XCTAssertEqual(prepared.totalSteps, 4)
        var steps: [Int] = []
        _ = try prepared.render(frame: 0, poseWindow: poses, progress: { steps.append($0) }, isCancelled: { false })
        XCTAssertEqual(steps, [1, 2, 3, 4])
        XCTAssertEqual(time.slept, [0.25, 0.25, 0.25, 0.25])
        // Each step ends at its deadline from the frame's start: a step that overran is followed by a
        // shorter sleep, so the frame still takes 4 x 0.25 s.
        time.slept = []
        var overran = false
        _ = try prepared.render(frame: 1, poseWindow: poses, progress: { step in
            if step == 1 && !overran { overran = true; time.advance(nanoseconds: 100_000_000) }
        }, isCancelled: { false })
        XCTAssertEqual(time.slept.map { ($0 * 1000).rounded() }, [250, 150, 250, 250])
        // The job's steps win over the renderer's default.
        XCTAssertEqual(try renderer.prepare(job: spec(steps: 7), modelDirectory: URL(fileURLWithPath: "/x")).totalSteps, 7)
        // Cancelled after two steps: stops before the third.
        steps = []
        XCTAssertThrowsError(try prepared.render(frame: 5, poseWindow: poses, progress: { steps.append($0) },
                                                 isCancelled: { steps.count >= 2 })) {
            XCTAssertEqual($0 as? FrameRenderCancelled, FrameRenderCancelled(frame: 5, step: 2))
        }
        XCTAssertEqual(steps, [1, 2])
    }

    // MARK: - The real renderer on the golden pipeline cases

    private struct GoldenJob: Decodable {
        struct Noise: Decodable { var file: String; var shape: [Int] }
        var model: String
        var subject: String
        var poses_dir: String
        var pose_file: String
        var frames: [Int]
        var noise: Noise
        var sampler: String
        var steps: Int
        var s_image: Float
        var s_pose: Float
    }

    private static var goldenRoot: URL {
        if let env = ProcessInfo.processInfo.environment["DP_GOLDEN_DIR"], !env.isEmpty {
            return URL(fileURLWithPath: env).standardizedFileURL
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("../shared/golden").standardizedFileURL
    }

    /// Folders under the golden root whose manifest.json has the pipeline format.
    private func pipelineCases() throws -> [URL] {
        let root = Self.goldenRoot
        let names = try FileManager.default.contentsOfDirectory(atPath: root.path).sorted()
        return names.map { root.appendingPathComponent($0) }.filter { dir in
            guard let data = try? Data(contentsOf: dir.appendingPathComponent("manifest.json")),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return false }
            return json["format"] as? String == "dreampose-pipeline-golden/1"
        }
    }

    /// golden/README.md §7.5: at most 3 levels off in any channel, at most 2 % of pixels whose worst
    /// channel is off by more than 1 level.
    private func assertAccepted(_ png: Data, _ expectedURL: URL, _ what: String) throws {
        let got = try PNGCodec.decode(png, name: what)
        let want = try PNGCodec.read(expectedURL)
        XCTAssertEqual([got.width, got.height], [want.width, want.height], what)
        guard got.pixels.count == want.pixels.count else { return }
        var worst = 0, over1 = 0
        for p in 0 ..< got.width * got.height {
            var pixelWorst = 0
            for c in 0 ..< 3 {
                pixelWorst = max(pixelWorst, abs(Int(got.pixels[p * 3 + c]) - Int(want.pixels[p * 3 + c])))
            }
            worst = max(worst, pixelWorst)
            if pixelWorst > 1 { over1 += 1 }
        }
        XCTAssertLessThanOrEqual(worst, 3, "\(what): a channel is \(worst) levels off")
        XCTAssertLessThanOrEqual(Double(over1), 0.02 * Double(got.width * got.height),
                                 "\(what): \(over1) pixels off by more than 1 level")
    }

    func testPipelineRendererMatchesTheGoldenFrames() throws {
        let cases = try pipelineCases()
        XCTAssertFalse(cases.isEmpty, "no pipeline golden case under \(Self.goldenRoot.path)")
        for dir in cases {
            let job = try JSONDecoder().decode(GoldenJob.self, from: Data(contentsOf: dir.appendingPathComponent("job.json")))
            let modelDir = dir.appendingPathComponent(job.model)
            // The raw f32 LE noise file, read as `--noise` reads it (into the .npy form the wire carries).
            let noise = try NoiseRequest.rawFile(dir.appendingPathComponent(job.noise.file), latentShape: job.noise.shape)
            let spec = JobRenderSpec(jobID: dir.lastPathComponent, modelID: String(repeating: "0", count: 64),
                                     subjectPNG: try Data(contentsOf: dir.appendingPathComponent(job.subject)),
                                     request: RenderRequest(steps: job.steps, sampler: try SamplerKind.named(job.sampler),
                                                            imageGuidance: job.s_image, poseGuidance: job.s_pose,
                                                            noise: noise))
            let renderer = PipelineFrameRenderer()
            let prepared = try renderer.prepare(job: spec, modelDirectory: modelDir)
            // UNet evaluations per frame: PNDM takes one more than `steps` (diffusers' PLMS warm-up).
            XCTAssertGreaterThanOrEqual(prepared.totalSteps, job.steps, dir.lastPathComponent)

            // The pose files of the case, and each frame's window with the centre fallback the
            // coordinator applies (DPProtocol's PoseWindow), as .npy bytes.
            let posesDir = dir.appendingPathComponent(job.poses_dir)
            var poseBytes: [UInt32: Data] = [:]
            for name in try FileManager.default.contentsOfDirectory(atPath: posesDir.path) {
                let parts = job.pose_file.components(separatedBy: "{n}")
                guard parts.count == 2, name.hasPrefix(parts[0]), name.hasSuffix(parts[1]),
                      let n = UInt32(name.dropFirst(parts[0].count).dropLast(parts[1].count)) else { continue }
                poseBytes[n] = try Data(contentsOf: posesDir.appendingPathComponent(name))
            }
            let windowSize = try DreamPoseConfig.load(modelDir.appendingPathComponent("dreampose.json")).poseWindow
            XCTAssertEqual(renderer.loadedModels.modelIDs, [spec.modelID], "the loaded model is cached by id")
            for frame in job.frames {
                let window = PoseWindow.frames(for: UInt32(frame), available: Set(poseBytes.keys), size: windowSize)
                var steps: [Int] = []
                let result = try prepared.render(frame: frame, poseWindow: window.map { poseBytes[$0]! },
                                                 progress: { steps.append($0) }, isCancelled: { false })
                XCTAssertEqual(steps, Array(1 ... prepared.totalSteps))
                XCTAssertGreaterThan(result.seconds, 0)
                try assertAccepted(result.png, dir.appendingPathComponent("expected/frame_\(frame).png"),
                                   "\(dir.lastPathComponent) frame \(frame)")
            }

            // The same job through the wire (JobPrep's settings, as the worker reads them), rendered by a second
            // renderer instance: byte-identical frame.
            var prep = FarmJobPrep()
            prep.jobID = 7
            prep.modelID = spec.modelID
            prep.subjectPng = spec.subjectPNG
            prep.settings = FarmRenderSettings(spec.request)
            let wireSpec = try WorkerService.renderSpec(prep)
            XCTAssertEqual(wireSpec.request, spec.request, "the request survives the wire")
            let first = job.frames[0]
            let window = PoseWindow.frames(for: UInt32(first), available: Set(poseBytes.keys), size: windowSize)
                .map { poseBytes[$0]! }
            let again = try PipelineFrameRenderer().prepare(job: wireSpec, modelDirectory: modelDir)
            let a = try prepared.render(frame: first, poseWindow: window, progress: { _ in }, isCancelled: { false }).png
            let b = try again.render(frame: first, poseWindow: window, progress: { _ in }, isCancelled: { false }).png
            XCTAssertEqual(a, b, "\(dir.lastPathComponent): frame bytes differ after the wire")

            // Cancel is seen between steps.
            var seen: [Int] = []
            XCTAssertThrowsError(try prepared.render(frame: first, poseWindow: window, progress: { seen.append($0) },
                                                     isCancelled: { seen.count >= 1 })) {
                XCTAssertEqual($0 as? FrameRenderCancelled, FrameRenderCancelled(frame: first, step: 1))
            }
            // Bad inputs are refused with the job named.
            XCTAssertThrowsError(try prepared.render(frame: first, poseWindow: [Data("not npy".utf8)], progress: { _ in },
                                                     isCancelled: { false })) {
                XCTAssertTrue("\($0)".contains("pose window entry 0"), "\($0)")
            }
            var badSampler = prep
            badSampler.settings.sampler = "euler"
            XCTAssertThrowsError(try WorkerService.renderSpec(badSampler)) {
                XCTAssertTrue("\($0)".contains("unknown sampler \"euler\""), "\($0)")
            }
            var badNoise = spec
            badNoise.request.noise = .npy(NPY.encode(shape: [1, 4, 2, 2], values: Array(repeating: 0, count: 16)))
            XCTAssertThrowsError(try renderer.prepare(job: badNoise, modelDirectory: modelDir)) {
                XCTAssertTrue("\($0)".contains("noise .npy has shape [1, 4, 2, 2], the model's latent is \(job.noise.shape)"), "\($0)")
            }
        }
    }
}

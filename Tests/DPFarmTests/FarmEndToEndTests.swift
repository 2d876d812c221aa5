// The farm end to end: a real Coordinator (ROUTER on tcp://127.0.0.1:*, SQLite journal, output
// files) and real WorkerServices, driven through FarmClient like `dp-coord submit`.
import DPCoordinator
import DPFileKit
import DPPipeline
import DPProtocol
import DPWorker
import Foundation
import XCTest

final class FarmEndToEndTests: XCTestCase {
    var temp: URL!
    var stops: [() -> Void] = []

    override func setUpWithError() throws {
        temp = FileManager.default.temporaryDirectory.appendingPathComponent("farm-e2e-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: temp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        for stop in stops.reversed() { stop() }
        stops = []
        try? FileManager.default.removeItem(at: temp)
    }

    func startCoordinator(state: URL) throws -> Coordinator {
        var settings = CoordinatorSettings(bind: "tcp://127.0.0.1:*", stateDirectory: state)
        settings.heartbeatIntervalMs = 50
        settings.heartbeatLiveness = 5
        settings.restartGraceSeconds = 0.3
        settings.allowLocalOutputPaths = true  // absolute output folders in the test's temp folder
        let coordinator = try Coordinator(settings: settings, log: { print("coord: \($0)") })
        let done = DispatchSemaphore(value: 0)
        Thread { try? coordinator.run(); done.signal() }.start()
        stops.append { coordinator.shutdown(); _ = done.wait(timeout: .now() + 5) }
        return coordinator
    }

    @discardableResult
    func startWorker(_ endpoint: String, name: String, renderer: FrameRenderer) throws -> WorkerService {
        var settings = WorkerSettings(connect: endpoint, name: name,
                                      cacheDirectory: temp.appendingPathComponent("cache-\(name)"))
        settings.heartbeatIntervalMs = 50
        settings.reconnectInitialMs = 20
        settings.reconnectMaxMs = 200
        let worker = try WorkerService(settings: settings, renderer: renderer, log: { print($0) })
        let done = DispatchSemaphore(value: 0)
        Thread { try? worker.run(); done.signal() }.start()
        stops.append { worker.shutdown(handBack: true); _ = done.wait(timeout: .now() + 5) }
        return worker
    }

    /// Follows `job` to its end; returns the final state and every FrameDone (frame -> worker).
    func follow(_ client: FarmClient, job: Int64) throws -> (state: String, done: [(Int, String)]) {
        var state = ""
        var done: [(Int, String)] = []
        try client.follow(job: job) { event in
            switch event {
            case let .frameDone(frame, _, worker, _, _): done.append((frame, worker))
            case let .finished(s, _): state = s; return false
            default: break
            }
            return true
        }
        return (state, done)
    }

    // MARK: golden pipeline: 1 vs 3 workers

    struct GoldenJob {
        let root: URL
        let frames: [Int]
        let submission: (String) -> JobSubmission
    }

    func goldenJob() throws -> GoldenJob {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("shared/golden/pipeline-a1", isDirectory: true)
        let jobURL = root.appendingPathComponent("job.json")
        guard FileManager.default.fileExists(atPath: jobURL.path) else { throw XCTSkip("no golden case at \(root.path)") }
        let job = try JSONSerialization.jsonObject(with: Data(contentsOf: jobURL)) as! [String: Any]
        let frames = job["frames"] as! [Int]
        let poseDir = root.appendingPathComponent(job["poses_dir"] as! String)
        let pattern = job["pose_file"] as! String
        var poses: [Int: Data] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: poseDir.path) {
            let parts = pattern.components(separatedBy: "{n}")
            guard name.hasPrefix(parts[0]), name.hasSuffix(parts[1]),
                  let n = Int(name.dropFirst(parts[0].count).dropLast(parts[1].count)) else { continue }
            poses[n] = try Data(contentsOf: poseDir.appendingPathComponent(name))
        }
        let noise = job["noise"] as! [String: Any]
        let raw = try Data(contentsOf: root.appendingPathComponent(noise["file"] as! String))
        let shape = noise["shape"] as! [Int]
        let values: [Float] = raw.withUnsafeBytes { buf in
            (0..<(raw.count / 4)).map { Float(bitPattern: UInt32(littleEndian: buf.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
        let noiseNPY = NPY.encode(shape: shape, values: values)
        let subject = try Data(contentsOf: root.appendingPathComponent(job["subject"] as! String))
        let model = root.appendingPathComponent(job["model"] as! String, isDirectory: true)
        return GoldenJob(root: root, frames: frames) { out in
            JobSubmission(name: "golden", modelDirectory: model, subjectPNG: subject, poses: poses,
                          request: RenderRequest(steps: job["steps"] as? Int,
                                                 sampler: (job["sampler"] as? String).flatMap(SamplerKind.init(rawValue:)),
                                                 imageGuidance: (job["s_image"] as? Double).map(Float.init),
                                                 poseGuidance: (job["s_pose"] as? Double).map(Float.init),
                                                 noise: .npy(noiseNPY), frames: frames),
                          outputDirectory: out)
        }
    }

    func render(_ golden: GoldenJob, workers: Int, label: String) throws -> [Int: Data] {
        let coordinator = try startCoordinator(state: temp.appendingPathComponent("state-\(label)"))
        for i in 0..<workers {
            try startWorker(coordinator.endpoint, name: "\(label)-w\(i)", renderer: PipelineFrameRenderer())
        }
        let out = temp.appendingPathComponent("out-\(label)").path
        let client = try FarmClient(endpoint: coordinator.endpoint)
        defer { client.close() }
        let job = try client.submit(golden.submission(out))
        let (state, done) = try follow(client, job: job)
        XCTAssertEqual(state, "completed")
        XCTAssertEqual(done.map(\.0).sorted(), golden.frames, "every frame exactly once")
        if workers > 1 { print("\(label): frames per worker \(Dictionary(grouping: done, by: \.1).mapValues(\.count))") }
        var pngs: [Int: Data] = [:]
        for n in golden.frames {
            let url = URL(fileURLWithPath: out).appendingPathComponent(String(format: "frame_%05d.png", n))
            pngs[n] = try Data(contentsOf: url)
        }
        return pngs
    }

    func testOneAndThreeWorkersRenderIdenticalGoldenFrames() throws {
        let golden = try goldenJob()
        let one = try render(golden, workers: 1, label: "one")
        let three = try render(golden, workers: 3, label: "three")
        for n in golden.frames {
            XCTAssertEqual(one[n], three[n], "frame \(n): PNG bytes differ between 1 and 3 workers")
            // The golden acceptance rule (golden/README.md §7.5): <= 3 levels, <= 2 % of pixels > 1 level.
            let got = try PNGCodec.decode(one[n]!, name: "farm frame \(n)")
            let expected = try PNGCodec.read(golden.root.appendingPathComponent("expected/frame_\(n).png"))
            XCTAssertEqual(got.width, expected.width)
            XCTAssertEqual(got.height, expected.height)
            let a = got.pixels, b = expected.pixels
            XCTAssertEqual(a.count, b.count)
            var worst = 0, offPixels = 0
            let channels = a.count / max(1, got.width * got.height)
            for p in 0..<(got.width * got.height) {
                var pixelWorst = 0
                for c in 0..<channels { pixelWorst = max(pixelWorst, abs(Int(a[p * channels + c]) - Int(b[p * channels + c]))) }
                worst = max(worst, pixelWorst)
                if pixelWorst > 1 { offPixels += 1 }
            }
            XCTAssertLessThanOrEqual(worst, 3, "frame \(n): max channel error")
            XCTAssertLessThanOrEqual(Double(offPixels), 0.02 * Double(got.width * got.height), "frame \(n): pixels off by > 1")
        }
    }

    // MARK: a poison input ends

    /// A pose .npy whose shape multiplies past 2^64 (it once made the reader write past its buffer) sent to
    /// real workers with the real pipeline: each worker fails the frame with a clean error (no crash), the
    /// frame fails after 3 different workers with their errors, and the job ends instead of feeding it on.
    func testOverflowingPoseFailsTheFrameOnThreeWorkersCleanly() throws {
        let golden = try goldenJob()
        let coordinator = try startCoordinator(state: temp.appendingPathComponent("state-poison"))
        let workers = try (0..<3).map {
            try startWorker(coordinator.endpoint, name: "poison-w\($0)", renderer: PipelineFrameRenderer())
        }
        let victim = try XCTUnwrap(golden.frames.last)
        var submission = golden.submission(temp.appendingPathComponent("out-poison").path)
        // (2, 2^62, 4) float32: 2^65 elements, past Int.max bytes.
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4611686018427387904, 4), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var npy = Data([0x93]) + Data("NUMPY".utf8) + Data([1, 0])
        npy += Data([UInt8(header.utf8.count & 0xff), UInt8(header.utf8.count >> 8)]) + Data(header.utf8)
        npy += Data(count: 64)
        submission.poses[victim] = npy
        submission.request.frames = [victim]
        let client = try FarmClient(endpoint: coordinator.endpoint)
        defer { client.close() }
        let job = try client.submit(submission)
        let (state, done) = try follow(client, job: job)
        XCTAssertEqual(state, "failed")
        XCTAssertTrue(done.isEmpty, "no frame may be written: \(done)")
        let attempts = try coordinator.journal.attempts(job: job, frame: victim)
        let failed = attempts.filter { $0.result == .failed }
        XCTAssertEqual(Set(failed.map(\.worker)), Set(workers.indices.map { "poison-w\($0)" }),
                       "the frame fails once on each of the 3 workers: \(attempts)")
        for a in failed {
            XCTAssertTrue((a.error ?? "").contains("npy") || (a.error ?? "").contains("NPY"),
                          "the worker's error names the pose file: \(a.error ?? "")")
        }
        let record = try XCTUnwrap(coordinator.journal.job(job))
        XCTAssertTrue((record.error ?? "").contains("frame \(victim)"), "the job's error names the frame: \(record.error ?? "")")
        XCTAssertEqual(try coordinator.journal.frame(job: job, frame: victim)?.state, .failed)
        _ = workers
    }

    // MARK: cancel

    func testCancelStopsEveryWorkerWithinAFewSteps() throws {
        let coordinator = try startCoordinator(state: temp.appendingPathComponent("state"))
        // 200 steps of 10 ms: a frame takes 2 s, a cancel must end it far sooner.
        let renderer = SyntheticFrameRenderer(steps: 200, stepDelaySeconds: 0.01, width: 64, height: 128)  // the golden model's frame size
        for i in 0..<2 { try startWorker(coordinator.endpoint, name: "c-w\(i)", renderer: renderer) }
        // Any valid model folder: the synthetic renderer does not read it, the farm ships it.
        let model = try goldenJob().root.appendingPathComponent("model", isDirectory: true)
        let poses = Dictionary(uniqueKeysWithValues: (0..<6).map { ($0, NPY.encode(shape: [2, 4, 4], values: Array(repeating: Float($0), count: 32))) })
        let client = try FarmClient(endpoint: coordinator.endpoint)
        defer { client.close() }
        let job = try client.submit(JobSubmission(name: "cancel", modelDirectory: model, subjectPNG: Data("png".utf8),
                                                   poses: poses, request: RenderRequest(noise: .seed(1), frames: Array(0..<6)),
                                                   outputDirectory: temp.appendingPathComponent("out").path))
        // Wait until both workers are rendering.
        var busy: Set<String> = []
        let canceller = try FarmClient(endpoint: coordinator.endpoint)
        defer { canceller.close() }
        var cancelledAt: Date?
        var finished: (String, Date)?
        try client.follow(job: job) { event in
            switch event {
            case let .frameProgress(_, worker, _, _):
                busy.insert(worker)
                if busy.count == 2 && cancelledAt == nil {
                    cancelledAt = Date()
                    XCTAssertEqual(try? canceller.cancel(job: job), "cancelled")
                }
            case let .finished(state, _):
                finished = (state, Date())
                return false
            default: break
            }
            return true
        }
        XCTAssertEqual(finished?.0, "cancelled")
        let start = try XCTUnwrap(cancelledAt)
        // Both slots are free again soon: every worker answered its attempt within a few steps.
        let deadline = Date().addingTimeInterval(1.0)
        var idle = false
        while Date() < deadline && !idle {
            let workers = try client.workers()
            idle = workers.count == 2 && workers.allSatisfy { $0.busy == 0 }
            if !idle { Thread.sleep(forTimeInterval: 0.02) }
        }
        XCTAssertTrue(idle, "workers still busy 1 s after the cancel (a frame takes 2 s)")
        XCTAssertLessThan(Date().timeIntervalSince(start), 1.5)
    }
}

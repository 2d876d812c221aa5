import DPFileKit
import DPLog
import DPPipeline
import Foundation
import XCTest

/// `dp-coord` end to end through the real binary: the embedded farm (in-process coordinator on
/// tcp://127.0.0.1:*, real workers, real sockets, real journal) renders the golden pipeline job; a video run
/// yields an mp4 with every frame; bad inputs fail clearly before anything is written.
final class CLITests: XCTestCase {
    var work: URL!

    override func setUpWithError() throws {
        work = FileManager.default.temporaryDirectory.appendingPathComponent("dp-coord-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: work)
    }

    /// Checks the output folder of a finished job against the golden case's expected frames and manifest.
    func checkOutput(_ golden: CLITestSupport.PipelineCase, out: URL, frames: [Int],
                     file: StaticString = #filePath, line: UInt = #line) throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: out.path).filter { $0.hasSuffix(".png") }.sorted()
        XCTAssertEqual(names, frames.map(FrameSelection.outputName(frame:)), "frame files in \(out.path)", file: file, line: line)
        for n in frames {
            let ours = try PNGCodec.read(out.appendingPathComponent(FrameSelection.outputName(frame: n)))
            let expected = try PNGCodec.read(golden.dir.appendingPathComponent("expected/frame_\(n).png"))
            if let why = CLITestSupport.frameMismatch(ours, expected) {
                XCTFail("frame \(n): \(why)", file: file, line: line)
            }
        }
        // manifest.json lists every frame once, with the PNG's size and SHA-256.
        let manifestData = try Data(contentsOf: out.appendingPathComponent("manifest.json"))
        let manifestText = String(decoding: manifestData, as: UTF8.self)
        let manifest = try XCTUnwrap(JSONSerialization.jsonObject(with: manifestData) as? [String: Any])
        let listed = try XCTUnwrap(manifest["frames"] as? [[String: Any]], "manifest.json has no frames list: \(manifestText)")
        XCTAssertEqual(listed.compactMap { $0["frame"] as? Int }.sorted(), frames,
                       "manifest frames: \(manifestText)", file: file, line: line)
        XCTAssertEqual(manifest["complete"] as? Bool, true, manifestText, file: file, line: line)
        for entry in listed {
            let n = try XCTUnwrap(entry["frame"] as? Int)
            let png = try Data(contentsOf: out.appendingPathComponent(FrameSelection.outputName(frame: n)))
            XCTAssertEqual(entry["png_size"] as? Int, png.count, "manifest size of frame \(n): \(entry)", file: file, line: line)
            XCTAssertEqual(entry["file"] as? String, FrameSelection.outputName(frame: n), file: file, line: line)
        }
    }

    func testEmbeddedGoldenJobWithTwoWorkers() throws {
        let golden = try CLITestSupport.pipelineCase()
        let out = work.appendingPathComponent("out")
        let frames = golden.frames
        XCTAssertFalse(frames.isEmpty)
        let run = try CLITestSupport.run("dp-coord", try golden.submitArgs(out: out) + [
            "--frames", frames.map(String.init).joined(separator: ","), "--workers", "2", "--threads", "2", "--json",
        ], work: work)
        XCTAssertEqual(run.status, 0, "stderr: \(run.stderr)\nstdout: \(run.stdout)")
        let events = run.jsonEvents
        XCTAssertFalse(events.isEmpty, "no JSON events on stdout: \(run.stdout)")
        // Every stdout line is a JSON object (nothing else goes to stdout with --json).
        XCTAssertEqual(events.count, run.stdout.split(separator: "\n").count, run.stdout)
        let done = events.filter { $0["event"] as? String == "frame_done" }.compactMap { $0["frame"] as? Int }
        XCTAssertEqual(done.sorted(), frames, "each frame done exactly once: \(run.stdout)")
        let finished = try XCTUnwrap(events.last)
        XCTAssertEqual(finished["event"] as? String, "finished", run.stdout)
        XCTAssertEqual(finished["state"] as? String, "completed", run.stdout)
        // Both local workers took part? Not guaranteed for a short job; each frame names a local worker.
        let workers = Set(events.filter { $0["event"] as? String == "frame_done" }.compactMap { $0["worker"] as? String })
        XCTAssertTrue(workers.isSubset(of: ["local-1", "local-2"]), "workers: \(workers)")
        try checkOutput(golden, out: out, frames: frames)
    }

    func testEmbeddedVideo() throws {
        guard let ffprobe = ["/usr/bin/ffprobe", "/usr/local/bin/ffprobe"].first(where: FileManager.default.isExecutableFile)
        else { throw XCTSkip("ffprobe not installed") }
        let golden = try CLITestSupport.pipelineCase()
        let out = work.appendingPathComponent("out")
        let video = work.appendingPathComponent("clip.mp4")
        let frames = Array(golden.frames.prefix(3))
        let run = try CLITestSupport.run("dp-coord", try golden.submitArgs(out: out) + [
            "--frames", frames.map(String.init).joined(separator: ","), "--video", video.path, "--fps", "12",
        ], work: work)
        XCTAssertEqual(run.status, 0, "stderr: \(run.stderr)")
        XCTAssertTrue(run.stderr.contains("completed"), run.stderr)
        XCTAssertTrue(run.stderr.contains(video.path), "the final line names the video: \(run.stderr)")
        try checkOutput(golden, out: out, frames: frames)

        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: ffprobe)
        probe.arguments = ["-v", "error", "-count_frames", "-select_streams", "v:0",
                           "-show_entries", "stream=nb_read_frames,codec_name,r_frame_rate", "-of", "json", video.path]
        let pipe = Pipe()
        probe.standardOutput = pipe
        try probe.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        probe.waitUntilExit()
        XCTAssertEqual(probe.terminationStatus, 0)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        let stream = try XCTUnwrap((json["streams"] as? [[String: Any]])?.first, String(decoding: data, as: UTF8.self))
        XCTAssertEqual(stream["nb_read_frames"] as? String, String(frames.count))
        XCTAssertEqual(stream["codec_name"] as? String, "h264")
        XCTAssertEqual(stream["r_frame_rate"] as? String, "12/1")
    }

    /// A failed submit must create nothing: not the output folder, not the state folder.
    func assertFails(_ run: CLITestSupport.Run, mentions needles: [String], out: URL,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNotEqual(run.status, 0, "expected a failure, stderr: \(run.stderr)", file: file, line: line)
        for needle in needles {
            XCTAssertTrue(run.stderr.contains(needle), "stderr lacks \"\(needle)\": \(run.stderr)", file: file, line: line)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path), "\(out.path) was created", file: file, line: line)
    }

    func testBadInputsFailBeforeAnythingIsWritten() throws {
        let golden = try CLITestSupport.pipelineCase()
        let out = work.appendingPathComponent("out")
        let args = try golden.submitArgs(out: out)
        func with(_ flag: String, _ value: String) -> [String] {
            var a = args
            if let i = a.firstIndex(of: flag) { a[i + 1] = value } else { a += [flag, value] }
            return a
        }
        let missing = work.appendingPathComponent("nope.png")
        assertFails(try CLITestSupport.run("dp-coord", with("--subject", missing.path), work: work),
                    mentions: [missing.path], out: out)

        let notPNG = work.appendingPathComponent("subject.png")
        try Data("this is not a PNG".utf8).write(to: notPNG)
        assertFails(try CLITestSupport.run("dp-coord", with("--subject", notPNG.path), work: work),
                    mentions: [notPNG.path], out: out)

        let noPoses = work.appendingPathComponent("no-poses")
        assertFails(try CLITestSupport.run("dp-coord", with("--poses", noPoses.path), work: work),
                    mentions: [noPoses.path], out: out)

        let badPoses = work.appendingPathComponent("poses")
        try FileManager.default.copyItem(at: try golden.url("poses_dir"), to: badPoses)
        let badPose = badPoses.appendingPathComponent(PoseSource.fileName(frame: golden.frames[0]))
        try NPY.write(shape: [3, 4, 5], values: [Float](repeating: 0.5, count: 60), to: badPose)
        assertFails(try CLITestSupport.run("dp-coord", with("--poses", badPoses.path), work: work),
                    mentions: [badPose.path, "(2, H, W)"], out: out)

        assertFails(try CLITestSupport.run("dp-coord", with("--sampler", "euler"), work: work),
                    mentions: ["unknown sampler \"euler\"", "pndm"], out: out)
        assertFails(try CLITestSupport.run("dp-coord", with("--frames", "0-99999"), work: work),
                    mentions: ["no pose"], out: out)
        assertFails(try CLITestSupport.run("dp-coord", with("--frames", "3-1"), work: work),
                    mentions: ["--frames"], out: out)
        assertFails(try CLITestSupport.run("dp-coord", with("--order", "random"), work: work),
                    mentions: ["--order", "random"], out: out)

        let shortNoise = work.appendingPathComponent("noise.f32")
        try Data(count: 12).write(to: shortNoise)
        assertFails(try CLITestSupport.run("dp-coord", with("--noise", shortNoise.path), work: work),
                    mentions: [shortNoise.path, "12 bytes"], out: out)

        let noModel = work.appendingPathComponent("no-model")
        assertFails(try CLITestSupport.run("dp-coord", with("--model", noModel.path), work: work),
                    mentions: [noModel.path], out: out)

        assertFails(try CLITestSupport.run("dp-coord", args + ["--detach"], work: work),
                    mentions: ["--detach", "--coordinator"], out: out)
    }

    /// A client command against a coordinator that is not there fails with a message naming the endpoint
    /// instead of hanging.
    func testClientWithoutCoordinatorFailsClearly() throws {
        let endpoint = "tcp://127.0.0.1:9"
        let run = try CLITestSupport.run("dp-coord", ["status", "--coordinator", endpoint, "--timeout", "1"],
                                         work: work, timeout: 60)
        XCTAssertNotEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stderr.contains("127.0.0.1:9"), run.stderr)
    }
}

// MARK: - Support (shared with CLIFarmTests)


/// Running the built `dp-coord` / `dp-worker` binaries (next to the test bundle) and reading golden cases.
/// A test case that starts the binaries as processes: a fresh work folder per test, and every process it
/// started (appended to `started`) killed and the folder removed afterwards.
class CLIProcessTestCase: XCTestCase {
    var work: URL!
    var started: [CLITestSupport.Started] = []
    /// The work folder's name before its UUID.
    var workFolderPrefix: String { "dp-farm-cli" }

    override func setUpWithError() throws {
        work = FileManager.default.temporaryDirectory.appendingPathComponent("\(workFolderPrefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
    }

    /// Starts `dp-coord serve` with `keys` on a free loopback port, outputs confined to `work` (`extra`: more
    /// serve arguments), logging JSON lines; returns it and the endpoint from its `serving` event.
    func startCoordinator(state: URL, keys: FarmKeys, extra: [String] = []) throws -> (CLITestSupport.Started, String) {
        let coord = try CLITestSupport.Started(try CLITestSupport.binary("dp-coord"), [
            "serve", "--bind", "tcp://127.0.0.1:*", "--state", state.path, "--heartbeat-ms", "100",
            "--output-root", work.path, "--log-format", "json",
        ] + extra + keys.serve, work: work)
        started.append(coord)
        guard case .serving(let endpoint)? = coord.waitForEvent({ if case .serving = $0 { true } else { false } }) else {
            XCTFail("dp-coord serve did not report its endpoint: \(coord.stderr)")
            throw CLITestError("dp-coord serve did not start")
        }
        return (coord, endpoint)
    }

    /// CURVE keys for a farm of binaries, made with `dp-coord keygen` / `dp-worker keygen` in `work/keys`:
    /// the coordinator's pair, one worker and one client key admitted through `work/workers.d` and `work/clients.d`.
    struct FarmKeys {
        let dir: URL
        /// `dp-coord serve` arguments.
        var serve: [String] {
            ["--key", dir.appendingPathComponent("coordinator.key").path,
             "--authorized-workers", dir.deletingLastPathComponent().appendingPathComponent("workers.d").path,
             "--authorized-clients", dir.deletingLastPathComponent().appendingPathComponent("clients.d").path]
        }
        /// `dp-worker --connect` arguments.
        var worker: [String] {
            ["--key", dir.appendingPathComponent("worker.key").path, "--server-key", serverPublic]
        }
        /// `dp-worker health` arguments.
        var workerHealth: [String] {
            ["--worker-key", dir.appendingPathComponent("worker.key").path, "--coordinator-key", serverPublic]
        }
        /// Client command (`submit --coordinator`, `status`, `workers`, `cancel`, `health`) arguments.
        var client: [String] {
            ["--key", dir.appendingPathComponent("client.key").path, "--server-key", serverPublic]
        }
        var serverPublic: String { dir.appendingPathComponent("coordinator.pub").path }
    }

    func farmKeys() throws -> FarmKeys {
        let dir = work.appendingPathComponent("keys")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (tool, name, folder) in [("dp-coord", "coordinator", nil), ("dp-worker", "worker", "workers.d"),
                                     ("dp-coord", "client", "clients.d")] as [(String, String, String?)] {
            let made = try CLITestSupport.run(tool, ["keygen", dir.appendingPathComponent(name).path], work: work)
            XCTAssertEqual(made.status, 0, "\(tool) keygen: \(made.stderr)")
            if let folder {
                let target = work.appendingPathComponent(folder)
                try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
                try FileManager.default.copyItem(at: dir.appendingPathComponent("\(name).pub"),
                                                 to: target.appendingPathComponent("\(name).pub"))
            }
        }
        return FarmKeys(dir: dir)
    }

    override func tearDownWithError() throws {
        for p in started where p.process.isRunning {
            kill(p.process.processIdentifier, SIGKILL)
            p.process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: work)
    }
}

enum CLITestSupport {
    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
        /// stdout's lines parsed as JSON objects (`--json`), non-JSON lines skipped.
        var jsonEvents: [[String: Any]] {
            stdout.split(separator: "\n").compactMap {
                (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
            }
        }
    }

    static func binary(_ name: String) throws -> URL {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [dir.appendingPathComponent(name), Bundle.main.bundleURL.appendingPathComponent(name),
                          dir.deletingLastPathComponent().appendingPathComponent(name)] {
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        throw XCTSkip("\(name) binary not found next to the test bundle (\(dir.path)); run `swift build` first")
    }

    /// Starts `name args`, its stdout and stderr going to files in `work`.
    final class Started {
        let process = Process()
        let outURL: URL
        let errURL: URL
        init(_ exe: URL, _ args: [String], work: URL, environment: [String: String] = [:]) throws {
            let tag = UUID().uuidString.prefix(8)
            outURL = work.appendingPathComponent("\(exe.lastPathComponent)-\(tag).out")
            errURL = work.appendingPathComponent("\(exe.lastPathComponent)-\(tag).err")
            _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
            _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
            process.executableURL = exe
            process.arguments = args
            var env = ProcessInfo.processInfo.environment
            env.removeValue(forKey: "DP_COORDINATOR")
            for (k, v) in environment { env[k] = v }
            process.environment = env
            process.standardOutput = try FileHandle(forWritingTo: outURL)
            process.standardError = try FileHandle(forWritingTo: errURL)
            process.standardInput = FileHandle.nullDevice
            try process.run()
        }
        var stdout: String { (try? String(contentsOf: outURL, encoding: .utf8)) ?? "" }
        var stderr: String { (try? String(contentsOf: errURL, encoding: .utf8)) ?? "" }

        /// Waits for exit (a hung process is killed after `timeout` seconds and reported as status -9).
        func wait(timeout: Double = 600) -> Run {
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                return Run(status: -9, stdout: stdout, stderr: stderr + "\n[killed after \(timeout) s]")
            }
            return Run(status: process.terminationStatus, stdout: stdout, stderr: stderr)
        }

        /// The typed events in stderr (the process runs with `--log-format json`).
        var events: [FarmEvent] { FarmLogLines.events(in: stderr) }

        /// Polls stderr until an event matching `predicate` was logged (or `timeout` seconds pass, or the process
        /// ended without it); returns the first match.
        func waitForEvent(timeout: Double = 60, _ predicate: (FarmEvent) -> Bool) -> FarmEvent? {
            let deadline = Date().addingTimeInterval(timeout)
            while true {
                let running = process.isRunning
                if let event = events.first(where: predicate) { return event }
                if !running || Date() >= deadline { return nil }
                usleep(20_000)
            }
        }
    }

    static func run(_ name: String, _ args: [String], work: URL, timeout: Double = 600) throws -> Run {
        try Started(try binary(name), args, work: work).wait(timeout: timeout)
    }

    /// The golden root: `$DP_GOLDEN_DIR`, else `<repo>/../shared/golden`.
    static var goldenRoot: URL {
        if let env = ProcessInfo.processInfo.environment["DP_GOLDEN_DIR"], !env.isEmpty {
            return URL(fileURLWithPath: env)
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("../shared/golden").standardizedFileURL
    }

    /// A golden pipeline case: a folder holding job.json (model, subject, poses, noise, frames, settings).
    struct PipelineCase {
        let dir: URL
        let job: [String: Any]
        func url(_ key: String) throws -> URL {
            guard let rel = job[key] as? String else { throw CLITestError("\(dir.path)/job.json has no \"\(key)\"") }
            return dir.appendingPathComponent(rel)
        }
        var frames: [Int] { (job["frames"] as? [Int]) ?? [] }
        var noise: URL? { ((job["noise"] as? [String: Any])?["file"] as? String).map { dir.appendingPathComponent($0) } }

        /// `dp-coord submit` arguments for this case's inputs and settings (frames and output left to the caller).
        func submitArgs(out: URL) throws -> [String] {
            var args = ["submit", "--model", try url("model").path, "--subject", try url("subject").path,
                        "--poses", try url("poses_dir").path, "--out", out.path]
            if let noise { args += ["--noise", noise.path] }
            if let s = job["sampler"] as? String { args += ["--sampler", s] }
            if let s = job["steps"] as? Int { args += ["--steps", String(s)] }
            if let g = job["s_image"] as? Double { args += ["--image-guidance", String(g)] }
            if let g = job["s_pose"] as? Double { args += ["--pose-guidance", String(g)] }
            return args
        }
    }

    /// The first golden case (sorted by folder name) holding a job.json; skips when none exists.
    static func pipelineCase() throws -> PipelineCase {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: goldenRoot.path) else {
            throw CLITestError("golden directory \(goldenRoot.path) not found (set DP_GOLDEN_DIR)")
        }
        for name in names.sorted() {
            let jobURL = goldenRoot.appendingPathComponent(name).appendingPathComponent("job.json")
            guard let data = fm.contents(atPath: jobURL.path),
                  let job = try JSONSerialization.jsonObject(with: data) as? [String: Any] else { continue }
            return PipelineCase(dir: goldenRoot.appendingPathComponent(name), job: job)
        }
        throw CLITestError("no golden case with a job.json under \(goldenRoot.path)")
    }

    /// The golden acceptance rule for frames: at most 3 levels off in any channel, and at most 2 % of pixels
    /// whose worst channel is off by more than 1 level. Returns a description of the failure, or nil.
    static func frameMismatch(_ ours: RGBImage, _ expected: RGBImage) -> String? {
        guard ours.width == expected.width, ours.height == expected.height else {
            return "size \(ours.width)x\(ours.height), expected \(expected.width)x\(expected.height)"
        }
        var maxLevels = 0
        var offPixels = 0
        let pixels = ours.width * ours.height
        for p in 0..<pixels {
            var worst = 0
            for c in 0..<3 {
                worst = max(worst, abs(Int(ours.pixels[3 * p + c]) - Int(expected.pixels[3 * p + c])))
            }
            maxLevels = max(maxLevels, worst)
            if worst > 1 { offPixels += 1 }
        }
        let fraction = Double(offPixels) / Double(pixels)
        if maxLevels <= 3 && fraction <= 0.02 { return nil }
        return "max \(maxLevels) levels off, \(String(format: "%.2f", fraction * 100)) % of pixels off by > 1"
    }
}

struct CLITestError: Error, CustomStringConvertible {
    let description: String
    init(_ s: String) { description = s }
}

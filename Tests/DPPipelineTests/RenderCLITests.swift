import DPFileKit
import DPGolden
import DPPipeline
import Foundation
import XCTest

/// `dp-worker render` end to end through the real binary: the golden pipeline job renders, and each bad input
/// of the pipeline issue's point 9 gives a clear message, a non-zero exit and no frame file (nor temp file).
final class RenderCLITests: XCTestCase {
    var work: URL!

    override func setUpWithError() throws {
        work = FileManager.default.temporaryDirectory.appendingPathComponent("dp-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: work)
    }

    /// The first pipeline golden case (its job.json names model, subject, poses and noise).
    func goldenCase() throws -> GoldenCase {
        let cases = try GoldenCase.discover(format: GoldenCase.pipelineFormat)
        return try XCTUnwrap(cases.first, "no pipeline golden case under \(GoldenCase.goldenRoot.path)")
    }

    /// Copies the golden case's model folder so a test can break it.
    func copyModel(_ golden: GoldenCase) throws -> URL {
        let dst = work.appendingPathComponent("model")
        try FileManager.default.copyItem(at: golden.url("model"), to: dst)
        return dst
    }

    struct Run { var status: Int32; var stderr: String; var signaled = false }

    func render(_ args: [String]) throws -> Run {
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("dp-worker")
        let alt = Bundle.main.bundleURL.appendingPathComponent("dp-worker")
        let exe = FileManager.default.isExecutableFile(atPath: binary.path) ? binary : alt
        guard FileManager.default.isExecutableFile(atPath: exe.path) else {
            XCTFail("dp-worker binary not found next to the test bundle (\(binary.path)); run `swift build` first")
            return Run(status: -1, stderr: "")
        }
        let p = Process()
        p.executableURL = exe
        p.arguments = ["render"] + args
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let data = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, stderr: String(decoding: data, as: UTF8.self),
                   signaled: p.terminationReason == .uncaughtSignal)
    }

    func baseArgs(_ golden: GoldenCase, model: URL? = nil, subject: URL? = nil, poses: URL? = nil,
                  out: URL) -> [String] {
        ["--model", (model ?? golden.url("model")).path,
         "--subject", (subject ?? golden.url("inputs/subject.png")).path,
         "--poses", (poses ?? golden.url("inputs/poses")).path,
         "--out", out.path, "--noise", golden.url("inputs/noise.f32").path]
    }

    /// A failed run must leave nothing in the output folder, and fail with an exit status, not a signal.
    func assertFails(_ run: Run, mentions needles: [String], out: URL, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(run.signaled, "killed by signal \(run.status), stderr: \(run.stderr)", file: file, line: line)
        XCTAssertNotEqual(run.status, 0, "expected a failure, stderr: \(run.stderr)", file: file, line: line)
        for needle in needles {
            XCTAssertTrue(run.stderr.contains(needle), "stderr lacks \"\(needle)\": \(run.stderr)", file: file, line: line)
        }
        let left = (try? FileManager.default.contentsOfDirectory(atPath: out.path)) ?? []
        XCTAssertEqual(left, [], "files left behind in \(out.path)", file: file, line: line)
    }

    func testRendersTheGoldenJob() throws {
        let golden = try goldenCase()
        let out = work.appendingPathComponent("out")
        let run = try render(baseArgs(golden, out: out) + ["--frames", "0,2"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stderr.contains("frames 2/2"), run.stderr)
        let names = try FileManager.default.contentsOfDirectory(atPath: out.path).sorted()
        // The frames, and their records for `dp-coord finalize` (.dp-render: job.json + one per frame).
        XCTAssertEqual(names, [".dp-render", "frame_00000.png", "frame_00002.png"])
        let records = try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent(".dp-render").path).sorted()
        XCTAssertEqual(records, ["frame_00000.json", "frame_00002.json", "job.json"])
        for n in [0, 2] {
            let ours = try PNGCodec.read(out.appendingPathComponent(FrameSelection.outputName(frame: n)))
            let expected = try PNGCodec.read(golden.url("expected/frame_\(n).png"))
            let cmp = FrameAcceptance(ours, expected)
            XCTAssertLessThanOrEqual(cmp.maxLevels, 3)
        }
    }

    func testMissingSubject() throws {
        let golden = try goldenCase()
        let out = work.appendingPathComponent("out")
        let missing = work.appendingPathComponent("nope.png")
        assertFails(try render(baseArgs(golden, subject: missing, out: out)), mentions: [missing.path], out: out)
    }

    func testUnreadableSubject() throws {
        let golden = try goldenCase()
        let out = work.appendingPathComponent("out")
        let bad = work.appendingPathComponent("subject.png")
        try Data("this is not a PNG".utf8).write(to: bad)
        assertFails(try render(baseArgs(golden, subject: bad, out: out)), mentions: [bad.path], out: out)
    }

    func testMissingPoses() throws {
        let golden = try goldenCase()
        let out = work.appendingPathComponent("out")
        let missing = work.appendingPathComponent("no-poses")
        assertFails(try render(baseArgs(golden, poses: missing, out: out)), mentions: [missing.path], out: out)
        let empty = work.appendingPathComponent("empty-poses")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        assertFails(try render(baseArgs(golden, poses: empty, out: out)), mentions: ["frame_<n>_densepose.npy"], out: out)
    }

    func testPoseOfWrongShape() throws {
        let golden = try goldenCase()
        let out = work.appendingPathComponent("out")
        let poses = work.appendingPathComponent("poses")
        try FileManager.default.copyItem(at: golden.url("inputs/poses"), to: poses)
        let bad = poses.appendingPathComponent(PoseSource.fileName(frame: 1))
        try NPY.write(shape: [3, 4, 5], values: [Float](repeating: 0.5, count: 60), to: bad)
        assertFails(try render(baseArgs(golden, poses: poses, out: out)), mentions: [bad.path, "(2, H, W)"], out: out)
    }

    /// Issue 12: a pose .npy whose shape multiplies past 2^64 wrote past its buffer (SIGSEGV) in the
    /// -Ounchecked build; now a clean error naming the file.
    func testPoseWhoseShapeOverflowsIsACleanError() throws {
        let golden = try goldenCase()
        let out = work.appendingPathComponent("out")
        let poses = work.appendingPathComponent("poses")
        try FileManager.default.copyItem(at: golden.url("inputs/poses"), to: poses)
        let bad = poses.appendingPathComponent(PoseSource.fileName(frame: 1))
        try FileManager.default.removeItem(at: bad)
        try FileManager.default.copyItem(at: Self.fuzzCorpus("npy/bad-shape-overflows-2p64.npy"), to: bad)
        assertFails(try render(baseArgs(golden, poses: poses, out: out)), mentions: [bad.path, "elements allowed"], out: out)
    }

    /// Issue 12: `layers_per_block: 2147483647` aborted the process while the UNet was built; a
    /// `defaults.steps: 1e300` dreampose.json crashed the coordinator. Both are clean errors naming file and key.
    func testAbsurdModelConfigsAreCleanErrors() throws {
        let golden = try goldenCase()
        let out = work.appendingPathComponent("out")
        let model = try copyModel(golden)
        let unetConfig = model.appendingPathComponent("unet/config.json")
        var unet = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: unetConfig)) as? [String: Any])
        unet["layers_per_block"] = 2147483647
        try JSONSerialization.data(withJSONObject: unet).write(to: unetConfig)
        assertFails(try render(baseArgs(golden, model: model, out: out)),
                    mentions: [unetConfig.path, "layers_per_block is 2147483647"], out: out)

        let model2 = work.appendingPathComponent("model2")
        try FileManager.default.copyItem(at: golden.url("model"), to: model2)
        let dreampose = model2.appendingPathComponent("dreampose.json")
        let text = try String(contentsOf: dreampose, encoding: .utf8)
        let hostile = text.replacingOccurrences(of: #""steps": \d+"#, with: #""steps": 1e300"#, options: .regularExpression)
        XCTAssertNotEqual(hostile, text, "the golden dreampose.json has no defaults.steps to replace")
        try Data(hostile.utf8).write(to: dreampose)
        assertFails(try render(baseArgs(golden, model: model2, out: out)),
                    mentions: [dreampose.path, "defaults.steps"], out: out)
    }

    /// A committed hostile input of the fuzz corpus (Tests/Fuzz/corpus).
    static func fuzzCorpus(_ path: String) -> URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz/corpus").appendingPathComponent(path)
    }

    func testModelForAnotherFrameSize() throws {
        let golden = try goldenCase()
        let out = work.appendingPathComponent("out")
        let model = try copyModel(golden)
        let configURL = model.appendingPathComponent("dreampose.json")
        var json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
        json["height"] = (json["height"] as! Int) * 2
        try JSONSerialization.data(withJSONObject: json).write(to: configURL)
        assertFails(try render(baseArgs(golden, model: model, out: out)), mentions: ["vae_features", "frame size"], out: out)
    }

    func testUnknownSampler() throws {
        let golden = try goldenCase()
        let out = work.appendingPathComponent("out")
        assertFails(try render(baseArgs(golden, out: out) + ["--sampler", "euler"]),
                    mentions: ["unknown sampler \"euler\"", "pndm"], out: out)
    }

    func testNoiseOfWrongSize() throws {
        let golden = try goldenCase()
        let out = work.appendingPathComponent("out")
        let noise = work.appendingPathComponent("noise.f32")
        try Data(count: 12).write(to: noise)
        var args = baseArgs(golden, out: out)
        args[args.firstIndex(of: "--noise")! + 1] = noise.path
        assertFails(try render(args), mentions: [noise.path, "12 bytes"], out: out)
    }

    func testFramesWithoutPoses() throws {
        let golden = try goldenCase()
        let out = work.appendingPathComponent("out")
        assertFails(try render(baseArgs(golden, out: out) + ["--frames", "0-99"]), mentions: ["no pose"], out: out)
        assertFails(try render(baseArgs(golden, out: out) + ["--frames", "3-1"]), mentions: ["--frames"], out: out)
    }
}

import DPCoordinator
import DPFileKit
import DPJournal
import Foundation
import XCTest

/// One check of a job's sampling settings (SamplingRequest) for the CLI, the coordinator and the workers
/// (issue 14: `--steps 2000` was accepted and journalled, then failed on every worker).
final class SamplingRequestTests: XCTestCase {
    var root: URL!

    override func setUpWithError() throws {
        root = try FarmFixtures.tempDirectory("sampling-request")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: root)
    }

    func testProblems() {
        XCTAssertNil(SamplingRequest.problem(steps: nil, sampler: nil, imageGuidance: nil, poseGuidance: nil))
        XCTAssertNil(SamplingRequest.problem(steps: 1000, sampler: "dpm", imageGuidance: -2, poseGuidance: 1000))
        XCTAssertEqual(SamplingRequest.problem(steps: 2000, sampler: nil, imageGuidance: nil, poseGuidance: nil),
                       "steps must be from 1 to 1000 (got 2000)")
        XCTAssertEqual(SamplingRequest.problem(steps: 0, sampler: nil, imageGuidance: nil, poseGuidance: nil),
                       "steps must be from 1 to 1000 (got 0)")
        XCTAssertEqual(SamplingRequest.problem(steps: nil, sampler: "euler", imageGuidance: nil, poseGuidance: nil),
                       "unknown sampler \"euler\" (expected one of: pndm, ddim, dpm)")
        XCTAssertNotNil(SamplingRequest.problem(steps: nil, sampler: nil, imageGuidance: .nan, poseGuidance: nil))
        XCTAssertNotNil(SamplingRequest.problem(steps: nil, sampler: nil, imageGuidance: nil, poseGuidance: 1e30))
        // Peer text in the message is cut and kept printable.
        let odd = SamplingRequest.problem(steps: nil, sampler: String(repeating: "\n", count: 100), imageGuidance: nil,
                                          poseGuidance: nil) ?? ""
        XCTAssertFalse(odd.contains("\n"))
        XCTAssertLessThan(odd.count, 120)
    }

    /// The coordinator refuses the request at submit, before anything is journalled, with the message the CLI
    /// gives for the same flag.
    func testCoordinatorRefusesAtSubmitWithTheCLIsMessage() throws {
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: ManualClock())
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        var job = FarmFixtures.submission(model: model, frames: [0], out: root.appendingPathComponent("out"))
        job.steps = 2000
        XCTAssertThrowsError(try client.submit(job)) { error in
            XCTAssertTrue("\(error)".contains("steps must be from 1 to 1000 (got 2000)"), "\(error)")
        }
        job.steps = nil
        job.sampler = "euler"
        XCTAssertThrowsError(try client.submit(job)) { error in
            XCTAssertTrue("\(error)".contains("unknown sampler \"euler\""), "\(error)")
        }
        XCTAssertEqual(try coord.coordinator.journal.jobs().count, 0, "nothing journalled")

        let work = root.appendingPathComponent("cli")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let cli = try CLITestSupport.run("dp-coord", [
            "submit", "--model", model.path, "--subject", "/nonexistent.png", "--poses", "/nonexistent",
            "--out", work.appendingPathComponent("out").path, "--steps", "2000",
        ], work: work, timeout: 60)
        XCTAssertNotEqual(cli.status, 0)
        XCTAssertTrue(cli.stderr.contains("steps must be from 1 to 1000 (got 2000)"), cli.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: work.appendingPathComponent("out").path))
    }
}

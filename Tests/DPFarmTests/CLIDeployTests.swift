import DPLog
import DPPipeline
import Foundation
import XCTest

/// What the deployment files rely on, through the binaries: `dp-coord finalize` over a folder written by
/// several `dp-worker render` tasks (a Slurm array), `dp-coord health` / `dp-worker health` (probes), and a
/// worker signalled with SIGTERM more than once (Slurm, systemd and Kubernetes may) still handing its frame back.
/// Scripts/tests/slurm_test.sh runs the same on a real Slurm cluster.
final class CLIDeployTests: CLIProcessTestCase {
    override var workFolderPrefix: String { "dp-farm-deploy" }

    func renderArgs(_ golden: CLITestSupport.PipelineCase, out: URL, steps: Int? = nil) throws -> [String] {
        var args = ["render", "--model", try golden.url("model").path, "--subject", try golden.url("subject").path,
                    "--poses", try golden.url("poses_dir").path, "--out", out.path, "--threads", "1"]
        if let noise = golden.noise { args += ["--noise", noise.path] }
        if let s = golden.job["sampler"] as? String { args += ["--sampler", s] }
        if let s = steps ?? golden.job["steps"] as? Int { args += ["--steps", String(s)] }
        return args
    }

    func frameName(_ n: Int) -> String { FrameSelection.outputName(frame: n) }

    func testFinalizeChecksEveryFrameThenWritesManifestAndVideo() throws {
        let golden = try CLITestSupport.pipelineCase()
        let frames = golden.frames
        XCTAssertGreaterThanOrEqual(frames.count, 3, "the golden case needs 3+ frames for this test")
        let split = frames.count / 2
        let first = frames[..<split], second = frames[split...]

        // The single-process reference, and the "array" folder: the first task only, for now.
        let ref = work.appendingPathComponent("ref")
        let whole = try CLITestSupport.run("dp-worker", try renderArgs(golden, out: ref), work: work)
        XCTAssertEqual(whole.status, 0, whole.stderr)
        let out = work.appendingPathComponent("array")
        let task1 = try CLITestSupport.run("dp-worker", try renderArgs(golden, out: out)
            + ["--frames", first.map(String.init).joined(separator: ",")], work: work)
        XCTAssertEqual(task1.status, 0, task1.stderr)

        // Missing frames: non-zero, every missing frame named, nothing written.
        let video = work.appendingPathComponent("job.mp4")
        let early = try CLITestSupport.run("dp-coord", ["finalize", "--out", out.path, "--video", video.path], work: work)
        XCTAssertNotEqual(early.status, 0, early.stdout)
        for n in second {
            XCTAssertTrue(early.stderr.contains("frame \(n): \(frameName(n)) is missing"), early.stderr)
        }
        XCTAssertTrue(early.stderr.contains("\(second.count) of \(frames.count) expected frame(s) missing"), early.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("manifest.json").path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: video.path))

        // A task of another job (other settings) refuses the folder, naming both.
        let other = try CLITestSupport.run("dp-worker", try renderArgs(golden, out: out, steps: 2)
            + ["--frames", String(second.first!)], work: work)
        XCTAssertNotEqual(other.status, 0)
        XCTAssertTrue(other.stderr.contains("holds frames of another job"), other.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent(frameName(second.first!)).path))

        // The second task; a corrupt frame is named as not decodable.
        let task2 = try CLITestSupport.run("dp-worker", try renderArgs(golden, out: out)
            + ["--frames", second.map(String.init).joined(separator: ",")], work: work)
        XCTAssertEqual(task2.status, 0, task2.stderr)
        let victim = out.appendingPathComponent(frameName(frames[0]))
        let good = try Data(contentsOf: victim)
        try Data(good.prefix(100)).write(to: victim)
        let corrupt = try CLITestSupport.run("dp-coord", ["finalize", "--out", out.path], work: work)
        XCTAssertNotEqual(corrupt.status, 0)
        XCTAssertTrue(corrupt.stderr.contains("frame \(frames[0]): \(frameName(frames[0])) is not a decodable PNG"), corrupt.stderr)
        try good.write(to: victim)

        // Complete: manifest.json (every frame, its task's record) and the video; frames byte-identical.
        let done = try CLITestSupport.run("dp-coord", ["finalize", "--out", out.path, "--video", video.path, "--json"], work: work)
        XCTAssertEqual(done.status, 0, done.stderr)
        let manifest = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("manifest.json")))
                                        as? [String: Any])
        XCTAssertEqual(manifest["complete"] as? Bool, true)
        XCTAssertEqual(manifest["job_id"] as? Int, 0)
        XCTAssertEqual(manifest["frames_expected"] as? [Int], frames)
        let listed = try XCTUnwrap(manifest["frames"] as? [[String: Any]])
        XCTAssertEqual(listed.compactMap { $0["frame"] as? Int }, frames)
        XCTAssertEqual((manifest["settings"] as? [String: Any])?["steps"] as? Int, golden.job["steps"] as? Int)
        XCTAssertEqual((manifest["video"] as? [String: Any])?["frames"] as? Int, frames.count)
        XCTAssertTrue(FileManager.default.fileExists(atPath: video.path))
        for n in frames {
            XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent(frameName(n))),
                           try Data(contentsOf: ref.appendingPathComponent(frameName(n))), "frame \(n)")
        }

        // A frame PNG that is not expected (--frames narrower than the folder) is refused, not deleted.
        let narrow = try CLITestSupport.run("dp-coord", ["finalize", "--out", out.path, "--frames", String(frames[0])], work: work)
        XCTAssertNotEqual(narrow.status, 0)
        XCTAssertTrue(narrow.stderr.contains("not expected"), narrow.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent(frameName(frames.last!)).path))
    }

    func testFinalizeRefusesAFolderNotWrittenByRender() throws {
        let run = try CLITestSupport.run("dp-coord", ["finalize", "--out", work.path], work: work)
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.stderr.contains("was not written by dp-worker render"), run.stderr)
    }

    func testHealthCommands() throws {
        let keys = try farmKeys()
        let (coord, endpoint) = try startCoordinator(state: work.appendingPathComponent("state"), keys: keys)
        let up = try CLITestSupport.run("dp-coord", ["health", "--coordinator", endpoint] + keys.client, work: work)
        XCTAssertEqual(up.status, 0, up.stderr)
        XCTAssertTrue(up.stdout.contains("answering"), up.stdout)

        // Not registered yet: 1.
        let none = try CLITestSupport.run("dp-worker", ["health", "--coordinator", endpoint, "--worker", "probe-w"] + keys.workerHealth,
                                          work: work)
        XCTAssertEqual(none.status, 1, none.stderr)
        XCTAssertTrue(none.stderr.contains("does not list worker \"probe-w\""), none.stderr)

        let worker = try CLITestSupport.Started(try CLITestSupport.binary("dp-worker"), [
            "--connect", endpoint, "--cache", work.appendingPathComponent("cache").path, "--name", "probe-w",
            "--threads", "1", "--heartbeat-ms", "100",
        ] + keys.worker, work: work)
        started.append(worker)
        var status: Int32 = -1
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            status = try CLITestSupport.run("dp-worker", ["health", "--coordinator", endpoint, "--worker", "probe-w"] + keys.workerHealth,
                                            work: work).status
            if status == 0 { break }
            usleep(100_000)
        }
        XCTAssertEqual(status, 0, "worker never reported healthy: \(worker.stderr)")

        // Coordinator gone: dp-coord health 1, dp-worker health 2 (not the worker's fault).
        kill(coord.process.processIdentifier, SIGTERM)
        XCTAssertEqual(coord.wait(timeout: 60).status, 0, coord.stderr)
        let down = try CLITestSupport.run("dp-coord", ["health", "--coordinator", endpoint, "--timeout", "1"] + keys.client,
                                          work: work)
        XCTAssertEqual(down.status, 1, down.stderr)
        XCTAssertTrue(down.stderr.contains("did not answer"), down.stderr)
        let orphan = try CLITestSupport.run("dp-worker", ["health", "--coordinator", endpoint, "--worker", "probe-w", "--timeout", "1"]
                                            + keys.workerHealth, work: work)
        XCTAssertEqual(orphan.status, 2, orphan.stderr)
    }

    func testRepeatedSIGTERMStillHandsTheFrameBack() throws {
        // The demo model (128 x 128, a step of ~0.1 s): the golden model's steps are too short to signal into.
        let assets = work.appendingPathComponent("demo")
        let made = try CLITestSupport.run("dp-worker", ["demo-assets", "--out", assets.path, "--frames", "2"], work: work)
        XCTAssertEqual(made.status, 0, made.stderr)
        let keys = try farmKeys()
        let (coord, endpoint) = try startCoordinator(state: work.appendingPathComponent("state"), keys: keys)
        let worker = try CLITestSupport.Started(try CLITestSupport.binary("dp-worker"), [
            "--connect", endpoint, "--cache", work.appendingPathComponent("cache").path, "--name", "term-w",
            "--threads", "1", "--heartbeat-ms", "100", "--log-format", "json",
        ] + keys.worker, work: work)
        started.append(worker)
        // A long frame (many steps) that the worker is rendering when the signals come.
        let args = ["submit", "--model", assets.appendingPathComponent("model").path,
                    "--subject", assets.appendingPathComponent("subject.png").path,
                    "--poses", assets.appendingPathComponent("poses").path, "--out", "out",  // inside --output-root
                    "--steps", "400", "--frames", "0"]
        let submit = try CLITestSupport.run("dp-coord", args + ["--coordinator", endpoint, "--detach"] + keys.client, work: work)
        XCTAssertEqual(submit.status, 0, submit.stderr)
        // Rendering: the coordinator has seen step progress from the worker.
        XCTAssertNotNil(worker.waitForEvent(timeout: 120) { if case .welcomed("term-w", _) = $0 { true } else { false } },
                      "exit \(worker.process.isRunning ? "-" : String(worker.process.terminationStatus)): \(worker.stderr)")
        var busy = false
        let deadline = Date().addingTimeInterval(120)
        while !busy && Date() < deadline {
            let w = try CLITestSupport.run("dp-coord", ["workers", "--json", "--coordinator", endpoint] + keys.client, work: work)
            if let list = try? JSONSerialization.jsonObject(with: Data(w.stdout.utf8)) as? [[String: Any]] {
                busy = list.contains { $0["name"] as? String == "term-w" && ($0["busy"] as? Int ?? 0) > 0 }
            }
            if !busy { usleep(100_000) }
        }
        XCTAssertTrue(busy, "the worker never took the frame: \(worker.stderr)")
        usleep(500_000)  // into the frame's denoising steps
        // Two SIGTERMs 5 ms apart (far enough not to merge into one pending signal): the second lands while the
        // worker waits for the end of its current step (a step of the demo model takes ~0.1 s), as when
        // Slurm signals a step's processes and srun forwards the same signal. Before, the second one made the
        // worker exit at once (status 130) without handing its frame back.
        kill(worker.process.processIdentifier, SIGTERM)
        usleep(5_000)
        kill(worker.process.processIdentifier, SIGTERM)
        let ended = worker.wait(timeout: 120)
        XCTAssertEqual(ended.status, 0, ended.stderr)
        let signals = worker.events.compactMap { event -> StopSignalAction? in
            if case .stopSignal("SIGTERM", let action) = event { action } else { nil }
        }
        XCTAssertEqual(signals.first, .handBack, ended.stderr)
        XCTAssertFalse(signals.contains(.exitNow), ended.stderr)
        if !signals.contains(.carryOn) {
            print("note: the second SIGTERM arrived after the worker had already exited (its step ended within 5 ms); "
                + "this run did not exercise a repeated SIGTERM")
        }
        let handedBack = worker.events.compactMap { event -> [Int64]? in
            if case .handedBack("term-w", let attempts) = event { attempts } else { nil }
        }
        XCTAssertEqual(handedBack.count, 1, ended.stderr)
        let attempt = try XCTUnwrap(handedBack.first?.first, "Goodbye handed nothing back: \(ended.stderr)")
        // The coordinator put the handed-back attempt back in the queue (no failure counted).
        XCTAssertNotNil(coord.waitForEvent(timeout: 30) { if case .attemptRequeued = $0 { $0.attempt == attempt } else { false } },
                        coord.stderr)
    }
}

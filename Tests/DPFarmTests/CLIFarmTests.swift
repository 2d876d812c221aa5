import DPLog
import DPPipeline
import Foundation
import XCTest

/// The farm through its binaries, as on several machines: `dp-coord serve`, `dp-worker --connect`, and the
/// client commands `submit --coordinator`, `status`, `workers`, `cancel`; SIGTERM stops both servers cleanly.
final class CLIFarmTests: CLIProcessTestCase {
    override var workFolderPrefix: String { "dp-farm-cli" }

    func testServeWorkerSubmitStatusWorkersCancel() throws {
        let golden = try CLITestSupport.pipelineCase()
        let keys = try farmKeys()
        let (coord, endpoint) = try startCoordinator(state: work.appendingPathComponent("state"), keys: keys, extra: ["--grace", "0.2"])
        let worker = try CLITestSupport.Started(try CLITestSupport.binary("dp-worker"), [
            "--connect", endpoint, "--cache", work.appendingPathComponent("cache").path, "--name", "cli-worker",
            "--threads", "2", "--heartbeat-ms", "100",
        ] + keys.worker, work: work)
        started.append(worker)

        // Submit and follow: the frames land in --out and match the golden frames.
        let out = work.appendingPathComponent("out")
        let frames = Array(golden.frames.prefix(2))
        // With --coordinator, --out is a name inside the coordinator's --output-root (here the work folder).
        let submit = try CLITestSupport.run("dp-coord", try golden.submitArgs(out: out).map { $0 == out.path ? "out" : $0 } + [
            "--coordinator", endpoint, "--frames", frames.map(String.init).joined(separator: ","), "--json",
        ] + keys.client, work: work)
        XCTAssertEqual(submit.status, 0, "submit: \(submit.stderr)\ncoordinator: \(coord.stderr)\nworker: \(worker.stderr)")
        let events = submit.jsonEvents
        let jobID = try XCTUnwrap(events.first { $0["event"] as? String == "submitted" }?["job"] as? Int, submit.stdout)
        XCTAssertEqual(events.last?["state"] as? String, "completed", submit.stdout)
        for n in frames {
            let ours = try PNGCodec.read(out.appendingPathComponent(FrameSelection.outputName(frame: n)))
            let expected = try PNGCodec.read(golden.dir.appendingPathComponent("expected/frame_\(n).png"))
            XCTAssertNil(CLITestSupport.frameMismatch(ours, expected), "frame \(n)")
        }

        // status --json: the job, completed, every frame done.
        let status = try CLITestSupport.run("dp-coord", ["status", String(jobID), "--json", "--coordinator", endpoint] + keys.client,
                                           work: work)
        XCTAssertEqual(status.status, 0, status.stderr)
        let jobs = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [[String: Any]], status.stdout)
        XCTAssertEqual(jobs.count, 1)
        XCTAssertEqual(jobs.first?["state"] as? String, "completed")
        XCTAssertEqual(jobs.first?["done"] as? Int, frames.count)
        XCTAssertEqual(jobs.first?["total"] as? Int, frames.count)

        // workers --json (coordinator taken from $DP_COORDINATOR): our worker, connected, with its frames.
        let workersRun = try CLITestSupport.Started(try CLITestSupport.binary("dp-coord"), ["workers", "--json"], work: work,
                                                    environment: ["DP_COORDINATOR": endpoint,
                                                                  "DP_CLIENT_KEY": keys.client[1],
                                                                  "DP_SERVER_KEY": keys.serverPublic]).wait(timeout: 60)
        XCTAssertEqual(workersRun.status, 0, workersRun.stderr)
        let workers = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(workersRun.stdout.utf8)) as? [[String: Any]],
                                    workersRun.stdout)
        let me = try XCTUnwrap(workers.first { $0["name"] as? String == "cli-worker" }, workersRun.stdout)
        XCTAssertEqual(me["framesDone"] as? Int, frames.count, workersRun.stdout)

        // A detached job with many steps, cancelled at once: state cancelled, and its follower would exit non-zero.
        // submit follows the same rule as the other client commands: the coordinator from $DP_COORDINATOR.
        let out2 = work.appendingPathComponent("out2")
        var args2 = try golden.submitArgs(out: out2).map { $0 == out2.path ? "out2" : $0 }
        if let i = args2.firstIndex(of: "--steps") { args2[i + 1] = "400" } else { args2 += ["--steps", "400"] }
        let detached = try CLITestSupport.Started(try CLITestSupport.binary("dp-coord"), args2 + ["--detach"] + keys.client,
                                                  work: work, environment: ["DP_COORDINATOR": endpoint]).wait(timeout: 120)
        XCTAssertEqual(detached.status, 0, detached.stderr)
        let job2 = try XCTUnwrap(Int(detached.stdout.trimmingCharacters(in: .whitespacesAndNewlines)), detached.stdout)
        XCTAssertNotEqual(job2, jobID)
        let cancel = try CLITestSupport.run("dp-coord", ["cancel", String(job2), "--coordinator", endpoint] + keys.client, work: work)
        XCTAssertEqual(cancel.status, 0, cancel.stderr)
        XCTAssertTrue(cancel.stdout.contains("cancelled"), cancel.stdout)
        let follow = try CLITestSupport.run("dp-coord", ["status", String(job2), "--coordinator", endpoint] + keys.client, work: work)
        XCTAssertTrue(follow.stdout.contains("cancelled"), follow.stdout)

        // SIGTERM: both stop cleanly.
        kill(worker.process.processIdentifier, SIGTERM)
        XCTAssertEqual(worker.wait(timeout: 60).status, 0, worker.stderr)
        kill(coord.process.processIdentifier, SIGTERM)
        XCTAssertEqual(coord.wait(timeout: 60).status, 0, coord.stderr)
        XCTAssertTrue(coord.events.contains(.coordinatorStopped), coord.stderr)
    }

    /// `dp-worker demo-assets` writes a model folder, subject and poses that `dp-coord submit` renders.
    func testDemoAssetsRenderEmbedded() throws {
        let demo = work.appendingPathComponent("demo")
        let assets = try CLITestSupport.run("dp-worker", ["demo-assets", "--out", demo.path, "--frames", "3"], work: work)
        XCTAssertEqual(assets.status, 0, assets.stderr)
        let out = work.appendingPathComponent("out")
        let run = try CLITestSupport.run("dp-coord", [
            "submit", "--model", demo.appendingPathComponent("model").path,
            "--subject", demo.appendingPathComponent("subject.png").path,
            "--poses", demo.appendingPathComponent("poses").path, "--out", out.path, "--steps", "2", "--frames", "0-2",
            "--json",
        ], work: work)
        XCTAssertEqual(run.status, 0, run.stderr)
        for n in 0..<3 {
            let img = try PNGCodec.read(out.appendingPathComponent(FrameSelection.outputName(frame: n)))
            XCTAssertGreaterThan(img.width, 0)
        }
        // No silent minutes: the upload's progress comes first (before "submitted"), from 0 to its total.
        let events = run.jsonEvents
        let uploads = events.prefix { $0["event"] as? String != "submitted" }.filter { $0["event"] as? String == "upload" }
        XCTAssertEqual(uploads.first?["bytes"] as? Int, 0, run.stdout)
        let total = try XCTUnwrap(uploads.last?["total_bytes"] as? Int, run.stdout)
        XCTAssertGreaterThan(total, 0)
        XCTAssertEqual(uploads.last?["bytes"] as? Int, total)
        XCTAssertEqual(uploads.last?["files_done"] as? Int, uploads.last?["files"] as? Int)
        // The worker's phases (those it was in once the submit followed) are well-formed events.
        for phase in events where phase["event"] as? String == "worker_phase" {
            XCTAssertEqual(phase["worker"] as? String, "local-1", "\(phase)")
            XCTAssertTrue(["fetching_model", "verifying_model", "preparing_job", "none"].contains(phase["phase"] as? String ?? ""))
            XCTAssertLessThanOrEqual(phase["bytes"] as? Int ?? .max, phase["total_bytes"] as? Int ?? -1)
        }
    }

    /// An embedded submit whose every frame fails on its only worker (here: a model whose UNet weights are
    /// truncated, which only the worker's load finds) ends with a non-zero exit naming the workers' errors,
    /// instead of waiting forever for another worker (on a farm, a worker banned from a job leaves its frames
    /// to others; the embedded farm has no others).
    func testEmbeddedSubmitWhoseFramesAllFailEndsWithTheErrors() throws {
        let demo = work.appendingPathComponent("demo")
        let assets = try CLITestSupport.run("dp-worker", ["demo-assets", "--out", demo.path, "--frames", "5"], work: work)
        XCTAssertEqual(assets.status, 0, assets.stderr)
        let weights = demo.appendingPathComponent("model/unet/diffusion_pytorch_model.safetensors")
        let bytes = try Data(contentsOf: weights)
        try bytes.prefix(bytes.count / 2).write(to: weights)
        let run = try CLITestSupport.run("dp-coord", [
            "submit", "--model", demo.appendingPathComponent("model").path,
            "--subject", demo.appendingPathComponent("subject.png").path,
            "--poses", demo.appendingPathComponent("poses").path, "--out", work.appendingPathComponent("out").path,
            "--steps", "2", "--frames", "0-4", "--json",
        ], work: work, timeout: 120)
        XCTAssertNotEqual(run.status, -9, "exits by itself, not by the test's timeout: \(run.stderr)")
        XCTAssertNotEqual(run.status, 0, run.stderr)
        let finished = try XCTUnwrap(run.jsonEvents.last { $0["event"] as? String == "finished" }, run.stdout)
        XCTAssertEqual(finished["state"] as? String, "failed")
        XCTAssertEqual(finished["failed"] as? Int, 5)
        XCTAssertEqual(finished["done"] as? Int, 0)
        XCTAssertTrue(run.stdout.contains("malformed safetensors"), "the workers' errors are reported: \(run.stdout)")
    }

    /// `dp-coord serve` refuses to start without keys (loopback too) and says how to make them; with
    /// --insecure-no-auth it starts and says loudly that nothing is authenticated. SIGHUP admits a key
    /// added to --authorized-clients; a client without keys, or with an unknown key, gets nowhere.
    func testServeNeedsKeysAndSIGHUPAdmitsANewClient() throws {
        let refused = try CLITestSupport.run("dp-coord", [
            "serve", "--bind", "tcp://127.0.0.1:*", "--state", work.appendingPathComponent("s0").path,
        ], work: work, timeout: 60)
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("dp-coord keygen"), refused.stderr)
        XCTAssertTrue(refused.stderr.contains("dp-worker keygen"), refused.stderr)
        XCTAssertTrue(refused.stderr.contains("--insecure-no-auth"), refused.stderr)

        let insecure = try CLITestSupport.Started(try CLITestSupport.binary("dp-coord"), [
            "serve", "--bind", "tcp://127.0.0.1:*", "--state", work.appendingPathComponent("s1").path, "--insecure-no-auth",
            "--log-format", "json",
        ], work: work)
        started.append(insecure)
        // The loop's own warning (run() has started, after the signal handlers): logged at every start.
        let warned = insecure.waitForEvent { if case .insecureNoAuth = $0 { true } else { false } }
        XCTAssertNotNil(warned, insecure.stderr)
        // What an operator reads: the warning says it loudly (the log line itself is the product here).
        let warning = FarmLogLines.records(in: insecure.stderr).first { $0.event == "insecureNoAuth" }
        XCTAssertEqual(warning?.level, "warning", insecure.stderr)
        XCTAssertTrue(warning?.message.contains("NO AUTHENTICATION") == true, insecure.stderr)
        kill(insecure.process.processIdentifier, SIGTERM)
        XCTAssertEqual(insecure.wait(timeout: 60).status, 0, insecure.stderr)

        let keys = try farmKeys()
        let (coord, endpoint) = try startCoordinator(state: work.appendingPathComponent("state"), keys: keys, extra: ["--grace", "0.2"])
        let ok = try CLITestSupport.run("dp-coord", ["status", "--coordinator", endpoint] + keys.client, work: work)
        XCTAssertEqual(ok.status, 0, ok.stderr)

        // No keys at all: the handshake fails, and the client says why.
        let bare = try CLITestSupport.run("dp-coord", ["status", "--coordinator", endpoint, "--timeout", "2"], work: work)
        XCTAssertNotEqual(bare.status, 0)
        XCTAssertTrue(bare.stderr.contains("--server-key"), bare.stderr)

        // A new client key: refused until it is in clients.d and the coordinator got SIGHUP.
        let newKey = work.appendingPathComponent("keys/client2")
        XCTAssertEqual(try CLITestSupport.run("dp-coord", ["keygen", newKey.path], work: work).status, 0)
        let args2 = ["status", "--coordinator", endpoint, "--timeout", "2", "--key", newKey.path + ".key",
                     "--server-key", keys.serverPublic]
        let before = try CLITestSupport.run("dp-coord", args2, work: work)
        XCTAssertNotEqual(before.status, 0)
        XCTAssertTrue(before.stderr.contains("refused this key"), before.stderr)
        try FileManager.default.copyItem(atPath: newKey.path + ".pub",
                                         toPath: work.appendingPathComponent("clients.d/client2.pub").path)
        kill(coord.process.processIdentifier, SIGHUP)
        var status: Int32 = -1
        let deadline = Date().addingTimeInterval(30)
        while status != 0 && Date() < deadline {
            status = try CLITestSupport.run("dp-coord", args2, work: work).status
        }
        XCTAssertEqual(status, 0, "client2 not admitted after SIGHUP: \(coord.stderr)")
        kill(coord.process.processIdentifier, SIGTERM)
        XCTAssertEqual(coord.wait(timeout: 60).status, 0, coord.stderr)
    }
}

@testable import DPCoordinator
@testable import DPJournal
import DPProtocol
import XCTest

/// The frame/job lifecycle (FrameLifecycle, LifecycleRules) with plain values: no sockets, no SQLite.
/// Each test feeds events in an order the farm can meet and checks the effects that come out.
final class LifecycleTests: XCTestCase {
    let lifecycle = FrameLifecycle(maxFailedWorkersPerFrame: 3, maxFailedFramesPerWorkerJob: 3, maxErrorMessageBytes: 4096)

    func attempt(_ id: Int64, job: Int64 = 7, frame: Int = 4, worker: String = "w1",
                 result: AttemptResult? = nil) -> AttemptRecord {
        AttemptRecord(id: id, jobID: job, frame: frame, worker: worker, result: result, startedAtMs: 1000,
                      finishedAtMs: result == nil ? nil : 2000, renderSeconds: nil, error: nil)
    }

    func current(_ id: Int64, worker: String = "w1") -> AttemptTarget {
        AttemptTarget(record: attempt(id, worker: worker), current: true)
    }

    func outcome(_ id: Int64, applied: Bool = true, frameState: FrameState = .queued, jobState: JobState = .running,
                 jobFinished: Bool = false, banned: Bool = false) -> AttemptOutcome {
        AttemptOutcome(applied: applied, attemptID: id, jobID: 7, frame: 4, frameState: frameState, jobState: jobState,
                       jobFinished: jobFinished, workerBannedFromJob: banned, staleReason: applied ? nil : "attempt is not current")
    }

    let png = ResultReport.rendered(claimedSHA256: String(repeating: "a", count: 64), size: 100, renderSeconds: 1.5)

    // MARK: fencing

    func testUnknownAttemptAndAnotherWorkersAttemptAreRefused() {
        XCTAssertEqual(lifecycle.resultArrived(9, target: nil, worker: "w1", report: png), [.refuseResult(attemptID: 9, owner: nil)])
        XCTAssertEqual(lifecycle.resultArrived(9, target: current(9, worker: "w2"), worker: "w1", report: png),
                       [.refuseResult(attemptID: 9, owner: "w2")])
        // Another worker's failure is refused too: it counts against nobody.
        XCTAssertEqual(lifecycle.resultArrived(9, target: current(9, worker: "w2"), worker: "w1",
                                               report: .failed(FarmError(.renderFailed, "boom"))),
                       [.refuseResult(attemptID: 9, owner: "w2")])
    }

    func testCurrentResultIsCheckedWrittenThenCompleted() {
        let target = current(5)
        XCTAssertEqual(lifecycle.resultArrived(5, target: target, worker: "w1", report: png), [.writeOutput(target)])
        let digest = String(repeating: "a", count: 64)
        let output = FrameOutput(sha256: digest, size: 100, renderSeconds: 1.5)
        XCTAssertEqual(lifecycle.outputChecked(target, worker: "w1", claimedSHA256: digest, size: 100, renderSeconds: 1.5,
                                               .written(sha256: digest)),
                       [.completeAttempt(target, output, alreadyWritten: nil)])
        XCTAssertEqual(lifecycle.completionRecorded(outcome(5, frameState: .done), target: target, output: output),
                       [.frameDone(target, output)])
        // The job's last frame: the job's end follows the frame's.
        XCTAssertEqual(lifecycle.completionRecorded(outcome(5, frameState: .done, jobState: .completed, jobFinished: true),
                                                    target: target, output: output),
                       [.frameDone(target, output), .finishJob(7)])
    }

    func testStaleResultAfterRequeueIsRecordedNotWritten() {
        // The worker was declared dead, its attempt lost and the frame requeued; then its PNG arrives.
        let lost = AttemptTarget(record: attempt(5, result: .lost), current: false)
        XCTAssertEqual(lifecycle.resultArrived(5, target: lost, worker: "w1", report: png),
                       [.recordStale(lost.record, FrameOutput(sha256: String(repeating: "a", count: 64), size: 100,
                                                              renderSeconds: 1.5))])
        // Running but no longer the frame's current attempt (the frame went to another worker): the same.
        let moved = AttemptTarget(record: attempt(5), current: false)
        guard case .recordStale = lifecycle.resultArrived(5, target: moved, worker: "w1", report: png).first else {
            return XCTFail("a non-current PNG must be recorded stale")
        }
    }

    func testResultAfterCancel() {
        let cancelled = AttemptTarget(record: attempt(5, result: .cancelled), current: false)
        // A PNG that was on its way: stale, never written.
        guard case .recordStale = lifecycle.resultArrived(5, target: cancelled, worker: "w1", report: png).first else {
            return XCTFail("a PNG after cancel must be recorded stale")
        }
        // The worker's CANCELLED answer: handed back, nothing counted (the journal finds it not current).
        XCTAssertEqual(lifecycle.resultArrived(5, target: cancelled, worker: "w1",
                                               report: .failed(FarmError(.cancelled, "stopped"))),
                       [.loseAttempt(5, reason: "cancelled from worker 'w1': stopped")])
        // A render error that crossed the cancel: offered as a failure, which the journal records stale ...
        let effects = lifecycle.resultArrived(5, target: cancelled, worker: "w1", report: .failed(FarmError(.renderFailed, "oom")))
        XCTAssertEqual(effects, [.failAttempt(5, worker: "w1", reason: "renderFailed from worker 'w1': oom",
                                              error: FarmError(.renderFailed, "oom"), countsTowardWorkerBan: true)])
        // ... and then only noted: no FrameFailed, no job end.
        let stale = outcome(5, applied: false, jobState: .cancelled)
        XCTAssertEqual(lifecycle.failureRecorded(stale, worker: "w1", reason: "r", error: FarmError(.renderFailed, "oom"),
                                                 countsTowardWorkerBan: true),
                       [.noteStaleFailure(stale, reason: "r")])
    }

    // MARK: failures

    func testErrorCodesDecideWhatCounts() {
        let target = current(5)
        for code in [FarmErrorCode.cancelled, .shuttingDown] {
            XCTAssertEqual(lifecycle.resultArrived(5, target: target, worker: "w1", report: .failed(FarmError(code, "x"))),
                           [.loseAttempt(5, reason: "\(code) from worker 'w1': x")], "\(code)")
        }
        XCTAssertEqual(lifecycle.resultArrived(5, target: target, worker: "w1", report: .failed(FarmError(.jobPrepMissing, "evicted"))),
                       [.forgetPrep(job: 7), .loseAttempt(5, reason: "jobPrepMissing from worker 'w1': evicted")])
        for code in [FarmErrorCode.renderFailed, .modelUnavailable, .internal] {
            XCTAssertEqual(lifecycle.resultArrived(5, target: target, worker: "w1", report: .failed(FarmError(code, "x"))),
                           [.failAttempt(5, worker: "w1", reason: "\(code) from worker 'w1': x", error: FarmError(code, "x"),
                                         countsTowardWorkerBan: true)], "\(code)")
        }
    }

    func testLongErrorIsCutToTheLimit() {
        let lifecycle = FrameLifecycle(maxFailedWorkersPerFrame: 3, maxFailedFramesPerWorkerJob: 3, maxErrorMessageBytes: 64)
        let long = String(repeating: "é", count: 100)  // 200 bytes
        guard case let .failAttempt(_, _, reason, error, _) = lifecycle.resultArrived(
            5, target: current(5), worker: "w1", report: .failed(FarmError(.renderFailed, long))).first else {
            return XCTFail("expected a failure")
        }
        XCTAssertEqual(error.message, String(repeating: "é", count: 32) + "... (cut at 64 bytes)")
        XCTAssertEqual(reason, "renderFailed from worker 'w1': " + error.message)
    }

    func testRefusedOutputsAreFailuresOfTheWorker() {
        let target = current(5)
        let claimed = String(repeating: "a", count: 64), found = String(repeating: "b", count: 64)
        let check = { (c: OutputCheck) in
            self.lifecycle.outputChecked(target, worker: "w1", claimedSHA256: claimed, size: 100, renderSeconds: 1, c)
        }
        let bad = FarmError(.badRequest, "job 7 frame 4: result of attempt 5 from worker 'w1' refused: no IEND")
        XCTAssertEqual(check(.badPNG("no IEND")),
                       [.failAttempt(5, worker: "w1", reason: "badRequest from worker 'w1': \(bad.message)", error: bad,
                                     countsTowardWorkerBan: true)])
        let mismatch = FarmError(.checksumMismatch, "job 7 frame 4: PNG has sha256 \(found), worker claimed \(claimed)")
        let mismatchFailure = LifecycleEffect.failAttempt(5, worker: "w1", reason: "checksumMismatch from worker 'w1': "
            + mismatch.message, error: mismatch, countsTowardWorkerBan: true)
        XCTAssertEqual(check(.checksumMismatch(found: found)), [mismatchFailure])
        // Already in the folder from before a crash: done if the bytes are the claimed ones, a mismatch if not.
        XCTAssertEqual(check(.alreadyWritten(sha256: claimed, note: "exists")),
                       [.completeAttempt(target, FrameOutput(sha256: claimed, size: 100, renderSeconds: 1),
                                         alreadyWritten: "exists")])
        XCTAssertEqual(check(.alreadyWritten(sha256: found, note: "exists")), [mismatchFailure])
        // The coordinator's own trouble is not the worker's: handed back, or the job fails.
        XCTAssertEqual(check(.writeFailed("ENOSPC")), [.loseAttempt(5, reason: "coordinator could not write the frame: ENOSPC")])
        XCTAssertEqual(check(.outputUnavailable("folder gone")), [.failJob(7, error: "folder gone")])
    }

    func testAppliedFailureReportsAndEndsTheJob() {
        let error = FarmError(.renderFailed, "x")
        let requeued = outcome(5)
        XCTAssertEqual(lifecycle.failureRecorded(requeued, worker: "w1", reason: "r", error: error, countsTowardWorkerBan: true),
                       [.frameFailed(requeued, worker: "w1", error: error)])
        let banned = outcome(5, banned: true)
        XCTAssertEqual(lifecycle.failureRecorded(banned, worker: "w1", reason: "r", error: error, countsTowardWorkerBan: true),
                       [.frameFailed(banned, worker: "w1", error: error), .noticeIfNoWorkerMayTake(job: 7)])
        // The job's last pending frame failed: the job ends (no notice needed, even if banned).
        let last = outcome(5, frameState: .failed, jobState: .failed, jobFinished: true, banned: true)
        XCTAssertEqual(lifecycle.failureRecorded(last, worker: "w1", reason: "r", error: error, countsTowardWorkerBan: true),
                       [.frameFailed(last, worker: "w1", error: error), .finishJob(7)])
    }

    func testThirdDifferentFailingWorkerFailsTheFrame() {
        XCTAssertEqual(LifecycleRules.frameAfterFailure(failedAttemptWorkers: ["w1"], budget: 3).state, .queued)
        XCTAssertEqual(LifecycleRules.frameAfterFailure(failedAttemptWorkers: ["w1", "w2"], budget: 3).state, .queued)
        // The same worker failing again does not use up the budget: different workers do.
        let again = LifecycleRules.frameAfterFailure(failedAttemptWorkers: ["w1", "w2", "w1", "w2"], budget: 3)
        XCTAssertEqual(again.distinctWorkers, 2)
        XCTAssertEqual(again.state, .queued)
        let third = LifecycleRules.frameAfterFailure(failedAttemptWorkers: ["w1", "w2", "w1", "w3"], budget: 3)
        XCTAssertEqual(third.distinctWorkers, 3)
        XCTAssertEqual(third.state, .failed)
        XCTAssertEqual(LifecycleRules.frameAfterFailure(failedAttemptWorkers: ["w1"], budget: 1).state, .failed)
    }

    func testWorkerBanAndJobSettlement() {
        XCTAssertFalse(LifecycleRules.workerBanned(failures: 2, limit: 3))
        XCTAssertTrue(LifecycleRules.workerBanned(failures: 3, limit: 3))
        XCTAssertNil(LifecycleRules.settlement(state: .running, total: 10, done: 8, failed: 1))
        XCTAssertEqual(LifecycleRules.settlement(state: .running, total: 10, done: 10, failed: 0), .completed)
        XCTAssertEqual(LifecycleRules.settlement(state: .running, total: 10, done: 9, failed: 1), .failed)
        XCTAssertEqual(LifecycleRules.settlement(state: .queued, total: 1, done: 0, failed: 1), .failed)
        // An ended job (cancelled, or failed as a whole) is not settled again.
        XCTAssertNil(LifecycleRules.settlement(state: .cancelled, total: 10, done: 10, failed: 0))
        XCTAssertNil(LifecycleRules.settlement(state: .failed, total: 10, done: 9, failed: 1))
    }

    func testPoisonFrameReportQuotesTheWorkersErrors() {
        let long = String(repeating: "x", count: 301)
        let report = LifecycleRules.failedFramesReport(failed: 4, frames: [
            .init(frame: 2, errors: [("w3", "killed"), ("w2", "silent"), ("w1", long)]),
            .init(frame: 5, errors: [("w1", "oom")]),
        ])
        XCTAssertEqual(report, "4 frame(s) failed: frame 2 ('w3': killed | 'w2': silent | 'w1': "
            + String(repeating: "x", count: 300) + "...); frame 5 ('w1': oom); ...")
        XCTAssertEqual(LifecycleRules.failedFramesReport(failed: 1, frames: [.init(frame: 0, errors: [("w1", "e")])]),
                       "1 frame(s) failed: frame 0 ('w1': e)")
    }

    // MARK: lost workers, hand-backs, restart

    func testLostWorkersAttemptsFailWithoutCountingTowardTheBan() {
        let effects = lifecycle.attemptsLost([3, 8], worker: "w1", .sessionEnded("silent for 6000 ms"))
        XCTAssertEqual(effects, [3, 8].map {
            .failAttempt($0, worker: "w1", reason: "worker 'w1' silent for 6000 ms",
                         error: FarmError(.renderFailed, "worker 'w1' silent for 6000 ms"), countsTowardWorkerBan: false)
        })
        let reason = "stalled: no step progress on worker 'w1' for 600001 ms"
        XCTAssertEqual(lifecycle.attemptsLost([3], worker: "w1", .stalled(milliseconds: 600_001)),
                       [.failAttempt(3, worker: "w1", reason: reason, error: FarmError(.renderFailed, reason),
                                     countsTowardWorkerBan: false),
                        .cancelAttempt(3, reason: "stalled")])
        XCTAssertEqual(lifecycle.attemptsLost([], worker: "w1", .sessionEnded("gone")), [])
    }

    func testLostWorkerAfterItsResult() {
        // Its result was accepted (the session no longer holds the attempt): dying loses nothing.
        XCTAssertEqual(lifecycle.attemptsLost([], worker: "w1", .sessionEnded("connection gone")), [])
        // It still listed the attempt when it died, but the frame had moved on: the journal does not
        // apply the failure, and nothing is reported (no FrameFailed, no stale-failure note).
        XCTAssertEqual(lifecycle.failureRecorded(outcome(5, applied: false, frameState: .done), worker: "w1", reason: "r",
                                                 error: FarmError(.renderFailed, "r"), countsTowardWorkerBan: false), [])
        // Applied: the frame's failure is reported like any other, and the third such worker ends the job.
        let third = outcome(5, frameState: .failed, jobState: .failed, jobFinished: true)
        XCTAssertEqual(lifecycle.failureRecorded(third, worker: "w3", reason: "r", error: FarmError(.renderFailed, "r"),
                                                 countsTowardWorkerBan: false),
                       [.frameFailed(third, worker: "w3", error: FarmError(.renderFailed, "r")), .finishJob(7)])
    }

    func testGoodbyeHandsBackWithoutFailures() {
        let effects = lifecycle.goodbye(held: [3, 4, 5], handedBack: [3, 5, 99], cap: 9, worker: "w1")
        XCTAssertEqual(effects, [.loseAttempt(3, reason: "handed back by worker 'w1'"),
                                 .loseAttempt(4, reason: "worker 'w1' left without returning it"),
                                 .loseAttempt(5, reason: "handed back by worker 'w1'")])
        // Only the first `cap` listed ids are looked at.
        XCTAssertEqual(lifecycle.goodbye(held: [5], handedBack: [3, 5], cap: 1, worker: "w1"),
                       [.loseAttempt(5, reason: "worker 'w1' left without returning it")])
    }

    func testRestartGraceRequeuesWhatNobodyReAdopted() {
        XCTAssertEqual(lifecycle.graceOver(keeping: [4], graceSeconds: 5),
                       [.requeueInFlight(keeping: [4], reason: "not re-adopted within the 5.0 s restart grace period")])
    }

    func testHelloAfterRestartReAdoptsOnlyCurrentAttemptsOfItsName() {
        let targets: [Int64: AttemptTarget] = [
            1: current(1),                                                      // running, current: kept
            2: AttemptTarget(record: attempt(2, result: .lost), current: false),  // requeued at the end of the grace
            3: current(3, worker: "w2"),                                        // another worker's
        ]
        let decision = lifecycle.hello(worker: "w1", listed: [1, 2, 3, 99], targets: targets, ownsRecordedAttempts: true,
                                       previous: [1, 6])
        XCTAssertEqual(decision.adopted, [attempt(1)])
        XCTAssertEqual(decision.refused, [2, 3, 99])
        XCTAssertEqual(decision.cancels, [2, 3, 99].map { .cancelAttempt($0, reason: "attempt \($0) is no longer current") })
        // Its earlier session held 6 and came back without it: a failure of that frame, not of the ban.
        XCTAssertEqual(decision.lost, lifecycle.attemptsLost([6], worker: "w1", .reconnectedWithout))
        guard case let .failAttempt(6, _, reason, _, false) = decision.lost.first else { return XCTFail("expected a loss") }
        XCTAssertEqual(reason, "worker 'w1' reconnected without it")
        // A key that does not own the name re-adopts nothing.
        let stranger = lifecycle.hello(worker: "w1", listed: [1], targets: targets, ownsRecordedAttempts: false, previous: [])
        XCTAssertEqual(stranger.adopted, [])
        XCTAssertEqual(stranger.refused, [1])
    }

    func testProgressForAnAttemptNotHeld() {
        XCTAssertEqual(lifecycle.progressForUnheldAttempt(12, current: true), [])
        XCTAssertEqual(lifecycle.progressForUnheldAttempt(12, current: false),
                       [.cancelAttempt(12, reason: "attempt 12 is no longer current")])
    }

    // MARK: deadlines and progress

    func testSilentWorkerAndStalledAttemptDeadlines() {
        let lifecycle = FrameLifecycle(maxFailedWorkersPerFrame: 3, maxFailedFramesPerWorkerJob: 3, maxErrorMessageBytes: 64,
                                       silentAfterMs: 5000, stallAfterMs: 60_000)
        XCTAssertFalse(lifecycle.isSilent(lastHeardMs: 1000, now: 6000))
        XCTAssertTrue(lifecycle.isSilent(lastHeardMs: 1000, now: 6001))
        let fresh = LiveAttempt(id: 1, jobID: 7, frame: 0, step: 3, total: 20, lastProgressMs: 50_000)
        let old = LiveAttempt(id: 2, jobID: 7, frame: 1, step: 0, total: 0, lastProgressMs: 1000)
        XCTAssertEqual(lifecycle.stalled([fresh, old], now: 61_000).map(\.id), [])
        XCTAssertEqual(lifecycle.stalled([fresh, old], now: 61_001).map(\.id), [2])
        XCTAssertEqual(lifecycle.stalled([fresh, old], now: 110_001).map(\.id), [1, 2])
    }

    func testOnlyAStepForwardRefreshesTheStallTimer() {
        let live = LiveAttempt(id: 1, jobID: 7, frame: 0, step: 0, total: 0, lastProgressMs: 1000)
        // `step 0 of 0` forever (a worker loading its model, or wedged): nothing changes, it will stall.
        XCTAssertNil(FrameLifecycle.progressed(live, step: 0, total: 0, now: 9000))
        guard let next = FrameLifecycle.progressed(live, step: 1, total: 20, now: 9000) else { return XCTFail("a step forward") }
        XCTAssertEqual([next.step, next.total], [1, 20])
        XCTAssertEqual(next.lastProgressMs, 9000)
        // A repeated or a backward step (a stale report) does not hold the stall off either.
        XCTAssertNil(FrameLifecycle.progressed(next, step: 1, total: 20, now: 12_000))
        XCTAssertNil(FrameLifecycle.progressed(next, step: 0, total: 20, now: 12_000))
    }

    // MARK: cancel, job failure

    func testCancelStopsWorkersThenAnnouncesOnlyAJobItCancelled() {
        let running = [attempt(3), attempt(4, worker: "w2")]
        XCTAssertEqual(lifecycle.jobCancelled(7, running: running),
                       [.cancelJobOnWorkers(7, attempts: running, reason: "job 7 cancelled")])
        XCTAssertEqual(lifecycle.cancelAnswered(7, state: .cancelled, observed: true),
                       [.announceFinished(7, state: .cancelled, message: "cancelled")])
        XCTAssertEqual(lifecycle.cancelAnswered(7, state: .cancelled, observed: false), [])
        // Cancelling a job that had already completed changes nothing and announces nothing.
        XCTAssertEqual(lifecycle.cancelAnswered(7, state: .completed, observed: true), [])
    }

    func testJobFailureStopsItsWorkersThenWritesItsEnd() {
        XCTAssertEqual(lifecycle.jobFailed(7, running: [attempt(3)], error: "poses unreadable"),
                       [.cancelJobOnWorkers(7, attempts: [attempt(3)], reason: "poses unreadable"), .finishJob(7)])
    }

    func testLostOutputIsRenderedAgainOnlyForAnUnfinishedJob() {
        for state in [JobState.queued, .running] {
            XCTAssertEqual(lifecycle.doneFrameLost(7, frame: 4, reason: "missing", jobState: state),
                           [.requeueDoneFrame(job: 7, frame: 4, reason: "missing")])
        }
        for state in [JobState.completed, .failed, .cancelled] {
            XCTAssertEqual(lifecycle.doneFrameLost(7, frame: 4, reason: "missing", jobState: state),
                           [.noteLostOutput(job: 7, frame: 4, reason: "missing", state: state)])
        }
    }

    func testNoticeOnlyWhenEveryConnectedWorkerIsBanned() {
        XCTAssertFalse(FrameLifecycle.noWorkerMayTake(connected: []) { _ in true })
        XCTAssertTrue(FrameLifecycle.noWorkerMayTake(connected: ["w1", "w2"]) { _ in true })
        XCTAssertFalse(FrameLifecycle.noWorkerMayTake(connected: ["w1", "w2"]) { $0 == "w1" })
    }
}

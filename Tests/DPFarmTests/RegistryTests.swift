// The coordinator's worker registry, driven by a manual clock (no sleeping): liveness and purge
// order, stall detection, credits, reconnects, dispatch preference, outgoing heartbeats.
@testable import DPCoordinator
import DPJournal
import Foundation
import XCTest

final class RegistryTests: XCTestCase {
    private let a = Data([0, 1]), b = Data([0, 2]), c = Data([0, 3])

    private func registry(_ clock: ManualClock, stall: Int64 = 60_000, firstStep: Int64 = 120_000) -> WorkerRegistry {
        WorkerRegistry(settings: LivenessSettings(stallTimeoutMilliseconds: stall, firstStepTimeoutMilliseconds: firstStep),
                       clock: clock)
    }

    func testDefaultsAreOneSecondAndFiveMissedBeats() {
        let settings = LivenessSettings()
        XCTAssertEqual(settings.heartbeatIntervalMilliseconds, 1000)
        XCTAssertEqual(settings.heartbeatLiveness, 5)
        XCTAssertEqual(settings.deadAfterMilliseconds, 5000)
    }

    func testSilentWorkerDiesAfterLivenessAndItsAttemptsAreLost() throws {
        let clock = ManualClock(milliseconds: 0)
        let reg = registry(clock)
        reg.register(routingID: a, name: "alpha", slots: 2, cachedModelIDs: [])
        try reg.grant(2, to: a)
        try reg.dispatched(attemptID: 10, jobID: 1, frame: 0, to: a)
        try reg.dispatched(attemptID: 11, jobID: 1, frame: 1, to: a)
        clock.set(milliseconds: 4999)
        XCTAssertTrue(reg.expire().isEmpty)
        clock.set(milliseconds: 5000)
        let report = reg.expire()
        XCTAssertEqual(report.deadWorkers.map(\.name), ["alpha"])
        XCTAssertEqual(report.lostAttempts.map(\.attempt.attemptID), [10, 11])
        guard case let .workerGone(why) = report.lostAttempts[0].reason else { return XCTFail("\(report)") }
        XCTAssertTrue(why.contains("5000 ms"), why)
        XCTAssertTrue(report.lostAttempts[0].description.contains("alpha"))
        XCTAssertNil(reg.worker(routingID: a))
        XCTAssertNil(reg.worker(named: "alpha"))
        XCTAssertTrue(reg.inFlight.isEmpty)
        XCTAssertFalse(reg.heard(from: a), "a dead worker must say Hello again")
        XCTAssertNil(reg.finished(attemptID: 10), "a late result of a lost attempt is stale")
    }

    func testPurgeFollowsLastHeardOrder() {
        let clock = ManualClock(milliseconds: 0)
        let reg = registry(clock)
        reg.register(routingID: a, name: "alpha", slots: 1, cachedModelIDs: [])
        clock.set(milliseconds: 1000)
        reg.register(routingID: b, name: "beta", slots: 1, cachedModelIDs: [])
        clock.set(milliseconds: 2000)
        reg.register(routingID: c, name: "gamma", slots: 1, cachedModelIDs: [])
        clock.set(milliseconds: 3000)
        XCTAssertTrue(reg.heard(from: a))  // alpha is now the most recently heard
        clock.set(milliseconds: 6500)      // beta silent 5500, gamma 4500, alpha 3500
        XCTAssertEqual(reg.expire().deadWorkers.map(\.name), ["beta"])
        clock.set(milliseconds: 7999)
        XCTAssertEqual(reg.expire().deadWorkers.map(\.name), ["gamma"])
        XCTAssertEqual(reg.allWorkers.map(\.name), ["alpha"])
        clock.set(milliseconds: 20_000)
        XCTAssertEqual(reg.expire().deadWorkers.map(\.name), ["alpha"])
    }

    func testAttemptWithoutStepProgressIsStalledWhileItsWorkerLives() throws {
        let clock = ManualClock(milliseconds: 0)
        let reg = registry(clock, stall: 60_000, firstStep: 120_000)
        reg.register(routingID: a, name: "alpha", slots: 2, cachedModelIDs: [])
        try reg.grant(2, to: a)
        try reg.dispatched(attemptID: 1, jobID: 1, frame: 0, totalSteps: 50, to: a)
        try reg.dispatched(attemptID: 2, jobID: 1, frame: 1, totalSteps: 50, to: a)
        func tick(to t: Int64) -> ExpiryReport {
            clock.set(milliseconds: t)
            reg.heard(from: a)  // heartbeats keep the worker alive throughout
            return reg.expire()
        }
        XCTAssertNotNil(reg.progress(attemptID: 1, step: 1, totalSteps: 50, from: a))
        XCTAssertTrue(tick(to: 30_000).isEmpty)
        XCTAssertEqual(reg.progress(attemptID: 1, step: 1, totalSteps: 50, from: a)?.lastProgressAtMs, 0,
                       "the same step again is not progress")
        XCTAssertNil(reg.progress(attemptID: 1, step: 2, totalSteps: 50, from: b), "progress from another peer is ignored")
        let stalled = tick(to: 60_000)
        XCTAssertTrue(stalled.deadWorkers.isEmpty)
        XCTAssertEqual(stalled.lostAttempts.map(\.attempt.attemptID), [1])
        XCTAssertEqual(stalled.lostAttempts[0].reason, .stalled(sinceMs: 0, step: 1))
        // Attempt 2 never reached step 1: it gets the longer first-step timeout.
        XCTAssertTrue(tick(to: 119_999).isEmpty)
        XCTAssertEqual(tick(to: 120_000).lostAttempts.map(\.attempt.attemptID), [2])
        XCTAssertEqual(reg.worker(routingID: a)?.attemptIDs, [])
        // Steady progress is never stalled.
        try reg.grant(1, to: a)
        try reg.dispatched(attemptID: 3, jobID: 1, frame: 2, to: a)
        for step in 1 ... 10 {
            XCTAssertTrue(tick(to: 120_000 + Int64(step) * 59_000).isEmpty)
            reg.progress(attemptID: 3, step: step, totalSteps: 10, from: a)
        }
        XCTAssertEqual(reg.finished(attemptID: 3)?.step, 10)
    }

    func testCreditsAreConsumedByDispatch() throws {
        let clock = ManualClock(milliseconds: 0)
        let reg = registry(clock)
        reg.register(routingID: a, name: "alpha", slots: 2, cachedModelIDs: [])
        XCTAssertThrowsError(try reg.dispatched(attemptID: 1, jobID: 1, frame: 0, to: a)) {
            XCTAssertEqual($0 as? WorkerRegistryError, .noCredit(worker: "alpha"))
        }
        try reg.grant(2, to: a)
        try reg.dispatched(attemptID: 1, jobID: 1, frame: 0, to: a)
        XCTAssertThrowsError(try reg.dispatched(attemptID: 1, jobID: 1, frame: 1, to: a)) {
            XCTAssertEqual($0 as? WorkerRegistryError, .duplicateAttempt(1))
        }
        try reg.dispatched(attemptID: 2, jobID: 1, frame: 1, to: a)
        XCTAssertEqual(reg.worker(routingID: a)?.credits, 0)
        XCTAssertTrue(reg.workersWithCredit().isEmpty)
        XCTAssertEqual(reg.finished(attemptID: 1)?.frame, 0)
        try reg.grant(1, to: a)
        XCTAssertEqual(reg.workersWithCredit().map(\.name), ["alpha"])
        XCTAssertThrowsError(try reg.grant(1, to: c)) { XCTAssertEqual($0 as? WorkerRegistryError, .unknownPeer(self.c)) }
    }

    func testReconnectReplacesTheOldSessionAndCanAdoptItsAttempts() throws {
        let clock = ManualClock(milliseconds: 0)
        let reg = registry(clock)
        reg.register(routingID: a, name: "alpha", slots: 1, cachedModelIDs: ["m1"])
        try reg.grant(1, to: a)
        try reg.dispatched(attemptID: 7, jobID: 3, frame: 9, to: a)
        clock.set(milliseconds: 1500)
        let (replaced, lost) = reg.register(routingID: b, name: "alpha", slots: 1, cachedModelIDs: ["m1"])
        XCTAssertEqual(replaced?.routingID, a)
        XCTAssertEqual(lost.map(\.attempt.attemptID), [7])
        XCTAssertNil(reg.worker(routingID: a))
        XCTAssertEqual(reg.worker(named: "alpha")?.routingID, b)
        XCTAssertEqual(reg.worker(named: "alpha")?.credits, 0)
        // The journal kept attempt 7 current (listed in Hello.running_attempt_ids): adopt it.
        try reg.adopt(attemptID: 7, jobID: 3, frame: 9, step: 4, totalSteps: 20, on: b)
        XCTAssertEqual(reg.attempt(7)?.routingID, b)
        XCTAssertEqual(reg.attempt(7)?.step, 4)
        XCTAssertEqual(reg.worker(routingID: b)?.credits, 0, "adopting consumes no credit")
        // Goodbye hands the attempt back.
        let (gone, handedBack) = reg.remove(routingID: b, why: "said Goodbye")
        XCTAssertEqual(gone?.name, "alpha")
        XCTAssertEqual(handedBack.map(\.attempt.attemptID), [7])
        XCTAssertTrue(reg.allWorkers.isEmpty)
    }

    func testDispatchPrefersModelHoldersThenLeastRecentlyServed() throws {
        let clock = ManualClock(milliseconds: 0)
        let reg = registry(clock)
        reg.register(routingID: a, name: "alpha", slots: 4, cachedModelIDs: [])
        reg.register(routingID: b, name: "beta", slots: 4, cachedModelIDs: ["m1"])
        reg.register(routingID: c, name: "gamma", slots: 4, cachedModelIDs: [])
        clock.set(milliseconds: 10)
        try reg.grant(4, to: c)
        clock.set(milliseconds: 20)
        try reg.grant(4, to: a)
        clock.set(milliseconds: 30)
        try reg.grant(4, to: b)
        XCTAssertEqual(reg.workersWithCredit(preferring: "m1").map(\.name), ["beta", "gamma", "alpha"])
        XCTAssertEqual(reg.workersWithCredit().map(\.name), ["gamma", "alpha", "beta"])
        clock.set(milliseconds: 40)
        try reg.dispatched(attemptID: 1, jobID: 1, frame: 0, to: c)  // gamma was just served
        XCTAssertEqual(reg.workersWithCredit().map(\.name), ["alpha", "beta", "gamma"])
        reg.addCachedModel("m1", to: a)
        XCTAssertEqual(reg.workersWithCredit(preferring: "m1").map(\.name), ["alpha", "beta", "gamma"])
    }

    func testHeartbeatsAreDueAfterAnIntervalWithoutSending() {
        let clock = ManualClock(milliseconds: 0)
        let reg = registry(clock)
        reg.register(routingID: a, name: "alpha", slots: 1, cachedModelIDs: [])
        reg.register(routingID: b, name: "beta", slots: 1, cachedModelIDs: [])
        XCTAssertEqual(reg.heartbeatsDue(now: 999), [])
        clock.set(milliseconds: 600)
        reg.sent(to: b)
        XCTAssertEqual(reg.heartbeatsDue(now: 1000), [a])
        XCTAssertEqual(reg.heartbeatsDue(now: 1600), [a, b])
    }
}

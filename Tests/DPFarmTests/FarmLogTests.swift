// DPLog: the typed events survive the trip through a JSON log line, the text format is the message as operators
// read it, levels filter lines but not events, peer text in metadata is escaped and cut, and --log-level /
// --log-format (and their environment variables) are checked.
import DPCLISupport
import DPLog
import Foundation
import Logging
import XCTest

final class FarmLogTests: XCTestCase {
    /// One of every FarmEvent case (`testSamplesCoverEveryEvent` counts them).
    static let samples: [FarmEvent] = [
        .serving(endpoint: "tcp://127.0.0.1:5555"), .insecureNoAuth(endpoint: "tcp://0.0.0.0:1"), .coordinatorStopped,
        .loopThreadNice(nice: -5, applied: false), .keysReloaded, .workerRegistered(worker: "w-1", slots: 4),
        .helloRejected(peer: "peer 50a1"), .workerDropped(worker: "w", cause: .silent),
        .creditBeyondCap(worker: "greedy"), .attemptRequeued(job: 3, frame: 7, attempt: 12),
        .staleResult(job: 1, frame: 0, attempt: 2, worker: "slow"),
        .frameDone(job: Int64.max, frame: Int(UInt32.max), attempt: 1, worker: "wörker ✓"),
        .frameFailed(job: 2, frame: 3, attempt: 4, worker: "k1", final: true, workerBanned: false, error: "boom: 'x' (y)"),
        .noWorkerMayTake(job: 9), .frameOutputLost(job: 1, frame: 2, requeued: true, reason: "missing"),
        .jobSubmitted(job: 5, frames: 100, uploads: 0, modelHeld: true), .jobQueued(job: 5),
        .jobFailed(job: 6, error: "upload dropped"), .videoFailed(job: 6, error: "video failed: exists"),
        .jobFinished(job: 7, state: .cancelled), .jobCancelRequested(job: 7), .jobOutputsResumed(job: 8),
        .modelInstalled(model: "ab12", job: 1), .modelUploadFailed(model: "ab12", job: 2),
        .modelUploadReleased(model: "ab12", job: 3), .restartAttemptsInFlight(attempts: 2),
        .restartGraceOver(requeued: 0), .messageRejected(peer: "peer 00", reason: "not a protobuf message"),
        .unregisteredMessage(peer: "peer 01", message: "credit"), .peerError(peer: "peer 02", code: "renderFailed"),
        .modelRequestRefused(worker: "fetcher", request: "chunk"),
        .workerPhaseChanged(worker: "w", phase: "fetching_model", job: 3), .workerPhaseRefused(worker: "w", reason: "r"),
        .workerStarting(worker: "w", slots: 1),
        .welcomed(worker: "w", coordinator: "00ff00ff00ff00ff"), .reconnecting(worker: "w"),
        .refusedByCoordinator(worker: "w"), .workerStopping(worker: "w", handBack: true),
        .handedBack(worker: "w", attempts: [3, 17]), .modelFetching(worker: "w", model: "cd34"),
        .modelFetched(worker: "w", model: "cd34", bytes: UInt64.max, files: 6),
        .modelFileCorrupted(worker: "w", model: "cd34", path: "unet/x.safetensors", givingUp: false),
        .stopSignal(signal: "SIGTERM", action: .carryOn), .workerStopped(worker: "w"),
    ]

    func testSamplesCoverEveryEvent() {
        XCTAssertEqual(Set(Self.samples.map(\.name)).count, 44, "a FarmEvent case without a sample here")
    }

    func testEveryEventRoundTripsThroughItsFields() {
        for event in Self.samples + [.handedBack(worker: "w", attempts: []), .handedBack(worker: "w", attempts: [1])] {
            XCTAssertEqual(FarmEvent(name: event.name, fields: event.fields), event, event.name)
        }
    }

    func testUnknownNamesAndBadFieldsDecodeToNil() {
        XCTAssertNil(FarmEvent(name: "noSuchEvent", fields: [:]))
        XCTAssertNil(FarmEvent(name: "frameDone", fields: ["job": "1", "frame": "2", "attempt": "3"]), "worker missing")
        XCTAssertNil(FarmEvent(name: "jobQueued", fields: ["job": "one"]))
        XCTAssertNil(FarmEvent(name: "jobQueued", fields: ["job": "99999999999999999999"]), "past Int64")
        XCTAssertNil(FarmEvent(name: "jobFinished", fields: ["job": "1", "state": "exploded"]))
        XCTAssertNil(FarmEvent(name: "workerDropped", fields: ["worker": "w", "cause": "bored"]))
        XCTAssertNil(FarmEvent(name: "handedBack", fields: ["worker": "w", "attempts": "1,,2"]))
        XCTAssertNil(FarmEvent(name: "loopThreadNice", fields: ["nice": "1", "applied": "yes"]))
    }

    /// A log writing to `LogSink`/`EventSink`, at `level`, in `format`.
    func capture(_ format: FarmLogFormat, level: Logger.Level = .info, prefix: String = "") -> (FarmLog, LogSink, EventSink) {
        let lines = LogSink()
        let events = EventSink()
        let log = FarmLog(label: "dp.test", level: level, format: format, textPrefix: prefix, sink: lines.closure,
                          onEvent: events.closure)
        return (log, lines, events)
    }

    func testJSONLinesCarryTheEventAndDecodeBack() throws {
        let (log, lines, events) = capture(.json)
        for event in Self.samples { log.notice("message of \(event.name)", event) }
        log.warning("a line with ids and no event", job: 4, frame: 5, attempt: 6, worker: "w9")
        let written = lines.all
        XCTAssertEqual(written.count, Self.samples.count + 1)
        XCTAssertTrue(written.allSatisfy { !$0.contains("\n") }, "one record, one line")
        let records = written.compactMap { FarmLogRecord.decode($0) }
        XCTAssertEqual(records.count, written.count, "every line decodes")
        XCTAssertEqual(records.compactMap(\.farmEvent), Self.samples)
        XCTAssertEqual(events.all, Self.samples)
        let first = records[0]
        XCTAssertEqual(first.level, "notice")
        XCTAssertEqual(first.label, "dp.test")
        XCTAssertEqual(first.message, "message of serving")
        XCTAssertEqual(first.event, "serving")
        XCTAssertNotNil(ISO8601DateFormatter().date(from: first.time.replacingOccurrences(of: #"\.\d+"#, with: "",
                                                                                          options: .regularExpression)),
                        first.time)
        let plain = try XCTUnwrap(records.last)
        XCTAssertNil(plain.event)
        XCTAssertNil(plain.farmEvent)
        XCTAssertEqual(plain.level, "warning")
        XCTAssertEqual(plain.metadata, ["job": "4", "frame": "5", "attempt": "6", "worker": "w9"])
        XCTAssertNil(FarmLogRecord.decode("dp-coord: serving on tcp://x"), "a text line is no record")
        XCTAssertNil(FarmLogRecord.decode("{not json"))
    }

    func testTextIsTheMessageAndLevelsFilterLinesNotEvents() {
        let (log, lines, events) = capture(.text, level: .notice, prefix: "local-1: ")
        log.info("job 1 frame 0 done", .frameDone(job: 1, frame: 0, attempt: 1, worker: "w"))
        log.notice("job 1 finished: completed", .jobFinished(job: 1, state: .completed))
        log.error("job 2: cannot write its manifest", job: 2)
        log("an info line")
        XCTAssertEqual(lines.all, ["local-1: job 1 finished: completed", "local-1: job 2: cannot write its manifest"])
        XCTAssertEqual(events.all, [.frameDone(job: 1, frame: 0, attempt: 1, worker: "w"),
                                                .jobFinished(job: 1, state: .completed)])
        log.report(.jobQueued(job: 3))
        XCTAssertEqual(events.all.last, .jobQueued(job: 3))
        XCTAssertEqual(lines.all.count, 2, "report writes no line")
    }

    func testPeerTextInMetadataIsEscapedAndCut() throws {
        let (log, lines, events) = capture(.json)
        let forged = "evil\n{\"level\":\"info\"}" + String(repeating: "!", count: 5000)
        log.with("host", "h\u{1b}[31m").warning("worker '\(peer: forged)' dropped",
                                                .workerDropped(worker: forged, cause: .gone))
        let line = try XCTUnwrap(lines.all.first)
        XCTAssertFalse(line.contains("\n"))
        XCTAssertLessThan(line.utf8.count, 2000, "cut")
        let record = try XCTUnwrap(FarmLogRecord.decode(line))
        let worker = try XCTUnwrap(record.metadata["worker"])
        XCTAssertTrue(worker.hasPrefix("evil\\n{"), worker)
        XCTAssertTrue(worker.hasSuffix("...(\(forged.utf8.count) bytes)"), worker)
        XCTAssertEqual(record.metadata["host"], "h\\u{1b}[31m")
        XCTAssertTrue(record.message.hasPrefix("worker 'evil\\n{"), record.message)
        // In process the event keeps the text as sent: it is a value, not a line.
        XCTAssertEqual(events.all, [.workerDropped(worker: forged, cause: .gone)])
    }

    func testLogOptionsTakeFlagsThenEnvironment() throws {
        func options(_ args: [String]) throws -> LogOptions { try LogOptions.parse(args) }
        var r = try options([]).resolved(environment: [:])
        XCTAssertEqual(r.level, .info)
        XCTAssertEqual(r.format, .text)
        r = try options([]).resolved(environment: ["DP_LOG_LEVEL": "DEBUG", "DP_LOG_FORMAT": "json"])
        XCTAssertEqual(r.level, .debug)
        XCTAssertEqual(r.format, .json)
        r = try options(["--log-level", "error", "--log-format", "text"])
            .resolved(environment: ["DP_LOG_LEVEL": "debug", "DP_LOG_FORMAT": "json"])
        XCTAssertEqual(r.level, .error)
        XCTAssertEqual(r.format, .text)
        XCTAssertThrowsError(try options(["--log-level", "loud"]).resolved(environment: [:])) {
            XCTAssertTrue("\($0)".contains("--log-level \"loud\""), "\($0)")
        }
        XCTAssertThrowsError(try options([]).resolved(environment: ["DP_LOG_FORMAT": "xml"])) {
            XCTAssertTrue("\($0)".contains("$DP_LOG_FORMAT \"xml\": expected text or json"), "\($0)")
        }
    }
}

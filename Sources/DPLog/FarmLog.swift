// Logging for the farm: a swift-log `Logger` per component (label "dp.coord", "dp.worker") plus the typed
// events (FarmEvent.swift). `FarmLog` is the one thing the coordinator and worker log through:
//
//     log.info("job \(id) frame \(n) done ...", .frameDone(job: id, frame: n, attempt: a, worker: w))
//     log.warning("job \(id): cannot write its manifest: \(error)", job: id)
//
// The message keeps the wording operators read (peer text in it through `\(peer:)`, as before); the event,
// when there is one, becomes the record's `event` metadata and its fields the rest of the metadata, and goes
// to `onEvent` as a value whatever the log level. Ids passed as `job:`/`frame:`/`attempt:`/`worker:` become
// metadata too. Peer-supplied text in metadata is escaped and cut like in the message (PeerText).
import DPProtocol
import Logging

public struct FarmLog: Sendable {
    public var logger: Logger
    /// Every event, as a value (tests, `dp-coord submit --json`); called on the logging thread.
    public var onEvent: (@Sendable (FarmEvent) -> Void)?
    /// Whether records carry metadata (ids, event fields). Off for a text-format handler, which prints only the
    /// message: a busy coordinator (thousands of frames a second) then builds no metadata it would drop.
    public var recordsMetadata: Bool

    public init(logger: Logger, recordsMetadata: Bool = true, onEvent: (@Sendable (FarmEvent) -> Void)? = nil) {
        self.logger = logger
        self.recordsMetadata = recordsMetadata
        self.onEvent = onEvent
    }

    /// A log whose records go, formatted, to `sink` one line at a time (`FarmLogHandler`).
    public init(label: String, level: Logger.Level = .info, format: FarmLogFormat = .text, textPrefix: String = "",
                sink: @escaping @Sendable (String) -> Void, onEvent: (@Sendable (FarmEvent) -> Void)? = nil) {
        let handler = FarmLogHandler(label: label, format: format, level: level, textPrefix: textPrefix, sink: sink)
        self.init(logger: Logger(label: label, factory: { _ in handler }), recordsMetadata: format == .json, onEvent: onEvent)
    }

    /// Logs nothing, reports no event.
    public static func silent(label: String) -> FarmLog {
        FarmLog(logger: Logger(label: label, factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    /// This log with `value` under `key` in every record's metadata.
    public func with(_ key: String, _ value: String) -> FarmLog {
        var copy = self
        copy.logger[metadataKey: key] = .string(PeerText.escaped(value, limit: FarmLog.fieldLimit))
        return copy
    }

    /// Characters of one metadata value kept (peer text is escaped and cut to this).
    public static let fieldLimit = 400

    /// An info line with no event (lines not yet given a level keep working).
    public func callAsFunction(_ message: @autoclosure () -> String) {
        log(.info, message(), nil, job: nil, frame: nil, attempt: nil, worker: nil)
    }

    public func trace(_ message: @autoclosure () -> String, _ event: FarmEvent? = nil, job: Int64? = nil,
                      frame: Int? = nil, attempt: Int64? = nil, worker: String? = nil) {
        log(.trace, message(), event, job: job, frame: frame, attempt: attempt, worker: worker)
    }

    public func debug(_ message: @autoclosure () -> String, _ event: FarmEvent? = nil, job: Int64? = nil,
                      frame: Int? = nil, attempt: Int64? = nil, worker: String? = nil) {
        log(.debug, message(), event, job: job, frame: frame, attempt: attempt, worker: worker)
    }

    public func info(_ message: @autoclosure () -> String, _ event: FarmEvent? = nil, job: Int64? = nil,
                     frame: Int? = nil, attempt: Int64? = nil, worker: String? = nil) {
        log(.info, message(), event, job: job, frame: frame, attempt: attempt, worker: worker)
    }

    public func notice(_ message: @autoclosure () -> String, _ event: FarmEvent? = nil, job: Int64? = nil,
                       frame: Int? = nil, attempt: Int64? = nil, worker: String? = nil) {
        log(.notice, message(), event, job: job, frame: frame, attempt: attempt, worker: worker)
    }

    public func warning(_ message: @autoclosure () -> String, _ event: FarmEvent? = nil, job: Int64? = nil,
                        frame: Int? = nil, attempt: Int64? = nil, worker: String? = nil) {
        log(.warning, message(), event, job: job, frame: frame, attempt: attempt, worker: worker)
    }

    public func error(_ message: @autoclosure () -> String, _ event: FarmEvent? = nil, job: Int64? = nil,
                      frame: Int? = nil, attempt: Int64? = nil, worker: String? = nil) {
        log(.error, message(), event, job: job, frame: frame, attempt: attempt, worker: worker)
    }

    /// Reports `event` to `onEvent` without a log record (when a rate limit holds the line back).
    public func report(_ event: FarmEvent) {
        onEvent?(event)
    }

    /// Fields that may hold peer-supplied text (worker and model names, error messages): escaped and cut in
    /// the record. `peer` is not: the coordinator's peer names escape the worker name in them already.
    static let peerTextKeys: Set<String> = ["worker", "error", "reason", "message", "coordinator", "model", "code", "path"]

    public func log(_ level: Logger.Level, _ message: @autoclosure () -> String, _ event: FarmEvent?,
                    job: Int64?, frame: Int?, attempt: Int64?, worker: String?) {
        // After the record is written: whoever waits on the event finds the line there too.
        defer { if let event { onEvent?(event) } }
        guard level >= logger.logLevel else { return }
        guard recordsMetadata else {
            logger.log(level: level, "\(message())")
            return
        }
        var metadata = Logger.Metadata()
        if let job { metadata["job"] = .string(String(job)) }
        if let frame { metadata["frame"] = .string(String(frame)) }
        if let attempt { metadata["attempt"] = .string(String(attempt)) }
        if let worker { metadata["worker"] = .string(worker) }
        if let event {
            for (key, value) in event.fields { metadata[key] = .string(value) }
            metadata[FarmLogHandler.eventKey] = .string(event.name)
        }
        for key in FarmLog.peerTextKeys {
            if case .string(let text)? = metadata[key] {
                metadata[key] = .string(PeerText.escaped(text, limit: FarmLog.fieldLimit))
            }
        }
        logger.log(level: level, "\(message())", metadata: metadata.isEmpty ? nil : metadata)
    }
}

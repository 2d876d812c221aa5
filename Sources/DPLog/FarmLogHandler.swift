// The farm's own swift-log handler: one record = one line, in one of two formats.
//   text: the message as operators read it (with an optional prefix, e.g. "w1: " for an embedded worker);
//         nothing else, so the lines read as they always have.
//   json: one JSON object per line: time (ISO 8601, UTC, ms), level, label, message, event (when the record
//         is a FarmEvent), metadata (every value a string). For machines: log shippers, and the CLI tests,
//         which wait on `event`, never on the message.
import Foundation
import Logging
import Synchronization

public enum FarmLogFormat: String, Sendable, CaseIterable {
    case text, json
}

public struct FarmLogHandler: LogHandler {
    /// The metadata key that holds a record's event name (FarmEvent.name); a top-level field in JSON.
    public static let eventKey = "event"

    public let label: String
    public let format: FarmLogFormat
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public let textPrefix: String
    private let sink: @Sendable (String) -> Void

    public init(label: String, format: FarmLogFormat, level: Logger.Level, textPrefix: String = "",
                sink: @escaping @Sendable (String) -> Void) {
        self.label = label
        self.format = format
        self.logLevel = level
        self.textPrefix = textPrefix
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        switch format {
        case .text:
            sink(textPrefix + event.message.description)
        case .json:
            var all = metadata
            if let provided = metadataProvider?.get() { all.merge(provided) { _, new in new } }
            if let own = event.metadata { all.merge(own) { _, new in new } }
            sink(FarmLogRecord.line(time: Date(), level: event.level, label: label, message: event.message.description,
                                    metadata: all))
        }
    }

    /// A sink writing each line to standard error in one write (lines of concurrent threads do not interleave).
    public static let standardError: @Sendable (String) -> Void = { line in
        stderrLock.withLock { _ in FileHandle.standardError.write(Data((line + "\n").utf8)) }
    }

    private static let stderrLock = Mutex(())
}

/// One JSON log line, as written (`line`) and as read back (Decodable: the CLI tests decode the lines of
/// `--log-format json` into these, then `farmEvent` into a FarmEvent).
public struct FarmLogRecord: Codable, Sendable, Equatable {
    public var time: String
    public var level: String
    public var label: String
    public var message: String
    public var event: String?
    public var metadata: [String: String]

    /// The record's event as a value (nil: no event, or one this build does not know).
    public var farmEvent: FarmEvent? {
        event.flatMap { FarmEvent(name: $0, fields: metadata) }
    }

    /// Decodes one line of `--log-format json` output; nil for a line that is not such a record.
    public static func decode(_ line: some StringProtocol) -> FarmLogRecord? {
        guard line.first == "{" else { return nil }
        return try? JSONDecoder().decode(FarmLogRecord.self, from: Data(line.utf8))
    }

    static func line(time: Date, level: Logger.Level, label: String, message: String, metadata: Logger.Metadata) -> String {
        var flat: [String: String] = [:]
        for (key, value) in metadata where key != FarmLogHandler.eventKey { flat[key] = string(value) }
        let event = metadata[FarmLogHandler.eventKey].map(string)
        let record = FarmLogRecord(time: timestamp(time), level: level.rawValue, label: label, message: message,
                                   event: event, metadata: flat)
        guard let data = try? encoder.encode(record) else {
            // Every field is a String: encoding cannot fail; should it, the line still says what happened.
            return #"{"level":"error","message":"log record could not be encoded"}"#
        }
        return String(decoding: data, as: UTF8.self)
    }

    private static func string(_ value: Logger.MetadataValue) -> String {
        switch value {
        case .string(let s): s
        case .stringConvertible(let c): c.description
        case .array, .dictionary: value.description
        }
    }

    /// A new encoder per line: JSONEncoder is a class and lines come from many threads.
    private static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }

    private static func timestamp(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}

extension Logger.Level {
    /// `--log-level` / $DP_LOG_LEVEL text: trace, debug, info, notice, warning, error, critical.
    public init?(farmName: String) {
        self.init(rawValue: farmName.lowercased())
    }
}

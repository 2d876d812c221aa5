import ArgumentParser
import DPLog
import Foundation
import Logging

/// `--log-level` and `--log-format` of `dp-coord serve`/`submit` and `dp-worker serve`: one declaration,
/// defaults from $DP_LOG_LEVEL and $DP_LOG_FORMAT, else info and text.
public struct LogOptions: ParsableArguments {
    @Option(name: .customLong("log-level"),
            help: "Log level: trace, debug, info, notice, warning, error or critical (default: $DP_LOG_LEVEL, else info).")
    public var level: String?
    @Option(name: .customLong("log-format"),
            help: "Log format: text (lines for people) or json (one JSON object per line, with an event name for the farm's lifecycle events; default: $DP_LOG_FORMAT, else text).")
    public var format: String?

    public init() {}

    public func validate() throws {
        _ = try resolved(environment: ProcessInfo.processInfo.environment)
    }

    /// The level and format: the flag, else the environment variable, else info / text.
    public func resolved(environment: [String: String] = ProcessInfo.processInfo.environment) throws
        -> (level: Logger.Level, format: FarmLogFormat) {
        func pick(_ flag: String?, _ variable: String) -> (text: String, source: String)? {
            if let flag { return (flag, "--log-\(variable == "DP_LOG_LEVEL" ? "level" : "format")") }
            if let env = environment[variable], !env.isEmpty { return (env, "$\(variable)") }
            return nil
        }
        var level = Logger.Level.info
        if let (text, source) = pick(self.level, "DP_LOG_LEVEL") {
            guard let parsed = Logger.Level(farmName: text) else {
                throw ValidationError("\(source) \"\(text)\": expected one of "
                    + Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))
            }
            level = parsed
        }
        var format = FarmLogFormat.text
        if let (text, source) = pick(self.format, "DP_LOG_FORMAT") {
            guard let parsed = FarmLogFormat(rawValue: text.lowercased()) else {
                throw ValidationError("\(source) \"\(text)\": expected text or json")
            }
            format = parsed
        }
        return (level, format)
    }

    /// A log for `label` written to standard error (`textPrefix` before each text line).
    public func makeLog(label: String, textPrefix: String = "", sink: @escaping @Sendable (String) -> Void = FarmLogHandler.standardError,
                        onEvent: (@Sendable (FarmEvent) -> Void)? = nil) throws -> FarmLog {
        let (level, format) = try resolved()
        return FarmLog(label: label, level: level, format: format, textPrefix: textPrefix, sink: sink, onEvent: onEvent)
    }
}

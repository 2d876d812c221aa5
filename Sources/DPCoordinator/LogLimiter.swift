// A cap on log lines that peers can cause (issue 12, item 7: logs cannot be flooded). Escaping and cutting peer
// text (DPProtocol's PeerText) keeps one line honest; this keeps their number bounded: a peer that reconnects
// with an unknown key, or sends malformed messages, in a loop would otherwise write a line per try.

/// At most `linesPerWindow` lines of one kind per `windowMilliseconds`; the rest are counted, and the first
/// line of the next window says how many were left out. Time comes from the caller (the coordinator's clock).
struct LogLimiter: Sendable {
    let linesPerWindow: Int
    let windowMilliseconds: Int64
    private var windowStart: Int64?
    private var lines = 0
    private var suppressed = 0

    init(linesPerWindow: Int = 20, windowMilliseconds: Int64 = 60_000) {
        self.linesPerWindow = max(1, linesPerWindow)
        self.windowMilliseconds = max(1, windowMilliseconds)
    }

    /// The line to log for an event at `nowMilliseconds`, or nil when the window's lines are used up.
    mutating func line(_ text: @autoclosure () -> String, nowMilliseconds now: Int64) -> String? {
        if let start = windowStart, now >= start, now - start < windowMilliseconds {
            guard lines < linesPerWindow else {
                suppressed += 1
                return nil
            }
            lines += 1
            return text()
        }
        let note = suppressed > 0
            ? " [\(suppressed) more line(s) like this were not logged in the \(windowMilliseconds / 1000) s before]"
            : ""
        windowStart = now
        lines = 1
        suppressed = 0
        return text() + note
    }
}

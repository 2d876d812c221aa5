/// Peer-supplied text (worker and host names, job names, error messages, paths) as it may appear in
/// a log line: control characters, newlines and other invisible or format scalars escaped (`\n`,
/// `\r`, `\t`, `\\`, `\u{..}`), then cut to `limit` characters with "..." and the original length in bytes,
/// so a peer can neither forge log lines nor flood the log (issue 12, item 7). One helper for every
/// place the coordinator (or a worker) logs peer text: `"worker '\(peer: name)'"`.
public enum PeerText {
    /// Characters of peer text kept in one log field.
    public static let defaultLimit = 200

    public static func escaped(_ text: String, limit: Int = defaultLimit) -> String {
        var out = ""
        var kept = 0
        var cut = false
        // Stops at `limit`: a 64 MiB message costs no more to log than a short one.
        for scalar in text.unicodeScalars {
            guard kept < limit else { cut = true; break }
            kept += 1
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\\": out += "\\\\"
            default:
                if scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value)
                    || scalar.properties.generalCategory == .format
                    || scalar.properties.generalCategory == .lineSeparator
                    || scalar.properties.generalCategory == .paragraphSeparator
                    || scalar.properties.generalCategory == .privateUse
                    || scalar.properties.generalCategory == .unassigned
                    || scalar.properties.generalCategory == .surrogate {
                    out += "\\u{" + String(scalar.value, radix: 16) + "}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        if cut { out += "...(\(text.utf8.count) bytes)" }
        return out
    }
}

extension DefaultStringInterpolation {
    /// `\(peer: text)`: `PeerText.escaped(text)`, for peer-supplied text in log lines.
    public mutating func appendInterpolation(peer text: String) {
        appendLiteral(PeerText.escaped(text))
    }

    /// `\(peer: text, limit: n)`.
    public mutating func appendInterpolation(peer text: String, limit: Int) {
        appendLiteral(PeerText.escaped(text, limit: limit))
    }
}

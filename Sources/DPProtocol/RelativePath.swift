/// Paths on the wire (model files, upload names) are relative, '/'-separated and stay inside their
/// folder. Receivers check every peer-supplied path with this before touching the filesystem.
public enum RelativePath {
    /// nil when `path` is safe to join to a folder; otherwise why it is not.
    public static func problem(_ path: String) -> String? {
        if path.isEmpty { return "empty path" }
        // One pass over the bytes (a job lists a path per pose: tens of thousands per submit); the
        // messages below say which rule failed.
        var dots = 0, componentLength = 0, bad: UInt8?
        for byte in path.utf8 {
            switch byte {
            case UInt8(ascii: "/"):
                if componentLength == dots && dots <= 2 { bad = byte }  // "", "." or ".."
                componentLength = 0
                dots = 0
            case UInt8(ascii: "\\"), 0:
                bad = byte
            default:
                if byte == UInt8(ascii: ".") { dots += 1 }
                componentLength += 1
            }
            if bad != nil { break }
        }
        if bad == nil, componentLength == 0 || componentLength == dots && dots <= 2 { bad = UInt8(ascii: "/") }
        guard bad != nil else { return nil }
        if path.hasPrefix("/") { return "absolute path '\(path)'" }
        if path.contains("\\") { return "backslash in path '\(path)'" }
        if path.utf8.contains(0) { return "NUL byte in path" }
        for component in path.split(separator: "/", omittingEmptySubsequences: false) {
            if component.isEmpty { return "empty component in path '\(path)'" }
            if component == "." || component == ".." { return "'\(component)' component in path '\(path)'" }
        }
        return nil
    }

    public static func isSafe(_ path: String) -> Bool { problem(path) == nil }
}

/// Paths on the wire (model files, upload names) are relative, '/'-separated and stay inside their
/// folder. Receivers check every peer-supplied path with this before touching the filesystem.
public enum RelativePath {
    /// nil when `path` is safe to join to a folder; otherwise why it is not.
    public static func problem(_ path: String) -> String? {
        if path.isEmpty { return "empty path" }
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

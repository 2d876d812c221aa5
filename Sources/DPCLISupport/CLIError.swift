/// A user-facing error of `dp-coord` and `dp-worker`: printed as `Error: <message>` with exit code 1.
public struct CLIError: Error, CustomStringConvertible {
    public let description: String
    public init(_ message: String) { description = message }
}

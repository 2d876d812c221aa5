// Errors the networks raise while being built (weight errors come from the WeightSource).

public enum ModelError: Error, CustomStringConvertible {
    /// A configuration value this engine does not implement.
    case unsupported(model: String, what: String)
    /// A configuration that is inconsistent with itself.
    case invalidConfig(model: String, file: String?, reason: String)

    public var description: String {
        switch self {
        case let .unsupported(model, what):
            return "\(model): unsupported configuration: \(what)"
        case let .invalidConfig(model, file, reason):
            return "\(model)\(file.map { " (\($0))" } ?? ""): invalid configuration: \(reason)"
        }
    }
}

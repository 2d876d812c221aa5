// Errors raised while reading safetensors files and binding their tensors to a network.

/// A weights problem. Every case names the file (a path, or a description such as
/// `RandomWeights(seed: 7)` for in-memory sources) and, where there is one, the key.
public enum WeightsError: Error, CustomStringConvertible {
    /// The file could not be opened, mapped or written.
    case io(file: String, reason: String)
    /// The file is not a valid safetensors file: bad header, truncated, overlapping tensors, bad dtype...
    case malformed(file: String, reason: String)
    /// The network asked for a tensor the file does not hold.
    case missingKey(file: String, key: String, expectedShape: [Int])
    /// The file holds the tensor with another shape than the network (its config) expects.
    case shapeMismatch(file: String, key: String, expected: [Int], actual: [Int])
    /// Tensors in the file that the network did not use (outside the ignored families).
    case unexpectedKeys(file: String, keys: [String])

    /// The file the error is about.
    public var file: String {
        switch self {
        case .io(let f, _), .malformed(let f, _), .missingKey(let f, _, _),
             .shapeMismatch(let f, _, _, _), .unexpectedKeys(let f, _):
            return f
        }
    }

    public var description: String {
        switch self {
        case .io(let file, let reason):
            return "\(file): \(reason)"
        case .malformed(let file, let reason):
            return "\(file): malformed safetensors file: \(reason)"
        case .missingKey(let file, let key, let shape):
            return "\(file): missing tensor '\(key)' (the model expects shape \(shape))"
        case .shapeMismatch(let file, let key, let expected, let actual):
            return "\(file): tensor '\(key)' has shape \(actual), the model expects \(expected)"
        case .unexpectedKeys(let file, let keys):
            let shown = keys.prefix(20).map { "'\($0)'" }.joined(separator: ", ")
            let more = keys.count > 20 ? " and \(keys.count - 20) more" : ""
            return "\(file): \(keys.count) tensor(s) not used by the model: \(shown)\(more)"
        }
    }
}

import Foundation

/// A JSON decoding error in words a user can act on, naming the key: "key 'block_out_channels[2]': expected Int"
/// rather than Foundation's debug dump. One wording for every JSON file dp-farm reads (model configs,
/// dreampose.json).
public enum JSONErrorText {
    public static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [CodingKey]) -> String {
            var s = ""
            for k in keys {
                if let i = k.intValue { s += "[\(i)]" } else { s += (s.isEmpty ? "" : ".") + k.stringValue }
            }
            return s.isEmpty ? "(top level)" : "'\(s)'"
        }
        switch error {
        case .typeMismatch(let type, let ctx):
            return "key \(path(ctx.codingPath)): expected \(type) (\(ctx.debugDescription))"
        case .valueNotFound(let type, let ctx):
            return "key \(path(ctx.codingPath)): expected \(type), found null"
        case .keyNotFound(let key, let ctx):
            return "missing key \(path(ctx.codingPath + [key]))"
        case .dataCorrupted(let ctx):
            if ctx.codingPath.isEmpty { return "not valid JSON (\(ctx.debugDescription))" }
            return "key \(path(ctx.codingPath)): \(ctx.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}

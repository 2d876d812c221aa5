// Shared machinery of the config.json readers: errors that name the file, lenient shapes
// (an int or a list), readable decoding errors.

import DPFileKit
import Foundation

/// A config.json that cannot be used. Names the file and says what was wrong.
public struct ConfigError: Error, CustomStringConvertible {
    public let file: String
    public let reason: String

    public init(file: String, reason: String) {
        self.file = file
        self.reason = reason
    }

    public var description: String { "\(file): \(reason)" }
}

/// Upper bounds on the counts and sizes a model config.json may declare. A config comes from a client or a
/// peer with the model; `layers_per_block: 2147483647` used to abort the process while the model was being
/// built. Each bound is far above any real Stable Diffusion / CLIP model (SECURITY.md lists them).
public enum ConfigLimits {
    /// Channels of any layer (SD: 1280; CLIP-L intermediate: 4096; SDXL: 5120 intermediate).
    public static let maxChannels = 1 << 16
    /// Blocks per tower (SD: 4).
    public static let maxBlocks = 8
    /// Layers per block, transformer layers per block, encoder layers (SD: 2 / 1; CLIP-H: 32).
    public static let maxLayers = 64
    /// Attention heads (SD: 8).
    public static let maxHeads = 1024
    /// Image size, patch size, sample size and similar spatial values.
    public static let maxSpatial = 8192
    /// Largest config file read.
    public static let maxFileBytes = 1 << 20
    /// Largest magnitude of a float setting (scales, epsilons, factors).
    public static let maxMagnitude: Float = 1e6

    /// `value` in 1...`max`, or an error naming `key` in `file`.
    static func count(_ value: Int, _ key: String, max: Int, file: String) throws {
        guard value >= 1, value <= max else {
            throw ConfigError(file: file, reason: "\(key) is \(value), expected 1 to \(max)")
        }
    }

    /// Every value in 1...`max`.
    static func counts(_ values: [Int], _ key: String, max: Int, file: String) throws {
        for v in values where v < 1 || v > max {
            throw ConfigError(file: file, reason: "\(key) \(values) holds \(v), expected values 1 to \(max)")
        }
    }

    /// A finite float of magnitude at most `maxMagnitude` (and positive when `positive`).
    static func finite(_ value: Float, _ key: String, positive: Bool = false, file: String) throws {
        guard value.isFinite, abs(value) <= maxMagnitude, !positive || value > 0 else {
            throw ConfigError(file: file, reason: "\(key) is \(value), expected a finite\(positive ? " positive" : "") number of magnitude at most \(maxMagnitude)")
        }
    }
}

/// A string coding key (for nested lookups and messages).
struct ConfigKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

enum ConfigFile {
    /// Reads and decodes `url`; every failure becomes a `ConfigError` naming the file.
    static func load<T: Decodable>(_ type: T.Type, from url: URL) throws -> T {
        let data = try readBounded(url, maxBytes: ConfigLimits.maxFileBytes)
        return try decode(type, from: data, file: url.path)
    }

    /// The bytes of `url`, refusing a file larger than `maxBytes` (read at most `maxBytes + 1`).
    static func readBounded(_ url: URL, maxBytes: Int) throws -> Data {
        let data: Data?
        do {
            let handle = try FileHandle(forReadingFrom: url)
            defer { try? handle.close() }
            data = try handle.read(upToCount: maxBytes + 1)
        } catch {
            throw ConfigError(file: url.path, reason: "cannot read: \(error.localizedDescription)")
        }
        guard let data else { return Data() }
        guard data.count <= maxBytes else {
            throw ConfigError(file: url.path, reason: "larger than the \(maxBytes) bytes a config may have")
        }
        return data
    }

    static func decode<T: Decodable>(_ type: T.Type, from data: Data, file: String) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch let e as DecodingError {
            throw ConfigError(file: file, reason: JSONErrorText.describe(e))
        } catch let e as ConfigError {
            throw e
        } catch {
            throw ConfigError(file: file, reason: "\(error)")
        }
    }
}

extension KeyedDecodingContainer {
    /// The value under `key`, or `fallback` when the key is absent or null.
    func value<T: Decodable>(_ key: Key, or fallback: T) throws -> T {
        try decodeIfPresent(T.self, forKey: key) ?? fallback
    }

    /// An optional setting: absent -> `fallback`, explicit null -> nil.
    func optional<T: Decodable>(_ key: Key, or fallback: T?) throws -> T? {
        guard contains(key) else { return fallback }
        if try decodeNil(forKey: key) { return nil }
        return try decode(T.self, forKey: key)
    }

    /// An int or a list of ints (diffusers' `Union[int, Tuple[int]]`); an int is repeated `count`
    /// times. Absent -> `fallback`; null -> nil.
    func intOrList(_ key: Key, count: Int, or fallback: [Int]?) throws -> [Int]? {
        guard contains(key) else { return fallback }
        if try decodeNil(forKey: key) { return nil }
        if let one = try? decode(Int.self, forKey: key) { return Array(repeating: one, count: max(count, 1)) }
        return try decode([Int].self, forKey: key)
    }

    /// A bool or a list of bools; a bool is repeated `count` times.
    func boolOrList(_ key: Key, count: Int, or fallback: [Bool]) throws -> [Bool] {
        guard contains(key), try !decodeNil(forKey: key) else { return fallback }
        if let one = try? decode(Bool.self, forKey: key) { return Array(repeating: one, count: max(count, 1)) }
        return try decode([Bool].self, forKey: key)
    }

    /// An int given as an int or as a list of equal ints (per-block lists with different values
    /// are not supported by this engine). Absent or null -> `fallback`.
    func uniformInt(_ key: Key, or fallback: Int) throws -> Int {
        guard contains(key), try !decodeNil(forKey: key) else { return fallback }
        if let one = try? decode(Int.self, forKey: key) { return one }
        let list = try decode([Int].self, forKey: key)
        guard let first = list.first, list.allSatisfy({ $0 == first }) else {
            throw DecodingError.dataCorruptedError(
                forKey: key, in: self,
                debugDescription: "per-block values \(list) are not supported (need one value, or equal values)")
        }
        return first
    }
}

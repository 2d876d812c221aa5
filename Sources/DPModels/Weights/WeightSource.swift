// Where a network takes its parameters from, and the strict binding to a safetensors file.

import DPTensor
import Foundation

/// Where a network takes its parameters from. Keys are canonical diffusers/transformers names.
/// A network calls `take` once per parameter with the shape its config implies, then `finish`.
public protocol WeightSource: AnyObject {
    /// The tensor stored under `key`, which must have exactly `shape`.
    func take(_ key: String, shape: [Int]) throws -> Tensor
    /// Strict end of loading: unused tensors (outside the ignored families) -> `.unexpectedKeys`.
    func finish() throws
}

/// Strict binding of a network to one safetensors file through a `KeyMap`:
/// every tensor the network asks for must be there with the right shape, and every tensor in the
/// file (other than the map's ignored families) must be asked for.
public final class SafeTensorsWeights: WeightSource {
    public let file: SafeTensorsFile
    public let keyMap: KeyMap
    /// canonical key -> key in the file.
    private var fileKeyFor: [String: String] = [:]
    /// File keys of the ignored families.
    private var ignoredKeys: Set<String> = []
    /// File keys handed out so far.
    private var used: Set<String> = []

    private var path: String { file.url.path }

    /// Applies the key aliases of shared/docs/model-format.md (via `keyMap`). Fails when two file
    /// keys alias the same canonical key, or a tensor the network could use has a dtype other than
    /// F32/F16/BF16.
    public init(file: SafeTensorsFile, keyMap: KeyMap) throws {
        self.file = file
        self.keyMap = keyMap
        for name in file.names {
            let (key, ignored) = keyMap.canonical(name)
            if ignored {
                ignoredKeys.insert(name)
                continue
            }
            if let dtype = file.dtype(of: name), !dtype.isSupportedFloat {
                throw WeightsError.malformed(
                    file: file.url.path,
                    reason: "tensor '\(name)' has dtype \(dtype.rawValue); only F32, F16 and BF16 are supported")
            }
            if let other = fileKeyFor[key] {
                throw WeightsError.malformed(
                    file: file.url.path,
                    reason: "tensors '\(other)' and '\(name)' both name '\(key)' (key map \(keyMap.name))")
            }
            fileKeyFor[key] = name
        }
    }

    /// Maps `url` and binds it.
    public convenience init(url: URL, keyMap: KeyMap) throws {
        try self.init(file: SafeTensorsFile(url: url), keyMap: keyMap)
    }

    /// Canonical keys available (not ignored), sorted.
    public var canonicalKeys: [String] { fileKeyFor.keys.sorted() }

    public func take(_ key: String, shape: [Int]) throws -> Tensor {
        guard let name = fileKeyFor[key], let actual = file.shape(of: name) else {
            throw WeightsError.missingKey(file: path, key: key, expectedShape: shape)
        }
        let t: Tensor
        if actual == shape {
            t = try file.tensor(name)
        } else if shape.count == 2, actual == shape + [1, 1], keyMap.acceptsConv1x1(forLinear: key) {
            t = try file.tensor(name).reshaped(shape)          // [Out, In, 1, 1] -> [Out, In]
        } else {
            throw WeightsError.shapeMismatch(file: path, key: key, expected: shape, actual: actual)
        }
        used.insert(name)
        return t
    }

    public func finish() throws {
        let unused = file.names.filter { !used.contains($0) && !ignoredKeys.contains($0) }
        if !unused.isEmpty {
            throw WeightsError.unexpectedKeys(file: path, keys: unused.sorted())
        }
    }
}

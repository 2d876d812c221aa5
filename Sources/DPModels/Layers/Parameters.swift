// Parameter lookup for model builders: composes dotted checkpoint names
// ("down_blocks.0.resnets.1.conv1.weight") from a prefix, so model code names
// only its own sub-modules. Aliases of those names (old VAE attention names,
// "module." / "vision_model." prefixes) are resolved by the WeightSource's key map.

import DPTensor

/// A view of a `WeightSource` under a dotted prefix (diffusers module path).
public struct ParameterScope {
    public let source: WeightSource
    public let prefix: String

    public init(_ source: WeightSource, prefix: String = "") {
        self.source = source
        self.prefix = prefix
    }

    /// The full key of `name` under this scope.
    public func key(_ name: String) -> String {
        prefix.isEmpty ? name : prefix + "." + name
    }

    /// The scope of a sub-module: `scope["resnets.0"]`.
    public subscript(_ name: String) -> ParameterScope {
        ParameterScope(source, prefix: key(name))
    }

    /// The scope of an indexed sub-module: `scope["resnets", 0]`.
    public subscript(_ name: String, _ index: Int) -> ParameterScope {
        ParameterScope(source, prefix: key("\(name).\(index)"))
    }

    /// Takes one tensor and checks its shape.
    public func take(_ name: String, _ shape: [Int]) throws -> Tensor {
        try source.take(key(name), shape: shape)
    }
}

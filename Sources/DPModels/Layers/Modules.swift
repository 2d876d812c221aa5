// The parameterised building blocks shared by the UNet, the VAE and CLIP:
// thin holders of their weights that call the DPTensor kernels. Names follow
// torch.nn (Conv2d, Linear, GroupNorm, LayerNorm).

import DPTensor

/// torch.nn.Conv2d: weight [Cout, Cin, kh, kw], optional bias [Cout]. A 3x3 filter is kept prepared for the
/// engine's kernels (Conv3x3Filter: Winograd or im2col), any other kernel size as the torch weight.
public struct Conv2d: Sendable {
    private enum Kernel {
        case threeByThree(Conv3x3Filter)
        case general(Tensor)          // [Cout, Cin, kh, kw]
    }
    private let kernel: Kernel
    public let bias: Tensor?
    public let stride: Int
    public let padding: Padding2D

    public init(_ p: ParameterScope, inChannels: Int, outChannels: Int, kernel: Int,
                stride: Int = 1, padding: Padding2D? = nil, bias: Bool = true) throws {
        let weight = try p.take("weight", [outChannels, inChannels, kernel, kernel])
        self.kernel = kernel == 3 ? .threeByThree(Conv3x3Filter(weight)) : .general(weight)
        self.bias = bias ? try p.take("bias", [outChannels]) : nil
        self.stride = stride
        self.padding = padding ?? .symmetric((kernel - 1) / 2)
    }

    /// The torch weight [Cout, Cin, kh, kw] (rebuilt from the prepared filter for 3x3 kernels).
    public var weight: Tensor {
        switch kernel {
        case .threeByThree(let filter): return filter.weight
        case .general(let weight): return weight
        }
    }

    public var inChannels: Int {
        switch kernel {
        case .threeByThree(let filter): return filter.inChannels
        case .general(let weight): return weight.shape[1]
        }
    }

    public var outChannels: Int {
        switch kernel {
        case .threeByThree(let filter): return filter.outChannels
        case .general(let weight): return weight.shape[0]
        }
    }

    /// [N, Cin, H, W] -> [N, Cout, Ho, Wo]
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let y: Tensor, taps: Int
        switch kernel {
        case .threeByThree(let filter):
            y = conv2d(x, filter: filter, bias: bias, stride: stride, padding: padding)
            taps = 9
        case .general(let weight):
            y = conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding)
            taps = weight.shape[2] * weight.shape[3]
        }
        // 2 * N * Cout * Ho * Wo * Cin * kh * kw
        FLOPCounter.add(2 * Double(y.count) * Double(inChannels * taps))
        return y
    }
}

/// torch.nn.Linear: weight [Out, In], optional bias [Out].
public struct Linear: Sendable {
    public let weight: Tensor
    public let bias: Tensor?

    public init(_ p: ParameterScope, inFeatures: Int, outFeatures: Int, bias: Bool = true) throws {
        weight = try p.take("weight", [outFeatures, inFeatures])
        self.bias = bias ? try p.take("bias", [outFeatures]) : nil
    }

    /// Wraps given parameters (e.g. a 1x1 conv weight viewed as [Out, In]).
    public init(weight: Tensor, bias: Tensor?) {
        precondition(weight.rank == 2, "Linear weight must be [Out, In], got \(weight.shape)")
        self.weight = weight
        self.bias = bias
    }

    /// Several linears over the same input as one: weights stacked along Out ([sum Out, In]), biases likewise
    /// (all or none have one), so y = [y_0 | y_1 | ...] along the last dimension.
    public init(stacking parts: [Linear]) {
        precondition(!parts.isEmpty && parts.allSatisfy { $0.inFeatures == parts[0].inFeatures },
                     "Linear(stacking:): parts must share their input features")
        precondition(parts.allSatisfy { ($0.bias == nil) == (parts[0].bias == nil) },
                     "Linear(stacking:): all parts or none must have a bias")
        weight = concat(parts.map(\.weight), axis: 0)
        bias = parts[0].bias == nil ? nil : concat(parts.map { $0.bias! }, axis: 0)
    }

    public var inFeatures: Int { weight.shape[1] }
    public var outFeatures: Int { weight.shape[0] }

    /// [..., In] -> [..., Out]; with `residual` ([..., Out]) the result is residual + linear(x) in one pass.
    public func callAsFunction(_ x: Tensor, residual: Tensor? = nil) -> Tensor {
        let y = linear(x, weight: weight, bias: bias, residual: residual)
        FLOPCounter.add(2 * Double(y.count) * Double(weight.shape[1]))
        return y
    }
}

/// torch.nn.GroupNorm (affine): weight/bias [C]; optionally fused with the SiLU that follows.
public struct GroupNorm: Sendable {
    public let groups: Int
    public let eps: Float
    public let weight: Tensor
    public let bias: Tensor

    public init(_ p: ParameterScope, groups: Int, channels: Int, eps: Float) throws {
        precondition(groups > 0 && channels % groups == 0,
                     "GroupNorm \(p.prefix): \(channels) channels do not split into \(groups) groups")
        self.groups = groups
        self.eps = eps
        weight = try p.take("weight", [channels])
        bias = try p.take("bias", [channels])
    }

    /// [N, C, ...] -> same shape; `silu: true` applies SiLU to the result (fused).
    public func callAsFunction(_ x: Tensor, silu: Bool = false) -> Tensor {
        groupNorm(x, groups: groups, weight: weight, bias: bias, eps: eps, silu: silu)
    }
}

/// torch.nn.LayerNorm over the last dimension (affine).
public struct LayerNorm: Sendable {
    public let eps: Float
    public let weight: Tensor
    public let bias: Tensor

    public init(_ p: ParameterScope, features: Int, eps: Float) throws {
        self.eps = eps
        weight = try p.take("weight", [features])
        bias = try p.take("bias", [features])
    }

    /// [..., D] -> [..., D]
    public func callAsFunction(_ x: Tensor) -> Tensor {
        layerNorm(x, weight: weight, bias: bias, eps: eps)
    }
}

/// Counts the operations of one `attention(query:key:value:heads:scale:)` call:
/// QK^T and PV, 2 * B * Nq * Nk * C each.
@inline(__always)
func countAttentionFLOPs(batch: Int, queries: Int, keys: Int, channels: Int) {
    FLOPCounter.add(4 * Double(batch) * Double(queries) * Double(keys) * Double(channels))
}

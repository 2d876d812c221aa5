// Checkpoint key names: the ONE place where key strings of checkpoint files are spelled out.
//
// Networks ask for tensors under their canonical diffusers / transformers names
// (`down_blocks.0.resnets.1.conv1.weight`, `encoder.layers.3.self_attn.q_proj.bias`).
// A `KeyMap` says how the keys found in a file map onto those names; it is data (tables of
// prefix / suffix / substring rules, no regular expressions), applied by `SafeTensorsWeights`.
// The aliases are the ones of shared/docs/model-format.md:
//   * a `module.` prefix on every key (checkpoints saved from torch DataParallel);
//   * old diffusers VAE attention names `...attentions.0.{query,key,value,proj_attn}`
//     (diffusers renames them to `to_q`, `to_k`, `to_v`, `to_out.0` at load time), whose
//     weights may also be stored as 1x1 convolutions [C, C, 1, 1];
//   * CLIP keys with or without `vision_model.`, with `text_model.*`, `visual_projection.*`,
//     `text_projection.*`, `logit_scale` (full CLIPModel checkpoints) and the
//     `embeddings.position_ids` buffers of older transformers present and ignored.

/// A regex-free pattern over a key.
public enum KeyPattern: Sendable, Equatable {
    case exact(String)
    case prefix(String)
    case suffix(String)
    case contains(String)

    public func matches(_ key: String) -> Bool {
        switch self {
        case .exact(let s): return key == s
        case .prefix(let s): return key.hasPrefix(s)
        case .suffix(let s): return key.hasSuffix(s)
        case .contains(let s): return key.contains(s)
        }
    }
}

/// Replace the first occurrence of `from` in a file key by `to` (old name -> canonical name).
public struct KeyRename: Sendable, Equatable {
    public var from: String
    public var to: String
    public init(_ from: String, _ to: String) { self.from = from; self.to = to }

    func apply(_ key: String) -> String? {
        guard let r = key.range(of: from) else { return nil }
        return key.replacingCharacters(in: r, with: to)
    }
}

/// How a checkpoint's keys map onto a network's canonical parameter names.
public struct KeyMap: Sendable {
    /// For messages.
    public var name: String
    /// Prefixes removed from a file key when present, tried in this order, each at most once.
    public var optionalPrefixes: [String]
    /// Keys (after prefix removal) that may be present and are never reported as unused.
    public var ignored: [KeyPattern]
    /// Renames applied after prefix removal; at most one applies to a key (the first that matches).
    public var renames: [KeyRename]
    /// Canonical keys of Linear weights [Out, In] that a file may store as 1x1 convolutions
    /// [Out, In, 1, 1] (old VAE attention projections); they are reshaped on load.
    public var linearMayBeConv1x1: [KeyPattern]

    public init(name: String, optionalPrefixes: [String] = [], ignored: [KeyPattern] = [],
                renames: [KeyRename] = [], linearMayBeConv1x1: [KeyPattern] = []) {
        self.name = name
        self.optionalPrefixes = optionalPrefixes
        self.ignored = ignored
        self.renames = renames
        self.linearMayBeConv1x1 = linearMayBeConv1x1
    }

    /// The canonical name of a file key, and whether it belongs to an ignored family.
    public func canonical(_ fileKey: String) -> (key: String, ignored: Bool) {
        var key = fileKey
        for p in optionalPrefixes where key.hasPrefix(p) {
            key.removeFirst(p.count)
        }
        if ignored.contains(where: { $0.matches(key) }) { return (key, true) }
        for r in renames {
            if let renamed = r.apply(key) { key = renamed; break }
        }
        return (key, false)
    }

    /// Whether a request for a Linear weight `key` may be served by a [Out, In, 1, 1] tensor.
    public func acceptsConv1x1(forLinear key: String) -> Bool {
        linearMayBeConv1x1.contains { $0.matches(key) }
    }
}

// MARK: - The tables

/// Checkpoints saved from `torch.nn.DataParallel` prefix every key with this.
private let dataParallelPrefix = "module."

extension KeyMap {
    /// Keys exactly as the file has them (no aliases): for files this project writes itself.
    public static let exact = KeyMap(name: "exact")

    /// diffusers `UNet2DConditionModel` (`unet/diffusion_pytorch_model.safetensors`).
    public static let unet = KeyMap(name: "unet", optionalPrefixes: [dataParallelPrefix])

    /// diffusers `AutoencoderKL` (`vae/diffusion_pytorch_model.safetensors`), accepting the old
    /// attention names of the mid blocks.
    public static let vae = KeyMap(
        name: "vae",
        optionalPrefixes: [dataParallelPrefix],
        renames: [
            KeyRename("attentions.0.query.", "attentions.0.to_q."),
            KeyRename("attentions.0.key.", "attentions.0.to_k."),
            KeyRename("attentions.0.value.", "attentions.0.to_v."),
            KeyRename("attentions.0.proj_attn.", "attentions.0.to_out.0."),
        ],
        linearMayBeConv1x1: [
            .contains("mid_block.attentions.0.to_q."),
            .contains("mid_block.attentions.0.to_k."),
            .contains("mid_block.attentions.0.to_v."),
            .contains("mid_block.attentions.0.to_out.0."),
        ])

    /// transformers `CLIPVisionModel` (`image_encoder/model.safetensors`); also reads the vision
    /// half of a full `CLIPModel` checkpoint.
    public static let clipVision = KeyMap(
        name: "clipVision",
        optionalPrefixes: [dataParallelPrefix, "vision_model."],
        ignored: [
            .prefix("text_model."),
            .prefix("visual_projection."),
            .prefix("text_projection."),
            .exact("logit_scale"),
            .suffix("embeddings.position_ids"),
        ])

    /// The DreamPose CLIP+VAE adapter (`adapter/adapter.safetensors`).
    public static let adapter = KeyMap(name: "adapter", optionalPrefixes: [dataParallelPrefix])
}

// MARK: - Parameter roles for deterministic random initialisation

/// What kind of parameter a canonical key names, for `RandomWeights`.
public enum ParameterRole: Sendable, Equatable {
    /// A bias: initialised to 0.
    case bias
    /// The scale of a GroupNorm / LayerNorm: initialised to 1.
    case normScale
    /// A lookup table or learned vector (position / token embeddings, CLIP class embedding):
    /// N(0, std) with the source's `std`.
    case embedding
    /// Any other weight: Linear [Out, In] and Conv [Out, In, kh, kw] get N(0, 1/sqrt(fan_in));
    /// rank-0/1 weights N(0, std).
    case weight
}

/// Key rules behind `ParameterRole`.
enum ParameterRoleRules {
    /// Last dotted component of a bias.
    static let biasComponent = "bias"
    /// Last dotted component of a norm scale.
    static let weightComponent = "weight"
    /// A module name containing this names a norm layer (`norm1`, `group_norm`, `conv_norm_out`,
    /// `layer_norm2`, `pre_layrnorm`, `post_layernorm`, `attentions.0.norm`).
    static let normComponentInfix = "norm"
    /// A module name starting with this names a norm layer (`ln_1`, `ln_post`, `ln_final`).
    static let normComponentPrefix = "ln"
    /// Keys of embedding tables and learned vectors.
    static let embeddings: [KeyPattern] = [
        .suffix("position_embedding.weight"),
        .suffix("token_embedding.weight"),
        .suffix("class_embedding"),
    ]

    static func role(of key: String) -> ParameterRole {
        let parts = key.split(separator: ".", omittingEmptySubsequences: false)
        guard let last = parts.last else { return .weight }
        if last == biasComponent { return .bias }
        if embeddings.contains(where: { $0.matches(key) }) { return .embedding }
        if last == weightComponent, parts.count >= 2 {
            let owner = parts[parts.count - 2]   // the module holding the weight
            if owner.contains(normComponentInfix) || owner.hasPrefix(normComponentPrefix) { return .normScale }
        }
        return .weight
    }
}

extension ParameterRole {
    /// The role of a canonical key (see `ParameterRoleRules`).
    public init(key: String) { self = ParameterRoleRules.role(of: key) }
}

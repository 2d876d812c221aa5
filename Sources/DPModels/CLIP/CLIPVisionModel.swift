// This implementation matches transformers' CLIPVisionModel (models/clip/modeling_clip.py):
// patch conv (no bias) + class token + learned positions -> pre_layrnorm -> pre-LN encoder
// layers (self-attention with q/k/v/out biases, MLP fc1 -> activation -> fc2) ->
// last_hidden_state; pooler_output = post_layernorm(last_hidden_state[:, 0]).
// Parameter names are transformers' without the `vision_model.` prefix (the key map strips it).

import DPTensor
import Foundation

public final class CLIPVisionModel: Sendable {
    public let config: CLIPVisionConfig

    struct EncoderLayer {
        let layerNorm1: LayerNorm
        let qProj: Linear, kProj: Linear, vProj: Linear, outProj: Linear   // self_attn.*
        let layerNorm2: LayerNorm
        let fc1: Linear, fc2: Linear                                      // mlp.*
    }

    enum Activation {
        case quickGelu, gelu
    }

    let patchEmbedding: Tensor          // embeddings.patch_embedding.weight [D, C, P, P]
    let classEmbedding: Tensor          // embeddings.class_embedding [D]
    let positionEmbedding: Tensor       // embeddings.position_embedding.weight [1 + (S/P)^2, D]
    let preLayrnorm: LayerNorm
    let layers: [EncoderLayer]
    let postLayernorm: LayerNorm
    let activation: Activation

    /// Builds the network from `config`, taking every parameter from `weights`, then
    /// `weights.finish()` (unused tensors outside the key map's ignored families are an error).
    public init(config: CLIPVisionConfig, weights: WeightSource) throws {
        self.config = config
        let model = "CLIPVisionModel"
        switch config.hiddenAct {
        case "quick_gelu": activation = .quickGelu
        case "gelu": activation = .gelu
        default: throw ModelError.unsupported(model: model, what: "hidden_act \(config.hiddenAct)")
        }
        let d = config.hiddenSize
        guard config.numAttentionHeads > 0, d % config.numAttentionHeads == 0 else {
            throw ModelError.invalidConfig(model: model, file: nil, reason:
                "hidden_size \(d) does not split into \(config.numAttentionHeads) heads")
        }
        guard config.patchSize > 0, config.imageSize % config.patchSize == 0 else {
            throw ModelError.invalidConfig(model: model, file: nil, reason:
                "image_size \(config.imageSize) is not a multiple of patch_size \(config.patchSize)")
        }
        let grid = config.imageSize / config.patchSize
        let eps = config.layerNormEps
        let p = ParameterScope(weights)
        patchEmbedding = try p.take("embeddings.patch_embedding.weight",
                                    [d, config.numChannels, config.patchSize, config.patchSize])
        classEmbedding = try p.take("embeddings.class_embedding", [d])
        positionEmbedding = try p.take("embeddings.position_embedding.weight", [grid * grid + 1, d])
        preLayrnorm = try LayerNorm(p["pre_layrnorm"], features: d, eps: eps)
        layers = try (0..<config.numHiddenLayers).map { i in
            let l = p["encoder.layers", i]
            return EncoderLayer(
                layerNorm1: try LayerNorm(l["layer_norm1"], features: d, eps: eps),
                qProj: try Linear(l["self_attn.q_proj"], inFeatures: d, outFeatures: d),
                kProj: try Linear(l["self_attn.k_proj"], inFeatures: d, outFeatures: d),
                vProj: try Linear(l["self_attn.v_proj"], inFeatures: d, outFeatures: d),
                outProj: try Linear(l["self_attn.out_proj"], inFeatures: d, outFeatures: d),
                layerNorm2: try LayerNorm(l["layer_norm2"], features: d, eps: eps),
                fc1: try Linear(l["mlp.fc1"], inFeatures: d, outFeatures: config.intermediateSize),
                fc2: try Linear(l["mlp.fc2"], inFeatures: config.intermediateSize, outFeatures: d))
        }
        postLayernorm = try LayerNorm(p["post_layernorm"], features: d, eps: eps)
        try weights.finish()
    }

    /// Loads `directory/config.json` (CLIPVisionConfig or a CLIPConfig holding vision_config)
    /// and `directory/model.safetensors`.
    public static func load(directory: URL) throws -> CLIPVisionModel {
        let config = try CLIPVisionConfig.load(directory.appendingPathComponent("config.json"))
        let file = try SafeTensorsFile(url: directory.appendingPathComponent("model.safetensors"))
        return try CLIPVisionModel(config: config,
                                   weights: SafeTensorsWeights(file: file, keyMap: .clipVision))
    }

    /// pixelValues [B, C, S, S] (already normalised) ->
    /// lastHiddenState [B, 1 + (S/P)^2, D] (no post_layernorm), poolerOutput [B, D].
    public func callAsFunction(_ pixelValues: Tensor) -> (lastHiddenState: Tensor, poolerOutput: Tensor) {
        let s = config.imageSize, d = config.hiddenSize
        precondition(pixelValues.rank == 4 && pixelValues.shape[1] == config.numChannels
                     && pixelValues.shape[2] == s && pixelValues.shape[3] == s,
                     "CLIPVisionModel: pixel values must be [B, \(config.numChannels), \(s), \(s)], got \(pixelValues.shape)")
        let batch = pixelValues.shape[0]
        let tokens = positionEmbedding.shape[0]

        // embeddings: [CLS, patches] + positions
        let patches = conv2d(pixelValues, weight: patchEmbedding, bias: nil,
                             stride: config.patchSize)                       // [B, D, S/P, S/P]
        FLOPCounter.add(2 * Double(patches.count) * Double(patchEmbedding.count / d))
        let patchTokens = toTokens(patches)                                  // [B, (S/P)^2, D]
        var h = Tensor(shape: [batch, tokens, d]) { out in
            for b in 0..<batch {
                let base = b * tokens * d
                for j in 0..<d { out[base + j] = classEmbedding.data[j] + positionEmbedding.data[j] }
                for t in 1..<tokens {
                    let src = (b * (tokens - 1) + t - 1) * d
                    for j in 0..<d {
                        out[base + t * d + j] = patchTokens.data[src + j] + positionEmbedding.data[t * d + j]
                    }
                }
            }
        }                                                                    // [B, T, D]
        h = preLayrnorm(h)

        let heads = config.numAttentionHeads
        let attnScale = 1 / Float(d / heads).squareRoot()
        for layer in layers {
            // self attention
            let x = layer.layerNorm1(h)
            let q = layer.qProj(x), k = layer.kProj(x), v = layer.vProj(x)   // [B, T, D]
            countAttentionFLOPs(batch: batch, queries: tokens, keys: tokens, channels: d)
            addInPlace(&h, layer.outProj(attention(query: q, key: k, value: v, heads: heads,
                                                   scale: attnScale)))
            // MLP
            var m = layer.fc1(layer.layerNorm2(h))                           // [B, T, I]
            m = activation == .quickGelu ? quickGelu(m) : gelu(m)
            addInPlace(&h, layer.fc2(m))                                     // [B, T, D]
        }

        let cls = Tensor(shape: [batch, d]) { out in
            for b in 0..<batch {
                for j in 0..<d { out[b * d + j] = h.data[b * tokens * d + j] }
            }
        }
        return (h, postLayernorm(cls))
    }
}

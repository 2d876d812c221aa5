// transformers CLIPVisionConfig (image_encoder/config.json). Also reads a full CLIPConfig and
// takes its `vision_config`. Keys and defaults match transformers' CLIPVisionConfig (ViT-B/32).
// Unknown keys are ignored.

import Foundation

public struct CLIPVisionConfig: Codable, Equatable, Sendable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var projectionDim: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numChannels: Int
    public var imageSize: Int
    public var patchSize: Int
    /// "quick_gelu" for OpenAI CLIP.
    public var hiddenAct: String
    public var layerNormEps: Float

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case projectionDim = "projection_dim"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numChannels = "num_channels"
        case imageSize = "image_size"
        case patchSize = "patch_size"
        case hiddenAct = "hidden_act"
        case layerNormEps = "layer_norm_eps"
    }

    /// transformers' defaults = openai/clip-vit-base-patch32's vision tower.
    public init() {
        hiddenSize = 768
        intermediateSize = 3072
        projectionDim = 512
        numHiddenLayers = 12
        numAttentionHeads = 12
        numChannels = 3
        imageSize = 224
        patchSize = 32
        hiddenAct = "quick_gelu"
        layerNormEps = 1e-5
    }

    public init(from decoder: Decoder) throws {
        self.init()
        // A CLIPConfig (model_type "clip") nests the vision tower's settings.
        let top = try decoder.container(keyedBy: ConfigKey.self)
        let visionKey = ConfigKey("vision_config")
        let c: KeyedDecodingContainer<CodingKeys>
        if top.contains(visionKey), try !top.decodeNil(forKey: visionKey) {
            c = try top.nestedContainer(keyedBy: CodingKeys.self, forKey: visionKey)
        } else {
            c = try decoder.container(keyedBy: CodingKeys.self)
        }
        hiddenSize = try c.value(.hiddenSize, or: hiddenSize)
        intermediateSize = try c.value(.intermediateSize, or: intermediateSize)
        projectionDim = try c.value(.projectionDim, or: projectionDim)
        numHiddenLayers = try c.value(.numHiddenLayers, or: numHiddenLayers)
        numAttentionHeads = try c.value(.numAttentionHeads, or: numAttentionHeads)
        numChannels = try c.value(.numChannels, or: numChannels)
        imageSize = try c.value(.imageSize, or: imageSize)
        patchSize = try c.value(.patchSize, or: patchSize)
        hiddenAct = try c.value(.hiddenAct, or: hiddenAct)
        layerNormEps = try c.value(.layerNormEps, or: layerNormEps)
    }

    /// Reads `url` (a CLIPVisionConfig, or a CLIPConfig holding `vision_config`) and checks it.
    /// Errors name the file.
    public static func load(_ url: URL) throws -> CLIPVisionConfig {
        let config = try ConfigFile.load(CLIPVisionConfig.self, from: url)
        try config.validate(file: url.path)
        return config
    }

    /// Decodes config.json bytes and checks them (`validate`); `file` names them in errors.
    public static func parse(_ data: Data, file: String = "config.json") throws -> CLIPVisionConfig {
        let config = try ConfigFile.decode(CLIPVisionConfig.self, from: data, file: file)
        try config.validate(file: file)
        return config
    }

    /// Patches per side.
    public var gridSize: Int { patchSize > 0 ? imageSize / patchSize : 0 }
    /// Tokens: one CLS token plus one per patch (ViT-B/32 at 224: 50).
    public var numPositions: Int { gridSize * gridSize + 1 }
    public var headDim: Int { numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0 }

    public func validate(file: String = "CLIPVisionConfig") throws {
        func fail(_ reason: String) -> ConfigError { ConfigError(file: file, reason: reason) }
        guard hiddenSize > 0, intermediateSize > 0, numHiddenLayers > 0, numAttentionHeads > 0,
              numChannels > 0, imageSize > 0, patchSize > 0 else {
            throw fail("sizes must be positive (hidden \(hiddenSize), intermediate \(intermediateSize), layers \(numHiddenLayers), heads \(numAttentionHeads), channels \(numChannels), image \(imageSize), patch \(patchSize))")
        }
        guard hiddenSize % numAttentionHeads == 0 else {
            throw fail("hidden_size \(hiddenSize) is not a multiple of num_attention_heads \(numAttentionHeads)")
        }
        guard imageSize % patchSize == 0 else {
            throw fail("image_size \(imageSize) is not a multiple of patch_size \(patchSize)")
        }
        // Upper bounds (ConfigLimits): the model is built from these counts.
        typealias L = ConfigLimits
        try L.count(hiddenSize, "hidden_size", max: L.maxChannels, file: file)
        try L.count(intermediateSize, "intermediate_size", max: L.maxChannels, file: file)
        try L.count(projectionDim, "projection_dim", max: L.maxChannels, file: file)
        try L.count(numHiddenLayers, "num_hidden_layers", max: L.maxLayers, file: file)
        try L.count(numAttentionHeads, "num_attention_heads", max: L.maxHeads, file: file)
        try L.count(numChannels, "num_channels", max: L.maxChannels, file: file)
        try L.count(imageSize, "image_size", max: L.maxSpatial, file: file)
        try L.count(patchSize, "patch_size", max: L.maxSpatial, file: file)
        // Tokens: (image / patch)^2 + 1, attention is tokens^2: keep the grid sane.
        guard gridSize <= 256 else { throw fail("image_size / patch_size is \(gridSize), at most 256 allowed") }
        try L.finite(layerNormEps, "layer_norm_eps", positive: true, file: file)
    }
}

// diffusers UNet2DConditionModel config.json (unet/config.json).
// Keys and defaults match diffusers' `UNet2DConditionModel.__init__` (checked against 0.42.1);
// unknown keys are ignored; an int-or-list key is stored as a list, one entry per down block.

import Foundation

public struct UNet2DConditionConfig: Codable, Equatable, Sendable {
    public var sampleSize: Int?
    public var inChannels: Int
    public var outChannels: Int
    public var centerInputSample: Bool
    public var flipSinToCos: Bool
    public var freqShift: Int
    public var downBlockTypes: [String]
    /// nil when the config says `null` (no mid block).
    public var midBlockType: String?
    public var upBlockTypes: [String]
    /// One per down block (an int in the file is repeated).
    public var onlyCrossAttention: [Bool]
    public var blockOutChannels: [Int]
    public var layersPerBlock: Int
    public var downsamplePadding: Int
    public var midBlockScaleFactor: Float
    public var dropout: Float
    public var actFn: String
    public var normNumGroups: Int
    public var normEps: Float
    public var crossAttentionDim: Int
    public var transformerLayersPerBlock: Int
    /// One per down block. In SD-1.x configs this is really the number of heads (diffusers'
    /// historic naming; see `headsPerBlock`).
    public var attentionHeadDim: [Int]
    /// One per down block; `null` in SD-1.x configs.
    public var numAttentionHeads: [Int]?
    public var dualCrossAttention: Bool
    public var useLinearProjection: Bool
    public var classEmbedType: String?
    public var additionEmbedType: String?
    public var numClassEmbeds: Int?
    public var upcastAttention: Bool
    public var resnetTimeScaleShift: String
    public var resnetSkipTimeAct: Bool
    public var resnetOutScaleFactor: Float
    public var timeEmbeddingType: String
    public var timeEmbeddingDim: Int?
    public var timeEmbeddingActFn: String?
    public var timestepPostAct: String?
    public var timeCondProjDim: Int?
    public var convInKernel: Int
    public var convOutKernel: Int
    public var encoderHidDim: Int?
    public var encoderHidDimType: String?
    public var attentionType: String
    public var crossAttentionNorm: String?
    public var midBlockOnlyCrossAttention: Bool?
    public var classEmbeddingsConcat: Bool

    enum CodingKeys: String, CodingKey {
        case sampleSize = "sample_size"
        case inChannels = "in_channels"
        case outChannels = "out_channels"
        case centerInputSample = "center_input_sample"
        case flipSinToCos = "flip_sin_to_cos"
        case freqShift = "freq_shift"
        case downBlockTypes = "down_block_types"
        case midBlockType = "mid_block_type"
        case upBlockTypes = "up_block_types"
        case onlyCrossAttention = "only_cross_attention"
        case blockOutChannels = "block_out_channels"
        case layersPerBlock = "layers_per_block"
        case downsamplePadding = "downsample_padding"
        case midBlockScaleFactor = "mid_block_scale_factor"
        case dropout
        case actFn = "act_fn"
        case normNumGroups = "norm_num_groups"
        case normEps = "norm_eps"
        case crossAttentionDim = "cross_attention_dim"
        case transformerLayersPerBlock = "transformer_layers_per_block"
        case attentionHeadDim = "attention_head_dim"
        case numAttentionHeads = "num_attention_heads"
        case dualCrossAttention = "dual_cross_attention"
        case useLinearProjection = "use_linear_projection"
        case classEmbedType = "class_embed_type"
        case additionEmbedType = "addition_embed_type"
        case numClassEmbeds = "num_class_embeds"
        case upcastAttention = "upcast_attention"
        case resnetTimeScaleShift = "resnet_time_scale_shift"
        case resnetSkipTimeAct = "resnet_skip_time_act"
        case resnetOutScaleFactor = "resnet_out_scale_factor"
        case timeEmbeddingType = "time_embedding_type"
        case timeEmbeddingDim = "time_embedding_dim"
        case timeEmbeddingActFn = "time_embedding_act_fn"
        case timestepPostAct = "timestep_post_act"
        case timeCondProjDim = "time_cond_proj_dim"
        case convInKernel = "conv_in_kernel"
        case convOutKernel = "conv_out_kernel"
        case encoderHidDim = "encoder_hid_dim"
        case encoderHidDimType = "encoder_hid_dim_type"
        case attentionType = "attention_type"
        case crossAttentionNorm = "cross_attention_norm"
        case midBlockOnlyCrossAttention = "mid_block_only_cross_attention"
        case classEmbeddingsConcat = "class_embeddings_concat"
    }

    /// diffusers' defaults (an SD-1.x-shaped UNet with in/out 4 channels and cross-attention dim 1280).
    public init() {
        sampleSize = nil
        inChannels = 4
        outChannels = 4
        centerInputSample = false
        flipSinToCos = true
        freqShift = 0
        downBlockTypes = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
        midBlockType = "UNetMidBlock2DCrossAttn"
        upBlockTypes = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
        onlyCrossAttention = [false, false, false, false]
        blockOutChannels = [320, 640, 1280, 1280]
        layersPerBlock = 2
        downsamplePadding = 1
        midBlockScaleFactor = 1
        dropout = 0
        actFn = "silu"
        normNumGroups = 32
        normEps = 1e-5
        crossAttentionDim = 1280
        transformerLayersPerBlock = 1
        attentionHeadDim = [8, 8, 8, 8]
        numAttentionHeads = nil
        dualCrossAttention = false
        useLinearProjection = false
        classEmbedType = nil
        additionEmbedType = nil
        numClassEmbeds = nil
        upcastAttention = false
        resnetTimeScaleShift = "default"
        resnetSkipTimeAct = false
        resnetOutScaleFactor = 1
        timeEmbeddingType = "positional"
        timeEmbeddingDim = nil
        timeEmbeddingActFn = nil
        timestepPostAct = nil
        timeCondProjDim = nil
        convInKernel = 3
        convOutKernel = 3
        encoderHidDim = nil
        encoderHidDimType = nil
        attentionType = "default"
        crossAttentionNorm = nil
        midBlockOnlyCrossAttention = nil
        classEmbeddingsConcat = false
    }

    /// Stable Diffusion 1.5's UNet (runwayml/stable-diffusion-v1-5 unet/config.json).
    public static var stableDiffusion15: UNet2DConditionConfig {
        var c = UNet2DConditionConfig()
        c.sampleSize = 64
        c.crossAttentionDim = 768
        return c
    }

    /// A DreamPose UNet: SD-1.5 with `conv_in` widened to 4 latent + 10 pose channels.
    public static var dreamPose: UNet2DConditionConfig {
        var c = stableDiffusion15
        c.inChannels = 14
        return c
    }

    public init(from decoder: Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if c.contains(.sampleSize), try !c.decodeNil(forKey: .sampleSize) {
            // An int, or [height, width] (then the height; the engine takes sizes from its inputs).
            if let s = try? c.decode(Int.self, forKey: .sampleSize) {
                sampleSize = s
            } else {
                sampleSize = try c.decode([Int].self, forKey: .sampleSize).first
            }
        }
        inChannels = try c.value(.inChannels, or: inChannels)
        outChannels = try c.value(.outChannels, or: outChannels)
        centerInputSample = try c.value(.centerInputSample, or: centerInputSample)
        flipSinToCos = try c.value(.flipSinToCos, or: flipSinToCos)
        freqShift = try c.value(.freqShift, or: freqShift)
        downBlockTypes = try c.value(.downBlockTypes, or: downBlockTypes)
        midBlockType = try c.optional(.midBlockType, or: midBlockType)
        upBlockTypes = try c.value(.upBlockTypes, or: upBlockTypes)
        let n = downBlockTypes.count
        onlyCrossAttention = try c.boolOrList(.onlyCrossAttention, count: n,
                                              or: Array(repeating: false, count: n))
        blockOutChannels = try c.value(.blockOutChannels, or: blockOutChannels)
        layersPerBlock = try c.uniformInt(.layersPerBlock, or: layersPerBlock)
        downsamplePadding = try c.value(.downsamplePadding, or: downsamplePadding)
        midBlockScaleFactor = try c.value(.midBlockScaleFactor, or: midBlockScaleFactor)
        dropout = try c.value(.dropout, or: dropout)
        actFn = try c.value(.actFn, or: actFn)
        if c.contains(.normNumGroups), try c.decodeNil(forKey: .normNumGroups) {
            throw DecodingError.dataCorruptedError(
                forKey: .normNumGroups, in: c,
                debugDescription: "null (a UNet without GroupNorm before conv_out) is not supported")
        }
        normNumGroups = try c.value(.normNumGroups, or: normNumGroups)
        normEps = try c.value(.normEps, or: normEps)
        crossAttentionDim = try c.uniformInt(.crossAttentionDim, or: crossAttentionDim)
        transformerLayersPerBlock = try c.uniformInt(.transformerLayersPerBlock, or: transformerLayersPerBlock)
        attentionHeadDim = try c.intOrList(.attentionHeadDim, count: n, or: Array(repeating: 8, count: n))
            ?? Array(repeating: 8, count: n)
        numAttentionHeads = try c.intOrList(.numAttentionHeads, count: n, or: nil)
        dualCrossAttention = try c.value(.dualCrossAttention, or: dualCrossAttention)
        useLinearProjection = try c.value(.useLinearProjection, or: useLinearProjection)
        classEmbedType = try c.optional(.classEmbedType, or: nil)
        additionEmbedType = try c.optional(.additionEmbedType, or: nil)
        numClassEmbeds = try c.optional(.numClassEmbeds, or: nil)
        upcastAttention = try c.value(.upcastAttention, or: upcastAttention)
        resnetTimeScaleShift = try c.value(.resnetTimeScaleShift, or: resnetTimeScaleShift)
        resnetSkipTimeAct = try c.value(.resnetSkipTimeAct, or: resnetSkipTimeAct)
        resnetOutScaleFactor = try c.value(.resnetOutScaleFactor, or: resnetOutScaleFactor)
        timeEmbeddingType = try c.value(.timeEmbeddingType, or: timeEmbeddingType)
        timeEmbeddingDim = try c.optional(.timeEmbeddingDim, or: nil)
        timeEmbeddingActFn = try c.optional(.timeEmbeddingActFn, or: nil)
        timestepPostAct = try c.optional(.timestepPostAct, or: nil)
        timeCondProjDim = try c.optional(.timeCondProjDim, or: nil)
        convInKernel = try c.value(.convInKernel, or: convInKernel)
        convOutKernel = try c.value(.convOutKernel, or: convOutKernel)
        encoderHidDim = try c.optional(.encoderHidDim, or: nil)
        encoderHidDimType = try c.optional(.encoderHidDimType, or: nil)
        attentionType = try c.value(.attentionType, or: attentionType)
        crossAttentionNorm = try c.optional(.crossAttentionNorm, or: nil)
        midBlockOnlyCrossAttention = try c.optional(.midBlockOnlyCrossAttention, or: nil)
        classEmbeddingsConcat = try c.value(.classEmbeddingsConcat, or: classEmbeddingsConcat)
    }

    /// Writes every key (nil as JSON null, so `mid_block_type: null` survives a round trip).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(sampleSize, forKey: .sampleSize)
        try c.encode(inChannels, forKey: .inChannels)
        try c.encode(outChannels, forKey: .outChannels)
        try c.encode(centerInputSample, forKey: .centerInputSample)
        try c.encode(flipSinToCos, forKey: .flipSinToCos)
        try c.encode(freqShift, forKey: .freqShift)
        try c.encode(downBlockTypes, forKey: .downBlockTypes)
        try c.encode(midBlockType, forKey: .midBlockType)
        try c.encode(upBlockTypes, forKey: .upBlockTypes)
        try c.encode(onlyCrossAttention, forKey: .onlyCrossAttention)
        try c.encode(blockOutChannels, forKey: .blockOutChannels)
        try c.encode(layersPerBlock, forKey: .layersPerBlock)
        try c.encode(downsamplePadding, forKey: .downsamplePadding)
        try c.encode(midBlockScaleFactor, forKey: .midBlockScaleFactor)
        try c.encode(dropout, forKey: .dropout)
        try c.encode(actFn, forKey: .actFn)
        try c.encode(normNumGroups, forKey: .normNumGroups)
        try c.encode(normEps, forKey: .normEps)
        try c.encode(crossAttentionDim, forKey: .crossAttentionDim)
        try c.encode(transformerLayersPerBlock, forKey: .transformerLayersPerBlock)
        try c.encode(attentionHeadDim, forKey: .attentionHeadDim)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(dualCrossAttention, forKey: .dualCrossAttention)
        try c.encode(useLinearProjection, forKey: .useLinearProjection)
        try c.encode(classEmbedType, forKey: .classEmbedType)
        try c.encode(additionEmbedType, forKey: .additionEmbedType)
        try c.encode(numClassEmbeds, forKey: .numClassEmbeds)
        try c.encode(upcastAttention, forKey: .upcastAttention)
        try c.encode(resnetTimeScaleShift, forKey: .resnetTimeScaleShift)
        try c.encode(resnetSkipTimeAct, forKey: .resnetSkipTimeAct)
        try c.encode(resnetOutScaleFactor, forKey: .resnetOutScaleFactor)
        try c.encode(timeEmbeddingType, forKey: .timeEmbeddingType)
        try c.encode(timeEmbeddingDim, forKey: .timeEmbeddingDim)
        try c.encode(timeEmbeddingActFn, forKey: .timeEmbeddingActFn)
        try c.encode(timestepPostAct, forKey: .timestepPostAct)
        try c.encode(timeCondProjDim, forKey: .timeCondProjDim)
        try c.encode(convInKernel, forKey: .convInKernel)
        try c.encode(convOutKernel, forKey: .convOutKernel)
        try c.encode(encoderHidDim, forKey: .encoderHidDim)
        try c.encode(encoderHidDimType, forKey: .encoderHidDimType)
        try c.encode(attentionType, forKey: .attentionType)
        try c.encode(crossAttentionNorm, forKey: .crossAttentionNorm)
        try c.encode(midBlockOnlyCrossAttention, forKey: .midBlockOnlyCrossAttention)
        try c.encode(classEmbeddingsConcat, forKey: .classEmbeddingsConcat)
    }

    /// Reads `url` (diffusers unet/config.json) and checks it (`validate`). Errors name the file.
    public static func load(_ url: URL) throws -> UNet2DConditionConfig {
        let config = try ConfigFile.load(UNet2DConditionConfig.self, from: url)
        try config.validate(file: url.path)
        return config
    }

    /// Decodes config.json bytes and checks them (`validate`); `file` names them in errors.
    public static func parse(_ data: Data, file: String = "config.json") throws -> UNet2DConditionConfig {
        let config = try ConfigFile.decode(UNet2DConditionConfig.self, from: data, file: file)
        try config.validate(file: file)
        return config
    }

    // MARK: - Derived values

    /// Attention heads per down block: diffusers uses `num_attention_heads or attention_head_dim`
    /// (SD-1.x configs put the head count in `attention_head_dim`).
    public var headsPerBlock: [Int] { numAttentionHeads ?? attentionHeadDim }

    /// Width of the sinusoidal timestep projection (`time_proj`), positional embedding.
    public var timeProjectionDim: Int { blockOutChannels.first ?? 0 }

    /// Width of `time_embedding` (linear_1 / linear_2 outputs): `time_embedding_dim` or 4 x C0.
    public var timeEmbedDim: Int { timeEmbeddingDim ?? 4 * (blockOutChannels.first ?? 0) }

    /// Settings present in this config that a plain SD-1.x UNet does not have, as "key = value"
    /// (empty for SD-1.x / DreamPose). An engine that implements only SD-1.x can refuse these.
    public var featuresBeyondSD1: [String] {
        var out: [String] = []
        func note(_ cond: Bool, _ s: @autoclosure () -> String) { if cond { out.append(s()) } }
        note(centerInputSample, "center_input_sample = true")
        note(onlyCrossAttention.contains(true), "only_cross_attention = \(onlyCrossAttention)")
        note(actFn != "silu", "act_fn = \(actFn)")
        note(dualCrossAttention, "dual_cross_attention = true")
        note(classEmbedType != nil, "class_embed_type = \(classEmbedType ?? "")")
        note(additionEmbedType != nil, "addition_embed_type = \(additionEmbedType ?? "")")
        note(numClassEmbeds != nil, "num_class_embeds = \(numClassEmbeds ?? 0)")
        note(resnetTimeScaleShift != "default", "resnet_time_scale_shift = \(resnetTimeScaleShift)")
        note(resnetSkipTimeAct, "resnet_skip_time_act = true")
        note(resnetOutScaleFactor != 1, "resnet_out_scale_factor = \(resnetOutScaleFactor)")
        note(timeEmbeddingType != "positional", "time_embedding_type = \(timeEmbeddingType)")
        note(timeEmbeddingDim != nil, "time_embedding_dim = \(timeEmbeddingDim ?? 0)")
        note(timeEmbeddingActFn != nil, "time_embedding_act_fn = \(timeEmbeddingActFn ?? "")")
        note(timestepPostAct != nil, "timestep_post_act = \(timestepPostAct ?? "")")
        note(timeCondProjDim != nil, "time_cond_proj_dim = \(timeCondProjDim ?? 0)")
        note(convInKernel != 3, "conv_in_kernel = \(convInKernel)")
        note(convOutKernel != 3, "conv_out_kernel = \(convOutKernel)")
        note(encoderHidDimType != nil || encoderHidDim != nil, "encoder_hid_dim(_type) set")
        note(attentionType != "default", "attention_type = \(attentionType)")
        note(crossAttentionNorm != nil, "cross_attention_norm = \(crossAttentionNorm ?? "")")
        note(classEmbeddingsConcat, "class_embeddings_concat = true")
        return out
    }

    /// Structural checks diffusers makes (`_check_config`) plus GroupNorm divisibility.
    public func validate(file: String = "UNet2DConditionConfig") throws {
        func fail(_ reason: String) -> ConfigError { ConfigError(file: file, reason: reason) }
        let n = blockOutChannels.count
        guard n > 0 else { throw fail("block_out_channels is empty") }
        guard downBlockTypes.count == n else {
            throw fail("down_block_types has \(downBlockTypes.count) entries, block_out_channels \(n)")
        }
        guard upBlockTypes.count == n else {
            throw fail("up_block_types has \(upBlockTypes.count) entries, block_out_channels \(n)")
        }
        guard attentionHeadDim.count == n else {
            throw fail("attention_head_dim has \(attentionHeadDim.count) entries, down_block_types \(n)")
        }
        if let heads = numAttentionHeads, heads.count != n {
            throw fail("num_attention_heads has \(heads.count) entries, down_block_types \(n)")
        }
        guard onlyCrossAttention.count == n else {
            throw fail("only_cross_attention has \(onlyCrossAttention.count) entries, down_block_types \(n)")
        }
        guard inChannels > 0, outChannels > 0, layersPerBlock > 0, crossAttentionDim > 0,
              transformerLayersPerBlock > 0, blockOutChannels.allSatisfy({ $0 > 0 }),
              headsPerBlock.allSatisfy({ $0 > 0 }) else {
            throw fail("channel, layer and head counts must be positive (in \(inChannels), out \(outChannels), blocks \(blockOutChannels), layers \(layersPerBlock), heads \(headsPerBlock), cross_attention_dim \(crossAttentionDim))")
        }
        guard normNumGroups > 0, blockOutChannels.allSatisfy({ $0 % normNumGroups == 0 }) else {
            throw fail("norm_num_groups \(normNumGroups) does not divide block_out_channels \(blockOutChannels)")
        }
        // Upper bounds (ConfigLimits): the model is built from these counts.
        typealias L = ConfigLimits
        guard n <= L.maxBlocks else { throw fail("block_out_channels has \(n) blocks, at most \(L.maxBlocks) allowed") }
        try L.counts(blockOutChannels, "block_out_channels", max: L.maxChannels, file: file)
        try L.count(inChannels, "in_channels", max: L.maxChannels, file: file)
        try L.count(outChannels, "out_channels", max: L.maxChannels, file: file)
        try L.count(layersPerBlock, "layers_per_block", max: L.maxLayers, file: file)
        try L.count(transformerLayersPerBlock, "transformer_layers_per_block", max: L.maxLayers, file: file)
        try L.count(crossAttentionDim, "cross_attention_dim", max: L.maxChannels, file: file)
        try L.counts(headsPerBlock, numAttentionHeads == nil ? "attention_head_dim" : "num_attention_heads",
                     max: L.maxHeads, file: file)
        if numAttentionHeads != nil { try L.counts(attentionHeadDim, "attention_head_dim", max: L.maxChannels, file: file) }
        try L.count(normNumGroups, "norm_num_groups", max: L.maxChannels, file: file)
        try L.count(convInKernel, "conv_in_kernel", max: 15, file: file)
        try L.count(convOutKernel, "conv_out_kernel", max: 15, file: file)
        guard downsamplePadding >= 0, downsamplePadding <= 15 else {
            throw fail("downsample_padding is \(downsamplePadding), expected 0 to 15")
        }
        guard freqShift >= -L.maxChannels, freqShift <= L.maxChannels else {
            throw fail("freq_shift is \(freqShift), expected magnitude at most \(L.maxChannels)")
        }
        if let s = sampleSize { try L.count(s, "sample_size", max: L.maxSpatial, file: file) }
        for (key, v) in [("time_embedding_dim", timeEmbeddingDim), ("time_cond_proj_dim", timeCondProjDim),
                         ("encoder_hid_dim", encoderHidDim), ("num_class_embeds", numClassEmbeds)] {
            if let v { try L.count(v, key, max: L.maxChannels, file: file) }
        }
        try L.finite(normEps, "norm_eps", positive: true, file: file)
        try L.finite(midBlockScaleFactor, "mid_block_scale_factor", file: file)
        try L.finite(resnetOutScaleFactor, "resnet_out_scale_factor", positive: true, file: file)
        guard dropout.isFinite, dropout >= 0, dropout <= 1 else { throw fail("dropout is \(dropout), expected 0 to 1") }
    }
}

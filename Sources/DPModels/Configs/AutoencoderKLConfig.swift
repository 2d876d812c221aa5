// diffusers AutoencoderKL config.json (vae/config.json).
// Keys and defaults match diffusers' `AutoencoderKL.__init__` (checked against 0.42.1);
// unknown keys are ignored.

import Foundation

public struct AutoencoderKLConfig: Codable, Equatable, Sendable {
    public var inChannels: Int
    public var outChannels: Int
    public var downBlockTypes: [String]
    public var upBlockTypes: [String]
    public var blockOutChannels: [Int]
    public var layersPerBlock: Int
    public var actFn: String
    public var latentChannels: Int
    public var normNumGroups: Int
    public var sampleSize: Int?
    /// Latents fed to the UNet are `mean * scaling_factor`; decode takes `latents / scaling_factor`.
    public var scalingFactor: Float
    public var shiftFactor: Float?
    public var latentsMean: [Float]?
    public var latentsStd: [Float]?
    public var forceUpcast: Bool
    public var useQuantConv: Bool
    public var usePostQuantConv: Bool
    public var midBlockAddAttention: Bool

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels"
        case outChannels = "out_channels"
        case downBlockTypes = "down_block_types"
        case upBlockTypes = "up_block_types"
        case blockOutChannels = "block_out_channels"
        case layersPerBlock = "layers_per_block"
        case actFn = "act_fn"
        case latentChannels = "latent_channels"
        case normNumGroups = "norm_num_groups"
        case sampleSize = "sample_size"
        case scalingFactor = "scaling_factor"
        case shiftFactor = "shift_factor"
        case latentsMean = "latents_mean"
        case latentsStd = "latents_std"
        case forceUpcast = "force_upcast"
        case useQuantConv = "use_quant_conv"
        case usePostQuantConv = "use_post_quant_conv"
        case midBlockAddAttention = "mid_block_add_attention"
    }

    /// diffusers' defaults (a one-level VAE; real checkpoints always give their levels).
    public init() {
        inChannels = 3
        outChannels = 3
        downBlockTypes = ["DownEncoderBlock2D"]
        upBlockTypes = ["UpDecoderBlock2D"]
        blockOutChannels = [64]
        layersPerBlock = 1
        actFn = "silu"
        latentChannels = 4
        normNumGroups = 32
        sampleSize = 32
        scalingFactor = 0.18215
        shiftFactor = nil
        latentsMean = nil
        latentsStd = nil
        forceUpcast = true
        useQuantConv = true
        usePostQuantConv = true
        midBlockAddAttention = true
    }

    /// Stable Diffusion 1.5's VAE (runwayml/stable-diffusion-v1-5 vae/config.json).
    public static var stableDiffusion15: AutoencoderKLConfig {
        var c = AutoencoderKLConfig()
        c.downBlockTypes = Array(repeating: "DownEncoderBlock2D", count: 4)
        c.upBlockTypes = Array(repeating: "UpDecoderBlock2D", count: 4)
        c.blockOutChannels = [128, 256, 512, 512]
        c.layersPerBlock = 2
        c.sampleSize = 512
        return c
    }

    public init(from decoder: Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        inChannels = try c.value(.inChannels, or: inChannels)
        outChannels = try c.value(.outChannels, or: outChannels)
        downBlockTypes = try c.value(.downBlockTypes, or: downBlockTypes)
        upBlockTypes = try c.value(.upBlockTypes, or: upBlockTypes)
        blockOutChannels = try c.value(.blockOutChannels, or: blockOutChannels)
        layersPerBlock = try c.value(.layersPerBlock, or: layersPerBlock)
        actFn = try c.value(.actFn, or: actFn)
        latentChannels = try c.value(.latentChannels, or: latentChannels)
        normNumGroups = try c.value(.normNumGroups, or: normNumGroups)
        if c.contains(.sampleSize), try !c.decodeNil(forKey: .sampleSize) {
            if let s = try? c.decode(Int.self, forKey: .sampleSize) {
                sampleSize = s
            } else {
                sampleSize = try c.decode([Int].self, forKey: .sampleSize).first
            }
        }
        scalingFactor = try c.value(.scalingFactor, or: scalingFactor)
        shiftFactor = try c.optional(.shiftFactor, or: nil)
        latentsMean = try c.optional(.latentsMean, or: nil)
        latentsStd = try c.optional(.latentsStd, or: nil)
        forceUpcast = try c.value(.forceUpcast, or: forceUpcast)
        useQuantConv = try c.value(.useQuantConv, or: useQuantConv)
        usePostQuantConv = try c.value(.usePostQuantConv, or: usePostQuantConv)
        midBlockAddAttention = try c.value(.midBlockAddAttention, or: midBlockAddAttention)
    }

    /// Reads `url` (diffusers vae/config.json) and checks it (`validate`). Errors name the file.
    public static func load(_ url: URL) throws -> AutoencoderKLConfig {
        let config = try ConfigFile.load(AutoencoderKLConfig.self, from: url)
        try config.validate(file: url.path)
        return config
    }

    /// Decodes config.json bytes and checks them (`validate`); `file` names them in errors.
    public static func parse(_ data: Data, file: String = "config.json") throws -> AutoencoderKLConfig {
        let config = try ConfigFile.decode(AutoencoderKLConfig.self, from: data, file: file)
        try config.validate(file: file)
        return config
    }

    /// Spatial factor between image and latents: 2^(levels - 1) (SD: 8).
    public var downsampleFactor: Int { 1 << max(blockOutChannels.count - 1, 0) }

    public func validate(file: String = "AutoencoderKLConfig") throws {
        func fail(_ reason: String) -> ConfigError { ConfigError(file: file, reason: reason) }
        let n = blockOutChannels.count
        guard n > 0 else { throw fail("block_out_channels is empty") }
        guard downBlockTypes.count == n, upBlockTypes.count == n else {
            throw fail("down_block_types (\(downBlockTypes.count)) and up_block_types (\(upBlockTypes.count)) must have one entry per block_out_channels (\(n))")
        }
        guard inChannels > 0, outChannels > 0, latentChannels > 0, layersPerBlock > 0,
              blockOutChannels.allSatisfy({ $0 > 0 }) else {
            throw fail("channel and layer counts must be positive (in \(inChannels), out \(outChannels), latent \(latentChannels), layers \(layersPerBlock), blocks \(blockOutChannels))")
        }
        guard normNumGroups > 0, blockOutChannels.allSatisfy({ $0 % normNumGroups == 0 }) else {
            throw fail("norm_num_groups \(normNumGroups) does not divide block_out_channels \(blockOutChannels)")
        }
        guard scalingFactor.isFinite, scalingFactor > 0 else {
            throw fail("scaling_factor \(scalingFactor) must be positive")
        }
        // Upper bounds (ConfigLimits): the model is built from these counts.
        typealias L = ConfigLimits
        guard n <= L.maxBlocks else { throw fail("block_out_channels has \(n) blocks, at most \(L.maxBlocks) allowed") }
        try L.counts(blockOutChannels, "block_out_channels", max: L.maxChannels, file: file)
        try L.count(inChannels, "in_channels", max: L.maxChannels, file: file)
        try L.count(outChannels, "out_channels", max: L.maxChannels, file: file)
        try L.count(latentChannels, "latent_channels", max: L.maxChannels, file: file)
        try L.count(layersPerBlock, "layers_per_block", max: L.maxLayers, file: file)
        try L.count(normNumGroups, "norm_num_groups", max: L.maxChannels, file: file)
        try L.finite(scalingFactor, "scaling_factor", positive: true, file: file)
    }
}

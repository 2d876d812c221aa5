// The DreamPose CLIP+VAE adapter's config (adapter/config.json, shared/docs/model-format.md):
// {"clip_tokens": 50, "vae_tokens": 4, "vae_features": 1280, "hidden": 768}. All keys required.

import Foundation

public struct AdapterConfig: Codable, Equatable, Sendable {
    /// CLIP tokens (CLS + patches; ViT-B/32 at 224: 50).
    public var clipTokens: Int
    /// VAE latent channels used as extra tokens (4).
    public var vaeTokens: Int
    /// Features per VAE token: (height/16) * (width/16) of the frame size (ties a model to its size).
    public var vaeFeatures: Int
    /// Token width = the UNet's cross_attention_dim = CLIP hidden size.
    public var hidden: Int

    enum CodingKeys: String, CodingKey {
        case clipTokens = "clip_tokens"
        case vaeTokens = "vae_tokens"
        case vaeFeatures = "vae_features"
        case hidden
    }

    public init(clipTokens: Int, vaeTokens: Int, vaeFeatures: Int, hidden: Int) {
        self.clipTokens = clipTokens
        self.vaeTokens = vaeTokens
        self.vaeFeatures = vaeFeatures
        self.hidden = hidden
    }

    /// Reads `url` (adapter/config.json) and checks it. Errors name the file.
    public static func load(_ url: URL) throws -> AdapterConfig {
        let config = try ConfigFile.load(AdapterConfig.self, from: url)
        try config.validate(file: url.path)
        return config
    }

    /// Decodes config.json bytes and checks them (`validate`); `file` names them in errors.
    public static func parse(_ data: Data, file: String = "config.json") throws -> AdapterConfig {
        let config = try ConfigFile.decode(AdapterConfig.self, from: data, file: file)
        try config.validate(file: file)
        return config
    }

    public func validate(file: String = "AdapterConfig") throws {
        guard clipTokens > 0, vaeTokens > 0, vaeFeatures > 0, hidden > 0 else {
            throw ConfigError(file: file, reason: "clip_tokens \(clipTokens), vae_tokens \(vaeTokens), vae_features \(vaeFeatures), hidden \(hidden) must all be positive")
        }
        typealias L = ConfigLimits
        try L.count(clipTokens, "clip_tokens", max: 256 * 256 + 1, file: file)
        try L.count(vaeTokens, "vae_tokens", max: L.maxChannels, file: file)
        try L.count(vaeFeatures, "vae_features", max: (L.maxSpatial / 16) * (L.maxSpatial / 16), file: file)
        try L.count(hidden, "hidden", max: L.maxChannels, file: file)
    }
}

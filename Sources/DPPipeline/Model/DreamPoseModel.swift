import DPModels
import DPFileKit
import DPSampling
import DPTensor
import Foundation

/// Everything needed to render frames of one subject: a loaded `dreampose-model/1` folder
/// (../shared/docs/model-format.md). Load once; render many frames and many jobs with it.
public final class DreamPoseModel: Sendable {
    public let directory: URL
    /// SHA-256 identity of the folder (model-format.md "Identity").
    public let id: String
    public let config: DreamPoseConfig
    public let unet: UNet2DConditionModel
    public let vae: AutoencoderKL
    public let imageEncoder: CLIPVisionModel
    public let adapter: EmbeddingAdapter
    public let schedulerConfig: SchedulerConfig

    /// Frame size in pixels.
    public var height: Int { config.height }
    public var width: Int { config.width }
    /// Latent size (the VAE's spatial factor is 8).
    public var latentHeight: Int { config.height / 8 }
    public var latentWidth: Int { config.width / 8 }
    public var latentChannels: Int { vae.config.latentChannels }
    /// 2 channels (U, V) per pose of the window.
    public var poseChannels: Int { 2 * config.poseWindow }

    /// Loads and cross-checks a model folder. `id` may be passed when already known (e.g. a worker's cache
    /// verified it); otherwise it is computed from the files.
    public init(directory: URL, id knownID: String? = nil) throws {
        self.directory = directory
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: directory.path, isDirectory: &isDir), isDir.boolValue else {
            throw PipelineError("model folder \(directory.path) does not exist or is not a directory")
        }
        for required in ["dreampose.json", "unet/config.json", "vae/config.json", "image_encoder/config.json",
                         "adapter/config.json", "scheduler/scheduler_config.json"] {
            guard fm.fileExists(atPath: directory.appendingPathComponent(required).path) else {
                throw PipelineError("model folder \(directory.path) lacks \(required) (expected the dreampose-model/1 layout)")
            }
        }
        config = try DreamPoseConfig.load(directory.appendingPathComponent("dreampose.json"))
        unet = try UNet2DConditionModel.load(directory: directory.appendingPathComponent("unet"))
        vae = try AutoencoderKL.load(directory: directory.appendingPathComponent("vae"))
        imageEncoder = try CLIPVisionModel.load(directory: directory.appendingPathComponent("image_encoder"))
        adapter = try EmbeddingAdapter.load(directory: directory.appendingPathComponent("adapter"))
        schedulerConfig = try SchedulerConfig.load(directory.appendingPathComponent("scheduler/scheduler_config.json"))
        id = try knownID ?? ModelManifest.modelID(directory: directory)
        try Self.validate(config: config, unet: unet, vae: vae, imageEncoder: imageEncoder, adapter: adapter,
                          directory: directory)
    }

    /// Assembles a model from parts already built (benchmarks build random-weight parts in memory);
    /// `id` names it. The same checks as loading a folder apply.
    public init(config: DreamPoseConfig, unet: UNet2DConditionModel, vae: AutoencoderKL, imageEncoder: CLIPVisionModel,
                adapter: EmbeddingAdapter, schedulerConfig: SchedulerConfig, id: String,
                directory: URL = URL(fileURLWithPath: "/dev/null")) throws {
        self.directory = directory
        self.id = id
        self.config = config
        self.unet = unet
        self.vae = vae
        self.imageEncoder = imageEncoder
        self.adapter = adapter
        self.schedulerConfig = schedulerConfig
        try Self.validate(config: config, unet: unet, vae: vae, imageEncoder: imageEncoder, adapter: adapter,
                          directory: directory)
    }

    /// Checks that the parts fit together and fit the frame size.
    static func validate(config: DreamPoseConfig, unet: UNet2DConditionModel, vae: AutoencoderKL,
                         imageEncoder: CLIPVisionModel, adapter: EmbeddingAdapter, directory: URL) throws {
        let where_ = directory.path
        let latentChannels = vae.config.latentChannels
        let expectedIn = latentChannels + 2 * config.poseWindow
        guard unet.config.inChannels == expectedIn else {
            throw PipelineError("\(where_)/unet/config.json: in_channels is \(unet.config.inChannels), expected "
                + "\(expectedIn) (\(latentChannels) latent + 2 x pose_window \(config.poseWindow))")
        }
        guard unet.config.outChannels == latentChannels else {
            throw PipelineError("\(where_)/unet/config.json: out_channels \(unet.config.outChannels) != VAE latent channels \(latentChannels)")
        }
        let features = (config.height / 16) * (config.width / 16)
        guard adapter.config.vaeFeatures == features else {
            throw PipelineError("\(where_)/adapter/config.json: vae_features is \(adapter.config.vaeFeatures), but a "
                + "\(config.height)x\(config.width) frame needs (H/16)*(W/16) = \(features): this model was made for another frame size")
        }
        guard adapter.config.vaeTokens == latentChannels else {
            throw PipelineError("\(where_)/adapter/config.json: vae_tokens \(adapter.config.vaeTokens) != VAE latent channels \(latentChannels)")
        }
        guard adapter.config.hidden == imageEncoder.config.hiddenSize,
              adapter.config.hidden == unet.config.crossAttentionDim else {
            throw PipelineError("\(where_): adapter hidden \(adapter.config.hidden), CLIP hidden_size "
                + "\(imageEncoder.config.hiddenSize) and UNet cross_attention_dim \(unet.config.crossAttentionDim) must agree")
        }
        let clipTokens = (imageEncoder.config.imageSize / imageEncoder.config.patchSize)
            * (imageEncoder.config.imageSize / imageEncoder.config.patchSize) + 1
        guard adapter.config.clipTokens == clipTokens else {
            throw PipelineError("\(where_)/adapter/config.json: clip_tokens \(adapter.config.clipTokens), the CLIP tower makes \(clipTokens)")
        }
    }
}

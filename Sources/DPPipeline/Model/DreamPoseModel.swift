import DPModels
import DPFileKit
import DPSampling
import DPTensor
import Foundation

/// Everything needed to render frames of one subject: a loaded `dreampose-model/1` folder
/// (../shared/docs/model-format.md). Load once; render many frames and many jobs with it.
///
/// The UNet, VAE and adapter stay in memory. The CLIP image encoder does not: it runs twice per job (subject
/// and null image) and never per frame, so `withImageEncoder` builds it for the job's preparation and frees it
/// after (a ViT-B/32 tower is ~350 MB that a worker would otherwise hold through every frame's VAE decode,
/// the frame's memory peak). Loading checks its weights once, like the other parts.
public final class DreamPoseModel: Sendable {
    public let directory: URL
    /// SHA-256 identity of the folder (model-format.md "Identity").
    public let id: String
    public let config: DreamPoseConfig
    public let unet: UNet2DConditionModel
    public let vae: AutoencoderKL
    /// The image encoder's configuration (its weights are built on demand: `withImageEncoder`).
    public let imageEncoderConfig: CLIPVisionConfig
    private let makeImageEncoder: @Sendable () throws -> CLIPVisionModel
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
        let encoderDirectory = directory.appendingPathComponent("image_encoder")
        makeImageEncoder = { try CLIPVisionModel.load(directory: encoderDirectory) }
        imageEncoderConfig = try makeImageEncoder().config   // binds every weight once: a bad file fails here
        adapter = try EmbeddingAdapter.load(directory: directory.appendingPathComponent("adapter"))
        schedulerConfig = try SchedulerConfig.load(directory.appendingPathComponent("scheduler/scheduler_config.json"))
        id = try knownID ?? ModelManifest.modelID(directory: directory)
        try Self.validate(config: config, unet: unet, vae: vae, imageEncoder: imageEncoderConfig, adapter: adapter,
                          directory: directory)
    }

    /// Assembles a model from parts already built (benchmarks build random-weight parts in memory);
    /// `imageEncoder` builds the CLIP tower each time a job is prepared (called once here, for the checks).
    /// `id` names it. The same checks as loading a folder apply.
    public init(config: DreamPoseConfig, unet: UNet2DConditionModel, vae: AutoencoderKL,
                imageEncoder: @escaping @Sendable () throws -> CLIPVisionModel,
                adapter: EmbeddingAdapter, schedulerConfig: SchedulerConfig, id: String,
                directory: URL = URL(fileURLWithPath: "/dev/null")) throws {
        self.directory = directory
        self.id = id
        self.config = config
        self.unet = unet
        self.vae = vae
        self.makeImageEncoder = imageEncoder
        self.imageEncoderConfig = try imageEncoder().config
        self.adapter = adapter
        self.schedulerConfig = schedulerConfig
        try Self.validate(config: config, unet: unet, vae: vae, imageEncoder: imageEncoderConfig, adapter: adapter,
                          directory: directory)
    }

    /// Runs `body` with the CLIP image encoder, built for the call and freed after it.
    public func withImageEncoder<T>(_ body: (CLIPVisionModel) throws -> T) throws -> T {
        let encoder = try makeImageEncoder()
        guard encoder.config == imageEncoderConfig else {
            throw PipelineError("\(directory.path)/image_encoder changed since the model was loaded (its config differs)")
        }
        return try body(encoder)
    }

    /// Checks that the parts fit together and fit the frame size.
    static func validate(config: DreamPoseConfig, unet: UNet2DConditionModel, vae: AutoencoderKL,
                         imageEncoder: CLIPVisionConfig, adapter: EmbeddingAdapter, directory: URL) throws {
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
        guard adapter.config.hidden == imageEncoder.hiddenSize,
              adapter.config.hidden == unet.config.crossAttentionDim else {
            throw PipelineError("\(where_): adapter hidden \(adapter.config.hidden), CLIP hidden_size "
                + "\(imageEncoder.hiddenSize) and UNet cross_attention_dim \(unet.config.crossAttentionDim) must agree")
        }
        let clipTokens = (imageEncoder.imageSize / imageEncoder.patchSize)
            * (imageEncoder.imageSize / imageEncoder.patchSize) + 1
        guard adapter.config.clipTokens == clipTokens else {
            throw PipelineError("\(where_)/adapter/config.json: clip_tokens \(adapter.config.clipTokens), the CLIP tower makes \(clipTokens)")
        }
    }
}

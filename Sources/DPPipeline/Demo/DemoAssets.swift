import DPModels
import DPFileKit
import DPTensor
import Foundation

/// Writes a self-contained demo job: a tiny `dreampose-model/1` folder with seeded random weights, a synthetic
/// subject photo and a short synthetic DensePose sequence. The frames it renders show the pipeline running,
/// not a meaningful video (the weights are random, not trained).
public enum DemoAssets {
    public struct Paths: Sendable {
        public var model: URL
        public var subject: URL
        public var poses: URL
    }

    /// Frame size of the demo model (a multiple of 64).
    public static let height = 128
    public static let width = 128

    /// Creates `<dir>/model`, `<dir>/subject.png` and `<dir>/poses/frame_<n>_densepose.npy` (n < frames).
    /// Existing complete assets are reused, so running the demo twice does not rebuild them.
    @discardableResult
    public static func write(to dir: URL, frames: Int = 8, seed: UInt64 = 42) throws -> Paths {
        let fm = FileManager.default
        let paths = Paths(model: dir.appendingPathComponent("model"),
                          subject: dir.appendingPathComponent("subject.png"),
                          poses: dir.appendingPathComponent("poses"))
        let marker = dir.appendingPathComponent(".complete")
        if fm.fileExists(atPath: marker.path) { return paths }
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        try writeModel(to: paths.model, seed: seed)
        try PNGCodec.write(subjectImage(width: 96, height: 160), to: paths.subject)
        try fm.createDirectory(at: paths.poses, withIntermediateDirectories: true)
        for n in 0..<frames {
            let pose = poseMap(frame: n, of: frames, height: 96, width: 64)
            try NPY.write(shape: [2, 96, 64], values: pose.values,
                          to: paths.poses.appendingPathComponent(PoseSource.fileName(frame: n)))
        }
        try DurableFile.write(Data("demo assets complete\n".utf8), to: marker)
        return paths
    }

    // MARK: model

    static func writeModel(to model: URL, seed: UInt64) throws {
        let fm = FileManager.default
        let staging = model.deletingLastPathComponent().appendingPathComponent(".model-staging-\(getpid())")
        try? fm.removeItem(at: staging)
        for sub in ["unet", "vae", "image_encoder", "adapter", "scheduler"] {
            try fm.createDirectory(at: staging.appendingPathComponent(sub), withIntermediateDirectories: true)
        }
        let hidden = 32
        try writeJSON(unetConfig(crossAttentionDim: hidden), to: staging.appendingPathComponent("unet/config.json"))
        try writeJSON(vaeConfig, to: staging.appendingPathComponent("vae/config.json"))
        try writeJSON(clipConfig(hidden: hidden), to: staging.appendingPathComponent("image_encoder/config.json"))
        let features = (height / 16) * (width / 16)
        try writeJSON(["clip_tokens": 50, "vae_tokens": 4, "vae_features": features, "hidden": hidden],
                      to: staging.appendingPathComponent("adapter/config.json"))
        try writeJSON(schedulerConfig, to: staging.appendingPathComponent("scheduler/scheduler_config.json"))
        try writeJSON(["format": DreamPoseConfig.formatName, "name": "dp-farm-demo (random weights)",
                       "height": height, "width": width, "vae_scaling_factor": 0.18215, "pose_window": 5,
                       "defaults": ["steps": 20, "sampler": "dpm", "image_guidance": 2.5, "pose_guidance": 1.5]] as [String: Any],
                      to: staging.appendingPathComponent("dreampose.json"))

        // Build each network with seeded random weights and save exactly what it took.
        func build(_ seed: UInt64, _ weightsFile: String, _ make: (WeightSource) throws -> Void) throws {
            let weights = RandomWeights(seed: seed)
            try make(weights)
            try weights.write(to: staging.appendingPathComponent(weightsFile))
        }
        func config(_ path: String) -> URL { staging.appendingPathComponent(path) }
        try build(seed, "unet/diffusion_pytorch_model.safetensors") {
            _ = try UNet2DConditionModel(config: .load(config("unet/config.json")), weights: $0)
        }
        try build(seed &+ 1, "vae/diffusion_pytorch_model.safetensors") {
            _ = try AutoencoderKL(config: .load(config("vae/config.json")), weights: $0)
        }
        try build(seed &+ 2, "image_encoder/model.safetensors") {
            _ = try CLIPVisionModel(config: .load(config("image_encoder/config.json")), weights: $0)
        }
        try build(seed &+ 3, "adapter/adapter.safetensors") {
            _ = try EmbeddingAdapter(config: .load(config("adapter/config.json")), weights: $0)
        }

        try? fm.removeItem(at: model)
        try fm.moveItem(at: staging, to: model)
    }

    static func unetConfig(crossAttentionDim: Int) -> [String: Any] {
        [
            "_class_name": "UNet2DConditionModel",
            "in_channels": 14, "out_channels": 4, "sample_size": height / 8,
            "block_out_channels": [32, 64, 64, 64], "layers_per_block": 1,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "mid_block_type": "UNetMidBlock2DCrossAttn",
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            "attention_head_dim": 4, "cross_attention_dim": crossAttentionDim, "norm_num_groups": 8,
            "norm_eps": 1e-5, "flip_sin_to_cos": true, "freq_shift": 0, "use_linear_projection": false,
            "downsample_padding": 1, "act_fn": "silu",
        ]
    }

    static var vaeConfig: [String: Any] { [
        "_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
        "block_out_channels": [16, 32, 64, 64], "layers_per_block": 1, "norm_num_groups": 8,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "act_fn": "silu", "scaling_factor": 0.18215, "sample_size": height,
    ] }

    static func clipConfig(hidden: Int) -> [String: Any] {
        ["model_type": "clip_vision_model", "hidden_size": hidden, "intermediate_size": 4 * hidden,
         "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 224, "patch_size": 32,
         "num_channels": 3, "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu"]
    }

    static var schedulerConfig: [String: Any] { [
        "_class_name": "PNDMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "skip_prk_steps": true, "set_alpha_to_one": false, "steps_offset": 1,
        "prediction_type": "epsilon", "timestep_spacing": "leading",
    ] }

    static func writeJSON(_ object: Any, to url: URL) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        try DurableFile.write(data, to: url)
    }

    // MARK: subject and poses

    /// A synthetic "person": a head and a body over a vertical gradient.
    public static func subjectImage(width: Int, height: Int) -> RGBImage {
        var px = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                let i = (y * width + x) * 3
                var r = 40 + 120 * y / height, g = 60 + 80 * x / width, b = 150
                let hx = Double(x - width / 2), hy = Double(y - height / 5)
                if hx * hx + hy * hy < Double(width * width) / 25 { r = 230; g = 190; b = 160 }       // head
                if abs(x - width / 2) < width / 5, y > height / 3, y < height * 4 / 5 { r = 200; g = 40; b = 60 }  // body
                px[i] = UInt8(r); px[i + 1] = UInt8(g); px[i + 2] = UInt8(b)
            }
        }
        return RGBImage(width: width, height: height, pixels: px)
    }

    /// A DensePose-like UV map: a blob that moves across the frame, UV gradients inside, background 0.
    public static func poseMap(frame n: Int, of count: Int, height: Int, width: Int) -> Pose {
        var values = [Float](repeating: 0, count: 2 * height * width)
        let t = count > 1 ? Double(n) / Double(count - 1) : 0
        let cx = Double(width) * (0.3 + 0.4 * t), cy = Double(height) * 0.5
        let rx = Double(width) * 0.18, ry = Double(height) * 0.35
        for y in 0..<height {
            for x in 0..<width {
                let dx = (Double(x) - cx) / rx, dy = (Double(y) - cy) / ry
                guard dx * dx + dy * dy < 1 else { continue }
                values[y * width + x] = Float(0.05 + 0.9 * (dx + 1) / 2)
                values[height * width + y * width + x] = Float(0.05 + 0.9 * (dy + 1) / 2)
            }
        }
        return Pose(height: height, width: width, values: values)
    }
}

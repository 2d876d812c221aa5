import DPFileKit
import DPModels
import DPPipeline
import DPSampling
import DPTensor
import Foundation

/// `dp-bench frame`: one DreamPose frame at full size with random weights, through the same `PreparedJob`
/// path as `dp-worker render`: SD-1.5 UNet with 14 input channels, SD VAE, CLIP ViT-B/32 vision tower,
/// adapter 1280 -> 768, 640 x 512 frames.
func benchFrame(preset: String, steps: Int, sampler: SamplerKind, height: Int, width: Int) throws {
    guard preset == "sd15" || preset == "tiny" else {
        throw ModelBenchError(description: "unknown frame preset \"\(preset)\" (sd15, tiny)")
    }
    let buildStart = Date()
    func random(_ seed: UInt64) -> RandomWeights {
        let w = RandomWeights(seed: seed)
        w.recording = false                                 // no second copy of 3.4 GB
        return w
    }
    let unet = try UNet2DConditionModel(config: unetPreset(preset), weights: random(1))
    let vae = try AutoencoderKL(config: vaePreset(preset), weights: random(2))
    let hidden = unet.config.crossAttentionDim
    let clipJSON = """
        {"hidden_size": \(hidden), "intermediate_size": \(4 * hidden), "num_hidden_layers": \(preset == "sd15" ? 12 : 2),
         "num_attention_heads": \(preset == "sd15" ? 12 : 2), "image_size": 224, "patch_size": 32, "num_channels": 3,
         "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu", "projection_dim": \(hidden)}
        """
    let clipConfig = try JSONDecoder().decode(CLIPVisionConfig.self, from: Data(clipJSON.utf8))
    // Built per job preparation and freed after it, as a loaded model's encoder is (DreamPoseModel).
    let clip: @Sendable () throws -> CLIPVisionModel = {
        let weights = RandomWeights(seed: 3)
        weights.recording = false
        return try CLIPVisionModel(config: clipConfig, weights: weights)
    }
    let adapter = try EmbeddingAdapter(
        config: AdapterConfig(clipTokens: 50, vaeTokens: vae.config.latentChannels,
                              vaeFeatures: (height / 16) * (width / 16), hidden: hidden),
        weights: random(4))
    let schedulerConfig = SchedulerConfig.stableDiffusion            // SD-1.5 PNDM settings
    let config = try DreamPoseConfig(name: "bench-\(preset)", height: height, width: width)
    let model = try DreamPoseModel(config: config, unet: unet, vae: vae, imageEncoder: clip, adapter: adapter,
                                   schedulerConfig: schedulerConfig, id: "bench-\(preset)-random")
    func peak() -> String { peakRSSBytes().map { String(format: "%.2f GB", Double($0) / 1e9) } ?? "n/a" }
    print(String(format: "frame %@: %dx%d, %@ %d steps, threads %d; built random model in %.1f s (peak RSS %@)",
                 preset, height, width, sampler.rawValue, steps, EngineThreads.count, Date().timeIntervalSince(buildStart),
                 peak()))
    print("  \(EngineThreads.allocatorDescription)")

    let subject = DemoAssets.subjectImage(width: width * 3 / 4, height: height)
    let poses = (0..<5).map { DemoAssets.poseMap(frame: $0, of: 5, height: height / 2, width: width / 2) }
    let prepStart = Date()
    let job = try PreparedJob(model: model, subject: subject,
                              settings: RenderRequest(steps: steps, sampler: sampler, noise: .seed(1)))
    let prepSeconds = Date().timeIntervalSince(prepStart)
    print(String(format: "  job preparation (CLIP + 3 VAE encodes + adapter): %.2f s (peak RSS so far %@)", prepSeconds, peak()))

    var stepTimes: [Double] = []
    var decodeStart = Date()
    let frame = try job.render(frame: 2, poseWindow: poses, progress: { p in
        stepTimes.append(p.stepSeconds)
        print(String(format: "  step %d/%d: %.2f s (peak RSS so far %@)", p.step, p.totalSteps, p.stepSeconds, peak()))
        if p.step == p.totalSteps { decodeStart = Date() }
    })
    let decodeSeconds = Date().timeIntervalSince(decodeStart)
    let sorted = stepTimes.sorted()
    let median = sorted[sorted.count / 2]
    print(String(format: "  median %.2f s per denoising step (batch 3), decode + PNG %.2f s, frame %.1f s",
                 median, decodeSeconds, frame.renderSeconds))
    let perFrame100 = prepSeconds / 1 + median * 101 + decodeSeconds
    print(String(format: "  => a 100-step PNDM frame (101 UNet calls) would take about %.0f s here", perFrame100))
    print("  peak RSS (VmHWM) \(peak())")
}

// The handlers for the network case kinds of shared/golden/README.md §2.3:
// unet_forward, vae_decode, vae_encode, clip_vision.

import DPModels
import DPTensor
import Foundation

extension ParityRunner {
    /// The case kinds the runner handles out of the box.
    public static let builtInKinds = ["unet_forward", "vae_decode", "vae_encode", "clip_vision"]

    func registerBuiltInHandlers() {
        register(kind: "unet_forward", handler: Self.unetForward)
        register(kind: "vae_decode", handler: Self.vaeDecode)
        register(kind: "vae_encode", handler: Self.vaeEncode)
        register(kind: "clip_vision", handler: Self.clipVision)
    }

    /// Case field "timestep": one integer/number for every row, or a list with one per row.
    static func timesteps(_ c: ParityContext) throws -> [Float] {
        let v = c.entry.fields["timestep"]
        if let t = v?.double { return [Float(t)] }
        if let list = v?.array?.compactMap(\.double), !list.isEmpty { return list.map { Float($0) } }
        throw GoldenError.missingField(caseName: c.entry.name, field: "timestep")
    }

    static func unetForward(_ c: ParityContext) throws -> [ParityMeasurement] {
        let model = try c.unetModel()
        let sample = try c.input("sample")                               // [B, in, h, w]
        let context = try c.input("encoder_hidden_states")               // [B, T, D]
        let (callback, box) = c.intermediateCollector()
        let out = model.forward(sample, timesteps: try timesteps(c), encoderHiddenStates: context,
                                intermediates: c.entry.intermediates.isEmpty ? nil : callback)
        return [try c.compareOutput("sample", out)] + (try c.compareIntermediates(box.tensors))
    }

    static func vaeDecode(_ c: ParityContext) throws -> [ParityMeasurement] {
        let model = try c.vaeModel()
        var z = try c.input("z")                                          // [B, latent, h, w]
        if c.entry.fields["divide_by_scaling_factor"]?.bool == true {
            z = scale(z, by: Float(1 / Double(model.config.scalingFactor)))
        }
        let (callback, box) = c.intermediateCollector()
        let image = model.decode(z, intermediates: c.entry.intermediates.isEmpty ? nil : callback)
        return [try c.compareOutput("sample", image)] + (try c.compareIntermediates(box.tensors))
    }

    static func vaeEncode(_ c: ParityContext) throws -> [ParityMeasurement] {
        let model = try c.vaeModel()
        let image = try c.input("image")                                  // [B, 3, H, W]
        let (callback, box) = c.intermediateCollector()
        let posterior = model.encode(image, intermediates: c.entry.intermediates.isEmpty ? nil : callback)
        var ms: [ParityMeasurement] = []
        if c.entry.outputs["mean"] != nil { ms.append(try c.compareOutput("mean", posterior.mean)) }
        if c.entry.outputs["logvar"] != nil { ms.append(try c.compareOutput("logvar", posterior.logvar)) }
        return ms + (try c.compareIntermediates(box.tensors))
    }

    static func clipVision(_ c: ParityContext) throws -> [ParityMeasurement] {
        let model = try c.clipVisionModel()
        let pixels = try c.input("pixel_values")                          // [B, 3, S, S]
        let out = model(pixels)
        var ms: [ParityMeasurement] = []
        if c.entry.outputs["last_hidden_state"] != nil {
            ms.append(try c.compareOutput("last_hidden_state", out.lastHiddenState))
        }
        if c.entry.outputs["pooler_output"] != nil {
            ms.append(try c.compareOutput("pooler_output", out.poolerOutput))
        }
        return ms
    }
}

extension ParityContext {
    // The case's networks, loaded from its model files (see GoldenCase.modelFiles(for:)) once per
    // runner and weights file. Other handlers (e.g. an end-to-end kind) can use them too.

    /// The UNet of this case (strict load through KeyMap.unet).
    public func unetModel() throws -> UNet2DConditionModel {
        let files = try golden.modelFiles(for: entry)
        return try cached("unet:" + files.weights.path) {
            let config = try UNet2DConditionConfig.load(files.config)
            return try UNet2DConditionModel(
                config: config,
                weights: SafeTensorsWeights(file: SafeTensorsFile(url: files.weights), keyMap: .unet))
        }
    }

    /// The VAE of this case (strict load through KeyMap.vae).
    public func vaeModel() throws -> AutoencoderKL {
        let files = try golden.modelFiles(for: entry)
        return try cached("vae:" + files.weights.path) {
            let config = try AutoencoderKLConfig.load(files.config)
            return try AutoencoderKL(
                config: config,
                weights: SafeTensorsWeights(file: SafeTensorsFile(url: files.weights), keyMap: .vae))
        }
    }

    /// The CLIP vision model of this case (strict load through KeyMap.clipVision).
    public func clipVisionModel() throws -> CLIPVisionModel {
        let files = try golden.modelFiles(for: entry)
        return try cached("clip:" + files.weights.path) {
            let config = try CLIPVisionConfig.load(files.config)
            return try CLIPVisionModel(
                config: config,
                weights: SafeTensorsWeights(file: SafeTensorsFile(url: files.weights), keyMap: .clipVision))
        }
    }
}

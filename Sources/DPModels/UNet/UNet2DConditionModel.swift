// This implementation matches diffusers' UNet2DConditionModel
// (models/unets/unet_2d_condition.py) for the SD-1.x / SD-2.x family: positional
// time embedding, no class / addition embeddings, down blocks CrossAttnDownBlock2D /
// DownBlock2D, mid block UNetMidBlock2DCrossAttn (or none), up blocks UpBlock2D /
// CrossAttnUpBlock2D. Heads per attention: `num_attention_heads` when given, else
// `attention_head_dim` (which SD-1.x configs use for the head COUNT, as diffusers does).

import DPTensor
import Foundation

public final class UNet2DConditionModel: Sendable {
    public let config: UNet2DConditionConfig

    let timeEmbeddingLinear1: Linear       // time_embedding.linear_1
    let timeEmbeddingLinear2: Linear       // time_embedding.linear_2
    let convIn: Conv2d
    let downBlocks: [UNetDownBlock]
    let midBlock: UNetMidBlock2DCrossAttn?
    let upBlocks: [UNetUpBlock]
    let convNormOut: GroupNorm
    let convOut: Conv2d

    /// Builds the network from `config`, taking every parameter from `weights` (shapes checked),
    /// then `weights.finish()` (unused tensors are an error).
    public init(config: UNet2DConditionConfig, weights: WeightSource) throws {
        self.config = config
        let model = "UNet2DConditionModel"
        try config.validate()
        let unsupported = config.featuresBeyondSD1.filter {
            !$0.hasPrefix("center_input_sample") && !$0.hasPrefix("time_embedding_dim")
        }
        guard unsupported.isEmpty else {
            throw ModelError.unsupported(model: model, what: unsupported.joined(separator: ", "))
        }
        let blocks = config.blockOutChannels
        let n = blocks.count
        let heads = config.headsPerBlock
        for (i, h) in heads.enumerated() where blocks[i] % h != 0 {
            throw ModelError.invalidConfig(model: model, file: nil, reason:
                "block \(i): \(blocks[i]) channels do not split into \(h) attention heads")
        }
        let p = ParameterScope(weights)
        let timeInput = config.timeProjectionDim
        let timeEmbedDim = config.timeEmbedDim
        timeEmbeddingLinear1 = try Linear(p["time_embedding.linear_1"], inFeatures: timeInput,
                                          outFeatures: timeEmbedDim)
        timeEmbeddingLinear2 = try Linear(p["time_embedding.linear_2"], inFeatures: timeEmbedDim,
                                          outFeatures: timeEmbedDim)
        convIn = try Conv2d(p["conv_in"], inChannels: config.inChannels, outChannels: blocks[0],
                            kernel: 3)
        let settings = UNetBlockSettings(
            tembChannels: timeEmbedDim, groups: config.normNumGroups, eps: config.normEps,
            crossAttentionDim: config.crossAttentionDim,
            transformerLayers: config.transformerLayersPerBlock,
            useLinearProjection: config.useLinearProjection)

        var down: [UNetDownBlock] = []
        var outputChannels = blocks[0]
        for i in 0..<n {
            let inputChannels = outputChannels
            outputChannels = blocks[i]
            down.append(try UNetDownBlock(
                p["down_blocks", i], type: config.downBlockTypes[i], layers: config.layersPerBlock,
                inChannels: inputChannels, outChannels: outputChannels, heads: heads[i],
                addDownsample: i < n - 1, downsamplePadding: config.downsamplePadding,
                settings: settings))
        }
        downBlocks = down

        switch config.midBlockType {
        case nil:
            midBlock = nil
        case "UNetMidBlock2DCrossAttn"?:
            midBlock = try UNetMidBlock2DCrossAttn(
                p["mid_block"], channels: blocks[n - 1], heads: heads[n - 1],
                outputScaleFactor: config.midBlockScaleFactor, settings: settings)
        case let other?:
            throw ModelError.unsupported(model: model, what: "mid_block_type \(other)")
        }

        var up: [UNetUpBlock] = []
        let reversedBlocks = Array(blocks.reversed())
        let reversedHeads = Array(heads.reversed())
        outputChannels = reversedBlocks[0]
        for i in 0..<n {
            let prevOutputChannels = outputChannels
            outputChannels = reversedBlocks[i]
            let inputChannels = reversedBlocks[min(i + 1, n - 1)]
            up.append(try UNetUpBlock(
                p["up_blocks", i], type: config.upBlockTypes[i], layers: config.layersPerBlock + 1,
                inChannels: inputChannels, prevOutputChannels: prevOutputChannels,
                outChannels: outputChannels, heads: reversedHeads[i], addUpsample: i < n - 1,
                settings: settings))
        }
        upBlocks = up

        convNormOut = try GroupNorm(p["conv_norm_out"], groups: config.normNumGroups,
                                    channels: blocks[0], eps: config.normEps)
        convOut = try Conv2d(p["conv_out"], inChannels: blocks[0], outChannels: config.outChannels,
                             kernel: 3)
        try weights.finish()
    }

    /// Loads `directory/config.json` and `directory/diffusion_pytorch_model.safetensors`.
    public static func load(directory: URL) throws -> UNet2DConditionModel {
        let config = try UNet2DConditionConfig.load(directory.appendingPathComponent("config.json"))
        let file = try SafeTensorsFile(
            url: directory.appendingPathComponent("diffusion_pytorch_model.safetensors"))
        return try UNet2DConditionModel(config: config,
                                        weights: SafeTensorsWeights(file: file, keyMap: .unet))
    }

    /// One timestep for every batch row.
    /// sample [B, in, h, w], encoderHiddenStates [B, T, D] -> [B, out, h, w]
    public func callAsFunction(_ sample: Tensor, timestep: Float, encoderHiddenStates: Tensor) -> Tensor {
        forward(sample, timesteps: [timestep], encoderHiddenStates: encoderHiddenStates)
    }

    /// sample [B, in, h, w]; `timesteps` one value for all rows or one per row;
    /// encoderHiddenStates [B, T, D] (or [1, T, D], used for every row) -> [B, out, h, w].
    /// `intermediates` receives the outputs of `time_proj`, `time_embedding`, `conv_in`,
    /// `down_blocks.i` (after its downsampler), `mid_block`, `up_blocks.i`, `conv_norm_out`
    /// (before the SiLU) and `conv_out`, named as diffusers' modules.
    public func forward(_ sample: Tensor, timesteps: [Float], encoderHiddenStates: Tensor,
                        intermediates: ((String, Tensor) -> Void)? = nil) -> Tensor {
        precondition(sample.rank == 4 && sample.shape[1] == config.inChannels,
                     "UNet2DConditionModel: sample must be [B, \(config.inChannels), h, w], got \(sample.shape)")
        let batch = sample.shape[0]
        precondition(timesteps.count == 1 || timesteps.count == batch,
                     "UNet2DConditionModel: \(timesteps.count) timesteps for batch \(batch) (give 1 or \(batch))")
        precondition(encoderHiddenStates.rank == 3
                     && encoderHiddenStates.shape[2] == config.crossAttentionDim
                     && (encoderHiddenStates.shape[0] == batch || encoderHiddenStates.shape[0] == 1),
                     "UNet2DConditionModel: encoderHiddenStates must be [\(batch), T, \(config.crossAttentionDim)], got \(encoderHiddenStates.shape)")
        let context = encoderHiddenStates.shape[0] == batch ? encoderHiddenStates
            : concat(Array(repeating: encoderHiddenStates, count: batch), axis: 0)   // [B, T, D]

        // 1. time
        let rowTimesteps = timesteps.count == batch ? timesteps
            : Array(repeating: timesteps[0], count: batch)
        let tProj = timestepEmbedding(rowTimesteps, dim: config.timeProjectionDim,
                                      flipSinToCos: config.flipSinToCos,
                                      downscaleFreqShift: Float(config.freqShift))  // [B, C0]
        intermediates?("time_proj", tProj)
        let temb = timeEmbeddingLinear2(silu(timeEmbeddingLinear1(tProj)))     // [B, 4*C0]
        intermediates?("time_embedding", temb)
        let tembActivated = silu(temb)           // every resnet applies SiLU before time_emb_proj

        // 2. pre-process
        var h = config.centerInputSample ? add(scale(sample, by: 2), Tensor(shape: sample.shape, repeating: -1))
                                         : sample
        h = convIn(h)                                                          // [B, C0, h, w]
        intermediates?("conv_in", h)

        // 3. down
        var skips: [Tensor] = [h]
        for (i, block) in downBlocks.enumerated() {
            h = block(h, tembActivated: tembActivated, context: context, skips: &skips)
            intermediates?("down_blocks.\(i)", h)
        }

        // 4. mid
        if let mid = midBlock {
            h = mid(h, tembActivated: tembActivated, context: context)
            intermediates?("mid_block", h)
        }

        // 5. up
        for (i, block) in upBlocks.enumerated() {
            h = block(h, tembActivated: tembActivated, context: context, skips: &skips)
            intermediates?("up_blocks.\(i)", h)
        }

        // 6. post-process
        if let report = intermediates {
            h = convNormOut(h)
            report("conv_norm_out", h)
            h = silu(h)
        } else {
            h = convNormOut(h, silu: true)
        }
        h = convOut(h)                                                         // [B, out, h, w]
        intermediates?("conv_out", h)
        return h
    }
}

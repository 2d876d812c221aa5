import DPModels
import DPTensor
import Foundation

/// The per-job subject conditioning of ../shared/docs/dreampose-inference.md, "The subject (key frame) -> context":
/// computed once per job and shared by every frame.
public struct SubjectConditioning: Sendable {
    /// The subject resized to the frame size with Pillow's BICUBIC filter.
    public var resized: RGBImage
    /// CLIP pixel values of the resized subject, [1, 3, S, S].
    public var clipPixelValues: Tensor
    /// CLIP `last_hidden_state` of the subject, [1, T, D].
    public var cClip: Tensor
    /// Adapter's VAE latent of the subject (pixels in 0..255, mean * scaling factor), [1, 4, h, w].
    public var adapterLatent: Tensor
    /// Image context c_I, [1, T, D].
    public var cI: Tensor
    /// Null image context c_0 (from the transposed all-zero image), [1, T, D].
    public var c0: Tensor
    /// Initial latent z0 = vae.encode(subject in [-1, 1]).mean * scaling factor, [1, 4, h, w].
    public var z0: Tensor

    /// OpenAI CLIP normalisation (transformers' CLIPImageProcessor defaults).
    public static let clipMean: [Float] = [0.48145466, 0.4578275, 0.40821073]
    public static let clipStd: [Float] = [0.26862954, 0.26130258, 0.27577711]

    /// Runs CLIP, the VAE encoder and the adapter on `subject` (any size, RGB8).
    /// `intermediates` receives named tensors for debugging and golden checks.
    public init(model: DreamPoseModel, subject: RGBImage,
                intermediates: ((String, Tensor) -> Void)? = nil) throws {
        let H = model.height, W = model.width
        let sf = model.config.vaeScalingFactor
        let clipSize = model.imageEncoderConfig.imageSize

        // 1. Pillow BICUBIC to the frame size (PIL size = (width, height)).
        resized = PillowResize.bicubic(subject, width: W, height: H)

        // 2. CLIP of the subject, and of the null image of step 5 (the encoder is built for these two calls
        //    only; see DreamPoseModel). The null context: the reference builds zeros((W, H, 3)), i.e. an image
        //    W rows x H columns.
        clipPixelValues = CLIPPreprocess.pixelValues(resized, size: clipSize, mean: Self.clipMean, std: Self.clipStd)
        let nullImage = RGBImage(width: H, height: W, pixels: [UInt8](repeating: 0, count: W * H * 3))
        let nullPixelValues = CLIPPreprocess.pixelValues(nullImage, size: clipSize, mean: Self.clipMean, std: Self.clipStd)
        let subjectPixels = clipPixelValues
        let (clip, clipNull) = try model.withImageEncoder { encoder in
            (encoder(subjectPixels).lastHiddenState, encoder(nullPixelValues).lastHiddenState)   // [1, 50, D] each
        }
        cClip = clip
        let cClipNull = clipNull

        // 3. Adapter VAE input: float pixels in 0..255 (not normalised: the reference's quirk), NCHW.
        let pixels255 = Self.nchw(resized) { Float($0) }                        // [1, 3, H, W]
        adapterLatent = scale(model.vae.encode(pixels255).mean, by: sf)        // [1, 4, h, w]

        // 4. Adapter -> c_I.
        let vaeTokens = try model.adapter.vaeTokens(adapterLatent)            // [1, 4, D]
        cI = try model.adapter.combine(clip: cClip, vaeTokens: vaeTokens)      // [1, 50, D]

        // 5. Null context (its CLIP part was computed in step 2).
        let nullLatent = scale(model.vae.encode(Tensor(zeros: [1, 3, W, H])).mean, by: sf)  // [1, 4, w, h]
        let nullTokens = try model.adapter.vaeTokens(nullLatent)
        c0 = try model.adapter.combine(clip: cClipNull, vaeTokens: nullTokens)

        // Initial latent: subject / 255 in float32, then * 2 - 1.
        let pixelsPM1 = Self.nchw(resized) { Float($0) / 255 * 2 - 1 }
        z0 = scale(model.vae.encode(pixelsPM1).mean, by: sf)

        if let dump = intermediates {
            dump("subject_resized", Tensor(shape: [H, W, 3], data: resized.pixels.map { Float($0) }))
            dump("clip_pixel_values", clipPixelValues)
            dump("c_clip", cClip)
            dump("c_clip_null", cClipNull)
            dump("adapter_vae_latent", adapterLatent)
            dump("adapter_vae_latent_null", nullLatent)
            dump("adapter_vae_tokens", vaeTokens)
            dump("adapter_vae_tokens_null", nullTokens)
            dump("c_I", cI)
            dump("c_0", c0)
            dump("z0", z0)
        }
    }

    /// HWC RGB8 -> [1, 3, H, W] with `transform` applied per value.
    static func nchw(_ img: RGBImage, _ transform: (UInt8) -> Float) -> Tensor {
        let h = img.height, w = img.width
        return Tensor(shape: [1, 3, h, w]) { out in
            for y in 0..<h {
                for x in 0..<w {
                    for c in 0..<3 {
                        out[(c * h + y) * w + x] = transform(img.pixels[(y * w + x) * 3 + c])
                    }
                }
            }
        }
    }
}

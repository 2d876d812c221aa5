// CLIP image preprocessing as transformers' CLIPImageProcessor (PIL path) does it, exactly
// (docs/dreampose-inference.md, "The subject -> context", step 2):
// resize so the shorter edge is `size` and the longer `int(size * long / short)` with Pillow BICUBIC,
// centre-crop size x size at top = (h - size) / 2, left = (w - size) / 2 (integer division),
// float32(u8 * (1/255) in double), then (x - mean) / std in float32.
import DPTensor

public enum CLIPPreprocess {
    /// OpenAI CLIP's normalisation constants (transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD).
    public static let openAIMean: [Float] = [0.48145466, 0.4578275, 0.40821073]
    public static let openAIStd: [Float] = [0.26862954, 0.26130258, 0.27577711]

    /// The size (width, height) of the shortest-edge resize: the short edge becomes `size`, the long
    /// edge `int(size * long / short)` (Python float division, truncated).
    public static func resizedSize(width: Int, height: Int, size: Int) -> (width: Int, height: Int) {
        let short = min(width, height), long = max(width, height)
        let newLong = Int((Double(size * long) / Double(short)).rounded(.towardZero))
        return width <= height ? (size, newLong) : (newLong, size)
    }

    /// `CLIPImageProcessor()(images=img).pixel_values`: [1, 3, size, size].
    public static func pixelValues(_ img: RGBImage, size: Int = 224,
                                   mean: [Float], std: [Float]) -> Tensor {
        precondition(mean.count == 3 && std.count == 3, "CLIPPreprocess: mean/std need 3 channels")
        precondition(img.width > 0 && img.height > 0 && size > 0, "CLIPPreprocess: empty image or size")
        let target = resizedSize(width: img.width, height: img.height, size: size)
        let resized = PillowResize.bicubic(img, width: target.width, height: target.height)
        // Both edges are >= size after the resize, so the crop never needs padding.
        let top = (resized.height - size) / 2
        let left = (resized.width - size) / 2
        let rescale = 1.0 / 255.0
        // u8 -> float32 value lookup: Float(Double(u) * (1/255)), as numpy's float64 rescale then cast.
        let table = (0 ..< 256).map { Float(Double($0) * rescale) }
        return Tensor(shape: [1, 3, size, size]) { out in
            for ch in 0 ..< 3 {
                let m = mean[ch], s = std[ch]
                for y in 0 ..< size {
                    for x in 0 ..< size {
                        let u = resized[top + y, left + x, ch]
                        out[(ch * size + y) * size + x] = (table[Int(u)] - m) / s
                    }
                }
            }
        }
    }
}

import DPTensor

/// DreamPose's dual classifier-free guidance (image and pose), ../shared/docs/dreampose-inference.md:
/// `e = e_uncond + s_I (e_image - e_uncond) + s_P (e_image_pose - e_image)` where
/// e_uncond = e(null image, null pose), e_image = e(image, null pose), e_image_pose = e(image, pose).
public enum DualGuidance {
    /// Combines the three predictions (each [1, C, h, w]) elementwise.
    public static func combine(uncond: Tensor, image: Tensor, imagePose: Tensor,
                               imageScale sI: Float, poseScale sP: Float) -> Tensor {
        precondition(uncond.shape == image.shape && image.shape == imagePose.shape,
                     "guidance rows disagree: \(uncond.shape), \(image.shape), \(imagePose.shape)")
        var out = Tensor(zeros: uncond.shape)
        uncond.data.withUnsafeBufferPointer { e0 in
            image.data.withUnsafeBufferPointer { eI in
                imagePose.data.withUnsafeBufferPointer { eIP in
                    out.data.withUnsafeMutableBufferPointer { o in
                        for j in 0..<o.count {
                            o[j] = e0[j] + sI * (eI[j] - e0[j]) + sP * (eIP[j] - eI[j])
                        }
                    }
                }
            }
        }
        return out
    }

    /// Splits a batch-of-3 model output [3, C, h, w] into its rows, each [1, C, h, w].
    public static func rows(_ output: Tensor) -> [Tensor] {
        precondition(output.shape.first == 3, "expected a batch of 3, got \(output.shape)")
        return (0..<3).map { slice(output, axis: 0, range: $0..<($0 + 1)) }
    }
}

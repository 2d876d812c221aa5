// The sampling settings a job asks for (steps, sampler, guidance scales), checked by ONE function that
// `dp-coord submit` / `dp-worker render` (DPCLISupport), the coordinator's submit handler (before anything is
// journalled) and the worker's pipeline (`RenderSettings.resolved`) all call, so a setting is refused
// everywhere with the same words, and a job the coordinator accepts is one every worker can render.
// (Issue 14: `--steps 2000` used to be accepted and journalled, then fail on every worker, frame by frame.)
// Lives beside dreampose.json's reader because the limits are the same ones (`DreamPoseLimits`): a value a
// model may not declare as its default, a job may not ask for either.

/// The checks of a job's sampling settings; nil values are "the model's default" (checked by DreamPoseFile).
public enum SamplingRequest {
    /// The samplers the engine has: DPSampling's `SamplerKind` raw values (DPSamplingTests keeps them equal;
    /// this module cannot import the engine).
    public static let samplerNames = ["pndm", "ddim", "dpm"]

    /// nil when every given value is acceptable; otherwise what is wrong, naming the setting.
    public static func problem(steps: Int?, sampler: String?, imageGuidance: Float?, poseGuidance: Float?) -> String? {
        if let steps, !(1...DreamPoseLimits.maxSteps).contains(steps) {
            return "steps must be from 1 to \(DreamPoseLimits.maxSteps) (got \(steps))"
        }
        if let sampler, !samplerNames.contains(sampler) {
            let shown = sampler.count > 40 ? String(sampler.prefix(40)) + "..." : sampler
            return "unknown sampler \"\(shown.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 ? String($0) : "?" }.joined())\" "
                + "(expected one of: \(samplerNames.joined(separator: ", ")))"
        }
        for (name, value) in [("image guidance", imageGuidance), ("pose guidance", poseGuidance)] {
            if let value, !(value.isFinite && abs(Double(value)) <= DreamPoseLimits.maxScale) {
                return "\(name) must be a finite number of magnitude at most \(Int(DreamPoseLimits.maxScale)) (got \(value))"
            }
        }
        return nil
    }
}

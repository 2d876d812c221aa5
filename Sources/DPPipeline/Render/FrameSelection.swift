/// A `--frames` value: comma-separated frame numbers and inclusive ranges, e.g. `0-99` or `3,5,8` or `0-9,20`.
public enum FrameSelection {
    /// Parses `spec` into ascending, unique frame numbers.
    public static func parse(_ spec: String) throws -> [Int] {
        var frames = Set<Int>()
        for rawItem in spec.split(separator: ",", omittingEmptySubsequences: false) {
            let item = rawItem.trimmingCharacters(in: .whitespaces)
            let bounds = item.split(separator: "-", omittingEmptySubsequences: false)
            if bounds.count == 1, let n = Int(bounds[0]), n >= 0 {
                frames.insert(n)
            } else if bounds.count == 2, let a = Int(bounds[0]), let b = Int(bounds[1]), a >= 0, a <= b {
                frames.formUnion(a...b)
            } else {
                throw PipelineError("--frames: cannot read \"\(item)\" in \"\(spec)\" (expected N or A-B with 0 <= A <= B, comma-separated, e.g. 0-99 or 3,5,8)")
            }
        }
        return frames.sorted()
    }

    /// Zero-padded output name of pose frame `n`: `frame_00042.png`.
    public static func outputName(frame n: Int) -> String {
        FrameFileName.png(frame: n)
    }
}

import DPFileKit
import Foundation

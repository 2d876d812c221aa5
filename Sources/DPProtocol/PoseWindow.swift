/// Which pose files go into a FrameTask's `pose_window_npy`, with DreamPose's centre-pose fallback
/// (docs/dreampose-inference.md, "The pose window"): frame n uses poses n-2 ... n+2, and a neighbour
/// missing from the job's pose set (sequence edges, gaps) is replaced by pose n itself.
public enum PoseWindow {
    /// Pose frame numbers for frame `frame`, in window order (length `size`, odd).
    /// `available` is every pose frame number of the job; `frame` must be one of them.
    public static func frames(for frame: UInt32, available: Set<UInt32>,
                              size: Int = FarmProtocol.defaultPoseWindow) -> [UInt32] {
        precondition(size > 0 && size % 2 == 1, "pose window size must be odd and positive, got \(size)")
        let radius = Int64(size / 2)
        let centre = Int64(frame)
        return (-radius...radius).map { offset in
            let n = centre + offset
            guard n >= 0, n <= Int64(UInt32.max), available.contains(UInt32(n)) else { return frame }
            return UInt32(n)
        }
    }
}

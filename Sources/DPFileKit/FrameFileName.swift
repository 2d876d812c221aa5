/// The name of a rendered frame's file: `frame_<n>.png` with the pose frame number zero-padded to 5 digits
/// (`frame_00042.png`). One definition for `dp-worker render` and the coordinator's output writer.
public enum FrameFileName {
    public static func png(frame n: Int) -> String {
        let digits = String(n)
        return "frame_" + String(repeating: "0", count: max(0, 5 - digits.count)) + digits + ".png"
    }
}

/// The name of a rendered frame's file: `frame_<n>.png` with the pose frame number zero-padded to 5 digits
/// (`frame_00042.png`). One definition for `dp-worker render` and the coordinator's output writer.
public enum FrameFileName {
    public static func png(frame n: Int) -> String {
        name(frame: n, extension: "png")
    }

    /// `frame_<n>.<ext>`, n zero-padded to 5 digits (a submitted job's pose upload names use "npy").
    public static func name(frame n: Int, extension ext: String) -> String {
        let digits = String(n)
        return "frame_" + String(repeating: "0", count: max(0, 5 - digits.count)) + digits + "." + ext
    }
}

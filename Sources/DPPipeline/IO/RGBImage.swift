// An 8-bit RGB image in memory, the form every image takes between PNG files and the engine.

/// 8-bit RGB pixels, row-major HWC: the byte of channel `c` at (`y`, `x`) is
/// `pixels[(y * width + x) * 3 + c]`.
public struct RGBImage: Sendable, Equatable {
    public var width: Int
    public var height: Int
    /// [height, width, 3] uint8, C order.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0, "negative image size \(width)x\(height)")
        precondition(pixels.count == width * height * 3,
                     "RGBImage \(width)x\(height) needs \(width * height * 3) bytes, got \(pixels.count)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// A black image.
    public init(width: Int, height: Int) {
        self.init(width: width, height: height, pixels: [UInt8](repeating: 0, count: width * height * 3))
    }

    /// The byte of channel `channel` (0 = R) at row `y`, column `x`.
    @inlinable
    public subscript(y: Int, x: Int, channel: Int) -> UInt8 {
        get { pixels[(y * width + x) * 3 + channel] }
        set { pixels[(y * width + x) * 3 + channel] = newValue }
    }
}

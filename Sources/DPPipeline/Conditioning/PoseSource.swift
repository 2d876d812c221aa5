import DPFileKit
import DPTensor
import Foundation
import Synchronization

/// One DensePose UV map: [2, H0, W0] float32, values in [0, 1], background 0.
public struct Pose: Sendable, Equatable {
    public var height: Int
    public var width: Int
    /// U plane then V plane, row-major.
    public var values: [Float]

    public init(height: Int, width: Int, values: [Float]) {
        precondition(values.count == 2 * height * width)
        self.height = height; self.width = width; self.values = values
    }

    /// Reads a pose `.npy` file of shape (2, H0, W0); errors name the file.
    public init(npy url: URL) throws {
        let (shape, values) = try NPY.read(url)
        guard shape.count == 3, shape[0] == 2, shape[1] > 0, shape[2] > 0 else {
            throw PipelineError("\(url.path): pose has shape \(shape), expected (2, H, W) (a DensePose UV map)")
        }
        self.init(height: shape[1], width: shape[2], values: values)
    }
}

/// Where a job's poses come from: a folder of `frame_<n>_densepose.npy` files (the reference's naming) or
/// one stacked `.npy` of shape (N, 2, H0, W0) whose frame numbers are 0..<N.
public final class PoseSource: Sendable {
    public enum Origin: Sendable { case directory(URL), stacked(URL) }
    public let origin: Origin
    /// The pose frame numbers available, ascending.
    public let frameNumbers: [Int]
    private let stacked: (shape: [Int], values: [Float])?
    /// Poses read so far (a job's frames share most of their window's poses).
    private let cache = Mutex<[Int: Pose]>([:])

    /// Reference file name of pose `n`.
    public static func fileName(frame n: Int) -> String { "frame_\(n)_densepose.npy" }

    public init(url: URL) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw PipelineError("poses: \(url.path) does not exist (expected a folder of frame_<n>_densepose.npy files or a stacked .npy)")
        }
        if isDir.boolValue {
            origin = .directory(url)
            let names = try FileManager.default.contentsOfDirectory(atPath: url.path)
            var numbers: [Int] = []
            for name in names where name.hasPrefix("frame_") && name.hasSuffix("_densepose.npy") {
                let middle = name.dropFirst("frame_".count).dropLast("_densepose.npy".count)
                if let n = Int(middle), n >= 0, String(n) == middle { numbers.append(n) }
            }
            guard !numbers.isEmpty else {
                throw PipelineError("poses: \(url.path) holds no frame_<n>_densepose.npy files")
            }
            frameNumbers = numbers.sorted()
            stacked = nil
        } else {
            origin = .stacked(url)
            let array = try NPY.read(url, maxElements: NPY.maxStackedElements)
            guard array.shape.count == 4, array.shape[1] == 2, array.shape[0] > 0 else {
                throw PipelineError("\(url.path): stacked poses have shape \(array.shape), expected (N, 2, H, W)")
            }
            stacked = array
            frameNumbers = Array(0..<array.shape[0])
        }
    }

    /// Pose `n` (read once, then cached).
    public func pose(_ n: Int) throws -> Pose {
        if let p = cache.withLock({ $0[n] }) { return p }
        let p: Pose
        switch origin {
        case .directory(let dir):
            p = try Pose(npy: dir.appendingPathComponent(Self.fileName(frame: n)))
        case .stacked(let url):
            guard let s = stacked, n >= 0, n < s.shape[0] else {
                throw PipelineError("\(url.path): no pose for frame \(n)")
            }
            let plane = 2 * s.shape[2] * s.shape[3]
            p = Pose(height: s.shape[2], width: s.shape[3], values: Array(s.values[(n * plane)..<((n + 1) * plane)]))
        }
        cache.withLock { $0[n] = p }
        return p
    }

    /// Pose frame numbers of the window around `n`: n-k..n+k, a missing neighbour replaced by n itself.
    public static func windowFrames(center n: Int, size: Int, available: Set<Int>) -> [Int] {
        let k = size / 2
        return (-k...k).map { available.contains(n + $0) ? n + $0 : n }
    }

    /// The poses of frame `n`'s window, in order.
    public func window(center n: Int, size: Int) throws -> [Pose] {
        guard frameNumbers.contains(n) else {
            throw PipelineError("poses: frame \(n) has no pose (available: \(Self.describe(frameNumbers)))")
        }
        return try Self.windowFrames(center: n, size: size, available: Set(frameNumbers)).map { try pose($0) }
    }

    static func describe(_ numbers: [Int]) -> String {
        guard let first = numbers.first, let last = numbers.last else { return "none" }
        return numbers.count == last - first + 1 ? "\(first)-\(last)" : "\(numbers.count) frames from \(first) to \(last)"
    }
}

/// Turns a window of poses into the UNet's pose channels (dreampose-inference.md, "The pose window").
public enum PoseConditioning {
    /// poses (each [2, H0, W0]) -> [1, 2*len, h, w]: bilinear to the frame size (align_corners false),
    /// p * 2 - 1, stacked in window order, then NEAREST down to the latent size.
    public static func window(_ poses: [Pose], frameHeight: Int, frameWidth: Int,
                              latentHeight: Int, latentWidth: Int) -> Tensor {
        var planes: [Tensor] = []
        for p in poses {
            let x = Tensor(shape: [1, 2, p.height, p.width], data: p.values)
            var up = TorchResample.bilinear(x, height: frameHeight, width: frameWidth)   // [1, 2, H, W]
            up.data.withUnsafeMutableBufferPointer { b in
                for i in b.indices { b[i] = b[i] * 2 - 1 }
            }
            planes.append(up)
        }
        let full = concat(planes, axis: 1)                                               // [1, 10, H, W]
        return TorchResample.nearest(full, height: latentHeight, width: latentWidth)    // [1, 10, h, w]
    }
}

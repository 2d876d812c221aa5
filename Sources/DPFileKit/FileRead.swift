// Whole-file reads by path with plain POSIX calls: the coordinator reads a pose file per frame it
// dispatches, and Foundation's URL-based read costs several times the read itself (URL parsing,
// attribute lookups).
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct FileReadError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public var description: String { "cannot read \(path): \(message)" }
}

public enum FileRead {
    /// The bytes of the regular file at `path` (at most `maxBytes`).
    public static func contents(ofFile path: String, maxBytes: Int = 1 << 30) throws -> Data {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileReadError(path: path, message: String(cString: strerror(errno))) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw FileReadError(path: path, message: String(cString: strerror(errno))) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw FileReadError(path: path, message: "not a regular file") }
        let size = Int(info.st_size)
        guard size <= maxBytes else { throw FileReadError(path: path, message: "\(size) bytes, more than the \(maxBytes) allowed") }
        var data = Data(count: size)
        var done = 0
        try data.withUnsafeMutableBytes { (buffer: UnsafeMutableRawBufferPointer) in
            while done < size {
                let n = read(fd, buffer.baseAddress! + done, size - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw FileReadError(path: path, message: String(cString: strerror(errno)))
                }
                if n == 0 { break }
                done += n
            }
        }
        guard done == size else { throw FileReadError(path: path, message: "file shrank from \(size) to \(done) bytes while being read") }
        return data
    }
}

// Crash-safe file writing: a temporary file in the destination's folder, fsync, then rename(2).
// A reader sees either the old file or the complete new one, never a half-written file.
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An I/O failure while writing a file; `description` names the file and the step that failed.
public struct FileWriteError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "cannot write \(path): \(message)" }
}

public enum AtomicFile {
    /// Writes `data` to `url` atomically: temp file `.<name>.tmp-<pid>-<random>` in the same folder,
    /// write + fsync, rename over `url`, then fsync the folder (best effort). On any error the temp file
    /// is removed and `url` is left untouched.
    public static func write(_ data: Data, to url: URL) throws {
        let path = url.path
        let folder = url.deletingLastPathComponent().path
        let tempPath = folder + "/." + url.lastPathComponent
            + ".tmp-\(getpid())-\(UInt32.random(in: 0 ... .max))"

        let fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 { throw FileWriteError(path: path, message: "create \(tempPath): \(errnoText())") }
        var closed = false
        var renamed = false
        defer {
            if !closed { close(fd) }
            if !renamed { unlink(tempPath) }
        }

        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            var offset = 0
            while offset < raw.count {
                let n = posixWrite(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw FileWriteError(path: path, message: "write \(tempPath): \(errnoText())")
                }
                offset += n
            }
        }
        if fsync(fd) != 0 { throw FileWriteError(path: path, message: "fsync \(tempPath): \(errnoText())") }
        closed = true
        if close(fd) != 0 { throw FileWriteError(path: path, message: "close \(tempPath): \(errnoText())") }
        if rename(tempPath, path) != 0 {
            throw FileWriteError(path: path, message: "rename \(tempPath) -> \(path): \(errnoText())")
        }
        renamed = true

        // Make the rename itself durable. Failure here does not undo the write, so it is not an error.
        let dirFD = open(folder.isEmpty ? "." : folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 {
            _ = fsync(dirFD)
            close(dirFD)
        }
    }

    static func errnoText() -> String {
        String(cString: strerror(errno))
    }
}

/// write(2) (a free function so that `AtomicFile.write` does not shadow it).
private func posixWrite(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, bytes, count)
}

// Crash-safe file writing: a temporary file in the destination's folder, write + fsync, then
// rename(2) (or link(2) when the destination must not exist yet), then fsync the folder.
// A reader sees either no file / the old file, or the complete new one - never a half-written file.
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An I/O failure while writing a file; `description` names the file and the step that failed.
public struct DurableFileError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    /// True when the write was refused because the destination already exists (`writeNew`).
    public let alreadyExists: Bool
    public init(path: String, message: String, alreadyExists: Bool = false) {
        self.path = path
        self.message = message
        self.alreadyExists = alreadyExists
    }
    public var description: String { "cannot write \(path): \(message)" }
}

public enum DurableFile {
    /// Writes `data` to `url`, replacing any existing file atomically.
    public static func write(_ data: Data, to url: URL) throws {
        try write(data, to: url, replace: true)
    }

    /// Writes `data` to `url` only if nothing exists there yet; the check and the creation are one
    /// atomic step (link(2)), so two writers can never both succeed. Throws with `alreadyExists`
    /// set when the destination exists.
    public static func writeNew(_ data: Data, to url: URL) throws {
        try write(data, to: url, replace: false)
    }

    /// fsync the folder at `path` so that a rename/link/unlink in it survives a crash (best effort).
    public static func syncDirectory(_ path: String) {
        let dirFD = open(path.isEmpty ? "." : path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 {
            _ = fsync(dirFD)
            close(dirFD)
        }
    }

    /// A temp-file name next to `url`: `.<name>.tmp-<pid>-<random>` (hidden, unique).
    public static func temporaryURL(besides url: URL) -> URL {
        url.deletingLastPathComponent().appendingPathComponent(temporaryName(besides: url.lastPathComponent))
    }

    /// The temp file name for a file named `name` in the same folder: `.<name>.tmp-<pid>-<random>`.
    public static func temporaryName(besides name: String) -> String {
        "." + name + ".tmp-" + String(processID) + "-" + String(UInt32.random(in: 0 ... .max))
    }

    private static let processID = getpid()

    private static func write(_ data: Data, to url: URL, replace: Bool) throws {
        let path = url.path
        let folder = url.deletingLastPathComponent().path
        let tempPath = temporaryURL(besides: url).path

        let fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 { throw DurableFileError(path: path, message: "create \(tempPath): \(errnoText())") }
        var closed = false
        var tempGone = false
        defer {
            if !closed { close(fd) }
            if !tempGone { unlink(tempPath) }
        }

        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            var offset = 0
            while offset < raw.count {
                let n = posixWrite(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw DurableFileError(path: path, message: "write \(tempPath): \(errnoText())")
                }
                offset += n
            }
        }
        if fsync(fd) != 0 { throw DurableFileError(path: path, message: "fsync \(tempPath): \(errnoText())") }
        closed = true
        if close(fd) != 0 { throw DurableFileError(path: path, message: "close \(tempPath): \(errnoText())") }
        if replace {
            if rename(tempPath, path) != 0 {
                throw DurableFileError(path: path, message: "rename \(tempPath) -> \(path): \(errnoText())")
            }
            tempGone = true
        } else {
            if link(tempPath, path) != 0 {
                let exists = errno == EEXIST
                throw DurableFileError(path: path,
                                       message: exists ? "already exists (refusing to overwrite)"
                                           : "link \(tempPath) -> \(path): \(errnoText())",
                                       alreadyExists: exists)
            }
            // The temp name is removed by the defer; the data lives on under `path`.
        }
        syncDirectory(folder)
    }

    static func errnoText() -> String {
        String(cString: strerror(errno))
    }
}

/// write(2) (a free function so that `DurableFile.write` does not shadow it).
private func posixWrite(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, bytes, count)
}

// Writes Float32 safetensors files (what RandomWeights hands out, test fixtures, converted models).

import DPTensor
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

#if canImport(Glibc)
private let posixWrite = Glibc.write
#else
private let posixWrite = Darwin.write
#endif

public enum SafeTensorsWriter {
    /// Writes `tensors` (in this order) as F32 to `url`, atomically: a temporary file in the same
    /// folder, fsync, then rename over `url`. The header is padded with spaces so that the data
    /// section starts at a multiple of 8 bytes. Names must be unique and not `__metadata__`.
    public static func write(_ tensors: [(String, Tensor)], to url: URL,
                             metadata: [String: String] = [:]) throws {
        let path = url.path
        let header = try headerBytes(tensors, metadata: metadata, file: path)

        let dir = url.deletingLastPathComponent().path
        let tmp = (dir.isEmpty ? "." : dir) + "/.\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw WeightsError.io(file: path, reason: "cannot create temporary file \(tmp): \(String(cString: strerror(errno)))")
        }
        var closed = false
        var renamed = false
        defer {
            if !closed { close(fd) }
            if !renamed { unlink(tmp) }
        }
        func put(_ p: UnsafeRawPointer, _ n: Int) throws {
            var done = 0
            while done < n {
                let r = posixWrite(fd, p + done, n - done)
                if r < 0 {
                    if errno == EINTR { continue }
                    throw WeightsError.io(file: path, reason: "write failed: \(String(cString: strerror(errno)))")
                }
                done += r
            }
        }

        var lengthLE = UInt64(header.count).littleEndian
        try withUnsafeBytes(of: &lengthLE) { try put($0.baseAddress!, 8) }
        try header.withUnsafeBytes { try put($0.baseAddress!, $0.count) }
        for (_, t) in tensors where t.count > 0 {
            #if _endian(little)
            try t.data.withUnsafeBytes { try put($0.baseAddress!, $0.count) }
            #else
            let le = t.data.map { $0.bitPattern.littleEndian }
            try le.withUnsafeBytes { try put($0.baseAddress!, $0.count) }
            #endif
        }
        guard fsync(fd) == 0 else {
            throw WeightsError.io(file: path, reason: "fsync failed: \(String(cString: strerror(errno)))")
        }
        closed = true
        guard close(fd) == 0 else {
            throw WeightsError.io(file: path, reason: "close failed: \(String(cString: strerror(errno)))")
        }
        guard rename(tmp, path) == 0 else {
            throw WeightsError.io(file: path, reason: "cannot rename \(tmp) into place: \(String(cString: strerror(errno)))")
        }
        renamed = true
    }

    /// The JSON header, space-padded so that 8 + header length is a multiple of 8.
    static func headerBytes(_ tensors: [(String, Tensor)], metadata: [String: String],
                            file: String) throws -> [UInt8] {
        var object: [String: Any] = [:]
        var offset = 0
        for (name, t) in tensors {
            guard name != "__metadata__" else {
                throw WeightsError.malformed(file: file, reason: "a tensor cannot be named __metadata__")
            }
            guard object[name] == nil else {
                throw WeightsError.malformed(file: file, reason: "tensor '\(name)' given twice")
            }
            guard t.shape.reduce(1, *) == t.data.count else {
                throw WeightsError.malformed(file: file, reason: "tensor '\(name)' shape \(t.shape) does not match its \(t.data.count) elements")
            }
            let bytes = 4 * t.count
            object[name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        if !metadata.isEmpty { object["__metadata__"] = metadata }
        var json: [UInt8]
        do {
            json = [UInt8](try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
        } catch {
            throw WeightsError.malformed(file: file, reason: "cannot encode the header: \(error)")
        }
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        return json
    }
}

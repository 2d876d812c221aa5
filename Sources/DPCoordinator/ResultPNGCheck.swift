// A worker's result is checked, not trusted (issue 12, item 3): before a frame is written the
// coordinator reads the PNG's structure - signature, IHDR (length, CRC, width and height equal to
// the job's frame size, 8-bit RGB, no interlace, as every dp-worker writes it), then every chunk's
// length up to IEND, which must end the data - and its size against a bound for that frame size.
// No pixels are decoded (the coordinator does not link libpng or the models); a result that fails
// is a failed attempt of the worker that sent it.
import Foundation

enum ResultPNGCheck {
    /// Largest frame side accepted (pixels); a model's dreampose.json beyond it is refused.
    static let maxSide = 16384

    static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// The largest PNG a `width` x `height` 8-bit RGB frame may take: the filtered rows stored
    /// uncompressed (deflate's "stored" blocks: 5 bytes per 65,535), zlib framing, a chunk header per
    /// 8 KiB IDAT at worst, plus 64 KiB for the other chunks. A compressed frame is far below it.
    static func maxBytes(width: Int, height: Int) -> Int {
        let (row, o1) = width.multipliedReportingOverflow(by: 3)
        let (raw, o2) = (row + 1).multipliedReportingOverflow(by: height)
        guard !o1, !o2 else { return 0 }
        return raw + raw / 64 + (64 << 10)
    }

    /// nil when `png` passes; otherwise what is wrong (the caller names the worker and frame).
    static func problem(_ png: Data, width: Int, height: Int) -> String? {
        let limit = maxBytes(width: width, height: height)
        guard png.count <= limit else {
            return "\(png.count) bytes, more than the \(limit) a \(width)x\(height) RGB PNG can take"
        }
        return png.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> String? in
            let b = raw.bindMemory(to: UInt8.self)
            guard b.count >= 8 + 25 + 12 else { return "\(b.count) bytes: too short for a PNG" }
            guard Array(b[0..<8]) == signature else { return "not a PNG (no PNG signature)" }
            func be32(_ at: Int) -> UInt32 {
                UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3])
            }
            guard be32(8) == 13, Array(b[12..<16]) == Array("IHDR".utf8) else { return "first chunk is not a 13-byte IHDR" }
            let crc = CRC32.checksum(UnsafeBufferPointer(rebasing: b[12..<29]))
            guard crc == be32(29) else { return "IHDR CRC \(be32(29)) does not match its bytes (\(crc))" }
            let w = Int(be32(16)), h = Int(be32(20))
            guard w == width, h == height else { return "\(w)x\(h) pixels, the job's frames are \(width)x\(height)" }
            guard b[24] == 8, b[25] == 2 else { return "bit depth \(b[24]), colour type \(b[25]); expected 8-bit RGB (8, 2)" }
            guard b[26] == 0, b[27] == 0, b[28] == 0 else { return "compression/filter/interlace \(b[26])/\(b[27])/\(b[28]), expected 0/0/0" }
            // Every chunk's length stays inside the data, and IEND ends it.
            var at = 33
            var sawData = false
            while true {
                guard at + 12 <= b.count else { return "chunk at byte \(at) runs past the end (no IEND)" }
                let length = Int(be32(at))
                guard length <= b.count - at - 12 else { return "chunk at byte \(at) declares \(length) bytes, past the end" }
                let type = Array(b[(at + 4)..<(at + 8)])
                if type == Array("IDAT".utf8) { sawData = true }
                if type == Array("IEND".utf8) {
                    guard length == 0, at + 12 == b.count else { return "IEND at byte \(at) is not the end of the data" }
                    break
                }
                at += 12 + length
            }
            return sawData ? nil : "no IDAT chunk"
        }
    }
}

/// CRC-32 (ISO 3309, as PNG uses), table-driven.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for byte in bytes { c = table[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBufferPointer { checksum($0) }
    }
}

// PNG files <-> RGBImage through libpng's simplified API (png_image_*; no setjmp needed).
//
// Reading aims at what Pillow's `Image.open(f).convert("RGB")` gives, which is what the reference
// pipeline feeds its models:
// * 8-bit files of every colour type (grey, palette, RGB, with or without alpha/tRNS) are decoded to
//   RGBA8 and the alpha channel is dropped (Pillow drops it too; no compositing).
// * 16-bit files are decoded to 16-bit values and reduced to their high byte, as Pillow does. libpng's
//   simplified API treats 16-bit data without a gAMA/sRGB chunk as linear, so this path applies no
//   transfer curve. (Translucent 16-bit pixels come back alpha-premultiplied from libpng; they are
//   un-premultiplied here, which can differ from Pillow by rounding.)
// * Known difference: libpng converts 8-bit files whose gAMA chunk is far from sRGB to sRGB; Pillow
//   ignores gAMA. Ordinary PNGs (no gAMA, or sRGB) are unaffected.
import CPNG
import DPFileKit
import Foundation

/// A PNG that could not be read or written; `description` names the file.
public struct PNGError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "PNG \(path): \(message)" }
}

public enum PNGCodec {
    // Upper bounds (a PNG comes from a client or a peer; SECURITY.md lists every input limit). A 74-byte
    // file can declare a 2^31 x 2^31 image: the IHDR is checked against these before libpng sees the file.
    /// Most pixels an image may have (16.7 M: 4096 x 4096; a 12 MP phone photo fits).
    public static let maxPixels = 1 << 24
    /// Longest side in pixels.
    public static let maxSide = 1 << 16
    /// Largest file `read` accepts.
    public static let maxFileBytes = 256 << 20

    /// Reads any PNG file and converts it to 8-bit RGB.
    public static func read(_ url: URL) throws -> RGBImage {
        let data: Data
        do {
            data = try FileRead.contents(ofFile: url.path, maxBytes: maxFileBytes)
        } catch {
            throw PNGError(path: url.path, message: "cannot read file: \(error)")
        }
        return try decode(data, name: url.path)
    }

    /// The size an image declares in its IHDR chunk (the first chunk, right after the 8-byte signature),
    /// checked against `maxSide` and `maxPixels`, read without libpng: nothing is allocated for a header
    /// that asks for too much.
    public static func checkHeader(_ data: Data, name: String = "<memory>") throws -> (width: Int, height: Int) {
        func fail(_ message: String) -> PNGError { PNGError(path: name, message: message) }
        let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        guard data.count >= 8 else {
            throw fail(data.isEmpty ? "empty file, expected a PNG signature" : "\(data.count) bytes, too short for a PNG")
        }
        let b = [UInt8](data.prefix(33))
        guard Array(b[0 ..< 8]) == signature else { throw fail("not a PNG (bad signature)") }
        guard b.count >= 33 else { throw fail("truncated: the file ends before the end of the IHDR chunk") }
        func be32(_ at: Int) -> UInt32 {
            UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3])
        }
        guard be32(8) == 13, Array(b[12 ..< 16]) == Array("IHDR".utf8) else {
            throw fail("the first chunk is not a 13-byte IHDR")
        }
        let width = Int(be32(16)), height = Int(be32(20))
        guard width >= 1, height >= 1 else { throw fail("image \(width)x\(height) is empty") }
        guard width <= maxSide, height <= maxSide, width * height <= maxPixels else {
            throw fail("image \(width)x\(height) is larger than allowed (at most \(maxSide) pixels a side and \(maxPixels) pixels)")
        }
        return (width, height)
    }

    /// Decodes PNG bytes (`name` is used in error messages only).
    public static func decode(_ data: Data, name: String = "<memory>") throws -> RGBImage {
        let declared = try checkHeader(data, name: name)
        return try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> RGBImage in
            var image = png_image()
            image.version = png_uint_32(PNG_IMAGE_VERSION)
            guard png_image_begin_read_from_memory(&image, raw.baseAddress, raw.count) != 0 else {
                throw PNGError(path: name, message: "not a readable PNG (\(message(of: image)))")
            }
            let width = Int(image.width), height = Int(image.height)
            guard width == declared.width, height == declared.height else {
                png_image_free(&image)
                throw PNGError(path: name, message: "libpng read \(width)x\(height), the IHDR says \(declared.width)x\(declared.height)")
            }
            let fileFormat = image.format
            let sixteenBit = fileFormat & PNG_FORMAT_FLAG_LINEAR != 0
            let channels = 4  // always read with alpha so that libpng never composites it away
            let (samples, overflow) = (width * channels).multipliedReportingOverflow(by: height)
            guard !overflow, samples < Int(Int32.max) else {
                png_image_free(&image)
                throw PNGError(path: name, message: "image \(width)x\(height) is too large")
            }
            var rgb = [UInt8](repeating: 0, count: width * height * 3)
            if sixteenBit {
                image.format = png_uint_32(PNG_FORMAT_FLAG_LINEAR | PNG_FORMAT_FLAG_COLOR | PNG_FORMAT_FLAG_ALPHA)
                var buffer = [UInt16](repeating: 0, count: samples)
                let ok = buffer.withUnsafeMutableBytes {
                    png_image_finish_read(&image, nil, $0.baseAddress, png_int_32(width * channels), nil)
                }
                guard ok != 0 else {
                    throw PNGError(path: name, message: "decoding 16-bit image data failed (\(message(of: image)))")
                }
                for p in 0 ..< width * height {
                    let a = UInt32(buffer[p * 4 + 3])
                    for c in 0 ..< 3 {
                        var v = UInt32(buffer[p * 4 + c])
                        if a != 65535 {  // libpng premultiplies 16-bit colour by alpha: undo it
                            v = a == 0 ? 0 : min(65535, (v * 65535 + a / 2) / a)
                        }
                        rgb[p * 3 + c] = UInt8(v >> 8)
                    }
                }
            } else {
                image.format = png_uint_32(PNG_FORMAT_FLAG_COLOR | PNG_FORMAT_FLAG_ALPHA)
                var buffer = [UInt8](repeating: 0, count: samples)
                let ok = buffer.withUnsafeMutableBytes {
                    png_image_finish_read(&image, nil, $0.baseAddress, png_int_32(width * channels), nil)
                }
                guard ok != 0 else {
                    throw PNGError(path: name, message: "decoding image data failed (\(message(of: image)))")
                }
                for p in 0 ..< width * height {
                    rgb[p * 3] = buffer[p * 4]
                    rgb[p * 3 + 1] = buffer[p * 4 + 1]
                    rgb[p * 3 + 2] = buffer[p * 4 + 2]
                }
            }
            return RGBImage(width: width, height: height, pixels: rgb)
        }
    }

    /// Encodes an image as an 8-bit RGB PNG.
    public static func encode(_ img: RGBImage) throws -> Data {
        guard img.width > 0, img.height > 0 else {
            throw PNGError(path: "<memory>", message: "cannot encode an empty \(img.width)x\(img.height) image")
        }
        precondition(img.pixels.count == img.width * img.height * 3, "RGBImage pixel count does not match its size")
        func header() -> png_image {
            var image = png_image()
            image.version = png_uint_32(PNG_IMAGE_VERSION)
            image.width = png_uint_32(img.width)
            image.height = png_uint_32(img.height)
            image.format = png_uint_32(PNG_FORMAT_FLAG_COLOR)
            return image
        }
        let stride = png_int_32(img.width * 3)
        return try img.pixels.withUnsafeBytes { (pixels: UnsafeRawBufferPointer) -> Data in
            // One compression pass into a buffer that fits any PNG of this size (the filtered rows
            // stored uncompressed, plus chunk and zlib framing); libpng says so if it still does not
            // fit, and then the second pass gets the size it asked for.
            let raw = img.height * (img.width * 3 + 1)
            var capacity = png_alloc_size_t(raw + raw / 256 + 1024)
            for _ in 0 ..< 2 {
                var image = header()
                var out = Data(count: Int(capacity))
                var written = capacity
                let ok = out.withUnsafeMutableBytes {
                    png_image_write_to_memory(&image, $0.baseAddress, &written, 0, pixels.baseAddress, stride, nil)
                }
                if ok != 0 {
                    out.count = Int(written)
                    return out
                }
                guard written > capacity else {
                    throw PNGError(path: "<memory>", message: "libpng could not encode (\(message(of: image)))")
                }
                capacity = written
            }
            throw PNGError(path: "<memory>", message: "libpng could not encode: buffer size kept growing")
        }
    }

    /// An uncompressed PNG of `img` (8-bit RGB, filter 0, zlib "stored" blocks), written here without
    /// libpng or zlib: for tiny images, where setting up a deflate stream costs far more than the
    /// bytes it saves (the synthetic test renderer's 8x8 frames). Any PNG decoder reads it;
    /// `encode` stays the choice for real frames.
    public static func encodeStored(_ img: RGBImage) -> Data {
        precondition(img.width > 0 && img.height > 0 && img.pixels.count == img.width * img.height * 3,
                     "RGBImage pixel count does not match its size")
        let rowBytes = img.width * 3 + 1
        let raw = img.height * rowBytes
        let blocks = max(1, (raw + 65534) / 65535)
        let idatLength = 2 + raw + 5 * blocks + 4
        var out = [UInt8]()
        out.reserveCapacity(8 + 25 + 12 + idatLength + 12)
        out += [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        func be32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xff), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
        func chunk(_ type: String, _ body: (inout [UInt8]) -> Void) {
            out += be32(0)  // length, patched below
            let start = out.count
            out += Array(type.utf8)
            body(&out)
            let length = out.count - start - 4
            out.replaceSubrange(start - 4 ..< start, with: be32(length))
            out += be32(Int(PNGCRC.crc32(out[start...])))
        }
        chunk("IHDR") { $0 += be32(img.width) + be32(img.height) + [8, 2, 0, 0, 0] }
        chunk("IDAT") { data in
            data += [0x78, 0x01]  // zlib header: deflate, 32 KiB window, no dictionary, fastest
            var a: UInt32 = 1, b: UInt32 = 0  // Adler-32 of the uncompressed stream
            var remaining = raw
            var row = 0, column = -1  // column -1: the row's filter byte
            for block in 0 ..< blocks {
                let n = min(remaining, 65535)
                remaining -= n
                data += [block == blocks - 1 ? 1 : 0, UInt8(n & 0xff), UInt8(n >> 8), UInt8(~n & 0xff), UInt8(~n >> 8 & 0xff)]
                for _ in 0 ..< n {
                    let byte: UInt8 = column < 0 ? 0 : img.pixels[row * img.width * 3 + column]
                    data.append(byte)
                    a = (a + UInt32(byte)) % 65521
                    b = (b + a) % 65521
                    column += 1
                    if column == img.width * 3 { column = -1; row += 1 }
                }
            }
            data += be32(Int(b << 16 | a))
        }
        chunk("IEND") { _ in }
        return Data(out)
    }

    /// Encodes and writes atomically (temp file in the same folder, fsync, rename): `url` is either
    /// untouched or holds the complete new PNG.
    public static func write(_ img: RGBImage, to url: URL) throws {
        let data: Data
        do {
            data = try encode(img)
        } catch let e as PNGError {
            throw PNGError(path: url.path, message: e.message)
        }
        try DurableFile.write(data, to: url)
    }

    /// libpng's message buffer (char[64]) as a String.
    private static func message(of image: png_image) -> String {
        var copy = image.message
        let text = withUnsafeBytes(of: &copy) { raw -> String in
            let bytes = raw.bindMemory(to: UInt8.self)
            let end = bytes.firstIndex(of: 0) ?? bytes.count
            return String(decoding: bytes[..<end], as: UTF8.self)
        }
        return text.isEmpty ? "no libpng message" : text
    }
}

/// CRC-32 (ISO 3309, as PNG chunks use it), table-driven.
enum PNGCRC {
    static let table: [UInt32] = (0 ..< 256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0 ..< 8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var c: UInt32 = 0xFFFF_FFFF
        for byte in bytes { c = table[Int((c ^ UInt32(byte)) & 0xff)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}

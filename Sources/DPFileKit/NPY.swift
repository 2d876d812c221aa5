// NumPy .npy files (format versions 1.0, 2.0, 3.0): the DensePose pose maps come as these.
//
// Reads C-order little-endian float64 (`<f8`) or float32 (`<f4`) arrays; float64 values are rounded to
// Float32 (`Float(double)`), as the reference does with `.astype(float32)`. Everything else (Fortran
// order, big-endian, other dtypes, structured dtypes, truncated data, bad magic) is an error naming the
// file and what was expected. Writes float32 arrays as version 1.0.
import Foundation


/// A malformed or unsupported .npy file; `description` names the file.
public struct NPYError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "NPY \(path): \(message)" }
}

public enum NPY {
    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // "\x93NUMPY"

    // Upper bounds (an .npy comes from a client or a peer; SECURITY.md lists every input limit).
    /// Most elements an array may have: a 2 x 4096 x 4096 pose map is 2^25.
    public static let maxElements = 1 << 26
    /// Most dimensions (numpy itself allows 64).
    public static let maxDimensions = 32
    /// Longest header dictionary (numpy's own reader refuses more than 10000 bytes by default).
    public static let maxHeaderBytes = 1 << 16
    /// Largest file `read` accepts: the largest float64 array plus its header.
    public static let maxFileBytes = 8 * maxElements + 12 + maxHeaderBytes

    /// Most elements of a stacked pose file (N, 2, H, W), which `PoseSource` reads whole: 2^30 (4 GiB of
    /// float32 once decoded; 800 frames of 640x512).
    public static let maxStackedElements = 1 << 30

    /// Reads an .npy file of float64 or float32 values in C order (at most `maxElements` of them).
    public static func read(_ url: URL, maxElements: Int = NPY.maxElements) throws -> (shape: [Int], values: [Float]) {
        let data: Data
        do {
            data = try FileRead.contents(ofFile: url.path, maxBytes: 8 * maxElements + 12 + maxHeaderBytes)
        } catch {
            throw NPYError(path: url.path, message: "cannot read file: \(error)")
        }
        return try decode(data, name: url.path, maxElements: maxElements)
    }

    /// Decodes .npy bytes (`name` is used in error messages only); more than `maxElements` is an error.
    public static func decode(_ data: Data, name: String = "<memory>",
                              maxElements: Int = NPY.maxElements) throws -> (shape: [Int], values: [Float]) {
        let bytes = [UInt8](data)
        func fail(_ message: String) -> NPYError { NPYError(path: name, message: message) }

        guard bytes.count >= 10, Array(bytes[0 ..< 6]) == magic else {
            let found = bytes.prefix(6).map { String(format: "%02x", $0) }.joined(separator: " ")
            throw fail("bad magic: expected 93 4e 55 4d 50 59 (\"\\x93NUMPY\"), found [\(found)]")
        }
        let major = bytes[6], minor = bytes[7]
        let headerLength: Int, headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw fail("truncated: file ends inside the version \(major) header length") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw fail("unsupported format version \(major).\(minor): expected 1.0, 2.0 or 3.0")
        }
        guard minor == 0 else { throw fail("unsupported format version \(major).\(minor): expected 1.0, 2.0 or 3.0") }
        guard headerLength <= maxHeaderBytes else {
            throw fail("header length \(headerLength) is more than the \(maxHeaderBytes) bytes allowed")
        }
        guard headerStart + headerLength <= bytes.count else {
            throw fail("truncated: header needs \(headerLength) bytes, only \(bytes.count - headerStart) present")
        }
        let headerBytes = bytes[headerStart ..< headerStart + headerLength]
        // v1/v2 headers are latin-1, v3 UTF-8; a valid header dict is ASCII in all of them.
        guard let headerText = major == 3 ? String(bytes: headerBytes, encoding: .utf8)
                                          : String(bytes: headerBytes, encoding: .isoLatin1) else {
            throw fail("header is not valid \(major == 3 ? "UTF-8" : "latin-1") text")
        }
        let header: NPYHeader
        do {
            header = try NPYHeader.parse(headerText)
        } catch let e as NPYHeaderError {
            throw fail("bad header \(headerText.trimmingCharacters(in: .whitespacesAndNewlines)): \(e.message)")
        }

        if header.fortranOrder {
            throw fail("fortran_order is True: expected a C-order array (save it with np.ascontiguousarray)")
        }
        let itemSize: Int
        switch header.descr {
        case "<f8": itemSize = 8
        case "<f4": itemSize = 4
        case ">f8", ">f4":
            throw fail("dtype '\(header.descr)' is big-endian: expected little-endian '<f8' or '<f4'")
        case "|f8", "|f4", "=f8", "=f4":
            // numpy never writes these for multi-byte floats ('|' means "byte order not applicable");
            // refuse rather than guess the byte order.
            throw fail("dtype '\(header.descr)' has no explicit byte order: expected '<f8' or '<f4'")
        default:
            throw fail("dtype '\(header.descr)' is not supported: expected float64 '<f8' or float32 '<f4'")
        }

        // Checked: a shape whose product (or byte size) passes 2^63 once wrapped around and the copy below
        // wrote past its buffer. Each step is bounded, so neither product can overflow.
        guard header.shape.count <= maxDimensions else {
            throw fail("shape has \(header.shape.count) dimensions, at most \(maxDimensions) allowed")
        }
        var count = 1
        for d in header.shape {
            let (c, o) = count.multipliedReportingOverflow(by: d)
            guard !o, c <= maxElements else {
                throw fail("shape \(header.shape) has more than the \(maxElements) elements allowed")
            }
            count = c
        }
        let dataStart = headerStart + headerLength
        let (expected, overflow) = count.multipliedReportingOverflow(by: itemSize)
        guard !overflow else { throw fail("shape \(header.shape) is too large") }
        let present = bytes.count - dataStart
        guard present >= expected else {
            throw fail("truncated data: shape \(header.shape) of \(header.descr) needs \(expected) bytes, found \(present)")
        }
        guard present == expected else {
            throw fail("\(present - expected) unexpected bytes after the data: shape \(header.shape) of "
                       + "\(header.descr) needs exactly \(expected) bytes")
        }

        var values = [Float](repeating: 0, count: count)
        bytes.withUnsafeBytes { raw in
            let base = raw.baseAddress! + dataStart
            if itemSize == 8 {
                for i in 0 ..< count {
                    let bits = UInt64(littleEndian: (base + i * 8).loadUnaligned(as: UInt64.self))
                    values[i] = Float(Double(bitPattern: bits))
                }
            } else {
                for i in 0 ..< count {
                    let bits = UInt32(littleEndian: (base + i * 4).loadUnaligned(as: UInt32.self))
                    values[i] = Float(bitPattern: bits)
                }
            }
        }
        return (header.shape, values)
    }

    /// Encodes a float32 C-order array as .npy version 1.0 (`<f4`), header padded to 64 bytes.
    public static func encode(shape: [Int], values: [Float]) -> Data {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        precondition(values.count == shape.reduce(1, *),
                     "NPY.encode: \(values.count) values for shape \(shape)")
        let shapeText: String
        switch shape.count {
        case 0: shapeText = "()"
        case 1: shapeText = "(\(shape[0]),)"
        default: shapeText = "(" + shape.map(String.init).joined(separator: ", ") + ")"
        }
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shapeText), }"
        let unpadded = 10 + header.utf8.count + 1  // magic+version+length, text, "\n"
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out = Data(magic)
        out.append(contentsOf: [1, 0])
        let length = UInt16(header.utf8.count)
        out.append(contentsOf: [UInt8(length & 0xFF), UInt8(length >> 8)])
        out.append(contentsOf: Array(header.utf8))
        out.reserveCapacity(out.count + values.count * 4)
        for v in values {
            let b = v.bitPattern.littleEndian
            out.append(contentsOf: [UInt8(b & 0xFF), UInt8((b >> 8) & 0xFF), UInt8((b >> 16) & 0xFF), UInt8(b >> 24)])
        }
        return out
    }

    /// Writes a float32 array as .npy 1.0, atomically.
    public static func write(shape: [Int], values: [Float], to url: URL) throws {
        try DurableFile.write(encode(shape: shape, values: values), to: url)
    }
}

// MARK: - Header dictionary

struct NPYHeaderError: Error {
    let message: String
}

/// The three keys of an .npy header, parsed from its Python dict literal, e.g.
/// `{'descr': '<f8', 'fortran_order': False, 'shape': (2, 100, 60), }`.
struct NPYHeader {
    var descr: String
    var fortranOrder: Bool
    var shape: [Int]

    private enum Value {
        case string(String), bool(Bool), tuple([Int])
    }

    static func parse(_ text: String) throws -> NPYHeader {
        var p = Parser(Array(text.unicodeScalars))
        var dict: [String: Value] = [:]
        p.skipSpace()
        try p.expect("{")
        while true {
            p.skipSpace()
            if p.peek == "}" { p.advance(); break }
            let key = try p.string()
            p.skipSpace()
            try p.expect(":")
            p.skipSpace()
            let value = try p.value()
            if dict[key] != nil { throw NPYHeaderError(message: "key '\(key)' appears twice") }
            dict[key] = value
            p.skipSpace()
            if p.peek == "," { p.advance(); continue }
            p.skipSpace()
            try p.expect("}")
            break
        }
        p.skipSpace()
        guard p.atEnd else { throw NPYHeaderError(message: "unexpected text after the dictionary") }

        let expectedKeys: Set<String> = ["descr", "fortran_order", "shape"]
        guard Set(dict.keys) == expectedKeys else {
            throw NPYHeaderError(message: "keys \(dict.keys.sorted()), expected exactly \(expectedKeys.sorted())")
        }
        guard case let .string(descr)? = dict["descr"] else {
            throw NPYHeaderError(message: "'descr' must be a dtype string (structured dtypes are not supported)")
        }
        guard case let .bool(fortran)? = dict["fortran_order"] else {
            throw NPYHeaderError(message: "'fortran_order' must be True or False")
        }
        guard case let .tuple(shape)? = dict["shape"] else {
            throw NPYHeaderError(message: "'shape' must be a tuple of integers")
        }
        return NPYHeader(descr: descr, fortranOrder: fortran, shape: shape)
    }

    private struct Parser {
        let s: [Unicode.Scalar]
        var i = 0
        init(_ s: [Unicode.Scalar]) { self.s = s }

        var atEnd: Bool { i >= s.count }
        var peek: Unicode.Scalar? { i < s.count ? s[i] : nil }
        mutating func advance() { i += 1 }
        mutating func skipSpace() {
            while let c = peek, c == " " || c == "\t" || c == "\n" || c == "\r" { i += 1 }
        }
        mutating func expect(_ c: Unicode.Scalar) throws {
            guard peek == c else {
                throw NPYHeaderError(message: "expected '\(c)' at offset \(i), found \(peek.map { "'\($0)'" } ?? "end")")
            }
            i += 1
        }
        mutating func string() throws -> String {
            guard let q = peek, q == "'" || q == "\"" else {
                throw NPYHeaderError(message: "expected a quoted string at offset \(i)")
            }
            i += 1
            var out = ""
            while let c = peek, c != q {
                if c == "\\" { throw NPYHeaderError(message: "escapes in strings are not supported") }
                out.unicodeScalars.append(c)
                i += 1
            }
            try expect(q)
            return out
        }
        mutating func integer() throws -> Int {
            let start = i
            while let c = peek, ("0" ... "9").contains(c) { i += 1 }
            guard i > start, let v = Int(String(String.UnicodeScalarView(s[start ..< i]))) else {
                throw NPYHeaderError(message: "expected a non-negative integer at offset \(start)")
            }
            if peek == "L" { i += 1 }  // Python 2 long suffix, written by very old numpy
            return v
        }
        mutating func value() throws -> Value {
            guard let c = peek else { throw NPYHeaderError(message: "unexpected end of header") }
            if c == "'" || c == "\"" { return .string(try string()) }
            if c == "[" { throw NPYHeaderError(message: "structured dtypes (a list 'descr') are not supported") }
            if c == "(" {
                i += 1
                var dims: [Int] = []
                while true {
                    skipSpace()
                    if peek == ")" { i += 1; break }
                    dims.append(try integer())
                    skipSpace()
                    if peek == "," { i += 1; continue }
                    try expect(")")
                    break
                }
                return .tuple(dims)
            }
            for (word, v) in [("True", true), ("False", false)] {
                let w = Array(word.unicodeScalars)
                if i + w.count <= s.count, Array(s[i ..< i + w.count]) == w {
                    i += w.count
                    return .bool(v)
                }
            }
            throw NPYHeaderError(message: "unsupported value at offset \(i) (expected a string, tuple or bool)")
        }
    }
}

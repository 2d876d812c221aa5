// A memory-mapped safetensors file (format of huggingface/safetensors):
//
//   [8 bytes: header length N, little-endian u64][N bytes: JSON header][data section]
//
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the start of the data section) and may hold "__metadata__": {string: string}.
// The file is mapped read-only (never read into memory as a whole); a tensor is copied out
// (and converted to Float32) only when asked for. The header is fully validated at init.

import DPTensor
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Element types of the safetensors format.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case F32, F16, BF16
    case F64, I64, U64, I32, U32, I16, U16, I8, U8, BOOL
    case F8_E5M2, F8_E4M3

    public var itemSize: Int {
        switch self {
        case .F64, .I64, .U64: return 8
        case .F32, .I32, .U32: return 4
        case .F16, .BF16, .I16, .U16: return 2
        case .I8, .U8, .BOOL, .F8_E5M2, .F8_E4M3: return 1
        }
    }

    /// The engine computes in Float32 and converts these at load time.
    public var isSupportedFloat: Bool { self == .F32 || self == .F16 || self == .BF16 }
}

/// A read-only mapping of a whole file; unmapped when the last reference goes.
final class MappedFile: @unchecked Sendable {   // immutable after init
    let base: UnsafeRawPointer?
    let size: Int

    init(path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw WeightsError.io(file: path, reason: "cannot open: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw WeightsError.io(file: path, reason: "cannot stat: \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw WeightsError.io(file: path, reason: "not a regular file")
        }
        size = Int(st.st_size)
        if size == 0 { base = nil; return }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw WeightsError.io(file: path, reason: "cannot mmap \(size) bytes: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }
}

public struct SafeTensorsFile: @unchecked Sendable {   // immutable; the mapping is read-only
    /// Largest header accepted (the reference implementation's limit).
    public static let maxHeaderBytes = 100 << 20

    struct Entry {
        var name: String
        var dtype: SafeTensorsDType
        var shape: [Int]
        var begin: Int   // absolute file offset
        var end: Int
    }

    public let url: URL
    private let mapping: MappedFile
    private let entries: [String: Entry]
    private let order: [String]
    /// The `__metadata__` table of the header (empty when absent).
    public let metadata: [String: String]

    /// Maps the file and validates its header (see the checks in `parseHeader`).
    public init(url: URL) throws {
        self.url = url
        let path = url.path
        mapping = try MappedFile(path: path)
        let parsed = try Self.parseHeader(base: mapping.base, size: mapping.size, file: path)
        var table: [String: Entry] = [:]
        for e in parsed.entries { table[e.name] = e }
        entries = table
        order = parsed.entries.sorted { ($0.begin, $0.name) < ($1.begin, $1.name) }.map(\.name)
        metadata = parsed.metadata
    }

    /// Tensor names in data order.
    public var names: [String] { order }

    public func shape(of name: String) -> [Int]? { entries[name]?.shape }

    public func dtype(of name: String) -> SafeTensorsDType? { entries[name]?.dtype }

    /// The tensor `name` as Float32 (F16 and BF16 are converted exactly).
    public func tensor(_ name: String) throws -> Tensor {
        guard let e = entries[name] else {
            throw WeightsError.missingKey(file: url.path, key: name, expectedShape: [])
        }
        guard e.dtype.isSupportedFloat else {
            throw WeightsError.malformed(
                file: url.path,
                reason: "tensor '\(name)' has dtype \(e.dtype.rawValue); only F32, F16 and BF16 can be loaded")
        }
        let count = e.shape.reduce(1, *)
        guard count > 0, let base = mapping.base else { return Tensor(zeros: e.shape) }
        let src = base + e.begin
        let data = [Float](unsafeUninitializedCapacity: count) { out, initialized in
            switch e.dtype {
            case .F32:
                #if _endian(little)
                UnsafeMutableRawPointer(out.baseAddress!).copyMemory(from: src, byteCount: count * 4)
                #else
                for i in 0..<count {
                    out[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                }
                #endif
            case .F16:
                HalfPrecision.f16Table.withUnsafeBufferPointer { table in
                    for i in 0..<count {
                        let h = UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                        out[i] = table[Int(h)]
                    }
                }
            case .BF16:
                for i in 0..<count {
                    let h = UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                    out[i] = HalfPrecision.float(fromBF16: h)
                }
            default:
                preconditionFailure("unreachable: dtype checked above")
            }
            initialized = count
        }
        return Tensor(shape: e.shape, data: data)
    }

    // MARK: - Header validation

    private struct ParsedHeader {
        var entries: [Entry]
        var metadata: [String: String]
    }

    /// Checks the header of a whole safetensors file held in memory (`bytes`), as `init(url:)` checks a
    /// mapped file; returns the tensor names in data order. For tests and the fuzz targets.
    public static func validateHeader(_ bytes: Data, file: String = "<memory>") throws -> [String] {
        try bytes.withUnsafeBytes { raw in
            try parseHeader(base: raw.count > 0 ? raw.baseAddress : nil, size: raw.count, file: file)
                .entries.sorted { ($0.begin, $0.name) < ($1.begin, $1.name) }.map(\.name)
        }
    }

    /// Most dimensions a tensor may have.
    public static let maxDimensions = 8
    /// Most elements a tensor may declare, counting a 0 dimension as 1 (so that no product of its
    /// dimensions, e.g. a stride, can overflow later).
    public static let maxElements = 1 << 40

    /// Checks: the file holds the 8-byte length and the whole header; the header is a JSON object;
    /// every tensor has a known dtype, a shape of non-negative integers and two offsets with
    /// `end - begin == product(shape) * itemsize`, inside the data section; no two tensors overlap;
    /// `__metadata__`, if present, maps strings to strings; at most `maxDimensions` dimensions and
    /// `maxElements` elements per tensor.
    private static func parseHeader(base: UnsafeRawPointer?, size: Int, file: String) throws -> ParsedHeader {
        func bad(_ reason: String) -> WeightsError { .malformed(file: file, reason: reason) }
        guard size >= 8, let base else {
            throw bad("file is \(size) bytes, too short to hold the 8-byte header length")
        }
        let headerLength = UInt64(littleEndian: base.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(size - 8) else {
            throw bad("header length \(headerLength) runs past the end of the file (\(size) bytes, truncated?)")
        }
        guard headerLength <= UInt64(maxHeaderBytes) else {
            throw bad("header length \(headerLength) exceeds the limit of \(maxHeaderBytes) bytes")
        }
        let n = Int(headerLength)
        guard n >= 2 else { throw bad("header of \(n) bytes cannot hold a JSON object") }
        let dataStart = 8 + n
        let dataSize = size - dataStart
        let headerBytes = Data(bytes: base + 8, count: n)

        let raw: RawHeader
        do {
            raw = try JSONDecoder().decode(RawHeader.self, from: headerBytes)
        } catch let problem as HeaderProblem {
            throw bad(problem.reason)
        } catch DecodingError.typeMismatch(_, _) {
            throw bad("header is not a JSON object")
        } catch {
            throw bad("header is not valid JSON (\(error))")
        }

        var entries: [Entry] = []
        entries.reserveCapacity(raw.tensors.count)
        for t in raw.tensors {
            let name = t.name
            guard let dtype = SafeTensorsDType(rawValue: t.dtype) else {
                throw bad("tensor '\(name)' has unknown dtype '\(t.dtype)' (supported: F32, F16, BF16)")
            }
            let shape = t.shape
            guard shape.allSatisfy({ $0 >= 0 }) else {
                throw bad("tensor '\(name)' has shape \(shape), expected non-negative integers")
            }
            guard shape.count <= maxDimensions else {
                throw bad("tensor '\(name)' has \(shape.count) dimensions, at most \(maxDimensions) allowed")
            }
            var extent = 1
            for d in shape {
                let (p, overflow) = extent.multipliedReportingOverflow(by: max(d, 1))
                guard !overflow, p <= maxElements else {
                    throw bad("tensor '\(name)' shape \(shape) has more than the \(maxElements) elements allowed")
                }
                extent = p
            }
            guard t.offsets.count == 2 else {
                throw bad("tensor '\(name)' has data_offsets \(t.offsets), expected [begin, end]")
            }
            let (begin, end) = (t.offsets[0], t.offsets[1])
            guard begin >= 0, begin <= end else {
                throw bad("tensor '\(name)' has data_offsets [\(begin), \(end)]: need 0 <= begin <= end")
            }
            guard end <= dataSize else {
                throw bad("tensor '\(name)' ends at data offset \(end), past the end of the data section (\(dataSize) bytes; truncated file?)")
            }
            var elements = 1
            for d in shape {
                let (p, overflow) = elements.multipliedReportingOverflow(by: d)
                guard !overflow else { throw bad("tensor '\(name)' shape \(shape) overflows") }
                elements = p
            }
            let (bytes, overflow) = elements.multipliedReportingOverflow(by: dtype.itemSize)
            guard !overflow, end - begin == bytes else {
                throw bad("tensor '\(name)' (\(t.dtype) \(shape)) needs \(elements) x \(dtype.itemSize) bytes, data_offsets [\(begin), \(end)] hold \(end - begin)")
            }
            entries.append(Entry(name: name, dtype: dtype, shape: shape,
                                 begin: dataStart + begin, end: dataStart + end))
        }

        // No overlap: sorted by begin, each non-empty tensor starts at or after the previous end.
        let sorted = entries.filter { $0.end > $0.begin }.sorted { ($0.begin, $0.name) < ($1.begin, $1.name) }
        if sorted.count > 1 {
            for i in 1..<sorted.count where sorted[i].begin < sorted[i - 1].end {
                let a = sorted[i - 1], b = sorted[i]
                throw bad("tensors '\(a.name)' [\(a.begin - dataStart), \(a.end - dataStart)) and '\(b.name)' [\(b.begin - dataStart), \(b.end - dataStart)) overlap")
            }
        }
        return ParsedHeader(entries: entries, metadata: raw.metadata)
    }

}

// MARK: - Header JSON

private struct HeaderProblem: Error {
    var reason: String
}

private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// The header as written, before the semantic checks. Types are checked strictly
/// (JSONDecoder rejects 1.5 or `true` where an integer is required).
private struct RawHeader: Decodable {
    struct RawTensor {
        var name: String
        var dtype: String
        var shape: [Int]
        var offsets: [Int]
    }

    var tensors: [RawTensor] = []
    var metadata: [String: String] = [:]

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: AnyKey.self)
        for key in c.allKeys {
            let name = key.stringValue
            if name == "__metadata__" {
                do {
                    metadata = try c.decode([String: String].self, forKey: key)
                } catch {
                    throw HeaderProblem(reason: "__metadata__ must be an object of string values")
                }
                continue
            }
            let fields: KeyedDecodingContainer<AnyKey>
            do {
                fields = try c.nestedContainer(keyedBy: AnyKey.self, forKey: key)
            } catch {
                throw HeaderProblem(reason: "entry '\(name)' is not an object")
            }
            func field<T: Decodable>(_ field: String, _ type: T.Type, _ what: String) throws -> T {
                do {
                    return try fields.decode(T.self, forKey: AnyKey(field))
                } catch {
                    throw HeaderProblem(reason: "tensor '\(name)': '\(field)' must be \(what)")
                }
            }
            tensors.append(RawTensor(
                name: name,
                dtype: try field("dtype", String.self, "a string"),
                shape: try field("shape", [Int].self, "a list of non-negative integers"),
                offsets: try field("data_offsets", [Int].self, "a list [begin, end] of integers")))
        }
    }
}

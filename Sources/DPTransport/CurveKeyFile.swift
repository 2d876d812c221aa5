// CURVE key files: Z85 text in the ZeroMQ Property Language layout czmq's zcert (and `zmq curve_keygen`
// style tools) write, so keys can be made and read with those tools too:
//
//     #   ZeroMQ CURVE **Secret** Certificate
//     metadata
//     curve
//         public-key = "<40 Z85 characters>"
//         secret-key = "<40 Z85 characters>"
//
// `NAME.key` holds both keys (mode 0600, never readable by others, not even while being written);
// `NAME.pub` only the public key. A public key file may also be a single bare Z85 key line.
import CZeroMQ
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Z85 key text checks.
public enum CurveKey {
    /// The Z85 alphabet (ZeroMQ RFC 32).
    static let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#".utf8)
    static let values: [Int16] = {
        var table = [Int16](repeating: -1, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = Int16(i) }
        return table
    }()

    /// Why `text` is not a 40-character Z85 CURVE key (nil: it is one).
    public static func problem(_ text: String) -> String? {
        let bytes = Array(text.utf8)
        guard bytes.count == 40 else { return "expected 40 Z85 characters, got \(bytes.count)" }
        var group: UInt64 = 0
        for (i, b) in bytes.enumerated() {
            let v = values[Int(b)]
            guard v >= 0 else {
                return "character \(i + 1) (byte 0x\(String(b, radix: 16))) is not in the Z85 alphabet"
            }
            group = group * 85 + UInt64(v)
            if i % 5 == 4 {
                guard group <= UInt64(UInt32.max) else {
                    return "characters \(i - 3)-\(i + 1) encode \(group), more than 32 bits"
                }
                group = 0
            }
        }
        return nil
    }

    public static func isZ85(_ text: String) -> Bool { problem(text) == nil }

    /// Z85 text of a 32-byte binary key (zmq_z85_encode); nil for another length.
    public static func encode(_ key: Data) -> String? {
        guard key.count == 32 else { return nil }
        var out = [CChar](repeating: 0, count: 41)
        let bytes = [UInt8](key)
        guard zmq_z85_encode(&out, bytes, 32) != nil else { return nil }
        return String(cString: out)
    }
}

/// A key file that cannot be read, written or used; names the file and what was expected.
public struct CurveKeyFileError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let message: String
    public init(path: String, _ message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "key file \(path): \(message)" }
}

public enum CurveKeyFile {
    /// Key files are a few hundred bytes; anything much bigger is not one.
    public static let maxFileBytes = 16 << 10

    /// The two files of key pair NAME: NAME.key (secret) and NAME.pub (public). A NAME already
    /// ending in .key or .pub names the pair too.
    public static func paths(base: String) -> (secret: String, public: String) {
        var stem = base
        if stem.hasSuffix(".key") || stem.hasSuffix(".pub") { stem.removeLast(4) }
        return (stem + ".key", stem + ".pub")
    }

    /// The `.pub` file next to a secret key file.
    public static func publicPath(forSecret path: String) -> String { paths(base: path).public }

    // MARK: writing

    /// A fresh key pair written to NAME.key (0600) and NAME.pub (0644). Refuses to replace an
    /// existing file (a lost secret key cannot be recovered). Returns the pair and both paths.
    @discardableResult
    public static func generate(base: String) throws -> (pair: ZMQCurveKeyPair, secretPath: String, publicPath: String) {
        let pair: ZMQCurveKeyPair
        do {
            pair = try ZMQCurveKeyPair.generate()
        } catch {
            throw CurveKeyFileError(path: base, "cannot generate a CURVE key pair (libzmq without CURVE?): \(error)")
        }
        let (secretPath, publicPath) = paths(base: base)
        for path in [secretPath, publicPath] where FileManager.default.fileExists(atPath: path) {
            throw CurveKeyFileError(path: path, "already exists; not replaced (remove it first to make a new key)")
        }
        try write(secretText(pair), to: secretPath, mode: 0o600)
        do {
            try write(publicText(pair.publicKey), to: publicPath, mode: 0o644)
        } catch {
            unlink(secretPath)
            throw error
        }
        return (pair, secretPath, publicPath)
    }

    static func header(_ kind: String) -> String {
        let formatter = ISO8601DateFormatter()
        return "#   ****  Generated on \(formatter.string(from: Date())) by dp-farm  ****\n#   ZeroMQ CURVE \(kind)\n"
    }

    public static func secretText(_ pair: ZMQCurveKeyPair) -> String {
        header("**Secret** Certificate")
            + "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\n"
            + "metadata\ncurve\n    public-key = \"\(pair.publicKey)\"\n    secret-key = \"\(pair.secretKey)\"\n"
    }

    public static func publicText(_ publicKey: String) -> String {
        header("Public Certificate")
            + "#   Give this file to the peers that must accept this key (e.g. the coordinator's\n"
            + "#   --authorized-workers / --authorized-clients folder).\n\n"
            + "metadata\ncurve\n    public-key = \"\(publicKey)\"\n"
    }

    /// Writes `text` to a new file at `path` with `mode`: a temp file created O_EXCL with that mode
    /// in the same folder (never wider, whatever the umask), fsync, then link() to the final name,
    /// which fails rather than replace an existing file.
    static func write(_ text: String, to path: String, mode: mode_t) throws {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        let temp = dir + "/.\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else {
            throw CurveKeyFileError(path: path, "cannot create \(temp): \(String(cString: strerror(errno)))")
        }
        var ok = false
        defer {
            if !ok { unlink(temp) }
        }
        do {
            defer { close(fd) }
            guard fchmod(fd, mode) == 0 else {
                throw CurveKeyFileError(path: path, "cannot set mode \(String(mode, radix: 8)): \(String(cString: strerror(errno)))")
            }
            let bytes = Array(text.utf8)
            var written = 0
            while written < bytes.count {
                let n = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw CurveKeyFileError(path: path, "cannot write: \(String(cString: strerror(errno)))")
                }
                written += n
            }
            guard fsync(fd) == 0 else {
                throw CurveKeyFileError(path: path, "cannot fsync: \(String(cString: strerror(errno)))")
            }
        }
        guard link(temp, path) == 0 else {
            let why = errno == EEXIST ? "already exists; not replaced" : String(cString: strerror(errno))
            throw CurveKeyFileError(path: path, why)
        }
        unlink(temp)
        ok = true
    }

    // MARK: reading

    /// The key pair in a secret key file. Refuses a file other users can read or write, one
    /// without a valid secret key, and one whose public key does not belong to its secret key.
    public static func readSecret(_ path: String) throws -> ZMQCurveKeyPair {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw CurveKeyFileError(path: path, "cannot read: \(String(cString: strerror(errno)))")
        }
        guard st.st_mode & 0o007 == 0 else {
            throw CurveKeyFileError(path: path, "is a secret key but other users may access it (mode "
                + "\(String(st.st_mode & 0o777, radix: 8))); run: chmod 600 \(path)")
        }
        let fields = try parse(path)
        guard let secret = fields.secret else {
            throw CurveKeyFileError(path: path, "has no curve secret-key (is it a .pub file? expected the .key file "
                + "written by keygen)")
        }
        let pair: ZMQCurveKeyPair
        do {
            pair = try ZMQCurveKeyPair(secretKey: secret)
        } catch {
            throw CurveKeyFileError(path: path, "cannot derive the public key of its secret-key: \(error)")
        }
        if let pub = fields.public, pub != pair.publicKey {
            throw CurveKeyFileError(path: path, "its public-key does not belong to its secret-key")
        }
        return pair
    }

    /// The public key in a public key file (a .pub file, or a secret one: only its public key is used).
    public static func readPublic(_ path: String) throws -> String {
        let fields = try parse(path)
        if let pub = fields.public { return pub }
        throw CurveKeyFileError(path: path, "has no curve public-key")
    }

    /// Reads and parses a key file: ZPL `curve` section keys, or one bare Z85 key line (public).
    static func parse(_ path: String) throws -> (public: String?, secret: String?) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CurveKeyFileError(path: path, "cannot read: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw CurveKeyFileError(path: path, "is not a regular file")
        }
        var bytes = [UInt8](repeating: 0, count: maxFileBytes + 1)
        var count = 0
        while count < bytes.count {
            let n = bytes[count...].withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw CurveKeyFileError(path: path, "cannot read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            count += n
        }
        guard count <= maxFileBytes else {
            throw CurveKeyFileError(path: path, "is larger than \(maxFileBytes) bytes: not a key file")
        }
        guard let text = String(validating: bytes[..<count], as: UTF8.self) else {
            throw CurveKeyFileError(path: path, "is not UTF-8 text: not a key file")
        }
        var section = ""
        var pub: String?
        var sec: String?
        var bare: [String] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw[...]
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let indented = line.first == " " || line.first == "\t"
            // A bare key (Z85 has '=' in its alphabet, so look for one before reading "name = value").
            if !indented, CurveKey.isZ85(trimmed) {
                bare.append(trimmed)
                continue
            }
            guard let eq = trimmed.firstIndex(of: "=") else {
                if indented { continue }  // a nested section name: not ours
                section = trimmed
                bare.append(trimmed)
                continue
            }
            guard indented, section == "curve" else { continue }
            let name = trimmed[..<eq].trimmingCharacters(in: .whitespaces)
            var value = trimmed[trimmed.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            guard name == "public-key" || name == "secret-key" else { continue }
            if let problem = CurveKey.problem(value) {
                throw CurveKeyFileError(path: path, "line \(index + 1): \(name): \(problem)")
            }
            if name == "public-key" {
                guard pub == nil else { throw CurveKeyFileError(path: path, "line \(index + 1): a second public-key") }
                pub = value
            } else {
                guard sec == nil else { throw CurveKeyFileError(path: path, "line \(index + 1): a second secret-key") }
                sec = value
            }
        }
        if pub == nil, sec == nil {
            // A bare key: the file's only content line.
            if bare.count == 1, bare[0] != "curve", bare[0] != "metadata" {
                if let problem = CurveKey.problem(bare[0]) {
                    throw CurveKeyFileError(path: path, "not a key file: its one line is not a CURVE key (\(problem))")
                }
                return (bare[0], nil)
            }
            throw CurveKeyFileError(path: path, "not a key file: expected a 'curve' section with "
                + "'public-key = \"<40 Z85 characters>\"' (as written by keygen) or one bare Z85 key line")
        }
        return (pub, sec)
    }
}

/// A CURVE client's keys: its own pair and the server's public key it pins (a server without the
/// matching secret key never completes the handshake).
public struct CurveClientKeys: Sendable, Equatable {
    public var keys: ZMQCurveKeyPair
    public var serverPublicKey: String

    public init(keys: ZMQCurveKeyPair, serverPublicKey: String) {
        self.keys = keys
        self.serverPublicKey = serverPublicKey
    }

    /// `--key FILE` (the secret key file) and `--server-key FILE` (the server's public key file).
    public static func load(keyFile: String, serverKeyFile: String) throws -> CurveClientKeys {
        CurveClientKeys(keys: try CurveKeyFile.readSecret(keyFile),
                        serverPublicKey: try CurveKeyFile.readPublic(serverKeyFile))
    }

    /// The options that make a socket this CURVE client (set before connect).
    public var socketOptions: [ZMQOption] {
        [.curveServerKey(serverPublicKey), .curvePublicKey(keys.publicKey), .curveSecretKey(keys.secretKey)]
    }
}

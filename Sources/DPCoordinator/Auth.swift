// Who may talk to the coordinator and what each peer may do (CurveZMQ + a ZAP handler).
//
// The coordinator's ROUTER is a CURVE server. Every connection's handshake is checked by the ZAP
// handler (`ZAPHandler`, served by the coordinator's loop thread on inproc://zeromq.zap.01 in the
// coordinator's context): only public keys listed in the authorized folders get in, and the
// connection's ZAP user id is "<roles>:<key>". Each message's sender is then the key of its
// connection (the "User-Id" message property, `ZMQSocket.receiveMessage`), never anything the
// peer wrote in a message; its roles are looked up again in the current key lists for every
// message, so a key removed from a folder (and SIGHUP) loses its rights at once.
import DPLog
import DPProtocol
import DPTransport
import Foundation
import Synchronization

/// How the coordinator authenticates peers.
public enum CoordinatorAuth: Sendable {
    /// No CURVE, no ZAP: anyone who can reach the port has every role (`--insecure-no-auth`).
    case insecureNoAuth
    /// CURVE server with `serverKeys`; peers admitted by key.
    case curve(CurveAuthSettings)

    public var isInsecure: Bool {
        if case .insecureNoAuth = self { return true }
        return false
    }
}

/// Where the authorized public keys come from.
public enum AuthorizedKeySource: Sendable, Equatable {
    /// Nobody.
    case none
    /// Every `*.pub` file of a folder (one key per file, like authorized_keys), re-read by `reload()`.
    case directory(URL)
    /// Fixed keys (the embedded farm's ephemeral keys, tests).
    case keys(Set<String>)
}

public struct CurveAuthSettings: Sendable {
    /// The coordinator's own key pair (its public key is what workers and clients pin).
    public var serverKeys: ZMQCurveKeyPair
    public var workers: AuthorizedKeySource
    public var clients: AuthorizedKeySource
    /// Clients that may see, follow and cancel every job (they are clients too).
    public var admins: AuthorizedKeySource

    public init(serverKeys: ZMQCurveKeyPair, workers: AuthorizedKeySource, clients: AuthorizedKeySource,
                admins: AuthorizedKeySource = .none) {
        self.serverKeys = serverKeys
        self.workers = workers
        self.clients = clients
        self.admins = admins
    }
}

/// What a peer may do.
public struct PeerRoles: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let worker = PeerRoles(rawValue: 1)
    public static let client = PeerRoles(rawValue: 2)
    /// A client that may see and cancel every job.
    public static let admin = PeerRoles(rawValue: 4)

    public var description: String {
        var names: [String] = []
        if contains(.worker) { names.append("worker") }
        if contains(.client) { names.append("client") }
        if contains(.admin) { names.append("admin") }
        return names.isEmpty ? "none" : names.joined(separator: ",")
    }
}

/// The sender of one message, as the coordinator knows it.
struct PeerIdentity: Equatable {
    /// The Z85 public key of the connection (nil: insecure mode, no keys).
    let key: String?
    let roles: PeerRoles

    /// Insecure mode: every peer may do everything, jobs have no owner.
    static let insecure = PeerIdentity(key: nil, roles: [.worker, .client, .admin])
    /// No message being handled: no rights at all.
    static let nobody = PeerIdentity(key: nil, roles: [])

    /// Short form for logs: the key's first characters.
    var label: String {
        guard let key else { return "no key" }
        return "key \(key.prefix(8))… (\(roles))"
    }
}

/// The authorized keys by role; thread-safe (the loop thread reads, SIGHUP's `reload` replaces).
public final class AuthorizedKeys: Sendable {
    public struct Counts: Sendable, Equatable, CustomStringConvertible {
        public var workers = 0
        public var clients = 0
        public var admins = 0
        public init(workers: Int = 0, clients: Int = 0, admins: Int = 0) {
            self.workers = workers
            self.clients = clients
            self.admins = admins
        }
        public var description: String { "\(workers) worker key(s), \(clients) client key(s), \(admins) admin key(s)" }
    }

    private struct Snapshot {
        var roles: [String: PeerRoles] = [:]
        var counts = Counts()
    }

    let settings: CurveAuthSettings
    private let snapshot = Mutex(Snapshot())

    /// Loads every source now; throws naming the folder or file that cannot be used.
    init(_ settings: CurveAuthSettings) throws {
        self.settings = settings
        _ = try reload()
    }

    /// Re-reads the folders. On any error the keys in use stay as they were.
    @discardableResult
    public func reload() throws -> Counts {
        let workers = try Self.load(settings.workers, what: "authorized workers")
        let clients = try Self.load(settings.clients, what: "authorized clients")
        let admins = try Self.load(settings.admins, what: "admin clients")
        var next = Snapshot()
        for k in workers { next.roles[k, default: []].insert(.worker) }
        for k in clients { next.roles[k, default: []].insert(.client) }
        for k in admins { next.roles[k, default: []].formUnion([.client, .admin]) }
        // The coordinator's own key pair is an admin client too: whoever holds its secret key can run
        // the coordinator anyway, and probes and operators on its machine (`dp-coord health`, `status`)
        // can use it without a key of their own.
        next.roles[settings.serverKeys.publicKey, default: []].formUnion([.client, .admin])
        next.counts = Counts(workers: workers.count, clients: clients.count, admins: admins.count)
        let counts = next.counts
        snapshot.withLock { $0 = next }
        return counts
    }

    /// The roles of `key` now (empty: not authorized).
    func roles(of key: String) -> PeerRoles {
        snapshot.withLock { $0.roles[key] ?? [] }
    }

    public var counts: Counts { snapshot.withLock { $0.counts } }

    static func load(_ source: AuthorizedKeySource, what: String) throws -> Set<String> {
        switch source {
        case .none:
            return []
        case .keys(let keys):
            for k in keys {
                if let problem = CurveKey.problem(k) { throw CoordinatorError("\(what): key '\(k)': \(problem)") }
            }
            return keys
        case .directory(let url):
            let names: [String]
            do {
                names = try FileManager.default.contentsOfDirectory(atPath: url.path)
            } catch {
                throw CoordinatorError("\(what) folder \(url.path): cannot list it: \(error.localizedDescription)")
            }
            var keys: Set<String> = []
            for name in names.sorted() where name.hasSuffix(".pub") && !name.hasPrefix(".") {
                let path = url.appendingPathComponent(name).path
                do {
                    keys.insert(try CurveKeyFile.readPublic(path))
                } catch {
                    throw CoordinatorError("\(what) folder \(url.path): \(error)")
                }
            }
            return keys
        }
    }
}

/// The ZAP handler (ZeroMQ RFC 27): a REP socket on inproc://zeromq.zap.01 of the coordinator's
/// context, owned by the coordinator's loop thread. Bound before the ROUTER, so no handshake can
/// happen without it (libzmq admits every CURVE client when no handler is bound).
final class ZAPHandler {
    static let endpoint = "inproc://zeromq.zap.01"
    static let domain = "dpfarm"

    let socket: ZMQSocket
    let keys: AuthorizedKeys
    private let logLine: FarmLog
    private let now: @Sendable () -> Int64
    /// Refused handshakes are an unauthenticated peer's doing: their lines are capped (LogLimiter).
    private var refusals = LogLimiter()

    init(context: ZMQContext, keys: AuthorizedKeys, now: @escaping @Sendable () -> Int64,
         log: FarmLog) throws {
        socket = try context.socket(.rep)
        self.keys = keys
        self.now = now
        self.logLine = log
        do {
            try socket.bind(Self.endpoint)
        } catch {
            socket.close()
            throw CoordinatorError("cannot bind the ZAP handler \(Self.endpoint): \(error)")
        }
    }

    private func log(_ text: @autoclosure () -> String) {
        if let line = refusals.line(text(), nowMilliseconds: now()) { logLine.warning(line) }
    }

    /// Answers every waiting request (never blocks).
    func serve() throws {
        while let request = try socket.receive(flags: .dontWait) {
            let reply = answer(request)
            try socket.send(reply)
        }
    }

    /// The reply frames for one request: [version, request id, status code, status text, user id, metadata].
    func answer(_ frames: [Data]) -> [Data] {
        func reply(_ requestID: Data, _ code: String, _ text: String, user: String = "") -> [Data] {
            [Data("1.0".utf8), requestID, Data(code.utf8), Data(text.utf8), Data(user.utf8), Data()]
        }
        guard frames.count >= 6, frames[0] == Data("1.0".utf8) else {
            log("ZAP: malformed request (\(frames.count) frames): refused")
            return reply(frames.count > 1 ? frames[1] : Data(), "500", "malformed ZAP request")
        }
        let requestID = frames[1]
        let domain = String(decoding: frames[2], as: UTF8.self)
        let address = String(decoding: frames[3].prefix(64), as: UTF8.self)
        let mechanism = String(decoding: frames[5], as: UTF8.self)
        guard domain == Self.domain else {
            log("ZAP: connection from \(peer: address, limit: 64) for domain '\(peer: domain, limit: 32)': refused")
            return reply(requestID, "400", "unknown domain")
        }
        guard mechanism == "CURVE", frames.count == 7, frames[6].count == 32 else {
            log("ZAP: connection from \(peer: address, limit: 64) with mechanism '\(peer: mechanism, limit: 16)': refused (CURVE only)")
            return reply(requestID, "400", "CURVE only")
        }
        guard let key = CurveKey.encode(frames[6]) else { return reply(requestID, "400", "bad key") }
        let roles = keys.roles(of: key)
        guard !roles.isEmpty else {
            log("ZAP: connection from \(peer: address, limit: 64) with unknown key \(key): refused")
            return reply(requestID, "400", "key not authorized")
        }
        return reply(requestID, "200", "OK", user: "\(roles):\(key)")
    }
}

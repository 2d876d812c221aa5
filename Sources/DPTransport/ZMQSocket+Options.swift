import CZeroMQ
import Foundation

/// Typed socket options (libzmq 4.3 names in the comments). Set them before bind/connect where
/// libzmq says so (routing id, HWMs, maxmsgsize, heartbeats, CURVE keys).
public enum ZMQOption {
    /// ZMQ_LINGER: how long close() may keep unsent messages. Sockets start at 0 here (libzmq's
    /// own default, -1, can hang shutdown forever).
    case linger(milliseconds: Int32)
    /// ZMQ_ROUTING_ID: this socket's identity as seen by a ROUTER peer (1-255 bytes, not starting with 0).
    case routingID(Data)
    /// ZMQ_SNDHWM / ZMQ_RCVHWM: queued messages per peer before send blocks/drops (0 = unlimited).
    case sendHighWaterMark(Int32)
    case receiveHighWaterMark(Int32)
    /// ZMQ_MAXMSGSIZE: a peer sending a bigger message is disconnected (-1 = no limit).
    case maxMessageSize(Int64)
    /// ZMQ_ROUTER_MANDATORY: a ROUTER send to an unknown routing id fails with EHOSTUNREACH
    /// instead of being dropped silently.
    case routerMandatory(Bool)
    /// ZMQ_ROUTER_HANDOVER: a new connection with an existing routing id takes it over.
    case routerHandover(Bool)
    /// ZMQ_HEARTBEAT_IVL / _TIMEOUT / _TTL: ZMTP-level PINGs that detect dead TCP connections
    /// (transport liveness; the farm's own Heartbeat messages carry application liveness).
    case heartbeatInterval(milliseconds: Int32)
    case heartbeatTimeout(milliseconds: Int32)
    case heartbeatTTL(milliseconds: Int32)
    /// ZMQ_IMMEDIATE: queue messages only to completed connections.
    case immediate(Bool)
    /// ZMQ_RECONNECT_IVL / _MAX: reconnect backoff start and cap (exponential in between).
    case reconnectInterval(milliseconds: Int32)
    case reconnectIntervalMax(milliseconds: Int32)
    /// ZMQ_SNDTIMEO / ZMQ_RCVTIMEO: blocking send/receive give up after this (-1 = forever);
    /// then send returns false and receive returns nil.
    case sendTimeout(milliseconds: Int32)
    case receiveTimeout(milliseconds: Int32)
    /// ZMQ_SUBSCRIBE / ZMQ_UNSUBSCRIBE (SUB sockets): message prefix filter ("" = everything).
    case subscribe(Data)
    case unsubscribe(Data)
    /// ZMQ_CURVE_SERVER: this socket is the CURVE server (needs curveSecretKey).
    case curveServer(Bool)
    /// ZMQ_CURVE_PUBLICKEY / _SECRETKEY / _SERVERKEY as 40-character Z85 text.
    case curvePublicKey(String)
    case curveSecretKey(String)
    case curveServerKey(String)
    /// ZMQ_ZAP_DOMAIN: the domain passed to the ZAP handler (RFC 27) for this socket's handshakes.
    case zapDomain(String)
    /// ZMQ_HANDSHAKE_IVL: a connection whose security handshake has not finished in this time is
    /// closed (0 = never; libzmq's default is 30 s).
    case handshakeInterval(milliseconds: Int32)

    var name: String {
        switch self {
        case .linger: return "ZMQ_LINGER"
        case .routingID: return "ZMQ_ROUTING_ID"
        case .sendHighWaterMark: return "ZMQ_SNDHWM"
        case .receiveHighWaterMark: return "ZMQ_RCVHWM"
        case .maxMessageSize: return "ZMQ_MAXMSGSIZE"
        case .routerMandatory: return "ZMQ_ROUTER_MANDATORY"
        case .routerHandover: return "ZMQ_ROUTER_HANDOVER"
        case .heartbeatInterval: return "ZMQ_HEARTBEAT_IVL"
        case .heartbeatTimeout: return "ZMQ_HEARTBEAT_TIMEOUT"
        case .heartbeatTTL: return "ZMQ_HEARTBEAT_TTL"
        case .immediate: return "ZMQ_IMMEDIATE"
        case .reconnectInterval: return "ZMQ_RECONNECT_IVL"
        case .reconnectIntervalMax: return "ZMQ_RECONNECT_IVL_MAX"
        case .sendTimeout: return "ZMQ_SNDTIMEO"
        case .receiveTimeout: return "ZMQ_RCVTIMEO"
        case .subscribe: return "ZMQ_SUBSCRIBE"
        case .unsubscribe: return "ZMQ_UNSUBSCRIBE"
        case .curveServer: return "ZMQ_CURVE_SERVER"
        case .curvePublicKey: return "ZMQ_CURVE_PUBLICKEY"
        case .curveSecretKey: return "ZMQ_CURVE_SECRETKEY"
        case .curveServerKey: return "ZMQ_CURVE_SERVERKEY"
        case .zapDomain: return "ZMQ_ZAP_DOMAIN"
        case .handshakeInterval: return "ZMQ_HANDSHAKE_IVL"
        }
    }
}

extension ZMQSocket {
    /// Sets one option; errors name the option and value.
    public func set(_ option: ZMQOption) throws {
        switch option {
        case .linger(let v): try setInt32(ZMQ_LINGER, v, option)
        case .routingID(let d): try setBytes(ZMQ_ROUTING_ID, d, option)
        case .sendHighWaterMark(let v): try setInt32(ZMQ_SNDHWM, v, option)
        case .receiveHighWaterMark(let v): try setInt32(ZMQ_RCVHWM, v, option)
        case .maxMessageSize(let v): try setInt64(ZMQ_MAXMSGSIZE, v, option)
        case .routerMandatory(let b): try setInt32(ZMQ_ROUTER_MANDATORY, b ? 1 : 0, option)
        case .routerHandover(let b): try setInt32(ZMQ_ROUTER_HANDOVER, b ? 1 : 0, option)
        case .heartbeatInterval(let v): try setInt32(ZMQ_HEARTBEAT_IVL, v, option)
        case .heartbeatTimeout(let v): try setInt32(ZMQ_HEARTBEAT_TIMEOUT, v, option)
        case .heartbeatTTL(let v): try setInt32(ZMQ_HEARTBEAT_TTL, v, option)
        case .immediate(let b): try setInt32(ZMQ_IMMEDIATE, b ? 1 : 0, option)
        case .reconnectInterval(let v): try setInt32(ZMQ_RECONNECT_IVL, v, option)
        case .reconnectIntervalMax(let v): try setInt32(ZMQ_RECONNECT_IVL_MAX, v, option)
        case .sendTimeout(let v): try setInt32(ZMQ_SNDTIMEO, v, option)
        case .receiveTimeout(let v): try setInt32(ZMQ_RCVTIMEO, v, option)
        case .subscribe(let d): try setBytes(ZMQ_SUBSCRIBE, d, option)
        case .unsubscribe(let d): try setBytes(ZMQ_UNSUBSCRIBE, d, option)
        case .curveServer(let b): try setInt32(ZMQ_CURVE_SERVER, b ? 1 : 0, option)
        case .curvePublicKey(let k): try setCurveKey(ZMQ_CURVE_PUBLICKEY, k, option)
        case .curveSecretKey(let k): try setCurveKey(ZMQ_CURVE_SECRETKEY, k, option)
        case .curveServerKey(let k): try setCurveKey(ZMQ_CURVE_SERVERKEY, k, option)
        case .zapDomain(let d): try setBytes(ZMQ_ZAP_DOMAIN, Data(d.utf8), option)
        case .handshakeInterval(let v): try setInt32(ZMQ_HANDSHAKE_IVL, v, option)
        }
    }

    /// Sets several options in order.
    public func set(_ options: [ZMQOption]) throws {
        for option in options { try set(option) }
    }

    /// Reads an int option.
    public func get(_ option: ZMQIntOption) throws -> Int32 {
        try int32Option(option.rawValue, name: "\(option)")
    }

    /// Reads an int option by its libzmq number (ZMQ_LINGER, ZMQ_SNDHWM, ZMQ_TYPE, ZMQ_EVENTS, ...).
    public func int32Option(_ option: Int32, name: String) throws -> Int32 {
        var value: Int32 = 0
        var size = MemoryLayout<Int32>.size
        if zmq_getsockopt(try raw("zmq_getsockopt"), option, &value, &size) != 0 {
            throw ZMQError.last("zmq_getsockopt", name)
        }
        return value
    }

    /// ZMQ_MAXMSGSIZE as set.
    public func maxMessageSize() throws -> Int64 {
        var value: Int64 = 0
        var size = MemoryLayout<Int64>.size
        if zmq_getsockopt(try raw("zmq_getsockopt"), ZMQ_MAXMSGSIZE, &value, &size) != 0 {
            throw ZMQError.last("zmq_getsockopt", "ZMQ_MAXMSGSIZE")
        }
        return value
    }

    /// ZMQ_ROUTING_ID as set (empty when libzmq picks one).
    public func routingID() throws -> Data {
        try bytesOption(ZMQ_ROUTING_ID, name: "ZMQ_ROUTING_ID", capacity: 256)
    }

    func bytesOption(_ option: Int32, name: String, capacity: Int) throws -> Data {
        var buffer = [UInt8](repeating: 0, count: capacity)
        var size = capacity
        let socket = try raw("zmq_getsockopt")
        let rc = buffer.withUnsafeMutableBytes { zmq_getsockopt(socket, option, $0.baseAddress, &size) }
        if rc != 0 { throw ZMQError.last("zmq_getsockopt", name) }
        return Data(buffer.prefix(size))
    }

    private func setInt32(_ option: Int32, _ value: Int32, _ typed: ZMQOption) throws {
        var v = value
        if zmq_setsockopt(try raw("zmq_setsockopt"), option, &v, MemoryLayout<Int32>.size) != 0 {
            throw ZMQError.last("zmq_setsockopt", "\(type) \(typed.name)=\(value)")
        }
    }

    private func setInt64(_ option: Int32, _ value: Int64, _ typed: ZMQOption) throws {
        var v = value
        if zmq_setsockopt(try raw("zmq_setsockopt"), option, &v, MemoryLayout<Int64>.size) != 0 {
            throw ZMQError.last("zmq_setsockopt", "\(type) \(typed.name)=\(value)")
        }
    }

    private func setBytes(_ option: Int32, _ value: Data, _ typed: ZMQOption) throws {
        let socket = try raw("zmq_setsockopt")
        let rc = value.withUnsafeBytes { zmq_setsockopt(socket, option, $0.baseAddress, $0.count) }
        if rc != 0 { throw ZMQError.last("zmq_setsockopt", "\(type) \(typed.name) (\(value.count) bytes)") }
    }

    private func setCurveKey(_ option: Int32, _ z85: String, _ typed: ZMQOption) throws {
        guard z85.utf8.count == 40, CurveKey.isZ85(z85) else {
            throw ZMQError(code: EINVAL, operation: "zmq_setsockopt",
                           detail: "\(type) \(typed.name): expected a 40-character Z85 key, got \(z85.utf8.count) characters"
                               + (z85.utf8.count == 40 ? " outside the Z85 alphabet" : ""))
        }
        // Z85 keys are passed as 41 bytes including the terminating NUL.
        let socket = try raw("zmq_setsockopt")
        let rc = z85.withCString { zmq_setsockopt(socket, option, $0, 41) }
        if rc != 0 { throw ZMQError.last("zmq_setsockopt", "\(type) \(typed.name)") }
    }
}

/// Int-valued options that can be read back (`socket.get(.linger)`).
public enum ZMQIntOption: Int32, CustomStringConvertible {
    case type = 16                 // ZMQ_TYPE
    case linger = 17               // ZMQ_LINGER
    case reconnectInterval = 18    // ZMQ_RECONNECT_IVL
    case reconnectIntervalMax = 21 // ZMQ_RECONNECT_IVL_MAX
    case sendHighWaterMark = 23    // ZMQ_SNDHWM
    case receiveHighWaterMark = 24 // ZMQ_RCVHWM
    case receiveTimeout = 27       // ZMQ_RCVTIMEO
    case sendTimeout = 28          // ZMQ_SNDTIMEO
    case immediate = 39            // ZMQ_IMMEDIATE
    case heartbeatInterval = 75    // ZMQ_HEARTBEAT_IVL
    case heartbeatTTL = 76         // ZMQ_HEARTBEAT_TTL
    case heartbeatTimeout = 77     // ZMQ_HEARTBEAT_TIMEOUT

    public var description: String {
        switch self {
        case .type: return "ZMQ_TYPE"
        case .linger: return "ZMQ_LINGER"
        case .reconnectInterval: return "ZMQ_RECONNECT_IVL"
        case .reconnectIntervalMax: return "ZMQ_RECONNECT_IVL_MAX"
        case .sendHighWaterMark: return "ZMQ_SNDHWM"
        case .receiveHighWaterMark: return "ZMQ_RCVHWM"
        case .receiveTimeout: return "ZMQ_RCVTIMEO"
        case .sendTimeout: return "ZMQ_SNDTIMEO"
        case .immediate: return "ZMQ_IMMEDIATE"
        case .heartbeatInterval: return "ZMQ_HEARTBEAT_IVL"
        case .heartbeatTTL: return "ZMQ_HEARTBEAT_TTL"
        case .heartbeatTimeout: return "ZMQ_HEARTBEAT_TIMEOUT"
        }
    }
}

/// A CURVE key pair in Z85 text (40 characters each).
public struct ZMQCurveKeyPair: Sendable, Equatable {
    public let publicKey: String
    public let secretKey: String

    /// A fresh key pair (zmq_curve_keypair); throws ENOTSUP when libzmq lacks CURVE.
    public static func generate() throws -> ZMQCurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41)
        var sec = [CChar](repeating: 0, count: 41)
        if zmq_curve_keypair(&pub, &sec) != 0 { throw ZMQError.last("zmq_curve_keypair") }
        return ZMQCurveKeyPair(publicKey: String(cString: pub), secretKey: String(cString: sec))
    }

    public init(publicKey: String, secretKey: String) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// The key pair of a Z85 secret key (zmq_curve_public derives the public half).
    public init(secretKey: String) throws {
        guard CurveKey.isZ85(secretKey) else {
            throw ZMQError(code: EINVAL, operation: "zmq_curve_public", detail: "not a 40-character Z85 key")
        }
        var pub = [CChar](repeating: 0, count: 41)
        let rc = secretKey.withCString { zmq_curve_public(&pub, $0) }
        if rc != 0 { throw ZMQError.last("zmq_curve_public") }
        self.init(publicKey: String(cString: pub), secretKey: secretKey)
    }
}

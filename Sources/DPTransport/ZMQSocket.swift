import CZeroMQ
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The libzmq socket types this wrapper exposes.
public enum ZMQSocketType: Int32, CustomStringConvertible {
    case pair = 0      // ZMQ_PAIR
    case pub = 1       // ZMQ_PUB
    case sub = 2       // ZMQ_SUB
    case req = 3       // ZMQ_REQ
    case rep = 4       // ZMQ_REP
    case dealer = 5    // ZMQ_DEALER
    case router = 6    // ZMQ_ROUTER
    case pull = 7      // ZMQ_PULL
    case push = 8      // ZMQ_PUSH

    public var description: String {
        switch self {
        case .pair: return "PAIR"
        case .pub: return "PUB"
        case .sub: return "SUB"
        case .req: return "REQ"
        case .rep: return "REP"
        case .dealer: return "DEALER"
        case .router: return "ROUTER"
        case .pull: return "PULL"
        case .push: return "PUSH"
        }
    }
}

/// Flags for send/receive.
public struct ZMQFlags: OptionSet, Sendable {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    /// Return at once instead of blocking: send returns false, receive returns nil.
    public static let dontWait = ZMQFlags(rawValue: ZMQ_DONTWAIT)
}

/// One libzmq socket.
///
/// Thread-safety: like every libzmq socket (except the draft thread-safe types) a ZMQSocket must be
/// used by ONE thread at a time. It is `@unchecked Sendable` only so it can be created on one thread
/// and handed to the thread that owns it. To talk between threads, give each thread its own socket
/// and connect them over `inproc://` (PAIR or DEALER/ROUTER). The context is thread-safe.
///
/// Messages are multipart: `[Data]`, one element per frame. A ROUTER receives the peer's routing id
/// as frame 0 and sends to the peer named by frame 0.
// unchecked: a libzmq socket is used by one thread at a time (handed over once, see above).
public final class ZMQSocket: @unchecked Sendable {
    public let type: ZMQSocketType
    public let context: ZMQContext
    private var handle: UnsafeMutableRawPointer?

    init(context: ZMQContext, type: ZMQSocketType) throws {
        guard let s = zmq_socket(context.handle, type.rawValue) else {
            throw ZMQError.last("zmq_socket", type.description)
        }
        self.context = context
        self.type = type
        self.handle = s
        try set(.linger(milliseconds: 0))
    }

    deinit { close() }

    /// The raw `void *` socket, for zmq_poll; throws ENOTSOCK once closed.
    func raw(_ operation: String) throws -> UnsafeMutableRawPointer {
        guard let h = handle else { throw ZMQError(code: ENOTSOCK, operation: operation, detail: "\(type) socket is closed") }
        return h
    }

    public var isClosed: Bool { handle == nil }

    /// Closes the socket (pending messages are dropped: linger is 0 unless you changed it).
    /// Idempotent.
    public func close() {
        guard let h = handle else { return }
        handle = nil
        zmq_close(h)
    }

    // MARK: endpoints

    /// Binds to `endpoint`, e.g. "tcp://0.0.0.0:5555", "tcp://127.0.0.1:*" (ephemeral port: read
    /// `lastEndpoint`), "inproc://name". Returns the endpoint actually bound.
    @discardableResult
    public func bind(_ endpoint: String) throws -> String {
        if zmq_bind(try raw("zmq_bind"), endpoint) != 0 { throw ZMQError.last("zmq_bind", "\(type) \(endpoint)") }
        return try lastEndpoint()
    }

    /// Connects to `endpoint`; libzmq connects (and reconnects) in the background.
    public func connect(_ endpoint: String) throws {
        if zmq_connect(try raw("zmq_connect"), endpoint) != 0 { throw ZMQError.last("zmq_connect", "\(type) \(endpoint)") }
    }

    public func unbind(_ endpoint: String) throws {
        if zmq_unbind(try raw("zmq_unbind"), endpoint) != 0 { throw ZMQError.last("zmq_unbind", "\(type) \(endpoint)") }
    }

    public func disconnect(_ endpoint: String) throws {
        if zmq_disconnect(try raw("zmq_disconnect"), endpoint) != 0 { throw ZMQError.last("zmq_disconnect", "\(type) \(endpoint)") }
    }

    /// ZMQ_LAST_ENDPOINT: the endpoint of the last bind/connect, with a wildcard port resolved.
    public func lastEndpoint() throws -> String {
        let bytes = try bytesOption(ZMQ_LAST_ENDPOINT, name: "ZMQ_LAST_ENDPOINT", capacity: 1024)
        // The value is NUL-terminated.
        return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    // MARK: send / receive

    /// Sends one multipart message (all frames or none, as libzmq guarantees for a single peer).
    /// Returns false when `.dontWait` was given (or ZMQ_SNDTIMEO expired) and the message could not
    /// be queued (high-water mark reached, or no peer yet with ZMQ_IMMEDIATE). Throws on other
    /// errors, e.g. EHOSTUNREACH from a ROUTER with ZMQ_ROUTER_MANDATORY and an unknown routing id.
    @discardableResult
    public func send(_ frames: [Data], flags: ZMQFlags = []) throws -> Bool {
        precondition(!frames.isEmpty, "a ZeroMQ message has at least one frame")
        let socket = try raw("zmq_send")
        for (index, frame) in frames.enumerated() {
            var f = flags.rawValue
            if index < frames.count - 1 { f |= ZMQ_SNDMORE }
            while true {
                let rc = frame.withUnsafeBytes { buf -> Int32 in
                    zmq_send(socket, buf.baseAddress, buf.count, f)
                }
                if rc >= 0 { break }
                let error = ZMQError.last("zmq_send", "\(type) frame \(index + 1)/\(frames.count), \(frame.count) bytes")
                if error.code == EINTR { continue }
                // Only the first frame can fail with EAGAIN: once a part is queued, the rest of
                // the message is accepted (libzmq reserves room for whole messages).
                if error.isAgain && index == 0 { return false }
                throw error
            }
        }
        return true
    }

    /// Sends a single-frame message.
    @discardableResult
    public func send(_ frame: Data, flags: ZMQFlags = []) throws -> Bool {
        try send([frame], flags: flags)
    }

    /// Receives one whole multipart message with the peer's authenticated identity: the "User-Id"
    /// property (zmq_msg_gets) that the ZAP handler set for the connection it came on, nil on a
    /// connection without one (no ZAP handler, NULL mechanism). Nothing the peer sends can set it.
    public func receiveMessage(flags: ZMQFlags = []) throws -> ZMQMessage? {
        var userID: String?
        guard let frames = try receive(flags: flags, properties: { msg in
            if let p = zmq_msg_gets(msg, "User-Id") { userID = String(cString: p) } else { userID = nil }
        }) else { return nil }
        return ZMQMessage(frames: frames, userID: userID)
    }

    /// Receives one whole multipart message. Returns nil when `.dontWait` was given (or
    /// ZMQ_RCVTIMEO expired) and nothing was waiting. Blocks otherwise; EINTR is retried.
    public func receive(flags: ZMQFlags = []) throws -> [Data]? {
        try receive(flags: flags, properties: nil)
    }

    /// `receive`, calling `properties` with each received part (the last call: the last part).
    private func receive(flags: ZMQFlags, properties: ((UnsafeMutablePointer<zmq_msg_t>) -> Void)?) throws -> [Data]? {
        let socket = try raw("zmq_msg_recv")
        var frames: [Data] = []
        var msg = zmq_msg_t()
        zmq_msg_init(&msg)
        defer { zmq_msg_close(&msg) }
        while true {
            let rc = zmq_msg_recv(&msg, socket, frames.isEmpty ? flags.rawValue : 0)
            if rc < 0 {
                let error = ZMQError.last("zmq_msg_recv", "\(type) frame \(frames.count + 1)")
                if error.code == EINTR { continue }
                if error.isAgain && frames.isEmpty { return nil }
                throw error
            }
            properties?(&msg)
            let size = zmq_msg_size(&msg)
            if size == 0 {
                frames.append(Data())
            } else {
                frames.append(Data(bytes: zmq_msg_data(&msg), count: size))
            }
            if zmq_msg_more(&msg) == 0 { return frames }
        }
    }
}

/// A received message and the authenticated identity of the connection it came on.
public struct ZMQMessage {
    public var frames: [Data]
    /// The ZAP handler's user id for the peer's connection (nil: none).
    public var userID: String?
    public init(frames: [Data], userID: String?) {
        self.frames = frames
        self.userID = userID
    }
}

import CZeroMQ
import Foundation

/// A socket's connection events (zmq_socket_monitor): used to tell a peer that refused our CURVE
/// handshake (wrong server key, key not authorized) from one that is just not there.
/// Owned by the thread that owns the monitored socket.
public final class ZMQMonitor {
    public let socket: ZMQSocket
    private weak var target: ZMQSocket?

    /// Starts monitoring `target` (handshake, connect and disconnect events). libzmq's side of the
    /// monitor sends events blocking on its I/O thread: this side's queue is unbounded (receive
    /// high-water mark 0) so an undrained monitor can never stall libzmq; `stop()` it when its
    /// events are no longer wanted.
    public init(_ target: ZMQSocket) throws {
        self.target = target
        let endpoint = "inproc://dp-monitor-\(UInt64.random(in: 0 ... .max))"
        let events = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CONNECT_RETRIED
            | ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
        if zmq_socket_monitor(try target.raw("zmq_socket_monitor"), endpoint, Int32(events)) != 0 {
            throw ZMQError.last("zmq_socket_monitor", endpoint)
        }
        socket = try target.context.socket(.pair)
        try socket.set(.receiveHighWaterMark(0))
        try socket.connect(endpoint)
    }

    /// Stops the events (the target goes on); idempotent, also after the target was closed.
    public func stop() {
        if let target, !target.isClosed, let raw = try? target.raw("zmq_socket_monitor") {
            zmq_socket_monitor(raw, nil, 0)
        }
        target = nil
    }

    deinit { socket.close() }

    /// Events waiting now (never blocks).
    public func drain() throws -> [ZMQMonitorEvent] {
        var events: [ZMQMonitorEvent] = []
        while let frames = try socket.receive(flags: .dontWait) {
            if let event = ZMQMonitorEvent(frames) { events.append(event) }
        }
        return events
    }
}

/// One monitor event: what happened, its value (an errno, a ZAP status code) and the endpoint.
public struct ZMQMonitorEvent: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case connected, disconnected, connectRetried
        case handshakeSucceeded
        /// The peer closed the connection during the handshake (e.g. a CURVE server that cannot
        /// decrypt our HELLO: we pinned another server key).
        case handshakeFailedNoDetail
        /// A ZMTP or mechanism protocol error (value: ZMQ_PROTOCOL_ERROR_*).
        case handshakeFailedProtocol
        /// The server's ZAP handler refused us (value: the ZAP status code, e.g. 400).
        case handshakeFailedAuth
        case other(UInt16)
    }

    public let kind: Kind
    public let value: UInt32
    public let endpoint: String

    init?(_ frames: [Data]) {
        guard frames.count >= 1, frames[0].count >= 6 else { return nil }
        let b = [UInt8](frames[0].prefix(6))
        let code = UInt16(b[0]) | UInt16(b[1]) << 8
        value = UInt32(b[2]) | UInt32(b[3]) << 8 | UInt32(b[4]) << 16 | UInt32(b[5]) << 24
        endpoint = frames.count > 1 ? String(decoding: frames[1], as: UTF8.self) : ""
        switch Int32(code) {
        case ZMQ_EVENT_CONNECTED: kind = .connected
        case ZMQ_EVENT_DISCONNECTED: kind = .disconnected
        case ZMQ_EVENT_CONNECT_RETRIED: kind = .connectRetried
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: kind = .handshakeSucceeded
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL: kind = .handshakeFailedNoDetail
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL: kind = .handshakeFailedProtocol
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: kind = .handshakeFailedAuth
        default: kind = .other(code)
        }
    }
}

/// What a client-side socket's monitor events say about its CURVE handshake with a server.
public struct ZMQHandshakeState: Sendable, Equatable {
    public private(set) var succeeded = false
    public private(set) var connected = false
    public private(set) var refusedByAuth: UInt32?
    public private(set) var failures = 0
    public private(set) var protocolErrors = 0

    public init() {}

    /// A connection was made or a handshake failed: whatever went wrong, it was at the handshake.
    public var reachedPeer: Bool { connected || failures > 0 || protocolErrors > 0 || refusedByAuth != nil }

    public mutating func record(_ events: [ZMQMonitorEvent]) {
        for e in events {
            switch e.kind {
            case .connected: connected = true
            case .handshakeSucceeded: succeeded = true
            case .handshakeFailedAuth: refusedByAuth = e.value
            case .handshakeFailedNoDetail: failures += 1
            case .handshakeFailedProtocol: protocolErrors += 1
            default: break
            }
        }
    }

    /// Why no session came up (nil: a handshake succeeded), for an error message about `endpoint`;
    /// `usingCurve`: whether this side was a CURVE client.
    public func problem(endpoint: String, usingCurve: Bool = true) -> String? {
        if succeeded { return nil }
        if !usingCurve {
            if failures > 0 || protocolErrors > 0 {
                return "the handshake with \(endpoint) failed: the coordinator uses CURVE authentication; pass --key "
                    + "(this side's secret key file) and --server-key (the coordinator's public key file)"
            }
            return connected ? "connected to \(endpoint) but no handshake completed" : "could not connect to \(endpoint)"
        }
        if let status = refusedByAuth {
            return "the coordinator at \(endpoint) refused this key (ZAP status \(status)): its public key is not in "
                + "the coordinator's authorized keys for this role"
        }
        if failures > 0 || protocolErrors > 0 {
            return "the CURVE handshake with \(endpoint) failed \(failures + protocolErrors) time(s): the server does not "
                + "hold the secret key of the pinned --server-key (wrong key, or not this coordinator), or it does not "
                + "use CURVE"
        }
        if connected {
            return "connected to \(endpoint) but the CURVE handshake never completed (is it a dp-farm coordinator "
                + "with keys, and --server-key its public key?)"
        }
        return "could not connect to \(endpoint)"
    }
}

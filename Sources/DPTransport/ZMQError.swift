import CZeroMQ
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed libzmq call: the errno it left, libzmq's text for it, the call and what it was about
/// (an endpoint, an option name).
public struct ZMQError: Error, Equatable, CustomStringConvertible {
    public let code: Int32
    public let operation: String
    public let detail: String

    public init(code: Int32, operation: String, detail: String = "") {
        self.code = code
        self.operation = operation
        self.detail = detail
    }

    /// Captures `zmq_errno()` right after a failed call.
    static func last(_ operation: String, _ detail: String = "") -> ZMQError {
        ZMQError(code: zmq_errno(), operation: operation, detail: detail)
    }

    /// libzmq's (or the C library's) text for `code`.
    public var message: String { String(cString: zmq_strerror(code)) }

    public var description: String {
        let what = detail.isEmpty ? operation : "\(operation)(\(detail))"
        return "\(what): \(message) (errno \(code))"
    }

    /// The context was shut down or terminated: close the socket and stop.
    public var isContextTerminated: Bool { code == ZMQError.contextTerminatedCode }
    /// Non-blocking call found nothing to do / a send or receive timeout expired / HWM reached.
    public var isAgain: Bool { code == EAGAIN }
    /// A ROUTER with ZMQ_ROUTER_MANDATORY was asked to send to a routing id it has no peer for.
    public var isHostUnreachable: Bool { code == EHOSTUNREACH }

    /// libzmq's ETERM (ZMQ_HAUSNUMERO + 53 on systems without a native ETERM).
    public static let contextTerminatedCode: Int32 = Int32(ZMQ_HAUSNUMERO) + 53
}

/// libzmq facts for logs and capability checks.
public enum ZMQ {
    /// (major, minor, patch) of the linked libzmq.
    public static var version: (major: Int32, minor: Int32, patch: Int32) {
        var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
        zmq_version(&major, &minor, &patch)
        return (major, minor, patch)
    }

    /// Whether libzmq was built with a capability: "curve", "ipc", "draft", ...
    public static func has(_ capability: String) -> Bool { zmq_has(capability) != 0 }
}

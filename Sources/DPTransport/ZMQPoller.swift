import CZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// Events to wait for / that happened on a poll item.
public struct ZMQPollEvents: OptionSet, Sendable, Hashable {
    public let rawValue: Int16
    public init(rawValue: Int16) { self.rawValue = rawValue }
    public static let readable = ZMQPollEvents(rawValue: Int16(ZMQ_POLLIN))
    public static let writable = ZMQPollEvents(rawValue: Int16(ZMQ_POLLOUT))
    public static let error = ZMQPollEvents(rawValue: Int16(ZMQ_POLLERR))
}

/// zmq_poll over several sockets (and plain file descriptors, e.g. a signal pipe).
/// Like its sockets, a poller belongs to one thread. It keeps its sockets alive; a socket closed
/// while registered makes `poll` throw ENOTSOCK.
public final class ZMQPoller {
    private var items: [zmq_pollitem_t] = []
    private var sockets: [ZMQSocket?] = []

    public init() {}

    public var count: Int { items.count }

    /// Registers `socket`; returns its index in `poll`'s result.
    @discardableResult
    public func add(_ socket: ZMQSocket, events: ZMQPollEvents = .readable) throws -> Int {
        var item = zmq_pollitem_t()
        item.socket = try socket.raw("zmq_poll")
        item.events = events.rawValue
        items.append(item)
        sockets.append(socket)
        return items.count - 1
    }

    /// Registers a file descriptor; returns its index in `poll`'s result.
    @discardableResult
    public func add(fileDescriptor fd: Int32, events: ZMQPollEvents = .readable) -> Int {
        var item = zmq_pollitem_t()
        item.socket = nil
        item.fd = fd
        item.events = events.rawValue
        items.append(item)
        sockets.append(nil)
        return items.count - 1
    }

    /// Waits until an item is ready or `timeoutMilliseconds` pass (-1 = forever, 0 = just look).
    /// Returns each item's ready events, in registration order (empty sets on timeout).
    /// EINTR returns early with nothing ready, so a signal can be noticed by the caller.
    public func poll(timeoutMilliseconds: Int) throws -> [ZMQPollEvents] {
        for (index, socket) in sockets.enumerated() where socket != nil {
            // Re-read in case the socket was closed: never hand libzmq a dangling pointer.
            items[index].socket = try socket!.raw("zmq_poll")
            items[index].revents = 0
        }
        let rc = items.withUnsafeMutableBufferPointer { buf in
            zmq_poll(buf.baseAddress, Int32(buf.count), timeoutMilliseconds)
        }
        if rc < 0 {
            let error = ZMQError.last("zmq_poll", "\(items.count) items")
            if error.code == EINTR { return Array(repeating: [], count: items.count) }
            throw error
        }
        return items.map { ZMQPollEvents(rawValue: $0.revents) }
    }
}

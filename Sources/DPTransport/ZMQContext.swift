import CZeroMQ
import Foundation
import Synchronization

/// A libzmq context: owns the I/O threads. Thread-safe; share one per process.
///
/// Shutdown without hangs: sockets are created with ZMQ_LINGER 0, so pending outgoing messages
/// never hold up termination. `shutdown()` makes every blocking call on every socket of the context
/// fail at once with `ZMQError.isContextTerminated` (the owning threads then close their sockets);
/// `terminate()` = shutdown + zmq_ctx_term, which returns once every socket is closed. Each socket
/// keeps its context alive, so dropping the last reference terminates it without blocking.
// unchecked: only for `handle`, a raw pointer to a libzmq context, which libzmq makes thread-safe.
public final class ZMQContext: @unchecked Sendable {
    /// The raw `void *` context; valid until `terminate()`.
    public let handle: UnsafeMutableRawPointer
    private let terminated = Mutex(false)

    /// - Parameter ioThreads: libzmq background I/O threads (1 is plenty below ~1 GB/s).
    public init(ioThreads: Int32 = 1) throws {
        guard let ctx = zmq_ctx_new() else { throw ZMQError.last("zmq_ctx_new") }
        handle = ctx
        if zmq_ctx_set(ctx, ZMQ_IO_THREADS, ioThreads) != 0 {
            let error = ZMQError.last("zmq_ctx_set", "ZMQ_IO_THREADS=\(ioThreads)")
            zmq_ctx_term(ctx)
            throw error
        }
    }

    deinit { terminate() }

    /// A new socket of `type`, with linger 0.
    public func socket(_ type: ZMQSocketType) throws -> ZMQSocket {
        try ZMQSocket(context: self, type: type)
    }

    /// Wakes every blocking call on this context's sockets with ETERM; further calls fail with
    /// ETERM. Safe from any thread, idempotent; does not wait.
    public func shutdown() {
        terminated.withLock { terminated in
            guard !terminated else { return }
            zmq_ctx_shutdown(handle)
        }
    }

    /// Shuts down, then waits until every socket of this context is closed (with linger 0 that is
    /// as soon as their owners call `close()`). Idempotent.
    public func terminate() {
        let first = terminated.withLock { terminated in
            defer { terminated = true }
            return !terminated
        }
        guard first else { return }
        zmq_ctx_shutdown(handle)
        while zmq_ctx_term(handle) != 0 {
            if zmq_errno() != EINTR { break }
        }
    }
}

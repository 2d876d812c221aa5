import Foundation
import Synchronization

/// Where the journal (and the coordinator) get "now": milliseconds since the Unix epoch.
/// Injected so tests drive time instead of sleeping.
public protocol JournalClock: AnyObject, Sendable {
    func nowMilliseconds() -> Int64
}

/// The wall clock.
public final class SystemClock: JournalClock {
    public init() {}
    public func nowMilliseconds() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) }
}

/// A clock that only moves when told to (tests, simulations). Thread-safe.
public final class ManualClock: JournalClock {
    private let now: Mutex<Int64>

    public init(milliseconds: Int64 = 1_700_000_000_000) { now = Mutex(milliseconds) }

    public func nowMilliseconds() -> Int64 { now.withLock { $0 } }

    public func advance(milliseconds: Int64) { now.withLock { $0 += milliseconds } }

    public func set(milliseconds: Int64) { now.withLock { $0 = milliseconds } }
}

// The loop's state types: worker sessions and their live attempts, followers, and what threads share.
import DPProtocol
import Foundation
import Synchronization

/// A follower's event stream: its connection and the request id of its FollowJob.
struct FollowerStream: Hashable {
    let peer: Data
    let requestID: UInt64
}

/// A coordinator failure at start-up or in `run()`.
public struct CoordinatorError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// One connected worker (one routing id, from its Hello until death, Goodbye or a newer Hello).
final class WorkerSession {
    let routingID: Data
    let name: String
    let slots: Int
    let threads: Int
    let host: FarmHostInfo
    let maxMessageBytes: Int
    /// The public key the session authenticated with (nil: insecure mode). Owns the session's attempts.
    let key: String?
    var credit = 0
    var preps: Set<Int64> = []
    var attempts: [Int64: LiveAttempt] = [:]
    var models: Set<String>
    var lastHeardMs: Int64
    var lastSentMs: Int64
    /// Credit beyond the cap was asked for (logged once per session).
    var warnedCredit = false
    var phaseState = WorkerPhaseState()  // Coordinator+Phases.swift

    init(routingID: Data, hello: FarmHello, key: String?, now: Int64) {
        self.routingID = routingID
        self.key = key
        name = hello.workerName
        slots = Int(hello.slots)
        threads = Int(hello.threads)
        host = hello.host
        maxMessageBytes = hello.maxMessageBytes > 0 ? Int(min(hello.maxMessageBytes, UInt64(Int.max)))
            : FarmProtocol.defaultMaxMessageBytes
        models = Set(hello.cachedModelIds)
        lastHeardMs = now
        lastSentMs = now
    }
}

struct LiveAttempt {
    let id: Int64
    let jobID: Int64
    let frame: Int
    var step: Int
    var total: Int
    var lastProgressMs: Int64
}

struct Follower {
    let peer: Data
    let requestID: UInt64
    let includePNG: Bool
}


/// A Bool shared between threads.
final class LockedFlag: Sendable {
    private let value = Mutex(false)

    /// Sets the flag to `newValue` and returns what it was.
    func exchange(_ newValue: Bool) -> Bool {
        value.withLock { value in
            defer { value = newValue }
            return value
        }
    }
}

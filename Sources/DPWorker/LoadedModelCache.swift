// Models loaded in memory, by model id: at most `capacity` of them, least recently used dropped first.
// Sits on top of the on-disk `ModelCache`: a job whose model is already loaded skips the load (seconds
// of reading and converting weights). Dropping a model here only drops the cache's reference; a render
// still holding the object keeps it alive until it finishes.
import Foundation
import Synchronization

public final class LoadedModelCache<Value: Sendable>: Sendable {
    public let capacity: Int
    private struct State {
        /// Most recently used last.
        var order: [String] = []
        var values: [String: Value] = [:]
    }
    private let state = Mutex(State())

    public init(capacity: Int) {
        precondition(capacity > 0, "loaded-model cache capacity must be at least 1, got \(capacity)")
        self.capacity = capacity
    }

    /// Ids held, least recently used first.
    public var modelIDs: [String] {
        state.withLock { $0.order }
    }

    /// The loaded model `modelID`, calling `load` if it is not held (and dropping the least recently
    /// used one if the cache is full). Loads are serialised: two big models are never read at once.
    /// A load that throws adds nothing (the least recently used model may already have been dropped
    /// to make room for it).
    public func value(for modelID: String, load: () throws -> Value) throws -> Value {
        try state.withLock { state in
            if let value = state.values[modelID] {
                state.order.removeAll { $0 == modelID }
                state.order.append(modelID)
                return value
            }
            // Drop the least recently used one first, so the old and new weights are not both held.
            if state.order.count >= capacity, let oldest = state.order.first {
                state.order.removeFirst()
                state.values[oldest] = nil
            }
            let value = try load()
            state.values[modelID] = value
            state.order.append(modelID)
            return value
        }
    }

    /// Drops `modelID` if held.
    public func remove(_ modelID: String) {
        state.withLock { state in
            state.values[modelID] = nil
            state.order.removeAll { $0 == modelID }
        }
    }
}

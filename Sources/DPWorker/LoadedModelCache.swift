// Models loaded in memory, by model id: at most `capacity` of them, least recently used dropped first.
// Sits on top of the on-disk `ModelCache`: a job whose model is already loaded skips the load (seconds
// of reading and converting weights). Dropping a model here only drops the cache's reference; a render
// still holding the object keeps it alive until it finishes.
import Foundation

public final class LoadedModelCache<Value>: @unchecked Sendable {
    public let capacity: Int
    private let lock = NSLock()
    /// Most recently used last.
    private var order: [String] = []
    private var values: [String: Value] = [:]

    public init(capacity: Int) {
        precondition(capacity > 0, "loaded-model cache capacity must be at least 1, got \(capacity)")
        self.capacity = capacity
    }

    /// Ids held, least recently used first.
    public var modelIDs: [String] {
        lock.lock()
        defer { lock.unlock() }
        return order
    }

    /// The loaded model `modelID`, calling `load` if it is not held (and dropping the least recently
    /// used one if the cache is full). Loads are serialised: two big models are never read at once.
    /// A load that throws adds nothing (the least recently used model may already have been dropped
    /// to make room for it).
    public func value(for modelID: String, load: () throws -> Value) rethrows -> Value {
        lock.lock()
        defer { lock.unlock() }
        if let value = values[modelID] {
            order.removeAll { $0 == modelID }
            order.append(modelID)
            return value
        }
        // Drop the least recently used one first, so the old and new weights are not both held.
        if order.count >= capacity, let oldest = order.first {
            order.removeFirst()
            values[oldest] = nil
        }
        let value = try load()
        values[modelID] = value
        order.append(modelID)
        return value
    }

    /// Drops `modelID` if held.
    public func remove(_ modelID: String) {
        lock.lock()
        defer { lock.unlock() }
        values[modelID] = nil
        order.removeAll { $0 == modelID }
    }
}

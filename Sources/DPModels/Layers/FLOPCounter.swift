// Counts the floating-point operations of the heavy ops (conv, linear, attention)
// as the models issue them, for the benchmarks' GFLOP/s figures. Off by default;
// when off, each op pays one lock-free flag read.

import Foundation

public enum FLOPCounter {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var enabledFlag = false
    nonisolated(unsafe) private static var total: Double = 0

    /// Starts counting from zero.
    public static func start() {
        lock.lock(); defer { lock.unlock() }
        total = 0
        enabledFlag = true
    }

    /// Stops counting and returns the operations counted since `start()`.
    @discardableResult
    public static func stop() -> Double {
        lock.lock(); defer { lock.unlock() }
        enabledFlag = false
        return total
    }

    /// Adds `flops` when counting is on (2 per multiply-add).
    @inline(__always)
    static func add(_ flops: Double) {
        guard enabledFlag else { return }
        lock.lock(); defer { lock.unlock() }
        total += flops
    }
}

// Counts the floating-point operations of the heavy ops (conv, linear, attention)
// as the models issue them, for the benchmarks' GFLOP/s figures. Off by default;
// when off, each op pays one lock-free flag read.

import Synchronization

public enum FLOPCounter {
    private static let enabled = Atomic<Bool>(false)
    private static let total = Mutex<Double>(0)

    /// Starts counting from zero.
    public static func start() {
        total.withLock { $0 = 0 }
        enabled.store(true, ordering: .sequentiallyConsistent)
    }

    /// Stops counting and returns the operations counted since `start()`.
    @discardableResult
    public static func stop() -> Double {
        enabled.store(false, ordering: .sequentiallyConsistent)
        return total.withLock { $0 }
    }

    /// Adds `flops` when counting is on (2 per multiply-add).
    @inline(__always)
    static func add(_ flops: Double) {
        guard enabled.load(ordering: .relaxed) else { return }
        total.withLock { $0 += flops }
    }
}

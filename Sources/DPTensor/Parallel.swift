// Thread count of the engine (OpenBLAS and our own kernels) and a small parallel-for helper.

import CDPKernels
import Foundation
import Synchronization

/// The number of threads the engine uses: OpenBLAS's pool and our own kernels' `concurrentPerform`.
public enum EngineThreads {
    /// The count; initialised (all cores, OpenBLAS told) at first use.
    private static let current: Mutex<Int> = {
        let n = max(1, ProcessInfo.processInfo.activeProcessorCount)
        dp_blas_set_threads(Int32(n))
        return Mutex(n)
    }()

    /// Sets the thread count of OpenBLAS and of our kernels (`n < 1` means all cores).
    public static func configure(_ n: Int) {
        let threads = n < 1 ? max(1, ProcessInfo.processInfo.activeProcessorCount) : n
        current.withLock { $0 = threads }
        dp_blas_set_threads(Int32(threads))
    }

    /// Runs `body` with OpenBLAS limited to one thread (for kernels that parallelise over independent
    /// GEMMs with their own threads), then restores the engine's count. Not for concurrent use with other
    /// engine work on other threads: the OpenBLAS setting is process-wide.
    static func withSingleThreadedBLAS<T>(_ body: () -> T) -> T {
        let n = count
        if n <= 1 { return body() }
        dp_blas_set_threads(1)
        defer { dp_blas_set_threads(Int32(n)) }
        return body()
    }

    /// The OpenBLAS kernel set in use and whether dp-farm chose it (CDPKernels blas.c).
    public static var blasDescription: String {
        let core = String(cString: dp_blas_corename())
        if let forced = dp_blas_forced_core() {
            return "OpenBLAS kernels: \(core) (OPENBLAS_CORETYPE=\(String(cString: forced)) set by dp-farm at start-up; "
                + "DP_OPENBLAS_CORETYPE=none leaves the choice to OpenBLAS)" + idleDescription
        }
        return "OpenBLAS kernels: \(core)" + idleDescription
    }

    private static var idleDescription: String {
        let timeout = ProcessInfo.processInfo.environment["OPENBLAS_THREAD_TIMEOUT"].map { "2^\($0) cycles" } ?? "OpenBLAS's default"
        return ", worker spin before sleep: \(timeout)"
    }

    /// How the engine set up the allocator at load (CDPKernels memory.c).
    public static var allocatorDescription: String { "allocator: " + String(cString: dp_malloc_description()) }

    /// Runs `body` (a denoising loop, repeated UNet forwards) with freed memory kept for reuse: each forward
    /// allocates the sizes the one before it freed, and gets them back without page faults (CDPKernels
    /// memory.c). When the last such scope ends the free pages go back to the system, so what runs next (the
    /// VAE decode) does not add its blocks on top of them.
    public static func reusingFreedMemory<T>(_ body: () throws -> T) rethrows -> T {
        dp_malloc_retain_begin()
        defer { dp_malloc_retain_end() }
        return try body()
    }

    /// The current thread count.
    public static var count: Int { current.withLock { $0 } }
}

/// Below this many elements (or element-operations) a kernel runs on the calling thread.
let parallelThreshold = 1 << 15

/// Runs `body` over `0..<count` split into contiguous chunks, one per engine thread, when `work`
/// (an estimate of the total element-operations) is large enough to pay for the dispatch.
@inline(__always)
func parallelChunks(_ count: Int, work: Int, _ body: (Range<Int>) -> Void) {
    if count <= 0 { return }
    let threads = EngineThreads.count
    let chunks = min(count, threads)
    if chunks <= 1 || work < parallelThreshold {
        body(0..<count)
        return
    }
    concurrentForEach(iterations: chunks) { c in
        let lo = count * c / chunks
        let hi = count * (c + 1) / chunks
        if lo < hi { body(lo..<hi) }
    }
}

/// `DispatchQueue.concurrentPerform` for the engine's data-parallel kernels, whose bodies write through raw
/// pointers (not `Sendable`): each iteration must own a disjoint part of the output.
public func concurrentForEach(iterations: Int, _ body: (Int) -> Void) {
    withoutActuallyEscaping(body) { body in
        let shared = IterationBody(run: body)
        DispatchQueue.concurrentPerform(iterations: iterations) { shared.run($0) }
    }
}

// Unchecked: iterations run at once on several threads; the disjoint-output contract above is the kernels'.
private struct IterationBody: @unchecked Sendable {
    let run: (Int) -> Void
}

/// Runs `body(i)` for each `i` in `0..<count`, spread over the engine threads when `work` is large.
@inline(__always)
func parallelFor(_ count: Int, work: Int, _ body: (Int) -> Void) {
    parallelChunks(count, work: work) { r in for i in r { body(i) } }
}

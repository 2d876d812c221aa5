// Reusable scratch memory for the kernels: large per-call buffers (Winograd's transformed tiles, im2col
// columns) taken from a pool instead of fresh allocations. A fresh multi-megabyte allocation is a new
// mmap each time, so every call would fault in and zero its pages again (~0.25 us per 4 KiB page:
// ~6 ms per 100 MB, per call).

import Synchronization

/// A pool of float buffers. `withBuffer` hands out a buffer of at least the asked size (the smallest free
/// one that fits, else a new one) and takes it back afterwards. The pool keeps at most `maxRetainedFloats`
/// in free buffers; a buffer that would exceed it is freed on return.
final class ScratchPool: Sendable {
    private struct Buffer: @unchecked Sendable {   // owned by exactly one holder: the pool or one caller
        let pointer: UnsafeMutablePointer<Float>
        let capacity: Int
    }

    private let free = Mutex<[Buffer]>([])
    let maxRetainedFloats: Int

    init(maxRetainedFloats: Int) { self.maxRetainedFloats = maxRetainedFloats }

    func withBuffer<T>(floats: Int, _ body: (UnsafeMutablePointer<Float>) throws -> T) rethrows -> T {
        let wanted = max(1, floats)
        let taken: Buffer? = free.withLock { list in
            guard let i = list.indices.filter({ list[$0].capacity >= wanted })
                .min(by: { list[$0].capacity < list[$1].capacity }) else { return nil }
            return list.remove(at: i)
        }
        let buffer = taken ?? Buffer(pointer: .allocate(capacity: wanted), capacity: wanted)
        defer {
            free.withLock { list in
                list.append(buffer)
                list.sort { $0.capacity > $1.capacity }
                var total = list.reduce(0) { $0 + $1.capacity }
                // Keep the largest buffers that fit the bound; free the rest.
                while total > maxRetainedFloats, let last = list.popLast() {
                    total -= last.capacity
                    last.pointer.deallocate()
                }
            }
        }
        return try body(buffer.pointer)
    }
}

/// The engine's scratch pool: up to 96 MB kept between calls, enough for the largest working sets of a
/// DreamPose step (a Winograd band, <= 32 MB, and attention's packed keys and values, 44 MB at 80 x 64,
/// batch 3) while a full frame's peak RSS stays within its 5 GB bound.
let engineScratch = ScratchPool(maxRetainedFloats: 24 << 20)

import CDPKernels
import Glibc
import XCTest
@testable import DPTensor

/// Inside `EngineThreads.reusingFreedMemory` (the denoising loop) freed memory is kept for reuse (CDPKernels
/// memory.c): a large tensor freed and allocated again must come back without the kernel faulting its pages in
/// anew (with glibc's defaults each 64 MB tensor is an mmap of its own, ~16,000 fresh pages every time).
final class AllocatorTests: XCTestCase {
    private func minorFaults() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_minflt
    }

    func testLargeTensorsReuseTheirPages() throws {
        let description = String(cString: dp_malloc_description())
        try XCTSkipUnless(description.hasPrefix("freed memory kept"), "allocator left as set by the environment: \(description)")
        let floats = 16 << 20                                   // 64 MB
        func cycle() -> Float {
            let t = Tensor(shape: [floats], repeating: 1)      // every page written
            return t.data[floats - 1]
        }
        let (sum, faults) = EngineThreads.reusingFreedMemory { () -> (Float, Int) in
            _ = cycle()                                         // the heap grows once
            let before = minorFaults()
            var sum: Float = 0
            for _ in 0..<4 { sum += cycle() }
            return (sum, minorFaults() - before)
        }
        XCTAssertEqual(sum, 4)
        XCTAssertLessThan(faults, 2_000, "4 x 64 MB tensors after the first faulted \(faults) pages in")
    }
}

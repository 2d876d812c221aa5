import XCTest
@testable import DPModels
import DPTensor

/// FeedForward runs long token sequences chunk by chunk of rows (to bound its [rows, 2*inner] intermediate);
/// the result must be the whole-sequence computation's, for sequences that end mid-chunk and that are whole
/// chunks.
final class FeedForwardChunkTests: XCTestCase {
    func testChunkedRowsEqualTheWholeSequence() throws {
        let ff = try FeedForward(ParameterScope(RandomWeights(seed: 3), prefix: "ff."), dim: 8)
        for tokens in [FeedForward.rowsPerChunk / 2 + 1, FeedForward.rowsPerChunk, 2 * FeedForward.rowsPerChunk + 3] {
            let x = Tensor(shape: [2, tokens, 8]) { out in
                for i in out.indices { out[i] = Float((i * 7919) % 201) / 100 - 1 }
            }
            let whole = ff.out(geglu(ff.proj(x)))        // [2, tokens, 8] in one pass
            let chunked = ff(x)
            XCTAssertEqual(chunked.shape, [2, tokens, 8])
            XCTAssertLessThanOrEqual(chunked.maxAbsDifference(whole), 1e-6 * max(1, whole.maxAbs), "\(tokens) tokens")
            // The residual add fused into net.2, chunk by chunk: residual + FF(x).
            let residual = Tensor(shape: [2, tokens, 8]) { out in
                for i in out.indices { out[i] = Float((i * 104_729) % 97) / 10 - 5 }
            }
            var expected = whole
            addInPlace(&expected, residual)
            let fused = ff(x, residual: residual)
            XCTAssertLessThanOrEqual(fused.maxAbsDifference(expected), 1e-6 * max(1, expected.maxAbs),
                                     "\(tokens) tokens with a residual")
        }
    }
}

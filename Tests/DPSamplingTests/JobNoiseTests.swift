import DPTensor
import Foundation
import XCTest
@testable import DPSampling

final class JobNoiseTests: XCTestCase {
    /// Random123 tests/kat_vectors (github.com/DEShawResearch/random123): counter[4], key[2] -> output[4].
    func testPhiloxKnownAnswers() {
        let kat: [(Int, SIMD4<UInt32>, SIMD2<UInt32>, SIMD4<UInt32>)] = [
            (10, SIMD4(0, 0, 0, 0), SIMD2(0, 0), SIMD4(0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8)),
            (10, SIMD4(repeating: 0xffff_ffff), SIMD2(repeating: 0xffff_ffff),
             SIMD4(0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd)),
            (10, SIMD4(0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344), SIMD2(0xa409_3822, 0x299f_31d0),
             SIMD4(0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1)),
            (7, SIMD4(repeating: 0xffff_ffff), SIMD2(repeating: 0xffff_ffff),
             SIMD4(0x5207_ddc2, 0x4516_5e59, 0x4d8e_e751, 0x8c52_f662)),
            (7, SIMD4(0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344), SIMD2(0xa409_3822, 0x299f_31d0),
             SIMD4(0x4dfc_caba, 0x190a_87f0, 0xc473_62ba, 0xb6b5_242a)),
        ]
        for (rounds, ctr, key, want) in kat {
            XCTAssertEqual(JobNoise.philox4x32(counter: ctr, key: key, rounds: rounds), want, "rounds \(rounds) ctr \(ctr)")
        }
    }

    /// Known answers of the documented definition, from an independent Python implementation (plain ints
    /// for Philox, math.log/cos/sin in double, struct.pack('<f') for the Float rounding), written from the
    /// JobNoise doc comment. (seed, [(flat index, Float bit pattern)]).
    func testGaussianKnownAnswers() {
        let kat: [(UInt64, [(Int, UInt32)])] = [
            (0x0, [(0, 0x3f7dbb33), (1, 0xbf6cb6b0), (2, 0xbf1e1b9f), (3, 0xbef6d1b2), (4, 0xbe1d5357),
                   (5, 0x3e392a6d), (6, 0x3f54ec98), (7, 0x3e4a2da3), (1001, 0xbf767a3b),
                   (17_179_869_187, 0x3e65a217)]),
            (0x2a, [(0, 0xbf785e5c), (1, 0x3e46ace8), (2, 0xbf9e28d2), (3, 0x3ff6433b), (4, 0xbd95e030),
                    (5, 0x3e0e7a0f), (6, 0xbf8da733), (7, 0x3ea742fd), (1001, 0xbfa28429),
                    (17_179_869_187, 0x3f6a2dc3)]),
            (0xdead_beef_cafe_f00d, [(0, 0xbfb61f00), (1, 0xbfea607a), (2, 0x3f34a024), (3, 0x3fafa2c9),
                                     (4, 0x3e446ce9), (5, 0x3f200e8f), (6, 0x3f154a12), (7, 0xbf98b269),
                                     (1001, 0x3e0fc5f5), (17_179_869_187, 0xbfbca2ff)]),
        ]
        for (seed, values) in kat {
            let t = JobNoise.gaussian(seed: seed, shape: [1002])
            for (i, bits) in values {
                let v = JobNoise.gaussian(seed: seed, index: i)
                XCTAssertEqual(v.bitPattern, bits, "seed \(seed) index \(i): \(v) vs \(Float(bitPattern: bits))")
                if i < t.count { XCTAssertEqual(t.data[i].bitPattern, bits, "seed \(seed) tensor index \(i)") }
            }
        }
    }

    func testStatistics() {
        let n = 100_000
        let x = JobNoise.gaussian(seed: 0x1234_5678_9abc_def0, shape: [n]).data.map(Double.init)
        let mean = x.reduce(0, +) / Double(n)
        let variance = x.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n - 1)
        let within1 = Double(x.filter { abs($0) < 1 }.count) / Double(n)
        let kurt = x.reduce(0) { $0 + pow(($1 - mean), 4) } / Double(n) / (variance * variance)
        print("JobNoise 1e5 samples: mean \(mean) std \(variance.squareRoot()) P(|x|<1) \(within1) kurtosis \(kurt)")
        // 5 sigma bands: se(mean) = 0.0032, se(var) ~ 0.0045, se(P) ~ 0.0015, se(kurt) ~ 0.015.
        XCTAssertEqual(mean, 0, accuracy: 0.016)
        XCTAssertEqual(variance.squareRoot(), 1, accuracy: 0.012)
        XCTAssertEqual(within1, 0.682_689, accuracy: 0.0075)
        XCTAssertEqual(kurt, 3, accuracy: 0.08)
        XCTAssertTrue(x.allSatisfy { $0.isFinite && abs($0) < 7 })
        // Neighbouring elements (the cos/sin pair and lanes of one block) are uncorrelated.
        for lag in 1...4 {
            var c = 0.0
            for i in 0..<(n - lag) { c += (x[i] - mean) * (x[i + lag] - mean) }
            XCTAssertEqual(c / Double(n - lag) / variance, 0, accuracy: 0.016, "lag \(lag) correlation")
        }
    }

    func testDeterministicAndSeedDependent() {
        let a = JobNoise.gaussian(seed: 7, shape: [1, 4, 10, 6])
        let b = JobNoise.gaussian(seed: 7, shape: [1, 4, 10, 6])
        let c = JobNoise.gaussian(seed: 8, shape: [1, 4, 10, 6])
        let d = JobNoise.gaussian(seed: 7 | (1 << 32), shape: [1, 4, 10, 6])   // high key word matters too
        XCTAssertEqual(a.shape, [1, 4, 10, 6])
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a.data, c.data)
        XCTAssertNotEqual(a.data, d.data)
        XCTAssertEqual(zip(a.data, c.data).filter { $0 == $1 }.count, 0)
    }

    /// Counter-based: element i depends only on (seed, i), never on the shape.
    func testElementIndependentOfShape() {
        let big = JobNoise.gaussian(seed: 99, shape: [2, 4, 9, 7])      // 504 elements
        for shape in [[1], [3], [5], [1, 4, 5, 3], [7, 11], [503]] {
            let t = JobNoise.gaussian(seed: 99, shape: shape)
            XCTAssertEqual(t.data, Array(big.data.prefix(t.count)), "shape \(shape)")
        }
        for i in [0, 1, 2, 3, 4, 250, 503] {
            XCTAssertEqual(JobNoise.gaussian(seed: 99, index: i), big.data[i], "index \(i)")
        }
        XCTAssertEqual(JobNoise.gaussian(seed: 99, shape: [0]).count, 0)
    }
}

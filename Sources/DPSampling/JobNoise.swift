import DPTensor
import Foundation

/// The job's Gaussian noise: a portable, counter-based generator, so every worker (and any other
/// implementation, on any machine) regenerates the same tensor from the 64-bit job seed alone, and any
/// element can be computed without the ones before it.
///
/// Definition of element `i` (0-based flat index in C order; the shape plays no part):
///
/// 1. key = (k0, k1) = (seed & 0xFFFF_FFFF, seed >> 32) as UInt32.
/// 2. block = i / 4, lane = i % 4 (as UInt64); counter = (block & 0xFFFF_FFFF, block >> 32, 0, 0).
/// 3. (x0, x1, x2, x3) = Philox4x32-10(counter, key), Random123's `philox4x32_R(10, ctr, key)`:
///    10 rounds; a round maps (c0, c1, c2, c3) with key (k0, k1) to
///    (hi(0xCD9E8D57 * c2) ^ c1 ^ k0, lo(0xCD9E8D57 * c2), hi(0xD2511F53 * c0) ^ c3 ^ k1, lo(0xD2511F53 * c0))
///    (64-bit products split into 32-bit halves); the key is bumped by (0x9E3779B9, 0xBB67AE85) mod 2^32
///    between rounds (the first round uses the key itself). Known answers: Random123 `kat_vectors`.
/// 4. Lanes 0, 1 use (a, b) = (x0, x1); lanes 2, 3 use (a, b) = (x2, x3). In IEEE double:
///    u1 = (a + 0.5) / 2^32, u2 = (b + 0.5) / 2^32   (both exact, strictly inside (0, 1): no log(0));
///    r = sqrt(-2 * log(u1)); theta = (2 * pi) * u2   (pi = the double nearest to pi; 2*pi is exact);
///    even lane: r * cos(theta); odd lane: r * sin(theta) (Box-Muller).
/// 5. The value is that double rounded to the nearest Float.
///
/// Portability: steps 1-4 are exact integer maths plus IEEE double arithmetic, `sqrt` (correctly
/// rounded) and `log`/`cos`/`sin`. Libms that are within 1 ulp in double (glibc, Apple, musl, MSVC) can
/// disagree only where the double lands within an ulp of a Float rounding boundary, about 1e-9 per element:
/// in practice the tensor is bit-identical everywhere.
public struct JobNoise {
    /// Philox4x32 multipliers and Weyl key increments (Random123).
    static let m0: UInt32 = 0xD251_1F53, m1: UInt32 = 0xCD9E_8D57
    static let w0: UInt32 = 0x9E37_79B9, w1: UInt32 = 0xBB67_AE85

    /// Random123's `philox4x32_R(rounds, counter, key)` (10 rounds is Philox4x32-10).
    public static func philox4x32(counter: SIMD4<UInt32>, key: SIMD2<UInt32>, rounds: Int = 10) -> SIMD4<UInt32> {
        var c = counter
        var k = key
        for r in 0..<rounds {
            if r > 0 { k &+= SIMD2(w0, w1) }
            let p0 = UInt64(m0) * UInt64(c[0])
            let p1 = UInt64(m1) * UInt64(c[2])
            c = SIMD4(UInt32(truncatingIfNeeded: p1 >> 32) ^ c[1] ^ k[0], UInt32(truncatingIfNeeded: p1),
                      UInt32(truncatingIfNeeded: p0 >> 32) ^ c[3] ^ k[1], UInt32(truncatingIfNeeded: p0))
        }
        return c
    }

    /// The four Philox outputs of block `block` for `seed`.
    static func block(seed: UInt64, block: UInt64) -> SIMD4<UInt32> {
        let key = SIMD2(UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32))
        let ctr = SIMD4(UInt32(truncatingIfNeeded: block), UInt32(truncatingIfNeeded: block >> 32), 0, 0)
        return philox4x32(counter: ctr, key: key)
    }

    /// Box-Muller on two 32-bit words (step 4 of the definition), as doubles.
    static func boxMuller(_ a: UInt32, _ b: UInt32) -> (Double, Double) {
        let u1 = (Double(a) + 0.5) / 4_294_967_296.0
        let u2 = (Double(b) + 0.5) / 4_294_967_296.0
        let r = (-2.0 * log(u1)).squareRoot()
        let theta = (2.0 * Double.pi) * u2
        return (r * cos(theta), r * sin(theta))
    }

    /// Element `index` of the job's noise (independent of the tensor's shape).
    public static func gaussian(seed: UInt64, index: Int) -> Float {
        precondition(index >= 0, "JobNoise: negative index \(index)")
        let x = block(seed: seed, block: UInt64(index / 4))
        let lane = index % 4
        let (z0, z1) = lane < 2 ? boxMuller(x[0], x[1]) : boxMuller(x[2], x[3])
        return Float(lane % 2 == 0 ? z0 : z1)
    }

    /// The job's noise tensor of `shape`: element i (C order) is `gaussian(seed:index: i)`.
    public static func gaussian(seed: UInt64, shape: [Int]) -> Tensor {
        Tensor(shape: shape) { out in
            let n = out.count
            var base = 0
            while base < n {
                let x = block(seed: seed, block: UInt64(base / 4))
                let (z0, z1) = boxMuller(x[0], x[1])
                out[base] = Float(z0)
                if base + 1 < n { out[base + 1] = Float(z1) }
                if base + 2 < n {
                    let (z2, z3) = boxMuller(x[2], x[3])
                    out[base + 2] = Float(z2)
                    if base + 3 < n { out[base + 3] = Float(z3) }
                }
                base += 4
            }
        }
    }
}

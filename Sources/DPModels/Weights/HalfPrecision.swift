// Exact conversions of IEEE binary16 (F16) and bfloat16 (BF16) bit patterns to Float32.
// Every F16 and BF16 value is exactly representable in Float32, so both conversions are exact,
// including subnormals, signed zeros, infinities and NaNs (payload kept, shifted into place).

public enum HalfPrecision {
    /// binary16 -> binary32, bit by bit.
    @inlinable
    public static func float(fromF16 h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = UInt32((h >> 10) & 0x1F)
        var mantissa = UInt32(h & 0x3FF)
        let bits: UInt32
        if exponent == 0 {
            if mantissa == 0 {
                bits = sign                                     // +-0
            } else {
                // Subnormal: mantissa * 2^-24. Normalise into a Float32 normal number.
                var e: UInt32 = 127 - 15 + 1
                while mantissa & 0x400 == 0 { mantissa <<= 1; e -= 1 }
                mantissa &= 0x3FF
                bits = sign | (e << 23) | (mantissa << 13)
            }
        } else if exponent == 0x1F {
            bits = sign | 0x7F80_0000 | (mantissa << 13)        // inf, NaN (payload kept)
        } else {
            bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13)
        }
        return Float(bitPattern: bits)
    }

    /// bfloat16 -> binary32: bfloat16 is the upper half of a binary32.
    @inlinable
    public static func float(fromBF16 h: UInt16) -> Float {
        Float(bitPattern: UInt32(h) << 16)
    }

    /// All 65536 F16 values as Float32 (a lookup table makes bulk conversion a gather).
    static let f16Table: [Float] = (0...0xFFFF).map { float(fromF16: UInt16($0)) }
}

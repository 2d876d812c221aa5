// SIMD8<Float> load/store helpers, and array wrappers around the C kernels' exp and erf.

import CDPKernels

@inline(__always)
func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always)
func load8(_ p: UnsafeMutablePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always)
func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}

/// The kernels' vector exp applied to an array (for tests).
func vectorExp(_ xs: [Float]) -> [Float] {
    var out = [Float](repeating: 0, count: xs.count)
    out.withUnsafeMutableBufferPointer { o in xs.withUnsafeBufferPointer { i in dp_exp_array(i.baseAddress!, o.baseAddress!, xs.count) } }
    return out
}

/// The kernels' vector erf applied to an array (for tests).
func vectorErf(_ xs: [Float]) -> [Float] {
    var out = [Float](repeating: 0, count: xs.count)
    out.withUnsafeMutableBufferPointer { o in xs.withUnsafeBufferPointer { i in dp_erf_array(i.baseAddress!, o.baseAddress!, xs.count) } }
    return out
}

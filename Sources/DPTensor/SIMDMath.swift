// SIMD8<Float> helpers: unaligned loads/stores and vector exp / sigmoid / erf used by the kernels.

import Foundation

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

/// exp on each lane (scalar expf per lane).
@inline(__always)
func exp8(_ x: SIMD8<Float>) -> SIMD8<Float> {
    var r = SIMD8<Float>()
    for i in 0..<8 { r[i] = expf(x[i]) }
    return r
}

/// 1 / (1 + exp(-x)) on each lane.
@inline(__always)
func sigmoid8(_ x: SIMD8<Float>) -> SIMD8<Float> {
    1 / (1 + exp8(-x))
}

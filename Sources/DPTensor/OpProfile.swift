// Per-operation profile of the engine (dp-bench unet/vae --profile): wall time, calls and FLOPs summed by
// kind of operation, so a kernel change can say which line it moved. Off by default; when off, each
// instrumented op pays one relaxed atomic load.

import Synchronization
import Glibc

/// The kinds of operation the profile sums over.
public enum OpKind: Int, CaseIterable, Sendable {
    case conv3x3            // 3x3 convolutions, stride 1
    case conv3x3Strided     // 3x3 convolutions, stride 2 (downsamplers)
    case convOther          // other kernel sizes (1x1 convs on NCHW, the VAE's quant convs)
    case linear             // linears and 1x1 convs over token-major activations
    case attention          // fused scores (Q K^T), softmax and values (P V); FLOPs of the two products
    case groupNorm          // GroupNorm (with its fused SiLU)
    case layerNorm
    case geglu
    case layout             // tokens <-> NCHW, concat, slice, resampling
    case elementwise        // residual adds, channel bias, scaling, activations outside norms

    public var label: String {
        switch self {
        case .conv3x3: return "3x3 conv"
        case .conv3x3Strided: return "3x3 conv, stride 2"
        case .convOther: return "other conv"
        case .linear: return "1x1 conv / linear"
        case .attention: return "attention (scores, softmax, values)"
        case .groupNorm: return "GroupNorm (+SiLU)"
        case .layerNorm: return "LayerNorm"
        case .geglu: return "GEGLU"
        case .layout: return "layout copies"
        case .elementwise: return "elementwise"
        }
    }

    /// Whether the kind is a matrix product (its GFLOP/s is meaningful).
    public var isProduct: Bool {
        switch self {
        case .conv3x3, .conv3x3Strided, .convOther, .linear, .attention: return true
        default: return false
        }
    }
}

/// One line of the profile.
public struct OpProfileEntry: Sendable {
    public var calls = 0
    public var seconds = 0.0
    public var flops = 0.0
}

/// The engine's per-operation profile. Ops time themselves on the calling thread (the model's thread), so
/// each line is wall time with both engine threads at work inside the op.
public enum OpProfile {
    private static let on = Atomic<Bool>(false)
    private static let state = Mutex<[OpProfileEntry]>(Array(repeating: OpProfileEntry(), count: OpKind.allCases.count))

    /// Clears the sums and starts recording.
    public static func start() {
        state.withLock { $0 = Array(repeating: OpProfileEntry(), count: OpKind.allCases.count) }
        on.store(true, ordering: .releasing)
    }

    /// Stops recording and returns the sums by kind.
    public static func stop() -> [OpKind: OpProfileEntry] {
        on.store(false, ordering: .releasing)
        return state.withLock { entries in
            Dictionary(uniqueKeysWithValues: OpKind.allCases.map { ($0, entries[$0.rawValue]) })
        }
    }

    @inline(__always)
    static var isOn: Bool { on.load(ordering: .relaxed) }

    static func record(_ kind: OpKind, seconds: Double, flops: Double, calls: Int = 1) {
        state.withLock {
            $0[kind.rawValue].calls += calls
            $0[kind.rawValue].seconds += seconds
            $0[kind.rawValue].flops += flops
        }
    }

    /// A started measurement (nil when the profile is off): `OpProfile.begin(...)` then `end()`, usually as
    /// `let probe = OpProfile.begin(.kind, flops: ...); defer { probe?.end() }`.
    public struct Probe {
        let kind: OpKind
        let flops: Double
        let start: Double
        public func end() { OpProfile.record(kind, seconds: monotonicSeconds() - start, flops: flops) }
    }

    /// Starts timing one op of `kind` (its FLOPs for products), or returns nil when the profile is off.
    @inline(__always)
    public static func begin(_ kind: OpKind, flops: @autoclosure () -> Double = 0) -> Probe? {
        guard isOn else { return nil }
        return Probe(kind: kind, flops: flops(), start: monotonicSeconds())
    }
}

/// Seconds on the monotonic clock.
@inline(__always)
func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

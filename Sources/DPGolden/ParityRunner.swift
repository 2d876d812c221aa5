// Runs golden cases against the engine and reports, per case, max|err| / max|expected|
// over every output and every intermediate it can map. Handlers are registered per case
// kind; kinds without a handler come back as explicit "skipped" results.

import DPTensor
import Foundation

/// One compared tensor.
public struct ParityMeasurement {
    /// The tensor's role or module name ("sample", "down_blocks.2", ...).
    public let name: String
    public let maxAbsError: Float
    public let maxAbsExpected: Float
    /// A reason the comparison could not be made (shape mismatch); the error is then infinite.
    public let problem: String?
    /// For checks that are not a relative error (8-bit frames): the verdict of their own acceptance rule,
    /// which then decides pass/fail instead of the tolerance.
    public let accepted: Bool?

    public init(name: String, maxAbsError: Float, maxAbsExpected: Float, problem: String? = nil, accepted: Bool? = nil) {
        self.name = name
        self.maxAbsError = maxAbsError
        self.maxAbsExpected = maxAbsExpected
        self.problem = problem
        self.accepted = accepted
    }

    /// Whether this measurement passes under `tolerance` (relative error) or its own acceptance rule.
    public func passes(tolerance: Float) -> Bool {
        guard problem == nil else { return false }
        return accepted ?? (relativeError <= tolerance)
    }

    /// max|err| / max|expected| (max|err| when the expected tensor is all zeros).
    public var relativeError: Float {
        maxAbsExpected > 0 ? maxAbsError / maxAbsExpected : maxAbsError
    }

    /// Compares `actual` with `expected` (shapes must agree exactly).
    public static func compare(_ name: String, actual: Tensor, expected: Tensor) -> ParityMeasurement {
        guard actual.shape == expected.shape else {
            return ParityMeasurement(name: name, maxAbsError: .infinity, maxAbsExpected: expected.maxAbs,
                                     problem: "shape \(actual.shape), expected \(expected.shape)")
        }
        return ParityMeasurement(name: name, maxAbsError: actual.maxAbsDifference(expected),
                                 maxAbsExpected: expected.maxAbs)
    }
}

public enum ParityStatus: Equatable {
    case passed
    case failed
    /// No handler for the kind, or the handler declined the case; the reason says which.
    case skipped(String)
    /// The handler threw (missing file, bad weights, ...): counts as a failure.
    case error(String)
}

public struct ParityResult {
    public let name: String
    public let kind: String
    public let status: ParityStatus
    /// The worst relative error over `measurements` (nil when nothing was compared).
    public let relativeError: Float?
    public let measurements: [ParityMeasurement]
    /// Intermediates listed by the case that the network did not report.
    public let unmapped: [String]
    public let seconds: Double

    /// Whether this result should make a parity check fail.
    public var isFailure: Bool {
        switch status {
        case .failed, .error: return true
        case .passed, .skipped: return false
        }
    }

    /// "name kind rel_err=... ok|FAIL|skipped: why|ERROR: why"
    public var line: String {
        let err = relativeError.map { String(format: "%.3e", Double($0)) } ?? "-"
        let verdict: String
        switch status {
        case .passed:
            let rules = measurements.filter { $0.accepted != nil }.map(\.name)
            verdict = "ok" + (rules.isEmpty ? "" : " (" + rules.joined(separator: "; ") + ")")
        case .failed:
            let bad = measurements.filter { $0.problem != nil }.map { "\($0.name): \($0.problem!)" }
                + measurements.filter { $0.accepted == false }.map(\.name)
            verdict = "FAIL" + (bad.isEmpty ? "" : " (" + bad.joined(separator: "; ") + ")")
        case .skipped(let why): verdict = "skipped: \(why)"
        case .error(let why): verdict = "ERROR: \(why)"
        }
        return "\(name) \(kind) rel_err=\(err) \(verdict)"
    }
}

/// Thrown by a handler that recognises its kind but cannot run this particular case.
public struct ParitySkip: Error {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
}

/// What a handler gets: the case, its directory, a model cache shared by all cases of a
/// run, and the comparison helpers.
public final class ParityContext {
    public let golden: GoldenCase
    public let entry: GoldenEntry
    let runner: ParityRunner

    init(golden: GoldenCase, entry: GoldenEntry, runner: ParityRunner) {
        self.golden = golden
        self.entry = entry
        self.runner = runner
    }

    /// A model built once per runner and `key` (use the weights path).
    public func cached<T>(_ key: String, _ make: () throws -> T) throws -> T {
        if let m = runner.models[key] as? T { return m }
        let m = try make()
        runner.models[key] = m
        return m
    }

    /// The case's input tensor(s) of `role`.
    public func input(_ role: String) throws -> Tensor { try golden.input(entry, role) }

    /// Compares `actual` with the expected tensor of output `role`.
    public func compareOutput(_ role: String, _ actual: Tensor) throws -> ParityMeasurement {
        guard let name = entry.outputs[role] else {
            throw GoldenError.missingField(caseName: entry.name, field: "outputs.\(role)")
        }
        return ParityMeasurement.compare(role, actual: actual, expected: try golden.tensor(name))
    }

    /// Compares the intermediates a network reported (module name -> tensor) with the case's
    /// `intermediates`; names the network did not report are recorded as unmapped.
    public func compareIntermediates(_ reported: [String: Tensor]) throws -> [ParityMeasurement] {
        var out: [ParityMeasurement] = []
        for (module, name) in entry.intermediates.sorted(by: { $0.key < $1.key }) {
            guard let actual = reported[module] else {
                unmapped.append(module)
                continue
            }
            out.append(ParityMeasurement.compare(module, actual: actual, expected: try golden.tensor(name)))
        }
        return out
    }

    /// A collector for a network's `intermediates` callback keeping only the case's names.
    public func intermediateCollector() -> (callback: (String, Tensor) -> Void, box: IntermediateBox) {
        let box = IntermediateBox(wanted: Set(entry.intermediates.keys))
        return ({ name, t in box.record(name, t) }, box)
    }

    var unmapped: [String] = []
}

/// Holds the intermediates a network reported during one forward pass.
public final class IntermediateBox {
    let wanted: Set<String>
    public private(set) var tensors: [String: Tensor] = [:]
    init(wanted: Set<String>) { self.wanted = wanted }
    func record(_ name: String, _ t: Tensor) { if wanted.contains(name) { tensors[name] = t } }
}

/// Runs a case and returns what it compared. Throw `ParitySkip` to decline a case.
public typealias ParityHandler = (ParityContext) throws -> [ParityMeasurement]

public final class ParityRunner {
    /// The reference check of shared/golden/README.md: max|err| <= 1e-4 * max|expected|.
    public static let defaultTolerance: Float = 1e-4

    public let tolerance: Float
    public private(set) var handlers: [String: ParityHandler] = [:]
    var models: [String: Any] = [:]

    /// A runner with the built-in handlers (unet_forward, vae_decode, vae_encode, clip_vision) and the
    /// sampling ones (scheduler_trajectory, e2e_dual_cfg) and the whole-job dreampose_pipeline.
    public init(tolerance: Float = ParityRunner.defaultTolerance) {
        self.tolerance = tolerance
        registerBuiltInHandlers()
        registerSamplingHandlers()
        registerPipelineHandler()
    }

    /// Adds (or replaces) the handler of a case kind.
    public func register(kind: String, handler: @escaping ParityHandler) {
        handlers[kind] = handler
    }

    /// Drops the cached models (they can be large).
    public func releaseModels() { models.removeAll() }

    /// Runs every case of a golden directory, in manifest order.
    public func run(_ golden: GoldenCase, onResult: ((ParityResult) -> Void)? = nil) -> [ParityResult] {
        golden.entries.map { entry in
            let r = run(entry, in: golden)
            onResult?(r)
            return r
        }
    }

    /// Runs one case.
    public func run(_ entry: GoldenEntry, in golden: GoldenCase) -> ParityResult {
        guard let handler = handlers[entry.kind] else {
            let known = handlers.keys.sorted().joined(separator: ", ")
            return ParityResult(name: entry.name, kind: entry.kind,
                                status: .skipped("no handler for kind \"\(entry.kind)\" (handled: \(known))"),
                                relativeError: nil, measurements: [], unmapped: [], seconds: 0)
        }
        let context = ParityContext(golden: golden, entry: entry, runner: self)
        let start = Date()
        do {
            let ms = try handler(context)
            let seconds = Date().timeIntervalSince(start)
            guard !ms.isEmpty else {
                return ParityResult(name: entry.name, kind: entry.kind, status: .error("handler compared nothing"),
                                    relativeError: nil, measurements: [], unmapped: context.unmapped,
                                    seconds: seconds)
            }
            let worst = ms.filter { $0.accepted == nil }.map(\.relativeError).max()
            let ok = ms.allSatisfy { $0.passes(tolerance: tolerance) }
            return ParityResult(name: entry.name, kind: entry.kind, status: ok ? .passed : .failed,
                                relativeError: worst, measurements: ms, unmapped: context.unmapped,
                                seconds: seconds)
        } catch let skip as ParitySkip {
            return ParityResult(name: entry.name, kind: entry.kind, status: .skipped(skip.reason),
                                relativeError: nil, measurements: [], unmapped: [], seconds: 0)
        } catch {
            return ParityResult(name: entry.name, kind: entry.kind, status: .error("\(error)"),
                                relativeError: nil, measurements: [], unmapped: context.unmapped,
                                seconds: Date().timeIntervalSince(start))
        }
    }
}

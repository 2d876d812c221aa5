import DPFileKit
import DPTensor
import Foundation
import XCTest
@testable import DPSampling

/// Trajectories recorded from diffusers 0.42.1 itself (DiffusersReference.swift, made by
/// Reference/make_reference.py) for the settings the shared golden cases do not cover: DPM-Solver
/// (orders 1-3, midpoint/heun, dpmsolver/dpmsolver++, final sigma zero/sigma_min, v-prediction, all spacings),
/// PNDM with the Runge-Kutta warm-up and with trailing spacing, DDIM with linspace/trailing and clip_sample.
final class DiffusersReferenceTests: XCTestCase {
    func config(_ c: DiffusersReference.Case) throws -> SchedulerConfig {
        var base = try JSONSerialization.jsonObject(with: Data(DiffusersReference.baseJSON.utf8)) as? [String: Any] ?? [:]
        let over = try JSONSerialization.jsonObject(with: Data(c.overridesJSON.utf8)) as? [String: Any] ?? [:]
        base.merge(over) { $1 }
        return try SchedulerConfig.decode(JSONSerialization.data(withJSONObject: base), file: c.name)
    }

    func testTrajectoriesMatchDiffusers() throws {
        XCTAssertFalse(DiffusersReference.cases.isEmpty)
        let shape = DiffusersReference.shape
        let per = shape.reduce(1, *)
        for c in DiffusersReference.cases {
            guard let kind = SamplerKind(rawValue: c.kind) else { XCTFail("\(c.name): kind \(c.kind)"); continue }
            var s = try makeScheduler(kind, config: config(c), steps: c.steps)
            XCTAssertEqual(s.timesteps, c.timesteps, "\(c.name): timesteps")
            guard s.timesteps == c.timesteps else { continue }
            XCTAssertEqual(c.trajectory.count, (c.timesteps.count + 1) * per, c.name)
            let expected = c.trajectory.map { Float(bitPattern: $0) }
            var x = Tensor(shape: shape, data: Array(expected[0..<per]))
            var worst: Float = 0
            for (i, t) in s.timesteps.enumerated() {
                // The fake model as torch evaluates it on a float32 tensor.
                let eps = Tensor(shape: shape, data: x.data.map { Float(0.1) * $0 + Float(1e-5 * Double(t)) })
                x = s.step(output: eps, timestep: t, sample: x)
                let want = Tensor(shape: shape, data: Array(expected[((i + 1) * per)..<((i + 2) * per)]))
                let rel = relativeError(x, want)
                worst = max(worst, rel)
                XCTAssertLessThanOrEqual(rel, 1e-4, "\(c.name): step \(i) (t = \(t))")
            }
            print("\(c.name): worst per-step rel err \(worst)")
        }
    }
}

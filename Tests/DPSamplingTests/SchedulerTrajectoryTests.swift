import DPFileKit
import DPTensor
import Foundation
import XCTest
@testable import DPSampling

/// Golden `scheduler_trajectory` cases: every one found in ../shared/golden/*/manifest.json, produced by
/// diffusers 0.42.1 (PNDMScheduler / DDIMScheduler in float64, coefficients float32) with the fake model
/// `eps = 0.1 * x + 1e-5 * t` (golden/README.md section 2.3).
final class SchedulerTrajectoryTests: XCTestCase {
    struct TrajectoryCase {
        let manifest: Golden.Manifest
        let name: String
        let kind: SamplerKind
        let config: SchedulerConfig
        let steps: Int
        let timesteps: [Int]
        let raw: [String: Any]
    }

    func trajectoryCases() throws -> [TrajectoryCase] {
        var out: [TrajectoryCase] = []
        for dir in try Golden.caseDirectories() {
            let m = try Golden.manifest(dir)
            for c in m.cases where c["kind"] as? String == "scheduler_trajectory" {
                let name = c["name"] as? String ?? "?"
                guard let s = c["scheduler"] as? String, let kind = SamplerKind(rawValue: s) else {
                    XCTFail("\(dir.lastPathComponent)/\(name): unknown scheduler \(String(describing: c["scheduler"]))")
                    continue
                }
                guard let cfg = c["config"] as? String, let steps = c["num_inference_steps"] as? Int,
                      let ts = c["timesteps"] as? [Int] else {
                    XCTFail("\(dir.lastPathComponent)/\(name): missing config/num_inference_steps/timesteps")
                    continue
                }
                if let eta = c["eta"] as? Double, eta != 0 {
                    XCTFail("\(dir.lastPathComponent)/\(name): eta \(eta) but only eta 0 is implemented")
                    continue
                }
                let config = try SchedulerConfig.load(dir.appendingPathComponent(cfg))
                out.append(TrajectoryCase(manifest: m, name: "\(dir.lastPathComponent)/\(name)", kind: kind,
                                          config: config, steps: steps, timesteps: ts, raw: c))
            }
        }
        return out
    }

    /// The fake model of the golden cases, evaluated in double like the float64 reference.
    static func fakeEps(_ x: Tensor, _ t: Int) -> Tensor {
        Tensor(shape: x.shape, data: x.data.map { Float(0.1 * Double($0) + 1e-5 * Double(t)) })
    }

    func testGoldenTrajectories() throws {
        let cases = try trajectoryCases()
        XCTAssertFalse(cases.isEmpty, "no scheduler_trajectory case under \(Golden.root.path)")
        for c in cases {
            let inputs = c.raw["inputs"] as? [String: String] ?? [:]
            let outputs = c.raw["outputs"] as? [String: String] ?? [:]
            guard let xName = inputs["x_init"], let trajName = outputs["trajectory"], let epsName = outputs["eps"] else {
                XCTFail("\(c.name): inputs.x_init / outputs.trajectory / outputs.eps missing"); continue
            }
            var scheduler = try makeScheduler(c.kind, config: c.config, steps: c.steps)
            XCTAssertEqual(scheduler.timesteps, c.timesteps, "\(c.name): timesteps")
            guard scheduler.timesteps == c.timesteps else { continue }

            let x0 = try c.manifest.tensor(xName)
            let expectedTraj = try c.manifest.tensor(trajName)
            let expectedEps = try c.manifest.tensor(epsName)
            XCTAssertEqual(expectedTraj.shape, [c.timesteps.count + 1] + x0.shape, "\(c.name): trajectory shape")
            XCTAssertEqual(expectedEps.shape, [c.timesteps.count] + x0.shape, "\(c.name): eps shape")

            var x = x0
            var traj = x0.data
            var epsAll: [Float] = []
            for t in scheduler.timesteps {
                let eps = Self.fakeEps(scheduler.scaleModelInput(x, timestep: t), t)
                epsAll += eps.data
                x = scheduler.step(output: eps, timestep: t, sample: x)
                traj += x.data
            }
            let trajRel = relativeError(Tensor(shape: expectedTraj.shape, data: traj), expectedTraj)
            let epsRel = relativeError(Tensor(shape: expectedEps.shape, data: epsAll), expectedEps)
            print("\(c.name): trajectory rel err \(trajRel), eps rel err \(epsRel) (max|traj| \(expectedTraj.maxAbs))")
            XCTAssertLessThanOrEqual(trajRel, 1e-4, "\(c.name): trajectory")
            XCTAssertLessThanOrEqual(epsRel, 1e-4, "\(c.name): eps")
            // Per-step check too, so a late-step error is not hidden by a large early max.
            let per = x0.count
            for i in 0...c.timesteps.count {
                let got = Tensor(shape: x0.shape, data: Array(traj[(i * per)..<((i + 1) * per)]))
                let want = Tensor(shape: x0.shape, data: Array(expectedTraj.data[(i * per)..<((i + 1) * per)]))
                XCTAssertLessThanOrEqual(relativeError(got, want), 1e-4, "\(c.name): trajectory row \(i)")
            }
        }
    }

    /// Our float32 betas/alphas_cumprod are bit-identical to torch's (golden `sched.alphas_cumprod`).
    func testAlphasCumprodMatchesGolden() throws {
        let cases = try trajectoryCases()
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            guard let name = (c.raw["inputs"] as? [String: String])?["alphas_cumprod"] else { continue }
            let expected = try c.manifest.tensor(name)
            let schedule = try NoiseSchedule(config: c.config)
            XCTAssertEqual(schedule.alphasCumprod.count, expected.count, c.name)
            let mismatches = zip(schedule.alphasCumprod, expected.data).filter { $0 != $1 }.count
            let maxDiff = Tensor(shape: expected.shape, data: schedule.alphasCumprod).maxAbsDifference(expected)
            XCTAssertEqual(mismatches, 0, "\(c.name): \(mismatches) alphas_cumprod values differ, max diff \(maxDiff)")
        }
    }
}

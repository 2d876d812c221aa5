import DPFileKit
import DPTensor
import Foundation
import XCTest
@testable import DPSampling

final class SchedulerConfigTests: XCTestCase {
    func decode(_ json: String) throws -> SchedulerConfig {
        try SchedulerConfig.decode(Data(json.utf8), file: "test.json")
    }

    /// Every scheduler_config.json in the golden folders loads; their SD-1.5 values come through.
    func testLoadsGoldenConfigs() throws {
        let files = try Golden.schedulerConfigFiles()
        XCTAssertFalse(files.isEmpty, "no scheduler_config.json under \(Golden.root.path)")
        for url in files {
            let c = try SchedulerConfig.load(url)
            XCTAssertEqual(c.numTrainTimesteps, 1000, url.path)
            XCTAssertEqual(c.betaSchedule, "scaled_linear", url.path)
            XCTAssertEqual(c.betaStart, 0.00085, url.path)
            XCTAssertEqual(c.betaEnd, 0.012, url.path)
            XCTAssertEqual(c.stepsOffset, 1, url.path)
            XCTAssertEqual(c.setAlphaToOne, false, url.path)
            XCTAssertEqual(c.timestepSpacing, "leading", url.path)
            XCTAssertNil(c.trainedBetas, url.path)
            if c.className == "PNDMScheduler" {
                XCTAssertTrue(c.skipPrkSteps, url.path)
                XCTAssertNil(c.clipSample, "\(url.path): a PNDM config has no clip_sample key")
            }
            if c.className == "DDIMScheduler" { XCTAssertEqual(c.clipSample, false, url.path) }
            // All three samplers can be built from it.
            for kind in SamplerKind.allCases { XCTAssertNoThrow(try makeScheduler(kind, config: c, steps: 20), "\(kind) from \(url.path)") }
        }
    }

    func testDefaultsForAbsentKeys() throws {
        let c = try decode("{}")
        XCTAssertEqual(c, SchedulerConfig())
        XCTAssertEqual(c.numTrainTimesteps, 1000)
        XCTAssertEqual(c.betaStart, 0.0001)
        XCTAssertEqual(c.betaEnd, 0.02)
        XCTAssertEqual(c.betaSchedule, "linear")
        XCTAssertEqual(c.predictionType, "epsilon")
        XCTAssertEqual(c.stepsOffset, 0)
        XCTAssertFalse(c.skipPrkSteps)
        XCTAssertEqual(c.solverOrder, 2)
        XCTAssertEqual(c.algorithmType, "dpmsolver++")
        XCTAssertEqual(c.solverType, "midpoint")
        XCTAssertTrue(c.lowerOrderFinal)
        XCTAssertEqual(c.lambdaMinClipped, -.infinity)
        // Class-dependent keys stay unset and resolve per class.
        XCTAssertNil(c.setAlphaToOne)
        XCTAssertNil(c.timestepSpacing)
        XCTAssertNil(c.clipSample)
        // DDIM: set_alpha_to_one default true -> final step goes to alpha 1; PNDM default false.
        var cfg = SchedulerConfig.stableDiffusion
        cfg.setAlphaToOne = nil
        let ddim = try DDIMScheduler(config: cfg, steps: 10)
        XCTAssertEqual(ddim.finalAlphaCumprod, 1)
        let pndm = try PNDMScheduler(config: cfg, steps: 10)
        XCTAssertEqual(pndm.finalAlphaCumprod, pndm.schedule.alphasCumprod[0])
    }

    /// Python's json writes -Infinity for DPMSolver's lambda_min_clipped; null trained_betas is nil.
    func testNonStandardLiteralsAndNulls() throws {
        let c = try decode(#"{"lambda_min_clipped": -Infinity, "trained_betas": null, "variance_type": null, "extra_key": [1, 2]}"#)
        XCTAssertEqual(c.lambdaMinClipped, -.infinity)
        XCTAssertNil(c.trainedBetas)
        XCTAssertNil(c.varianceType)
        let d = try decode(#"{"lambda_min_clipped": -5.1}"#)
        XCTAssertEqual(d.lambdaMinClipped, -5.1)
    }

    func testRoundTrip() throws {
        var c = SchedulerConfig.stableDiffusion
        c.clipSample = false
        c.trainedBetas = [0.1, 0.2]
        let data = try JSONEncoder().encode(c)
        XCTAssertEqual(try SchedulerConfig.decode(data), c)
    }

    func testErrorsNameFileAndKey() throws {
        XCTAssertThrowsError(try SchedulerConfig.load(URL(fileURLWithPath: "/nonexistent/scheduler_config.json"))) { e in
            XCTAssertTrue("\(e)".contains("/nonexistent/scheduler_config.json"), "\(e)")
        }
        XCTAssertThrowsError(try decode(#"{"num_train_timesteps": "many"}"#)) { e in
            let s = "\(e)"
            XCTAssertTrue(s.contains("test.json") && s.contains("num_train_timesteps"), s)
        }
        XCTAssertThrowsError(try decode("{not json")) { e in XCTAssertTrue("\(e)".contains("test.json"), "\(e)") }
    }

    func testUnsupportedSettingsThrowWithKey() throws {
        func expectThrow(_ kind: SamplerKind, _ key: String, _ edit: (inout SchedulerConfig) -> Void) {
            var c = SchedulerConfig.stableDiffusion
            edit(&c)
            XCTAssertThrowsError(try makeScheduler(kind, config: c, steps: 10), "\(kind) \(key)") { e in
                XCTAssertTrue("\(e)".contains(key), "\(kind): '\(e)' should name \(key)")
            }
        }
        expectThrow(.pndm, "prediction_type") { $0.predictionType = "sample" }
        expectThrow(.pndm, "timestep_spacing") { $0.timestepSpacing = "sideways" }
        expectThrow(.pndm, "beta_schedule") { $0.betaSchedule = "quadratic" }
        expectThrow(.ddim, "thresholding") { $0.thresholding = true }
        expectThrow(.ddim, "trained_betas") { $0.trainedBetas = [0.1] }
        expectThrow(.dpm, "algorithm_type") { $0.algorithmType = "sde-dpmsolver++" }
        expectThrow(.dpm, "use_karras_sigmas") { $0.useKarrasSigmas = true }
        expectThrow(.dpm, "solver_order") { $0.solverOrder = 4 }
        expectThrow(.dpm, "rescale_betas_zero_snr") { $0.rescaleBetasZeroSnr = true }
        var prk = SchedulerConfig.stableDiffusion
        prk.skipPrkSteps = false
        XCTAssertThrowsError(try makeScheduler(.pndm, config: prk, steps: 3)) { e in
            XCTAssertTrue("\(e)".contains("skip_prk_steps"), "\(e)")
        }
        XCTAssertThrowsError(try makeScheduler(.pndm, config: .stableDiffusion, steps: 0))
        XCTAssertThrowsError(try makeScheduler(.ddim, config: .stableDiffusion, steps: 1001))
    }

    /// Timestep grids for every spacing, checked against numpy runs of diffusers' own expressions
    /// (python3, numpy 2.4: e.g. PNDM linspace = np.linspace(0, 999, N).round() -> plms order; 166.5 and
    /// 832.5 round half to even).
    func testTimestepSpacings() throws {
        let expected: [(SamplerKind, String, Int, [Int])] = [
            (.pndm, "linspace", 7, [999, 832, 832, 666, 500, 333, 166, 0]),
            (.pndm, "linspace", 3, [999, 500, 500, 0]),
            (.pndm, "leading", 7, [853, 711, 711, 569, 427, 285, 143, 1]),
            (.pndm, "leading", 3, [667, 334, 334, 1]),
            (.pndm, "trailing", 7, [999, 856, 856, 713, 570, 428, 285, 142]),
            (.pndm, "trailing", 3, [999, 666, 666, 332]),
            (.ddim, "linspace", 7, [999, 832, 666, 500, 333, 166, 0]),
            (.ddim, "linspace", 3, [999, 500, 0]),
            (.ddim, "leading", 7, [853, 711, 569, 427, 285, 143, 1]),
            (.ddim, "leading", 3, [667, 334, 1]),
            (.ddim, "trailing", 7, [999, 856, 713, 570, 428, 285, 142]),
            (.ddim, "trailing", 3, [999, 666, 332]),
            (.dpm, "linspace", 7, [999, 856, 714, 571, 428, 285, 143]),
            (.dpm, "linspace", 3, [999, 666, 333]),
            (.dpm, "leading", 7, [876, 751, 626, 501, 376, 251, 126]),
            (.dpm, "leading", 3, [751, 501, 251]),
            (.dpm, "trailing", 7, [999, 856, 713, 570, 428, 285, 142]),
            (.dpm, "trailing", 3, [999, 666, 332]),
        ]
        for (kind, spacing, n, want) in expected {
            var c = SchedulerConfig.stableDiffusion
            c.timestepSpacing = spacing
            XCTAssertEqual(try makeScheduler(kind, config: c, steps: n).timesteps, want, "\(kind) \(spacing) \(n)")
        }
        // DPM-Solver's own default spacing (no key) is linspace.
        var c = SchedulerConfig.stableDiffusion
        c.timestepSpacing = nil
        XCTAssertEqual(try makeScheduler(.dpm, config: c, steps: 3).timesteps, [999, 666, 333])
        XCTAssertEqual(try makeScheduler(.pndm, config: c, steps: 3).timesteps, [667, 334, 334, 1])
        // The SD setting documented in dreampose-inference.md: 100 steps -> 101 evaluations 991, 981, 981, ..., 1.
        let p = try makeScheduler(.pndm, config: .stableDiffusion, steps: 100).timesteps
        XCTAssertEqual(p.count, 101)
        XCTAssertEqual(Array(p.prefix(4)), [991, 981, 981, 971])
        XCTAssertEqual(p.last, 1)
    }

    /// DDIM built from a PNDM config (no clip_sample key) must not clip; with clip_sample true it must.
    func testDDIMClipSample() throws {
        let x = Tensor(shape: [1, 4], data: [3, -3, 0.5, 10])   // |x0| > 1 at a low-noise timestep
        let eps = Tensor(shape: [1, 4], repeating: 0)
        var unclipped = try DDIMScheduler(config: .stableDiffusion, steps: 10)
        var cfg = SchedulerConfig.stableDiffusion
        cfg.clipSample = true
        cfg.clipSampleRange = 1
        var clipped = try DDIMScheduler(config: cfg, steps: 10)
        let t = unclipped.timesteps[unclipped.timesteps.count - 2]
        let a = unclipped.step(output: eps, timestep: t, sample: x)
        let b = clipped.step(output: eps, timestep: t, sample: x)
        // eps = 0: prev = sqrt(abar_prev) * x0, x0 = x / sqrt(abar_t).
        let ac = unclipped.schedule.alphasCumprod
        let ratio = ac[t - 100].squareRoot() / ac[t].squareRoot()
        for i in 0..<4 {
            XCTAssertEqual(a.data[i], x.data[i] * ratio, accuracy: 1e-5 * abs(x.data[i] * ratio) + 1e-6)
            let x0 = min(max(x.data[i] / ac[t].squareRoot(), -1), 1)
            XCTAssertEqual(b.data[i], ac[t - 100].squareRoot() * x0, accuracy: 1e-5)
        }
        XCTAssertGreaterThan(a.maxAbs, 5)
        XCTAssertLessThanOrEqual(b.maxAbs, 1)
    }

    func testAddNoise() throws {
        let x0 = Tensor(shape: [2, 3], data: [1, 2, 3, -1, -2, -3])
        let noise = Tensor(shape: [2, 3], data: [0.5, -0.5, 1, 0, 2, -1])
        for kind in SamplerKind.allCases {
            let s = try makeScheduler(kind, config: .stableDiffusion, steps: 25)
            let t = s.timesteps[0]
            let abar = try NoiseSchedule(config: .stableDiffusion).alphasCumprod[t]
            let y = s.addNoise(original: x0, noise: noise, timestep: t)
            for i in 0..<6 {
                let want = abar.squareRoot() * x0.data[i] + (1 - abar).squareRoot() * noise.data[i]
                XCTAssertEqual(y.data[i], want, accuracy: 2e-6, "\(kind) element \(i)")
            }
            XCTAssertEqual(s.initNoiseSigma, 1)
            XCTAssertEqual(s.scaleModelInput(x0, timestep: t), x0)
        }
    }
}

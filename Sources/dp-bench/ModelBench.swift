// `dp-bench parity | unet | vae`: golden parity of the networks and their speed / memory.
//
// runParity(caseDir:)  runs DPGolden's ParityRunner over a golden case directory (or a folder
//                      of them) and prints one line per case.
// benchUNet / benchVAE build the network with deterministic RandomWeights (no checkpoint
//                      needed), time forward passes and report the median, the effective
//                      GFLOP/s (conv / linear / attention products, counted by DPModels'
//                      FLOPCounter during the first pass) and the peak RSS (VmHWM).

import DPGolden
import DPModels
import DPTensor
import Dispatch
import Foundation

struct ModelBenchError: Error, CustomStringConvertible {
    let description: String
}

// MARK: - Parity

/// Runs every case of `caseDir` (a directory with a manifest.json, or a directory of such
/// directories) and prints "name kind rel_err=... ok|FAIL|skipped: why". Returns 0 when every
/// compared case is within 1e-4 relative, 1 when any failed or errored, 2 when nothing could be read.
func runParity(caseDir: String) -> Int32 {
    let root = URL(fileURLWithPath: caseDir, isDirectory: true)
    let fm = FileManager.default
    var dirs: [URL] = []
    if fm.fileExists(atPath: root.appendingPathComponent("manifest.json").path) {
        dirs = [root]
    } else if let names = try? fm.contentsOfDirectory(atPath: root.path) {
        dirs = names.sorted().map { root.appendingPathComponent($0, isDirectory: true) }
            .filter { fm.fileExists(atPath: $0.appendingPathComponent("manifest.json").path) }
    }
    guard !dirs.isEmpty else {
        print("parity: no manifest.json in \(root.path) or its subdirectories")
        return 2
    }
    var failures = 0, passed = 0, skipped = 0
    for dir in dirs {
        let golden: GoldenCase
        do { golden = try GoldenCase(directory: dir) } catch {
            print("\(dir.lastPathComponent) ERROR: \(error)")
            failures += 1
            continue
        }
        print("# \(dir.path) (\(golden.format))")
        let runner = ParityRunner()
        _ = runner.run(golden) { result in
            print(result.line)
            switch result.status {
            case .passed: passed += 1
            case .skipped: skipped += 1
            case .failed, .error: failures += 1
            }
        }
    }
    print("parity: \(passed) ok, \(failures) failed, \(skipped) skipped (tolerance \(ParityRunner.defaultTolerance) relative)")
    return failures == 0 ? 0 : 1
}

// MARK: - Benchmarks

/// Times the UNet forward pass. `height` x `width` is the LATENT size (SD-1.5 at 512x512 pixels:
/// 64 x 64). Preset "sd15": SD-1.5's UNet with DreamPose's 14 input channels and a 50-token
/// 768-wide context; "tiny": the golden cases' narrow UNet (same topology).
func benchUNet(preset: String, height: Int, width: Int, batch: Int, iterations: Int,
               options: BenchOptions = BenchOptions()) throws {
    let config = try unetPreset(preset)
    let contextTokens = 50
    print("unet \(preset): batch \(batch), latent \(height)x\(width), context \(contextTokens)x\(config.crossAttentionDim), threads \(EngineThreads.count)")
    print("  \(EngineThreads.blasDescription)")
    print("  \(EngineThreads.allocatorDescription)")
    let (unet, buildSeconds, parameters) = try build { try UNet2DConditionModel(config: config, weights: $0) }
    print(String(format: "  built in %.1f s: %.1f M parameters (%.2f GB f32)", buildSeconds,
                 Double(parameters) / 1e6, Double(parameters) * 4 / 1e9))
    let sample = benchNoise([batch, config.inChannels, height, width], seed: 1)
    let context = benchNoise([batch, contextTokens, config.crossAttentionDim], seed: 2)
    let timesteps = (0..<batch).map { Float(981 - 40 * $0) }
    var out = Tensor(zeros: [0])
    // Successive forwards as the denoising loop runs them (PreparedJob): freed memory kept for reuse.
    if options.stdinDriven {
        return EngineThreads.reusingFreedMemory {
            serveStdin { out = unet.forward(sample, timesteps: timesteps, encoderHiddenStates: context) }
        }
    }
    let stats = EngineThreads.reusingFreedMemory {
        timeRuns(iterations, profile: options.profile) {
            out = unet.forward(sample, timesteps: timesteps, encoderHiddenStates: context)
        }
    }
    precondition(out.data.allSatisfy { $0.isFinite }, "UNet output has non-finite values")
    report("forward", stats, options: options,
           json: ["bench": "unet", "preset": preset, "batch": batch, "height": height, "width": width])
}

/// Times a full VAE decode to `height` x `width` PIXELS (latent height/8 x width/8 for SD).
/// Preset "sd15": SD-1.5's VAE; "tiny": the golden cases' narrow VAE.
func benchVAE(preset: String, height: Int, width: Int, iterations: Int = 3,
              options: BenchOptions = BenchOptions()) throws {
    let config = try vaePreset(preset)
    let f = config.downsampleFactor
    guard height % f == 0, width % f == 0 else {
        throw ModelBenchError(description: "vae: \(height)x\(width) is not a multiple of the VAE factor \(f)")
    }
    print("vae \(preset): decode \(height / f)x\(width / f) latent -> \(height)x\(width) image, threads \(EngineThreads.count)")
    print("  \(EngineThreads.blasDescription)")
    let (vae, buildSeconds, parameters) = try build { try AutoencoderKL(config: config, weights: $0) }
    print(String(format: "  built in %.1f s: %.1f M parameters (%.2f GB f32)", buildSeconds,
                 Double(parameters) / 1e6, Double(parameters) * 4 / 1e9))
    let z = benchNoise([1, config.latentChannels, height / f, width / f], seed: 3)
    var image = Tensor(zeros: [0])
    if options.stdinDriven { return serveStdin { image = vae.decode(z) } }
    let stats = timeRuns(iterations, profile: options.profile) { image = vae.decode(z) }
    precondition(image.shape == [1, config.outChannels, height, width], "VAE decoded \(image.shape)")
    report("decode", stats, options: options,
           json: ["bench": "vae", "preset": preset, "height": height, "width": width])
}

func unetPreset(_ preset: String) throws -> UNet2DConditionConfig {
    switch preset {
    case "sd15":
        return .dreamPose                                   // SD-1.5 with conv_in 14 -> 320
    case "tiny":
        var c = UNet2DConditionConfig.dreamPose
        c.blockOutChannels = [8, 16, 32, 32]
        c.normNumGroups = 4
        c.crossAttentionDim = 24
        c.attentionHeadDim = [2, 2, 2, 2]
        return c
    default:
        throw ModelBenchError(description: "unknown UNet preset \"\(preset)\" (sd15, tiny)")
    }
}

func vaePreset(_ preset: String) throws -> AutoencoderKLConfig {
    switch preset {
    case "sd15":
        return .stableDiffusion15
    case "tiny":
        var c = AutoencoderKLConfig.stableDiffusion15
        c.blockOutChannels = [8, 16, 32, 32]
        c.normNumGroups = 4
        return c
    default:
        throw ModelBenchError(description: "unknown VAE preset \"\(preset)\" (sd15, tiny)")
    }
}

/// Builds a network from deterministic random weights (not recorded, so no second copy).
private func build<T>(_ make: (WeightSource) throws -> T) throws -> (T, Double, Int) {
    let random = RandomWeights(seed: 0)
    random.recording = false
    let counting = CountingWeights(random)
    let start = DispatchTime.now().uptimeNanoseconds
    let model = try make(counting)
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    return (model, seconds, counting.parameters)
}

/// Forwards to another source and counts the elements handed out.
private final class CountingWeights: WeightSource {
    let inner: WeightSource
    private(set) var parameters = 0
    init(_ inner: WeightSource) { self.inner = inner }
    func take(_ key: String, shape: [Int]) throws -> Tensor {
        let t = try inner.take(key, shape: shape)
        parameters += t.count
        return t
    }
    func finish() throws { try inner.finish() }
}

/// What `dp-bench unet` / `vae` print besides the timings.
struct BenchOptions {
    var profile = false
    var json = false
    var stdinDriven = false
}

/// Scripts/bench_compare.sh's protocol (the same as Scripts/bench/anchor.py's): one warm-up run, READY, then
/// one timed run per line on stdin, answered with TIME <seconds>; at end of input PEAK <GB of VmHWM>.
/// Several runtimes' processes are driven turn by turn, so their runs interleave A B A B on one machine.
private func serveStdin(_ body: () -> Void) {
    body()
    print("READY")
    fflush(nil)
    while readLine() != nil {
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        print(String(format: "TIME %.4f", Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9))
        fflush(nil)
    }
    print(String(format: "PEAK %.2f", Double(peakRSSBytes() ?? 0) / 1e9))
}

private struct RunStats {
    var seconds: [Double]
    var flops: Double
    /// Per-kind sums over all runs (empty unless profiled).
    var profile: [OpKind: OpProfileEntry] = [:]
}

/// Runs `body` `iterations` times (at least once), counting FLOPs on the first run and, with `profile`,
/// summing every run's per-operation profile.
private func timeRuns(_ iterations: Int, profile: Bool = false, _ body: () -> Void) -> RunStats {
    var seconds: [Double] = []
    var flops = 0.0
    if profile { OpProfile.start() }
    for i in 0..<max(1, iterations) {
        if i == 0 { FLOPCounter.start() }
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        seconds.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        if i == 0 { flops = FLOPCounter.stop() }
        print(String(format: "  run %d: %.3f s", i + 1, seconds[i]))
    }
    return RunStats(seconds: seconds, flops: flops, profile: profile ? OpProfile.stop() : [:])
}

private func report(_ what: String, _ stats: RunStats, options: BenchOptions, json: [String: Any]) {
    let sorted = stats.seconds.sorted()
    let median = sorted.count % 2 == 1 ? sorted[sorted.count / 2]
        : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    let rss = peakRSSBytes()
    let rssText = rss.map { String(format: "%.2f GB", Double($0) / 1e9) } ?? "n/a"
    print(String(format: "  median %.3f s per %@ (min %.3f, max %.3f, %d runs)", median, what,
                 sorted.first!, sorted.last!, sorted.count))
    print(String(format: "  %.1f GFLOP per %@, %.1f GFLOP/s effective", stats.flops / 1e9, what,
                 stats.flops / 1e9 / median))
    print("  peak RSS (VmHWM) \(rssText)")
    if options.profile {
        print(profileTable(stats.profile, runs: stats.seconds.count, wallPerRun: stats.seconds.reduce(0, +)
            / Double(stats.seconds.count), what: what))
    }
    if options.json {
        var line = json
        line["runtime"] = "dp-farm"
        line["threads"] = EngineThreads.count
        line["median_s"] = (median * 1000).rounded() / 1000
        line["min_s"] = (sorted.first! * 1000).rounded() / 1000
        line["peak_gb"] = rss.map { (Double($0) / 1e7).rounded() / 100 } ?? 0
        line["gflop"] = (stats.flops / 1e8).rounded() / 10
        if let data = try? JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]),
           let text = String(data: data, encoding: .utf8) {
            print(text)
        }
    }
}

/// The per-operation table: per run, time, share of the run's wall time, calls, GFLOP and GFLOP/s (products).
func profileTable(_ entries: [OpKind: OpProfileEntry], runs: Int, wallPerRun: Double, what: String) -> String {
    let n = Double(max(1, runs))
    var lines = ["  profile per \(what) (mean of \(runs) runs):",
                 "  | kind | seconds | share | calls | GFLOP | GFLOP/s |",
                 "  | --- | ---: | ---: | ---: | ---: | ---: |"]
    var accounted = 0.0
    for kind in OpKind.allCases {
        guard let e = entries[kind], e.calls > 0 else { continue }
        let s = e.seconds / n
        accounted += s
        let rate = kind.isProduct && s > 0 ? String(format: "%.1f", e.flops / n / 1e9 / s) : ""
        let gflop = kind.isProduct ? String(format: "%.1f", e.flops / n / 1e9) : ""
        lines.append(String(format: "  | %@ | %.3f | %.1f%% | %d | %@ | %@ |", kind.label, s,
                            100 * s / max(wallPerRun, 1e-12), Int((Double(e.calls) / n).rounded()), gflop, rate))
    }
    let rest = wallPerRun - accounted
    lines.append(String(format: "  | not in an op (allocation, time embedding, scheduling) | %.3f | %.1f%% | | | |",
                        rest, 100 * rest / max(wallPerRun, 1e-12)))
    return lines.joined(separator: "\n")
}

/// VmHWM of this process from /proc/self/status, in bytes (nil where unavailable).
func peakRSSBytes() -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        if fields.count >= 2, let kb = Int(fields[1]) { return kb * 1024 }
    }
    return nil
}

/// Deterministic values in [-1, 1) (the benchmarks need data, not a distribution).
private func benchNoise(_ shape: [Int], seed: UInt32) -> Tensor {
    var s = seed &* 2_654_435_761 &+ 12_345
    return Tensor(shape: shape) { out in
        for i in out.indices {
            s = s &* 1_664_525 &+ 1_013_904_223
            out[i] = Float(s >> 8) / Float(1 << 23) - 1
        }
    }
}

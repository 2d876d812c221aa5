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
func benchUNet(preset: String, height: Int, width: Int, batch: Int, iterations: Int) throws {
    let config = try unetPreset(preset)
    let contextTokens = 50
    print("unet \(preset): batch \(batch), latent \(height)x\(width), context \(contextTokens)x\(config.crossAttentionDim), threads \(EngineThreads.count)")
    let (unet, buildSeconds, parameters) = try build { try UNet2DConditionModel(config: config, weights: $0) }
    print(String(format: "  built in %.1f s: %.1f M parameters (%.2f GB f32)", buildSeconds,
                 Double(parameters) / 1e6, Double(parameters) * 4 / 1e9))
    let sample = benchNoise([batch, config.inChannels, height, width], seed: 1)
    let context = benchNoise([batch, contextTokens, config.crossAttentionDim], seed: 2)
    let timesteps = (0..<batch).map { Float(981 - 40 * $0) }
    var out = Tensor(zeros: [0])
    let stats = timeRuns(iterations) { out = unet.forward(sample, timesteps: timesteps, encoderHiddenStates: context) }
    precondition(out.data.allSatisfy { $0.isFinite }, "UNet output has non-finite values")
    report("forward", stats)
}

/// Times a full VAE decode to `height` x `width` PIXELS (latent height/8 x width/8 for SD).
/// Preset "sd15": SD-1.5's VAE; "tiny": the golden cases' narrow VAE.
func benchVAE(preset: String, height: Int, width: Int, iterations: Int = 3) throws {
    let config = try vaePreset(preset)
    let f = config.downsampleFactor
    guard height % f == 0, width % f == 0 else {
        throw ModelBenchError(description: "vae: \(height)x\(width) is not a multiple of the VAE factor \(f)")
    }
    print("vae \(preset): decode \(height / f)x\(width / f) latent -> \(height)x\(width) image, threads \(EngineThreads.count)")
    let (vae, buildSeconds, parameters) = try build { try AutoencoderKL(config: config, weights: $0) }
    print(String(format: "  built in %.1f s: %.1f M parameters (%.2f GB f32)", buildSeconds,
                 Double(parameters) / 1e6, Double(parameters) * 4 / 1e9))
    let z = benchNoise([1, config.latentChannels, height / f, width / f], seed: 3)
    var image = Tensor(zeros: [0])
    let stats = timeRuns(iterations) { image = vae.decode(z) }
    precondition(image.shape == [1, config.outChannels, height, width], "VAE decoded \(image.shape)")
    report("decode", stats)
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

private struct RunStats {
    var seconds: [Double]
    var flops: Double
}

/// Runs `body` `iterations` times (at least once), counting FLOPs on the first run.
private func timeRuns(_ iterations: Int, _ body: () -> Void) -> RunStats {
    var seconds: [Double] = []
    var flops = 0.0
    for i in 0..<max(1, iterations) {
        if i == 0 { FLOPCounter.start() }
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        seconds.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        if i == 0 { flops = FLOPCounter.stop() }
        print(String(format: "  run %d: %.3f s", i + 1, seconds[i]))
    }
    return RunStats(seconds: seconds, flops: flops)
}

private func report(_ what: String, _ stats: RunStats) {
    let sorted = stats.seconds.sorted()
    let median = sorted.count % 2 == 1 ? sorted[sorted.count / 2]
        : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    let rss = peakRSSBytes().map { String(format: "%.2f GB", Double($0) / 1e9) } ?? "n/a"
    print(String(format: "  median %.3f s per %@ (min %.3f, max %.3f, %d runs)", median, what,
                 sorted.first!, sorted.last!, sorted.count))
    print(String(format: "  %.1f GFLOP per %@, %.1f GFLOP/s effective", stats.flops / 1e9, what,
                 stats.flops / 1e9 / median))
    print("  peak RSS (VmHWM) \(rss)")
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

import DPFileKit
import ArgumentParser
import DPSampling
import DPTensor
import Foundation

/// `dp-bench`: parity checks against golden cases and performance benchmarks (not tests).
struct DPBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dp-bench",
        abstract: "Parity checks and benchmarks for the dp-farm engine and farm.",
        subcommands: [Parity.self, Gemm.self, Conv.self, Attention.self, UNet.self, VAE.self, Frame.self, FarmBenchCommand.self,
                      JournalBenchCommand.self, QualityCommand.self])
}

struct ThreadOption: ParsableArguments {
    @Option(help: "Engine threads (default: all cores).") var threads: Int?
    func apply() { if let threads { EngineThreads.configure(threads) } }
}

extension DPBench {
    struct Parity: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run every golden case of a case directory (or a folder of them); exit 1 if any exceeds 1e-4.")
        @Argument(help: "Golden case directory holding manifest.json (or a folder of such directories).")
        var caseDir: String
        func run() throws {
            let status = runParity(caseDir: caseDir)
            if status != 0 { throw ExitCode(status) }
        }
    }

    struct Gemm: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "sgemm GFLOP/s on UNet-shaped products, 1 and 2 threads.")
        @Option(help: "Repeats per shape (median reported).") var repeats = 5
        func run() { print(runGemmBenchmark(threads: [1, 2], repeats: repeats)) }
    }

    struct Conv: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One 3x3 convolution (stride 1, padding 1), im2col vs Winograd F(4x4, 3x3).")
        @Option(help: "Images.") var batch = 3
        @Option(help: "Input channels.") var cin = 320
        @Option(help: "Output channels.") var cout = 320
        @Option(help: "Height.") var height = 80
        @Option(help: "Width.") var width = 64
        @Option(help: "Repeats (best reported).") var repeats = 5
        @Flag(help: "Sweep every distinct 3x3 convolution of an SD-1.5 UNet forward at a --height x --width latent (automatic path; --cin/--cout ignored).")
        var unetShapes = false
        @Flag(help: "With --unet-shapes: also time forced im2col and forced Winograd per shape.") var compare = false
        @Flag(help: "With --unet-shapes: write a 512 MB buffer before each timed call (the filter then comes from memory, as in a forward).")
        var cold = false
        @Option(help: "Time only this algorithm (im2col, winograd, winograd2x2, automatic).") var only: String?
        @OptionGroup var threads: ThreadOption
        func run() {
            threads.apply()
            if unetShapes {
                benchUNetConvShapes(batch: batch, height: height, width: width, repeats: repeats, compare: compare,
                                    cold: cold)
                return
            }
            benchConv3x3(batch: batch, cin: cin, cout: cout, height: height, width: width, repeats: repeats,
                         only: only.flatMap(Conv3x3Algorithm.init(rawValue:)))
        }
    }

    struct Attention: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The fused attention op on the SD-1.5 UNet's shapes (batch 3, 8 heads) at a latent size.")
        @Option(help: "Images.") var batch = 3
        @Option(help: "Latent height.") var height = 80
        @Option(help: "Latent width.") var width = 64
        @Option(help: "Repeats (best reported).") var repeats = 3
        @OptionGroup var threads: ThreadOption
        func run() {
            threads.apply()
            benchAttention(height: height, width: width, batch: batch, repeats: repeats)
        }
    }

    struct UNet: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "unet", abstract: "Median seconds per UNet forward with random weights (latent size).")
        @Option(help: "sd15 or tiny.") var preset = "sd15"
        @Option(help: "Latent height.") var height = 64
        @Option(help: "Latent width.") var width = 64
        @Option(help: "Batch size (3 = DreamPose's dual guidance).") var batch = 1
        @Option(help: "Timed forwards.") var iterations = 3
        @Flag(help: "Also print time, FLOPs and GFLOP/s per kind of operation, per forward.") var profile = false
        @Flag(help: "Print one JSON line with the median (for Scripts/bench_compare.sh).") var json = false
        @Flag(help: "Scripts/bench_compare.sh's protocol: after one warm-up forward print READY, then run one timed forward per line read on stdin (printing TIME seconds) until end of input.")
        var stdinDriven = false
        @OptionGroup var threads: ThreadOption
        func run() throws {
            threads.apply()
            try benchUNet(preset: preset, height: height, width: width, batch: batch, iterations: iterations,
                          options: BenchOptions(profile: profile, json: json, stdinDriven: stdinDriven))
        }
    }

    struct VAE: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "vae", abstract: "Median seconds per VAE decode with random weights (pixel size).")
        @Option(help: "sd15 or tiny.") var preset = "sd15"
        @Option(help: "Image height in pixels.") var height = 640
        @Option(help: "Image width in pixels.") var width = 512
        @Option(help: "Timed decodes.") var iterations = 3
        @Flag(help: "Also print time, FLOPs and GFLOP/s per kind of operation, per decode.") var profile = false
        @Flag(help: "Print one JSON line with the median (for Scripts/bench_compare.sh).") var json = false
        @Flag(help: "Scripts/bench_compare.sh's protocol: after one warm-up decode print READY, then run one timed decode per line read on stdin (printing TIME seconds) until end of input.")
        var stdinDriven = false
        @OptionGroup var threads: ThreadOption
        func run() throws {
            threads.apply()
            try benchVAE(preset: preset, height: height, width: width, iterations: iterations,
                         options: BenchOptions(profile: profile, json: json, stdinDriven: stdinDriven))
        }
    }

    struct Frame: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One full DreamPose frame with random weights through dp-worker render's code path.")
        @Option(help: "sd15 (real sizes) or tiny.") var preset = "sd15"
        @Option(help: "Denoising steps.") var steps = 2
        @Option(help: "pndm, ddim or dpm.") var sampler = "pndm"
        @Option(help: "Frame height in pixels.") var height = 640
        @Option(help: "Frame width in pixels.") var width = 512
        @OptionGroup var threads: ThreadOption
        func run() throws {
            threads.apply()
            guard let kind = SamplerKind(rawValue: sampler) else { throw ValidationError("unknown sampler \(sampler)") }
            try benchFrame(preset: preset, steps: steps, sampler: kind, height: height, width: width)
        }
    }
}

DPBench.main()

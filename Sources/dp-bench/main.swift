import ArgumentParser
import DPSampling
import DPTensor
import Foundation

/// `dp-bench`: parity checks against golden cases and performance benchmarks (not tests).
struct DPBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dp-bench",
        abstract: "Parity checks and benchmarks for the dp-farm engine and farm.",
        subcommands: [Parity.self, Gemm.self, UNet.self, VAE.self, Frame.self, FarmBenchCommand.self, JournalBenchCommand.self, QualityCommand.self])
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

    struct UNet: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "unet", abstract: "Median seconds per UNet forward with random weights (latent size).")
        @Option(help: "sd15 or tiny.") var preset = "sd15"
        @Option(help: "Latent height.") var height = 64
        @Option(help: "Latent width.") var width = 64
        @Option(help: "Batch size (3 = DreamPose's dual guidance).") var batch = 1
        @Option(help: "Timed forwards.") var iterations = 3
        @OptionGroup var threads: ThreadOption
        func run() throws {
            threads.apply()
            try benchUNet(preset: preset, height: height, width: width, batch: batch, iterations: iterations)
        }
    }

    struct VAE: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "vae", abstract: "Median seconds per VAE decode with random weights (pixel size).")
        @Option(help: "sd15 or tiny.") var preset = "sd15"
        @Option(help: "Image height in pixels.") var height = 640
        @Option(help: "Image width in pixels.") var width = 512
        @Option(help: "Timed decodes.") var iterations = 3
        @OptionGroup var threads: ThreadOption
        func run() throws {
            threads.apply()
            try benchVAE(preset: preset, height: height, width: width, iterations: iterations)
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

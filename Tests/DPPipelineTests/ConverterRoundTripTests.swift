// The checkpoint converter (Scripts/convert_dreampose_checkpoint.py) end to end, as a user runs it:
// fake DreamPose release files are made from each golden pipeline model (../shared/golden/*/model,
// produced by diffusers/transformers; Scripts/make_fake_checkpoints.py re-saves its weights the way the
// release stores them: .pth state dicts, `module.` prefixes, old VAE attention names, a full CLIPModel),
// converted by the script into a temp folder, and loaded with the engine's own loaders. The converted
// networks must compute exactly what the golden model's networks compute, and the folder's ModelID must
// be the same for two conversions and agree with the id the script prints.
//
// Needs python3 with torch and safetensors (Scripts/setup.sh installs them); skipped without them.

import DPModels
import DPFileKit
import DPPipeline
import DPTensor
import Foundation
import XCTest

final class ConverterRoundTripTests: XCTestCase {
    /// <repo>/Tests/DPPipelineTests/<this file> -> <repo>.
    static let repo = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// <repo>/../shared/golden, or $DP_GOLDEN_DIR.
    static var goldenRoot: URL {
        if let dir = ProcessInfo.processInfo.environment["DP_GOLDEN_DIR"], !dir.isEmpty {
            return URL(fileURLWithPath: dir, isDirectory: true)
        }
        return repo.deletingLastPathComponent().appendingPathComponent("shared/golden", isDirectory: true)
    }

    /// Every golden case that carries a dreampose-model/1 folder (`<case>/model/dreampose.json`).
    static func goldenModels() throws -> [URL] {
        let fm = FileManager.default
        return try fm.contentsOfDirectory(atPath: goldenRoot.path).sorted()
            .map { goldenRoot.appendingPathComponent($0).appendingPathComponent("model", isDirectory: true) }
            .filter { fm.fileExists(atPath: $0.appendingPathComponent("dreampose.json").path) }
    }

    var work: URL!

    override func setUpWithError() throws {
        // find_spec looks the packages up without importing torch (seconds saved per test).
        let probe = try Self.python(["-c", """
            import importlib.util, sys
            sys.exit(0 if all(importlib.util.find_spec(m) for m in ("torch", "safetensors")) else 1)
            """])
        if probe.status != 0 {
            throw XCTSkip("python3 cannot import torch and safetensors (run Scripts/setup.sh): \(probe.output)")
        }
        work = FileManager.default.temporaryDirectory
            .appendingPathComponent("dp-converter-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let work { try? FileManager.default.removeItem(at: work) }
    }

    func testConvertedReleaseLoadsAndComputesLikeTheSourceModel() throws {
        let models = try Self.goldenModels()
        XCTAssertFalse(models.isEmpty, "no golden model folders (*/model/dreampose.json) under \(Self.goldenRoot.path)")
        for (index, source) in models.enumerated() {
            let release = work.appendingPathComponent("release-\(index)")
            try Self.runScript("make_fake_checkpoints.py", ["--model", source.path, "--out", release.path])

            let first = work.appendingPathComponent("converted-\(index)-a")
            let second = work.appendingPathComponent("converted-\(index)-b")
            let printedID = try convert(release, source: source, into: first)
            _ = try convert(release, source: source, into: second)

            // Identity: stable across conversions, and the same in Swift and in the script.
            let id = try ModelManifest.modelID(directory: first)
            XCTAssertEqual(id, try ModelManifest.modelID(directory: second), "\(source.path): two conversions differ")
            XCTAssertEqual(id, printedID, "\(source.path): Swift ModelID vs the converter's printed id")

            try assertSameNetworks(converted: first, source: source)
        }
    }

    func testFloat16ConversionLoads() throws {
        guard let source = try Self.goldenModels().first else {
            return XCTFail("no golden model folders under \(Self.goldenRoot.path)")
        }
        let release = work.appendingPathComponent("release")
        try Self.runScript("make_fake_checkpoints.py", ["--model", source.path, "--out", release.path])
        let half = work.appendingPathComponent("converted-f16")
        _ = try convert(release, source: source, into: half, extra: ["--dtype", "float16"])

        // F16 weights are the F32 ones rounded to 11 significant bits: outputs agree to ~1e-3 relative.
        let unet = try UNet2DConditionModel.load(directory: half.appendingPathComponent("unet"))
        let reference = try UNet2DConditionModel.load(directory: source.appendingPathComponent("unet"))
        let (sample, context) = unetInputs(reference.config)
        let want = reference(sample, timestep: 981, encoderHiddenStates: context)
        let got = unet(sample, timestep: 981, encoderHiddenStates: context)
        XCTAssertEqual(got.shape, want.shape)
        let scale = want.data.map(abs).max() ?? 0
        let worst = zip(got.data, want.data).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThanOrEqual(worst, 1e-2 * scale, "float16 UNet: max |diff| \(worst) vs max |out| \(scale)")
        XCTAssertGreaterThan(worst, 0, "float16 UNet output equals the float32 one: were the weights rounded?")
    }

    // MARK: - Helpers

    /// Converts `release` with the source model's own name and frame size; returns the printed model id.
    /// (The name is part of dreampose.json, so leaving it to default to the output folder's name would
    /// make two conversions into different folders two different models.)
    func convert(_ release: URL, source: URL, into out: URL, extra: [String] = []) throws -> String {
        let settings = try JSONSerialization.jsonObject(
            with: Data(contentsOf: source.appendingPathComponent("dreampose.json"))) as? [String: Any]
        guard let name = settings?["name"] as? String,
              let height = settings?["height"] as? Int, let width = settings?["width"] as? Int else {
            throw HarnessError(description: "\(source.path)/dreampose.json lacks name, height or width")
        }
        let output = try Self.runScript("convert_dreampose_checkpoint.py", [
            "--folder", release.path, "--epoch", "7", "--vae", release.appendingPathComponent("vae_15.pth").path,
            "--clip", release.appendingPathComponent("clip").path, "--out", out.path, "--name", name,
            "--height", String(height), "--width", String(width),
        ] + extra)
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("model id: ") }) else {
            XCTFail("converter printed no model id:\n\(output)")
            return ""
        }
        return String(line.dropFirst("model id: ".count))
    }

    /// The converted UNet, VAE and CLIP compute bit for bit what the golden model's compute.
    func assertSameNetworks(converted: URL, source: URL) throws {
        let unet = try UNet2DConditionModel.load(directory: converted.appendingPathComponent("unet"))
        let unetRef = try UNet2DConditionModel.load(directory: source.appendingPathComponent("unet"))
        let (sample, context) = unetInputs(unetRef.config)
        assertIdentical(unet(sample, timestep: 501, encoderHiddenStates: context),
                        unetRef(sample, timestep: 501, encoderHiddenStates: context), "UNet of \(converted.path)")

        let vae = try AutoencoderKL.load(directory: converted.appendingPathComponent("vae"))
        let vaeRef = try AutoencoderKL.load(directory: source.appendingPathComponent("vae"))
        let z = pseudoRandom([1, vaeRef.config.latentChannels, 4, 4], seed: 3)  // [1, latent, 4, 4]
        assertIdentical(vae.decode(z), vaeRef.decode(z), "VAE of \(converted.path)")

        let clip = try CLIPVisionModel.load(directory: converted.appendingPathComponent("image_encoder"))
        let clipRef = try CLIPVisionModel.load(directory: source.appendingPathComponent("image_encoder"))
        let c = clipRef.config
        let pixels = pseudoRandom([1, c.numChannels, c.imageSize, c.imageSize], seed: 4)  // [1, 3, S, S]
        assertIdentical(clip(pixels).lastHiddenState, clipRef(pixels).lastHiddenState, "CLIP of \(converted.path)")
    }

    /// A sample whose size survives every downsampling of the UNet, and a short context.
    func unetInputs(_ config: UNet2DConditionConfig) -> (sample: Tensor, context: Tensor) {
        let side = 1 << (config.blockOutChannels.count - 1)
        let sample = pseudoRandom([1, config.inChannels, side, side], seed: 1)   // [1, in, s, s]
        let context = pseudoRandom([1, 7, config.crossAttentionDim], seed: 2)     // [1, 7, D]
        return (sample, context)
    }

    func assertIdentical(_ got: Tensor, _ want: Tensor, _ what: String, line: UInt = #line) {
        XCTAssertEqual(got.shape, want.shape, what, line: line)
        let worst = zip(got.data, want.data).map { abs($0 - $1) }.max() ?? 0
        XCTAssertEqual(worst, 0, "\(what): max |diff| \(worst) from the golden model's output", line: line)
    }

    /// Deterministic values in [-1, 1) (a 64-bit LCG), so a failure reproduces.
    func pseudoRandom(_ shape: [Int], seed: UInt64) -> Tensor {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1
        return Tensor(shape: shape, filling: { buffer in
            for i in buffer.indices {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                buffer[i] = Float(state >> 40) / Float(1 << 23) - 1
            }
        })
    }

    // MARK: - Running python3

    /// Runs `python3 <args>`; returns the exit status and stdout+stderr together.
    static func python(_ args: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + args
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()  // one pipe for both: no deadlock
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Runs Scripts/<name> with python3; fails the test with the script's output if it exits non-zero.
    @discardableResult
    static func runScript(_ name: String, _ args: [String]) throws -> String {
        let script = repo.appendingPathComponent("Scripts").appendingPathComponent(name).path
        let (status, output) = try python([script] + args)
        guard status == 0 else {
            throw HarnessError(description: "\(name) \(args.joined(separator: " ")) exited \(status):\n\(output)")
        }
        return output
    }

    struct HarnessError: Error, CustomStringConvertible {
        let description: String
    }
}

// The fuzz entry points: one per input format that reaches dp-farm from a file or a peer. Each feeds its
// bytes through the same public parsing/validation code the coordinator, the worker and the CLIs use.
// An input is either accepted or rejected with an error; anything else (a trap, a signal, a sanitizer
// report, a runaway allocation) is a bug. Two callers share these functions (Tests/Fuzz/README.md):
//   * dp-fuzz, built by Scripts/fuzz.sh with -sanitize=fuzzer,address, hands them libFuzzer's inputs;
//   * DPFuzzTests (the normal test suite) replays every committed corpus and crash input through them.
import DPCoordinator
import DPFileKit
import DPModels
import DPPipeline
import DPProtocol
import DPSampling
import Foundation

/// What one input did.
public enum FuzzOutcome: Equatable, Sendable {
    case accepted
    /// Refused with this error text (which must name what was wrong).
    case rejected(String)
}

public struct FuzzTarget: Sendable {
    public let name: String
    /// What the target feeds (for `dp-fuzz --list` and the README).
    public let summary: String
    public let run: @Sendable (Data) -> FuzzOutcome
}

public enum FuzzTargets {
    /// Every target, by name; the corpus of target `t` is Tests/Fuzz/corpus/`t`, its reproducers
    /// Tests/Fuzz/crashes/`t`.
    public static let all: [FuzzTarget] = [
        FuzzTarget(name: "npy", summary: "NPY.decode (pose maps, job noise)", run: npy),
        FuzzTarget(name: "png", summary: "PNGCodec.checkHeader + decode (subject images, results)", run: png),
        FuzzTarget(name: "safetensors", summary: "SafeTensorsFile.validateHeader (model weights)", run: safetensors),
        FuzzTarget(name: "config", summary: "UNet/VAE/CLIP/adapter config.json, scheduler_config.json (+ building each scheduler), dreampose.json", run: config),
        FuzzTarget(name: "manifest", summary: "model manifest: JSON sidecar and wire form, then validate()", run: manifest),
        FuzzTarget(name: "envelope", summary: "FarmEnvelope.decode (every ZeroMQ message)", run: envelope),
        FuzzTarget(name: "coordinator", summary: "a live Coordinator's message handlers (real socket, temp journal), then a liveness probe", run: coordinator),
        FuzzTarget(name: "worker", summary: "a live WorkerService's message handlers (scripted coordinator, temp cache), then a liveness check", run: worker),
    ]

    public static func target(named name: String) -> FuzzTarget? { all.first { $0.name == name } }

    static func outcome(_ body: () throws -> Void) -> FuzzOutcome {
        do {
            try body()
            return .accepted
        } catch {
            return .rejected("\(error)")
        }
    }

    @Sendable static func npy(_ data: Data) -> FuzzOutcome {
        outcome {
            let (shape, values) = try NPY.decode(data, name: "fuzz.npy")
            // The invariant the engine relies on: the values fill the shape exactly.
            var count = 1
            for d in shape { count *= d }
            precondition(count == values.count, "NPY.decode returned \(values.count) values for shape \(shape)")
        }
    }

    @Sendable static func png(_ data: Data) -> FuzzOutcome {
        outcome {
            let (w, h) = try PNGCodec.checkHeader(data, name: "fuzz.png")
            let image = try PNGCodec.decode(data, name: "fuzz.png")
            precondition(image.width == w && image.height == h && image.pixels.count == w * h * 3)
        }
    }

    @Sendable static func safetensors(_ data: Data) -> FuzzOutcome {
        outcome { _ = try SafeTensorsFile.validateHeader(data, file: "fuzz.safetensors") }
    }

    /// The config readers of a model folder, chosen by the first byte (the rest is the file's text):
    /// `U` unet/config.json, `V` vae/config.json, `C` image_encoder/config.json, `A` adapter/config.json,
    /// `S` scheduler/scheduler_config.json (then each scheduler is built for a few step counts, as a render
    /// would), `D` dreampose.json (the pipeline's and the coordinator's reader). Other first bytes pick a
    /// reader by their value, so every mutation lands somewhere.
    @Sendable static func config(_ data: Data) -> FuzzOutcome {
        guard let first = data.first else { return .rejected("empty input") }
        let text = Data(data.dropFirst())
        let readers: [UInt8] = Array("UVCASD".utf8)
        let kind = readers.contains(first) ? first : readers[Int(first) % readers.count]
        return outcome {
            switch kind {
            case UInt8(ascii: "U"): _ = try UNet2DConditionConfig.parse(text, file: "unet/config.json")
            case UInt8(ascii: "V"): _ = try AutoencoderKLConfig.parse(text, file: "vae/config.json")
            case UInt8(ascii: "C"): _ = try CLIPVisionConfig.parse(text, file: "image_encoder/config.json")
            case UInt8(ascii: "A"): _ = try AdapterConfig.parse(text, file: "adapter/config.json")
            case UInt8(ascii: "S"):
                let config = try SchedulerConfig.decode(text, file: "scheduler/scheduler_config.json")
                for kind in SamplerKind.allCases {
                    for steps in [1, 2, 50, 1000] { _ = try? makeScheduler(kind, config: config, steps: steps) }
                }
            default:
                // Both readers must agree (the coordinator's and the worker's view of a model).
                let pipeline = Result { try DreamPoseConfig.parse(text, file: "dreampose.json") }
                let file = try DreamPoseFile.parse(text, file: "dreampose.json")
                if case .success(let c) = pipeline {
                    precondition(c.file == file)
                }
                _ = try pipeline.get()
            }
        }
    }

    /// First byte 0x7B ('{'): the JSON sidecar the coordinator keeps next to a model; otherwise the wire form
    /// (a FarmModelManifest, as in SubmitJob and ModelManifest replies).
    @Sendable static func manifest(_ data: Data) -> FuzzOutcome {
        outcome {
            let manifest: ModelManifest
            if data.first == UInt8(ascii: "{") {
                manifest = try JSONDecoder().decode(ModelManifest.self, from: data)
            } else {
                manifest = ModelManifest(wire: try FarmModelManifest(serializedBytes: data))
            }
            try manifest.validate()
            for file in manifest.files {
                if let problem = RelativePath.problem(file.path) { throw FuzzRejection(problem) }
            }
            precondition(manifest.totalBytes <= ModelManifest.maxTotalBytes)
        }
    }

    /// Started on first use: the coordinator, its state folder and the two peers live as long as the process.
    nonisolated(unsafe) static var coordinatorHarness: CoordinatorHarness?

    @Sendable static func coordinator(_ data: Data) -> FuzzOutcome {
        if coordinatorHarness == nil {
            do { coordinatorHarness = try CoordinatorHarness() } catch { fatalError("cannot start the coordinator: \(error)") }
        }
        coordinatorHarness!.run(data)
        return .accepted
    }

    /// Stops the coordinator and worker targets' services, if started (the replay test and dp-fuzz replay).
    public static func stopCoordinator() {
        coordinatorHarness?.stop()
        coordinatorHarness = nil
        workerHarness?.stop()
        workerHarness = nil
    }

    nonisolated(unsafe) static var workerHarness: WorkerHarness?

    @Sendable static func worker(_ data: Data) -> FuzzOutcome {
        if workerHarness == nil {
            do { workerHarness = try WorkerHarness() } catch { fatalError("cannot start the worker: \(error)") }
        }
        workerHarness!.run(data)
        return .accepted
    }

    @Sendable static func envelope(_ data: Data) -> FuzzOutcome {
        outcome {
            let envelope = try FarmEnvelope.decode(data)
            _ = envelope.bodyName
            // What a receiver does next with the manifests and names inside: re-encode must work.
            _ = try envelope.encoded()
        }
    }
}

struct FuzzRejection: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

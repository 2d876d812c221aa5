// swift-tools-version:6.0
// dp-farm: a CPU DreamPose renderer and render farm.
// Module graph (dependencies point down):
//   DPTensor <- DPModels <- DPSampling / DPPipeline <- DPWorker (the engine modules also use DPFileKit)
//   DPFileKit <- DPProtocol <- DPTransport <- DPCoordinator and DPWorker
//   DPProtocol <- DPLog (swift-log handler, FarmEvent) <- DPCoordinator, DPWorker, DPCLISupport
//   executables on top. The engine never imports ZeroMQ or SQLite; DPCoordinator never imports the models.
import PackageDescription

// -Ounchecked (no overflow or bounds traps) only on the numeric kernels of DPTensor, which take no input from
// files or peers. Everything that parses or validates outside data (NPY, PNG, safetensors, configs,
// dreampose.json, manifests, wire messages) is built with checks on (SECURITY.md).
let release: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release)),
]
let checked: [SwiftSetting] = [
    .unsafeFlags(["-wmo"], .when(configuration: .release)),
]

let package = Package(
    name: "dp-farm",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "dp-coord", targets: ["dp-coord"]),
        .executable(name: "dp-worker", targets: ["dp-worker"]),
        .executable(name: "dp-bench", targets: ["dp-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // C libraries from Debian packages.
        .systemLibrary(name: "CPNG", path: "Sources/CPNG", pkgConfig: "libpng16"),
        .systemLibrary(name: "CZeroMQ", path: "Sources/CZeroMQ", pkgConfig: "libzmq"),
        .systemLibrary(name: "CSQLite3", path: "Sources/CSQLite3", pkgConfig: "sqlite3"),

        // The engine.
        // Vectorised kernels (pointwise, Winograd transforms; AVX2+FMA / AVX-512 picked at run time), -O2 even in
        // debug, and the one path into OpenBLAS: opened with dlopen at the first product, not linked, so the
        // kernel set can be chosen first (blas.c says why).
        .target(name: "CDPKernels", path: "Sources/CDPKernels", cSettings: [.unsafeFlags(["-O2"])]),
        // Linux calls Swift cannot make itself (variadic prctl).
        .target(name: "CDPSys", path: "Sources/CDPSys"),
        .target(name: "DPTensor", dependencies: ["CDPKernels"], swiftSettings: release),
        .target(name: "DPModels", dependencies: ["DPTensor", "DPFileKit"], swiftSettings: checked),
        .target(name: "DPSampling", dependencies: ["DPTensor", "DPFileKit"], swiftSettings: checked),
        // Golden-case reading and the parity runner (dp-bench parity and the tests share it).
        .target(name: "DPGolden", dependencies: ["DPTensor", "DPModels", "DPSampling", "DPPipeline", "DPFileKit"], swiftSettings: checked),
        .target(name: "DPPipeline",
                dependencies: ["DPTensor", "DPModels", "DPSampling", "DPFileKit", "CPNG"],
                swiftSettings: checked),

        // The farm.
        // Model manifest/identity, file SHA-256 and crash-safe writes: shared by the coordinator (no
        // model code), the worker's model cache and (later) the pipeline.
        .target(name: "DPFileKit", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "DPProtocol",
                dependencies: ["DPFileKit", .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        .target(name: "DPTransport", dependencies: ["CZeroMQ"]),
        // Logging (swift-log) with the farm's handler (text or JSON lines) and its typed events (FarmEvent):
        // the coordinator, the worker and both executables log through it.
        .target(name: "DPLog", dependencies: ["DPProtocol", .product(name: "Logging", package: "swift-log")]),
        .target(name: "DPJournal", dependencies: ["CSQLite3"]),
        .target(name: "DPCoordinator",
                dependencies: ["DPProtocol", "DPTransport", "DPJournal", "DPFileKit", "CDPSys", "DPLog",
                               .product(name: "Crypto", package: "swift-crypto")],
                exclude: ["DESIGN.md"]),
        .target(name: "DPWorker",
                dependencies: ["DPPipeline", "DPProtocol", "DPTransport", "DPFileKit", "CDPSys", "DPLog",
                               .product(name: "Crypto", package: "swift-crypto")]),

        // Executables.
        // The rendering options (--model ... --noise) that dp-coord submit and dp-worker render both take:
        // one ParsableArguments declaration with the checks that need no files (DPFileKit's RenderRequest), and the
        // --log-level / --log-format options (DPLog), and the keygen command's output (DPTransport's CurveKeyFile).
        .target(name: "DPCLISupport",
                dependencies: ["DPFileKit", "DPLog", "DPTransport", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                               .product(name: "Logging", package: "swift-log")]),
        .executableTarget(name: "dp-coord",
                          dependencies: ["DPCoordinator", "DPWorker", "DPTransport", "DPCLISupport", "DPLog",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(name: "dp-worker",
                          dependencies: ["DPWorker", "DPPipeline", "DPFileKit", "DPCLISupport", "DPTransport", "DPLog",
                                         // render's frame records (RenderRecords) and `health` (FarmClient)
                                         "DPCoordinator",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(name: "dp-bench",
                          dependencies: ["DPTensor", "DPModels", "DPSampling", "DPPipeline", "DPGolden", "DPFileKit",
                                         "DPCoordinator", "DPWorker", "DPTransport", "CDPSys",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          swiftSettings: checked),

        // Fuzzing (Tests/Fuzz/README.md): the fuzz entry points, one per input format, shared by the libFuzzer
        // driver (dp-fuzz built by Scripts/fuzz.sh with -sanitize=fuzzer) and the corpus replay test.
        .target(name: "DPFuzzTargets",
                dependencies: ["DPPipeline", "DPModels", "DPSampling", "DPFileKit", "DPProtocol", "DPCoordinator",
                               "DPTransport", "DPWorker"],
                path: "Tests/Fuzz/Targets"),
        .executableTarget(name: "dp-fuzz", dependencies: ["DPFuzzTargets"], path: "Tests/Fuzz/Driver"),

        // Tests.
        .testTarget(name: "DPTensorTests", dependencies: ["DPTensor"]),
        .testTarget(name: "DPModelsTests", dependencies: ["DPModels", "DPTensor", "DPGolden"]),
        .testTarget(name: "DPSamplingTests", dependencies: ["DPSampling", "DPTensor", "DPGolden", "DPFileKit"], exclude: ["Reference"]),
        .testTarget(name: "DPPipelineTests", dependencies: ["DPPipeline", "DPGolden", "DPFileKit"]),
        .testTarget(name: "DPFuzzTests", dependencies: ["DPFuzzTargets"], path: "Tests/Fuzz/Replay"),
        .testTarget(name: "DPFarmTests",
                    dependencies: ["DPCoordinator", "DPWorker", "DPProtocol", "DPTransport", "DPJournal", "DPFileKit", "DPLog",
                                   "DPCLISupport", .product(name: "Logging", package: "swift-log")]),
    ]
)

import DPCoordinator
import DPFileKit
import DPJournal
import DPProtocol
import Foundation
import XCTest

/// One render request (DPFileKit's RenderRequest) for the CLI, the coordinator and the workers: one check, one
/// set of defaults, one conversion to and from the wire (issue 14: `--steps 2000` was accepted and journalled,
/// then failed on every worker).
final class RenderRequestTests: XCTestCase {
    var root: URL!

    override func setUpWithError() throws {
        root = try FarmFixtures.tempDirectory("render-request")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: root)
    }

    func testProblems() {
        XCTAssertNil(RenderRequest().problem())
        XCTAssertNil(RenderRequest(steps: 1000, sampler: .dpm, imageGuidance: -2, poseGuidance: 1000, frames: [0, 7]).problem())
        XCTAssertEqual(RenderRequest(steps: 2000).problem(), "steps must be from 1 to 1000 (got 2000)")
        XCTAssertEqual(RenderRequest(steps: 0).problem(), "steps must be from 1 to 1000 (got 0)")
        XCTAssertNotNil(RenderRequest(imageGuidance: .nan).problem())
        XCTAssertNotNil(RenderRequest(poseGuidance: 1e30).problem())
        XCTAssertNotNil(RenderRequest(frames: [-1]).problem())
        XCTAssertThrowsError(try SamplerKind.named("euler")) {
            XCTAssertEqual("\($0)", "unknown sampler \"euler\" (expected one of: pndm, ddim, dpm)")
        }
        // Peer text in the message is cut and kept printable.
        XCTAssertThrowsError(try SamplerKind.named(String(repeating: "\n", count: 100))) {
            XCTAssertFalse("\($0)".contains("\n"))
            XCTAssertLessThan("\($0)".count, 120)
        }
    }

    /// nil settings take the model's dreampose.json defaults, given ones are kept; a bad one is refused.
    func testResolvedTakesTheModelsDefaults() throws {
        let model = try DreamPoseFile.parse(Data(#"""
            {"format": "dreampose-model/1", "height": 128, "width": 128,
             "defaults": {"steps": 15, "sampler": "dpm", "image_guidance": 1, "pose_guidance": 2}}
            """#.utf8))
        let defaults = try RenderRequest().resolved(defaults: model)
        XCTAssertEqual(defaults, ResolvedRenderRequest(steps: 15, sampler: .dpm, imageGuidance: 1, poseGuidance: 2,
                                                       noise: .seed(NoiseRequest.defaultSeed)))
        let given = try RenderRequest(steps: 3, sampler: .ddim, poseGuidance: 5, noise: .seed(9)).resolved(defaults: model)
        XCTAssertEqual(given, ResolvedRenderRequest(steps: 3, sampler: .ddim, imageGuidance: 1, poseGuidance: 5, noise: .seed(9)))
        XCTAssertThrowsError(try RenderRequest(steps: 2000).resolved(defaults: model)) {
            XCTAssertEqual("\($0)", "steps must be from 1 to 1000 (got 2000)")
        }
        // A model may not declare a sampler the engine lacks either (the same words, naming the key).
        XCTAssertThrowsError(try DreamPoseFile.parse(Data(#"""
            {"format": "dreampose-model/1", "height": 128, "width": 128, "defaults": {"sampler": "euler"}}
            """#.utf8))) {
            XCTAssertTrue("\($0)".contains("defaults.sampler: unknown sampler \"euler\""), "\($0)")
        }
    }

    /// The wire form round-trips every setting; what a peer cannot be allowed to send is refused on reading.
    func testWireRoundTripAndHostileValues() throws {
        let noise = NPY.encode(shape: [1, 4, 2, 2], values: (0..<16).map(Float.init))
        let requests = [
            RenderRequest(),
            RenderRequest(steps: 7, sampler: .pndm, imageGuidance: 0, poseGuidance: -1.5, noise: .seed(.max),
                          frames: [3, 1, 2], order: .preview),
            RenderRequest(sampler: .dpm, noise: .npy(noise), frames: [0]),
        ]
        for request in requests {
            var spec = FarmJobSpec()
            spec.set(request)
            let decoded = try FarmJobSpec(serializedBytes: try spec.serializedData())
            XCTAssertEqual(try RenderRequest(spec: decoded), request)
        }
        var spec = FarmJobSpec()
        spec.settings.sampler = "euler"
        XCTAssertThrowsError(try RenderRequest(spec: spec)) {
            XCTAssertEqual("\($0)", "unknown sampler \"euler\" (expected one of: pndm, ddim, dpm)")
        }
        spec = FarmJobSpec()
        spec.settings.steps = .max
        XCTAssertThrowsError(try RenderRequest(spec: spec)) {
            XCTAssertEqual("\($0)", "steps must be from 1 to 1000 (got \(UInt32.max))")
        }
        spec = FarmJobSpec()
        spec.order = .UNRECOGNIZED(9)
        XCTAssertThrowsError(try RenderRequest(spec: spec)) { XCTAssertTrue("\($0)".contains("unknown frame order 9")) }
        spec = FarmJobSpec()
        spec.settings.hasPoseGuidance_p = true
        spec.settings.poseGuidance = .infinity
        XCTAssertThrowsError(try RenderRequest(spec: spec)) { XCTAssertTrue("\($0)".contains("pose guidance")) }
    }

    /// A `--noise` file is read once into the .npy form; its values and SHA-256 come from that one form, and a
    /// file of the wrong size is refused by its size.
    func testNoiseFileIsReadOnceIntoTheNpyForm() throws {
        let shape = [1, 4, 2, 2]
        let values = (0..<16).map { Float($0) - 7.5 }
        var raw = Data()
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { raw.append(contentsOf: $0) } }
        let file = root.appendingPathComponent("noise.f32")
        try raw.write(to: file)
        let noise = try NoiseRequest.rawFile(file, latentShape: shape)
        XCTAssertEqual(noise, .npy(NPY.encode(shape: shape, values: values)))
        XCTAssertEqual(try noise.values(latentShape: shape, what: "job 1"), values)
        XCTAssertEqual(noise.sha256, FileDigest.sha256(NPY.encode(shape: shape, values: values)))
        XCTAssertNil(noise.seed)
        XCTAssertThrowsError(try noise.values(latentShape: [1, 4, 4, 4], what: "job 1")) {
            XCTAssertEqual("\($0)", "job 1: noise .npy has shape [1, 4, 2, 2], the model's latent is [1, 4, 4, 4]")
        }
        try raw.dropLast(4).write(to: file)
        XCTAssertThrowsError(try NoiseRequest.rawFile(file, latentShape: shape)) {
            XCTAssertTrue("\($0)".contains("60 bytes, expected 64"), "\($0)")
        }
        XCTAssertThrowsError(try NoiseRequest.rawFile(file, latentShape: [1, 1 << 40, 1 << 40, 4])) {
            XCTAssertTrue("\($0)".contains("is not a shape the noise can have"), "\($0)")
        }
    }

    /// The coordinator refuses the request at submit, before anything is journalled, with the message the CLI
    /// gives for the same flag.
    func testCoordinatorRefusesAtSubmitWithTheCLIsMessage() throws {
        let coord = try RunningCoordinator(state: root.appendingPathComponent("state"), clock: ManualClock())
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let client = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 10)
        defer { client.close() }
        var job = FarmFixtures.submission(model: model, frames: [0], out: root.appendingPathComponent("out"))
        job.request.steps = 2000
        XCTAssertThrowsError(try client.submit(job)) { error in
            XCTAssertTrue("\(error)".contains("steps must be from 1 to 1000 (got 2000)"), "\(error)")
        }
        // A sampler name the typed request cannot hold, as a hostile peer sends it.
        let peer = try RawPeer(coord.endpoint, name: "client")
        var submit = FarmFixtures.rawSubmitJob(manifest: try ModelManifest.compute(directory: model), name: "raw",
                                               subject: Data("subject".utf8), pose: Data("pose".utf8), out: "out")
        submit.spec.settings.sampler = "euler"
        try peer.send(.submitJob(submit), requestID: 1)
        let error = try peer.expect("error") { if case .error(let e) = $0 { return e } else { return nil } }
        XCTAssertTrue(error.message.contains("unknown sampler \"euler\""), error.message)
        XCTAssertEqual(try coord.coordinator.journal.jobs().count, 0, "nothing journalled")

        let work = root.appendingPathComponent("cli")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        for (flag, value, message) in [("--steps", "2000", "steps must be from 1 to 1000 (got 2000)"),
                                       ("--sampler", "euler", "unknown sampler \"euler\"")] {
            let cli = try CLITestSupport.run("dp-coord", [
                "submit", "--model", model.path, "--subject", "/nonexistent.png", "--poses", "/nonexistent",
                "--out", work.appendingPathComponent("out").path, flag, value,
            ], work: work, timeout: 60)
            XCTAssertNotEqual(cli.status, 0)
            XCTAssertTrue(cli.stderr.contains(message), cli.stderr)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: work.appendingPathComponent("out").path))
    }
}

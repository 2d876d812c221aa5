import Foundation
import SwiftProtobuf
import XCTest
@testable import DPCoordinator
@testable import DPProtocol

final class ProtocolTests: XCTestCase {
    func testVersionConstantIsOne() {
        XCTAssertEqual(FarmProtocol.version, 1)
    }

    func testFrameTaskRoundTripKeepsEveryField() throws {
        var task = FarmFrameTask()
        task.jobID = 42
        task.attemptID = 9_000_000_001
        task.frame = 17
        task.modelID = String(repeating: "ab", count: 32)
        task.poseWindowNpy = (0..<5).map { Data(repeating: UInt8($0), count: 100 + $0) }
        let envelope = FarmEnvelope(.frameTask(task), requestID: 7)
        let bytes = try envelope.encoded()
        let back = try FarmEnvelope.decode(bytes)
        XCTAssertEqual(back.protocolVersion, FarmProtocol.version)
        XCTAssertEqual(back.requestID, 7)
        XCTAssertEqual(back.body, .frameTask(task))
        XCTAssertEqual(back.bodyName, "frame_task")
    }

    func testRenderSettingsSeedOrNoiseIsOneOf() throws {
        var s = FarmRenderSettings()
        s.seed = 1234
        s.noiseNpy = Data([1, 2, 3])
        XCTAssertEqual(s.noise, .noiseNpy(Data([1, 2, 3])), "setting noise bytes replaces the seed")
        var prep = FarmJobPrep()
        prep.settings = s
        prep.subjectPng = Data([0x89, 0x50, 0x4E, 0x47])
        let back = try FarmEnvelope.decode(try FarmEnvelope(.jobPrep(prep)).encoded())
        guard case .jobPrep(let p)? = back.body else { return XCTFail("expected job_prep, got \(back.bodyName)") }
        XCTAssertEqual(p.settings.noise, .noiseNpy(Data([1, 2, 3])))
        XCTAssertEqual(p.subjectPng, prep.subjectPng)
    }

    func testUnknownVersionIsAClearErrorNotACrash() throws {
        var hello = FarmHello()
        hello.workerName = "w1"
        var future = FarmEnvelope(.hello(hello))
        future.protocolVersion = 2
        let bytes = try future.serializedBytes() as Data
        XCTAssertThrowsError(try FarmEnvelope.decode(bytes)) { error in
            XCTAssertEqual(error as? FarmProtocolError, .unsupportedVersion(found: 2, supported: 1))
            XCTAssertTrue("\(error)".contains("unsupported protocol version 2"), "\(error)")
            XCTAssertEqual((error as? FarmProtocolError)?.code, .unsupportedVersion)
        }
        var missing = FarmEnvelope(.hello(hello))
        missing.protocolVersion = 0
        XCTAssertThrowsError(try FarmEnvelope.decode(try missing.serializedBytes())) { error in
            XCTAssertEqual(error as? FarmProtocolError, .unsupportedVersion(found: 0, supported: 1))
            XCTAssertTrue("\(error)".contains("field missing"), "\(error)")
        }
    }

    func testFutureVersionWithUnknownBodyStillReportsVersion() throws {
        // A v2 peer may send a body field number v1 does not know, even with a different wire type.
        var bytes = Data([0x08, 0x02])            // field 1 (protocol_version) varint = 2
        bytes += Data([0xA2, 0x06, 0x03, 1, 2, 3])  // field 100, length-delimited, 3 bytes
        XCTAssertThrowsError(try FarmEnvelope.decode(bytes)) { error in
            XCTAssertEqual(error as? FarmProtocolError, .unsupportedVersion(found: 2, supported: 1))
        }
        // The same unknown body at version 1 is "no body we know".
        bytes[1] = 0x01
        XCTAssertThrowsError(try FarmEnvelope.decode(bytes)) { error in
            XCTAssertEqual(error as? FarmProtocolError, .missingBody)
        }
    }

    func testTruncatedAndGarbageBytesAreMalformed() throws {
        var result = FarmFrameResult()
        result.png = Data(repeating: 7, count: 1000)
        result.attemptID = 5
        let bytes = try FarmEnvelope(.frameResult(result)).encoded()
        for cut in [bytes.count - 1, bytes.count / 2, 3] {
            XCTAssertThrowsError(try FarmEnvelope.decode(bytes.prefix(cut)), "cut at \(cut)") { error in
                guard case .malformed? = error as? FarmProtocolError else {
                    return XCTFail("cut at \(cut): expected malformed, got \(error)")
                }
            }
        }
        XCTAssertThrowsError(try FarmEnvelope.decode(Data([0xFF, 0xFF, 0xFF, 0xFF]))) { error in
            guard case .malformed? = error as? FarmProtocolError else { return XCTFail("got \(error)") }
        }
        XCTAssertThrowsError(try FarmEnvelope.decode(Data())) { error in
            XCTAssertEqual(error as? FarmProtocolError, .unsupportedVersion(found: 0, supported: 1))
        }
    }

    func testSizeLimitOnEncodeAndDecode() throws {
        var chunk = FarmModelChunk()
        chunk.data = Data(repeating: 1, count: 4096)
        let envelope = FarmEnvelope(.modelChunk(chunk))
        XCTAssertThrowsError(try envelope.encoded(maxBytes: 4096)) { error in
            guard case .tooLarge(let bytes, 4096)? = error as? FarmProtocolError else { return XCTFail("got \(error)") }
            XCTAssertGreaterThan(bytes, 4096)
        }
        let bytes = try envelope.encoded()
        XCTAssertThrowsError(try FarmEnvelope.decode(bytes, maxBytes: bytes.count - 1)) { error in
            XCTAssertEqual(error as? FarmProtocolError, .tooLarge(bytes: bytes.count, limit: bytes.count - 1))
        }
        XCTAssertNoThrow(try FarmEnvelope.decode(bytes, maxBytes: bytes.count))
    }

    func testErrorEnvelopeCarriesCodeAndContext() throws {
        let e = FarmEnvelope.error(.jobPrepMissing, "no job_prep for job 3", jobID: 3, attemptID: 11, requestID: 4)
        let back = try FarmEnvelope.decode(try e.encoded())
        guard case .error(let err)? = back.body else { return XCTFail("expected error body") }
        XCTAssertEqual(err.code, .jobPrepMissing)
        XCTAssertEqual(err.jobID, 3)
        XCTAssertEqual(err.attemptID, 11)
        XCTAssertEqual(back.requestID, 4)
    }

    func testEveryBodyHasADistinctName() {
        let bodies: [FarmEnvelope.OneOf_Body] = [
            .hello(.init()), .credit(.init()), .progress(.init()), .frameResult(.init()),
            .modelManifestRequest(.init()), .modelChunkRequest(.init()), .goodbye(.init()), .welcome(.init()),
            .jobPrep(.init()), .frameTask(.init()), .cancel(.init()), .modelManifest(.init()), .modelChunk(.init()),
            .heartbeat(.init()), .error(.init()), .submitJob(.init()), .uploadChunk(.init()), .followJob(.init()),
            .statusRequest(.init()), .cancelJob(.init()), .workersRequest(.init()), .submitReply(.init()),
            .uploadAck(.init()), .jobEvent(.init()), .statusReply(.init()), .cancelReply(.init()), .workersReply(.init()),
            .jobEvents(.init()),
        ]
        // (`OneOf_Body.name` is an exhaustive switch, so a new body cannot be left unnamed.)
        XCTAssertEqual(Set(bodies.map(\.name)).count, bodies.count)
        for body in bodies {
            XCTAssertEqual(FarmEnvelope(body).bodyName, body.name)
        }
    }

    func testFollowerEventBatchesKeepOrderAndStayUnderTheLimit() {
        func done(_ frame: UInt32, png bytes: Int) -> DPProtocol.FarmJobEvent {
            var d = FarmFrameDone()
            d.frame = frame
            d.png = Data(count: bytes)
            var e = DPProtocol.FarmJobEvent()
            e.frameDone = d
            return e
        }
        let events = [done(0, png: 0), done(1, png: 0), done(2, png: 5_000), done(3, png: 20_000), done(4, png: 0)]
        let batches = Coordinator.eventBatches(events, limitBytes: 10_000)
        XCTAssertEqual(batches.map { batch in batch.map { $0.frameDone.frame } }, [[0, 1, 2], [3], [4]],
                       "in order; the 20 kB event alone; none over 10 kB unless it is one event")
        XCTAssertEqual(Coordinator.eventBatches(Array(events.prefix(2)), limitBytes: 10_000).count, 1)
        XCTAssertTrue(Coordinator.eventBatches([], limitBytes: 10_000).isEmpty)
    }

    func testPoseWindowCentreFallback() {
        let all = Set<UInt32>(0..<10)
        XCTAssertEqual(PoseWindow.frames(for: 5, available: all), [3, 4, 5, 6, 7])
        XCTAssertEqual(PoseWindow.frames(for: 0, available: all), [0, 0, 0, 1, 2])
        XCTAssertEqual(PoseWindow.frames(for: 1, available: all), [1, 0, 1, 2, 3])
        XCTAssertEqual(PoseWindow.frames(for: 9, available: all), [7, 8, 9, 9, 9])
        // A gap in the sequence falls back to the centre too.
        XCTAssertEqual(PoseWindow.frames(for: 5, available: [3, 5, 6, 9]), [3, 5, 5, 6, 5])
        XCTAssertEqual(PoseWindow.frames(for: 4, available: [4], size: 3), [4, 4, 4])
    }

    func testRelativePathSafety() {
        for good in ["unet/config.json", "subject.png", "poses/frame_00012_densepose.npy", "a/.../b", ".hidden/x", "x..y", "a/.b/..c"] {
            XCTAssertNil(RelativePath.problem(good), good)
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a/./b", "a\\b", "a/", ".", "..", "a/..", "./a", "a\u{0}b", "/"] {
            XCTAssertNotNil(RelativePath.problem(bad), bad)
        }
    }

    func testGeneratedCodeIsUpToDate() throws {
        // Scripts/gen_protos.sh --check regenerates with the pinned protoc-gen-swift; it needs a
        // toolchain build of that plugin, so the test only runs where it was built before.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let plugin = root.appendingPathComponent(".build-protogen/swift-protobuf-1.39.0/.build/release/protoc-gen-swift")
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: plugin.path)
                          && FileManager.default.isExecutableFile(atPath: "/usr/bin/protoc"),
                          "protoc-gen-swift not built (run Scripts/gen_protos.sh once)")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [root.appendingPathComponent("Scripts/gen_protos.sh").path, "--check"]
        let pipe = Pipe()
        p.standardError = pipe
        p.standardOutput = pipe
        try p.run()
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, String(decoding: out, as: UTF8.self))
    }
}

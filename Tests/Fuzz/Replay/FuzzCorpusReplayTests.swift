// Replays every committed fuzz input (Tests/Fuzz/corpus/<target>/ and Tests/Fuzz/crashes/<target>/) once
// through the same entry points the libFuzzer build fuzzes, without the fuzzer: part of the normal test
// suite, so a fixed crash stays fixed and the seeds stay valid. A trap would kill the test process.
import DPFuzzTargets
import Foundation
import XCTest

final class FuzzCorpusReplayTests: XCTestCase {
    static let fuzzRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()

    func inputs(_ kind: String, _ target: String) throws -> [URL] {
        let dir = Self.fuzzRoot.appendingPathComponent(kind).appendingPathComponent(target)
        guard FileManager.default.fileExists(atPath: dir.path) else { return [] }
        return try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)
            .filter { !$0.lastPathComponent.hasPrefix(".") }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
    }

    /// Every target has seeds; seeds named `valid-*` must be accepted, `bad-*` rejected with an error
    /// naming the input; reproducers in crashes/ must come back (accepted or rejected) with a non-empty
    /// error, never a trap.
    func testEveryCorpusAndCrashInputReplaysCleanly() throws {
        var total = 0
        for target in FuzzTargets.all {
            let seeds = try inputs("corpus", target.name)
            XCTAssertFalse(seeds.isEmpty, "no seed corpus in Tests/Fuzz/corpus/\(target.name)")
            for url in try seeds + inputs("crashes", target.name) {
                let data = try Data(contentsOf: url)
                let outcome = target.run(data)
                total += 1
                let name = url.lastPathComponent
                switch outcome {
                case .accepted:
                    XCTAssertFalse(name.hasPrefix("bad-"), "\(target.name)/\(name) was accepted, expected an error")
                case .rejected(let message):
                    XCTAssertFalse(name.hasPrefix("valid-"), "\(target.name)/\(name) was rejected: \(message)")
                    XCTAssertFalse(message.isEmpty, "\(target.name)/\(name): empty error text")
                }
            }
        }
        FuzzTargets.stopCoordinator()
        XCTAssertGreaterThan(total, 0)
    }

    /// The known attacks of issue 12, committed as reproducers: each is refused with an error that says what
    /// was wrong (the limit it passes).
    func testKnownHostileInputsAreRejectedWithTheirReason() throws {
        let expectations: [(target: String, file: String, says: String)] = [
            ("npy", "bad-shape-overflows-2p64.npy", "elements allowed"),
            ("png", "bad-ihdr-huge.png", "larger than allowed"),
            ("safetensors", "bad-huge-header-length.safetensors", "header length"),
            ("safetensors", "bad-offsets-out-of-file.safetensors", "past the end of the data section"),
            ("safetensors", "bad-overlap.safetensors", "overlap"),
            ("config", "bad-layers-per-block-int32max.json", "layers_per_block is 2147483647"),
            ("config", "bad-dreampose-steps-1e300.json", "defaults.steps"),
            ("config", "bad-dreampose-pose-window-huge.json", "pose_window"),
            ("manifest", "bad-2p62-byte-file.json", "bytes a model file may have"),
        ]
        for e in expectations {
            let url = Self.fuzzRoot.appendingPathComponent("corpus").appendingPathComponent(e.target)
                .appendingPathComponent(e.file)
            let data = try Data(contentsOf: url)
            let target = try XCTUnwrap(FuzzTargets.target(named: e.target))
            guard case .rejected(let message) = target.run(data) else {
                XCTFail("\(e.target)/\(e.file) was accepted")
                continue
            }
            XCTAssertTrue(message.contains(e.says), "\(e.target)/\(e.file): \(message)")
        }
    }
}

// Parity of the networks with the golden cases of ../shared/golden (numbers produced by
// diffusers 0.42.1 / transformers 5.23 in float64, see shared/golden/README.md).
// Every directory under the golden root whose manifest.json has network case kinds is run
// through DPGolden's ParityRunner; every compared tensor must be within 1e-4 * max|expected|.
// DP_GOLDEN_DIR overrides the root.

import DPGolden
import DPModels
import DPTensor
import Foundation
import XCTest

/// <repo>/Tests/DPModelsTests/<this file> -> <repo>/../shared/golden, or $DP_GOLDEN_DIR.
func goldenRoot() -> URL { GoldenCase.goldenRoot }

/// The golden case directories (those holding a manifest.json), sorted by name.
func goldenCaseDirectories() throws -> [URL] {
    let root = goldenRoot()
    let fm = FileManager.default
    let names = try fm.contentsOfDirectory(atPath: root.path).sorted()
    return names.map { root.appendingPathComponent($0, isDirectory: true) }
        .filter { fm.fileExists(atPath: $0.appendingPathComponent("manifest.json").path) }
}

final class GoldenParityTests: XCTestCase {
    func testEveryNetworkCaseMatchesTheReference() throws {
        let dirs = try goldenCaseDirectories()
        XCTAssertFalse(dirs.isEmpty, "no golden case directories under \(goldenRoot().path)")
        let supported = Set(ParityRunner.builtInKinds)
        var ranByKind: [String: Int] = [:]
        for dir in dirs {
            let golden = try GoldenCase(directory: dir)
            guard golden.entries.contains(where: { supported.contains($0.kind) }) else { continue }
            let runner = ParityRunner()
            print("golden \(dir.lastPathComponent) (\(golden.format)):")
            for result in runner.run(golden) {
                print("  " + result.line + String(format: "  [%.2fs]", result.seconds))
                for m in result.measurements where m.relativeError > 1e-6 || m.problem != nil {
                    print(String(format: "      %@ rel_err=%.3e max_err=%.3e max_expected=%.3e",
                                 m.name, Double(m.relativeError), Double(m.maxAbsError),
                                 Double(m.maxAbsExpected)))
                }
                if !result.unmapped.isEmpty {
                    print("      unmapped intermediates: \(result.unmapped.joined(separator: ", "))")
                }
                guard supported.contains(result.kind) else {
                    // Kinds other modules register (sampling, pipeline) may pass or be skipped.
                    XCTAssertFalse(result.isFailure, "\(dir.lastPathComponent)/\(result.line)")
                    continue
                }
                XCTAssertEqual(result.status, .passed, "\(dir.lastPathComponent)/\(result.line)")
                XCTAssertTrue(result.unmapped.isEmpty,
                              "\(result.name): intermediates not reported: \(result.unmapped)")
                if result.status == .passed { ranByKind[result.kind, default: 0] += 1 }
            }
        }
        for kind in supported.sorted() {
            XCTAssertGreaterThan(ranByKind[kind] ?? 0, 0, "no passing golden case of kind \(kind)")
        }
    }

    func testUnknownKindsAreReportedAsSkipped() throws {
        let golden = try GoldenCase(directory: try XCTUnwrap(goldenCaseDirectories().first))
        let runner = ParityRunner()
        let entry = GoldenEntry(name: "made_up", kind: "no_such_kind", fields: .object([:]))
        let r = runner.run(entry, in: golden)
        guard case .skipped(let why) = r.status else {
            return XCTFail("expected skipped, got \(r.line)")
        }
        XCTAssertTrue(why.contains("no_such_kind"), why)
        XCTAssertFalse(r.isFailure)
    }

    func testFailuresAreDetected() throws {
        // A handler that perturbs the UNet output by 1e-3 * max|expected| must fail the check.
        let dirs = try goldenCaseDirectories()
        let dir = try XCTUnwrap(dirs.first { (try? GoldenCase(directory: $0))?.entries
            .contains { $0.kind == "unet_forward" } == true })
        let golden = try GoldenCase(directory: dir)
        let entry = try XCTUnwrap(golden.entries.first { $0.kind == "unet_forward" })
        let runner = ParityRunner()
        runner.register(kind: "unet_forward") { c in
            let name = try XCTUnwrap(c.entry.outputs["sample"])
            var t = try c.golden.tensor(name)
            t.data[0] += 1e-3 * t.maxAbs
            return [try c.compareOutput("sample", t)]
        }
        let r = runner.run(entry, in: golden)
        XCTAssertEqual(r.status, .failed, r.line)
        XCTAssertTrue(r.isFailure)
    }
}

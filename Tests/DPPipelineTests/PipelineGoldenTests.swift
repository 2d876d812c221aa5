import DPGolden
import Foundation
import XCTest

/// Runs every pipeline case under ../shared/golden (format "dreampose-pipeline-golden/1", produced by
/// diffusers 0.42 / transformers 5.23 / Pillow from the DreamPose reference, see golden/README.md §7)
/// through the real renderer (DPGolden's "dreampose_pipeline" handler over `PreparedJob`): every intermediate
/// the case lists within 1e-4 relative, every final PNG frame within the acceptance rule of §7.5, plus the
/// per-network entries derived from the case (CLIP, step-0 UNet batch, VAE decodes).
final class PipelineGoldenTests: XCTestCase {
    func testEveryPipelineCase() throws {
        let cases = try GoldenCase.discover(format: GoldenCase.pipelineFormat)
        XCTAssertFalse(cases.isEmpty, "no pipeline golden case found under \(GoldenCase.goldenRoot.path)")
        for golden in cases {
            let results = ParityRunner().run(golden) { print($0.line) }
            for r in results {
                XCTAssertFalse(r.isFailure, "\(golden.name): \(r.line)")
                if case .skipped = r.status { XCTFail("\(golden.name): \(r.line)") }
            }
            let job = try XCTUnwrap(results.first { $0.kind == "dreampose_pipeline" }, "\(golden.name): no whole-job entry")
            XCTAssertEqual(job.status, .passed, job.line)
            // Each listed frame was checked as a PNG, not only as tensors.
            let frames = job.measurements.filter { $0.accepted != nil }
            XCTAssertEqual(frames.count, try PipelineJobFile.load(golden.url("job.json")).frames.count)
        }
    }
}

// The image-quality metrics of `dp-bench quality` (ImageQuality: PSNR, SSIM, mean absolute difference) on the
// committed held-out demo case (Scripts/demo/case, made by Scripts/demo/synth.py --seed 7 --frames 24).

import DPPipeline
import Foundation
import XCTest

final class ImageQualityTests: XCTestCase {
    static let repo = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let caseDir = repo.appendingPathComponent("Scripts/demo/case", isDirectory: true)

    /// The metrics themselves: a frame against itself, and against a known perturbation.
    func testMetricsOnKnownImages() throws {
        let qc = try QualityCase(directory: Self.caseDir)
        let truth = try qc.truth(0)
        XCTAssertEqual(try ImageQuality.psnr(truth, truth), .infinity)
        XCTAssertEqual(try ImageQuality.ssim(truth, truth), 1, accuracy: 1e-12)
        var shifted = truth
        for i in 0..<shifted.pixels.count { shifted.pixels[i] = shifted.pixels[i] < 245 ? shifted.pixels[i] + 10 : 255 }
        let p = try ImageQuality.psnr(truth, shifted)
        XCTAssertLessThan(p, 10 * log10(255.0 * 255.0 / 1.0))
        XCTAssertGreaterThan(p, 10 * log10(255.0 * 255.0 / 100.0) - 1e-9)      // every error is at most 10 levels
        XCTAssertLessThan(try ImageQuality.ssim(truth, RGBImage(width: truth.width, height: truth.height)), 0.2)
        XCTAssertEqual(try ImageQuality.meanAbsoluteDifference(truth, truth), 0)
    }
}

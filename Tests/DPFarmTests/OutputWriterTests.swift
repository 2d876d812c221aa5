// The coordinator's output folder: frame PNGs, manifest.json, refusal of a second write, restart
// behaviour, and the video made by the real ffmpeg (checked with ffprobe and by decoding it back).
import DPFileKit
import Crypto
@testable import DPCoordinator
import DPPipeline
import Foundation
import XCTest

final class OutputWriterTests: XCTestCase {
    private var root: URL!
    private let settings = OutputJobSettings(seed: 42, sampler: "pndm", steps: 25, imageGuidance: 7.5, poseGuidance: 1.5)

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory
            .appendingPathComponent("dp-output-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: root)
    }

    /// Distinct, saturated colours (easy to tell apart after H.264).
    private let palette: [(UInt8, UInt8, UInt8)] = [(230, 20, 20), (20, 230, 20), (20, 20, 230), (235, 235, 235),
                                                     (15, 15, 15), (230, 230, 20), (20, 230, 230), (230, 20, 230)]

    /// A real PNG (libpng through DPPipeline's codec): a solid colour with a small gradient so that
    /// files of the same colour still differ.
    private func png(width: Int, height: Int, colour: Int) throws -> Data {
        var image = RGBImage(width: width, height: height)
        let (r, g, b) = palette[colour % palette.count]
        for y in 0 ..< height {
            for x in 0 ..< width {
                let i = (y * width + x) * 3
                image.pixels[i] = r
                image.pixels[i + 1] = g
                image.pixels[i + 2] = b &+ UInt8((x + y) % 3)
            }
        }
        return try PNGCodec.encode(image)
    }

    private func sha256(_ data: Data) -> String {
        SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    private func tool(_ name: String, _ arguments: [String]) throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [name] + arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "\(name) \(arguments)")
        return data
    }

    private func writer(_ frames: [UInt32], job: UInt64 = 7, folder: String = "out") throws -> OutputWriter {
        try OutputWriter(directory: root.appendingPathComponent(folder), jobID: job, modelID: String(repeating: "ab", count: 32),
                         settings: settings, frames: frames)
    }

    func testFramesAndManifestAreWrittenInFrameOrder() throws {
        let out = try writer([0, 1, 2, 3, 123_456])
        var pngs: [UInt32: Data] = [:]
        for (i, frame) in [UInt32(2), 0, 123_456, 3, 1].enumerated() {
            let data = try png(width: 6, height: 4, colour: i)
            pngs[frame] = data
            let record = try out.write(frame: frame, png: data, attempt: 100 + UInt64(i), worker: "w\(i % 2)",
                                       renderSeconds: Double(i) + 0.5, claimedSHA256: sha256(data))
            XCTAssertEqual(record.pngSHA256, sha256(data))
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: out.directory.path).sorted()
        XCTAssertEqual(names, ["frame_00000.png", "frame_00001.png", "frame_00002.png", "frame_00003.png",
                               "frame_123456.png", "manifest.json"])
        for (frame, data) in pngs {
            XCTAssertEqual(try Data(contentsOf: out.directory.appendingPathComponent(OutputWriter.fileName(frame: frame))), data)
        }
        // manifest.json as a reader sees it (plain JSON, snake_case keys).
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: out.directory.appendingPathComponent("manifest.json")))
            as! [String: Any]
        XCTAssertEqual(json["job_id"] as? Int, 7)
        XCTAssertEqual(json["model_id"] as? String, String(repeating: "ab", count: 32))
        XCTAssertEqual(json["complete"] as? Bool, true)
        let jobSettings = json["settings"] as! [String: Any]
        XCTAssertEqual(jobSettings["seed"] as? Int, 42)
        XCTAssertEqual(jobSettings["sampler"] as? String, "pndm")
        XCTAssertEqual(jobSettings["steps"] as? Int, 25)
        XCTAssertEqual(jobSettings["image_guidance"] as? Double, 7.5)
        XCTAssertEqual(jobSettings["pose_guidance"] as? Double, 1.5)
        let frames = json["frames"] as! [[String: Any]]
        XCTAssertEqual(frames.map { $0["frame"] as! Int }, [0, 1, 2, 3, 123_456])
        let f3 = frames[3]
        XCTAssertEqual(f3["file"] as? String, "frame_00003.png")
        XCTAssertEqual(f3["attempt"] as? Int, 103)
        XCTAssertEqual(f3["worker"] as? String, "w1")
        XCTAssertEqual(f3["model_id"] as? String, String(repeating: "ab", count: 32))
        XCTAssertEqual(f3["seed"] as? Int, 42)
        XCTAssertEqual(f3["sampler"] as? String, "pndm")
        XCTAssertEqual(f3["steps"] as? Int, 25)
        XCTAssertEqual(f3["image_guidance"] as? Double, 7.5)
        XCTAssertEqual(f3["pose_guidance"] as? Double, 1.5)
        XCTAssertEqual(f3["render_seconds"] as? Double, 3.5)
        XCTAssertEqual(f3["png_sha256"] as? String, sha256(pngs[3]!))
        XCTAssertEqual(f3["png_size"] as? Int, pngs[3]!.count)
        XCTAssertTrue(out.isComplete)
    }

    func testManifestEntryEscapesWhatJSONNeedsAndReadsBack() throws {
        let odd = "bench \"7\" \\ tab\there\nnew line \u{1} é ✓"
        for (worker, seed) in [(odd, UInt64?.none), ("plain-worker", UInt64.max)] {
            let record = OutputFrameRecord(frame: 12, file: "frame_00012.png", attempt: 9, worker: worker, modelID: "m\"id",
                                           seed: seed, sampler: "ddim", steps: 3, imageGuidance: 7.25, poseGuidance: -0.5,
                                           renderSeconds: 0.1, pngSHA256: "ab", pngSize: 77)
            let text = ManifestJSON.entry(record)
            let parsed = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], text)
            XCTAssertEqual(parsed["worker"] as? String, worker)
            XCTAssertEqual(parsed["model_id"] as? String, "m\"id")
            XCTAssertEqual(parsed["seed"] as? UInt64, seed)
            XCTAssertEqual(parsed.keys.count, seed == nil ? 12 : 13)
            XCTAssertEqual(parsed["image_guidance"] as? Double, 7.25)
            XCTAssertEqual(parsed["pose_guidance"] as? Double, -0.5)
            XCTAssertEqual(parsed["render_seconds"] as? Double, 0.1)
            XCTAssertEqual(parsed["png_size"] as? Int, 77)
            XCTAssertTrue(text.hasPrefix("    {\n      \"attempt\" : 9,\n"), text)
        }
    }

    func testSecondWriteOfAFrameIsRefusedAndNothingChanges() throws {
        let out = try writer([0, 1])
        let first = try png(width: 4, height: 4, colour: 0)
        try out.write(frame: 1, png: first, attempt: 5, worker: "a", renderSeconds: 1)
        XCTAssertThrowsError(try out.write(frame: 1, png: try png(width: 4, height: 4, colour: 1), attempt: 9,
                                           worker: "b", renderSeconds: 1)) { error in
            XCTAssertEqual(error as? OutputError, .alreadyWritten(jobID: 7, frame: 1, writtenBy: 5, refusedAttempt: 9))
        }
        XCTAssertEqual(try Data(contentsOf: out.directory.appendingPathComponent("frame_00001.png")), first)
        XCTAssertEqual(out.record(frame: 1)?.attempt, 5)
        XCTAssertThrowsError(try out.write(frame: 2, png: first, attempt: 10, worker: "a", renderSeconds: 1)) {
            XCTAssertEqual($0 as? OutputError, .unexpectedFrame(jobID: 7, frame: 2))
        }
        XCTAssertThrowsError(try out.write(frame: 0, png: first, attempt: 11, worker: "a", renderSeconds: 1,
                                           claimedSHA256: String(repeating: "0", count: 64))) {
            XCTAssertEqual($0 as? OutputError, .checksumMismatch(jobID: 7, frame: 0, claimed: String(repeating: "0", count: 64),
                                                                 found: self.sha256(first)))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.directory.appendingPathComponent("frame_00000.png").path))
        XCTAssertEqual(out.missingFrames, [0])
    }

    func testReopeningKeepsListedFramesAndDropsUnlistedOnes() throws {
        var out = try writer([0, 1, 2])
        try out.write(frame: 0, png: try png(width: 4, height: 4, colour: 0), attempt: 1, worker: "a", renderSeconds: 1)
        // A crash after this PNG but before the manifest: the frame is not recorded.
        try out.write(frame: 1, png: try png(width: 4, height: 4, colour: 1), attempt: 2, worker: "a", renderSeconds: 1,
                      flush: false)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.directory.appendingPathComponent("frame_00001.png").path))
        out = try writer([0, 1, 2])
        XCTAssertEqual(out.missingFrames, [1, 2])
        XCTAssertEqual(out.record(frame: 0)?.attempt, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.directory.appendingPathComponent("frame_00001.png").path))
        XCTAssertThrowsError(try out.write(frame: 0, png: try png(width: 4, height: 4, colour: 2), attempt: 3, worker: "b",
                                           renderSeconds: 1))
        XCTAssertNoThrow(try out.write(frame: 1, png: try png(width: 4, height: 4, colour: 1), attempt: 4, worker: "b",
                                       renderSeconds: 1))
        // Another job's folder is refused.
        XCTAssertThrowsError(try writer([0, 1, 2], job: 8)) { error in
            guard case .manifestMismatch? = error as? OutputError else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains("job 7") && "\(error)".contains("not job 8"), "\(error)")
        }
    }

    /// Decodes `video` to RGB and returns, per frame, the index of the nearest palette colour.
    private func colourSequence(_ video: URL, width: Int, height: Int) throws -> [Int] {
        let raw = try tool("ffmpeg", ["-nostdin", "-loglevel", "error", "-i", video.path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        let frameBytes = width * height * 3
        XCTAssertEqual(raw.count % frameBytes, 0)
        return stride(from: 0, to: raw.count, by: frameBytes).map { start in
            var sum = [0.0, 0.0, 0.0]
            for p in 0 ..< width * height {  // the padding column/row is black: use the top-left (w-1)x(h-1)
                let x = p % width, y = p / width
                if x == width - 1 || y == height - 1 { continue }
                for c in 0 ..< 3 { sum[c] += Double(raw[start + p * 3 + c]) }
            }
            let n = Double((width - 1) * (height - 1))
            let mean = sum.map { $0 / n }
            return palette.indices.min { a, b in
                let da = zip(mean, [palette[a].0, palette[a].1, palette[a].2]).reduce(0.0) { $0 + pow($1.0 - Double($1.1), 2) }
                let db = zip(mean, [palette[b].0, palette[b].1, palette[b].2]).reduce(0.0) { $0 + pow($1.0 - Double($1.1), 2) }
                return da < db
            }!
        }
    }

    private func probe(_ video: URL) throws -> [String: Any] {
        let json = try tool("ffprobe", ["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                                        "stream=codec_name,pix_fmt,width,height,r_frame_rate,nb_read_frames",
                                        "-of", "json", video.path])
        let object = try JSONSerialization.jsonObject(with: json) as! [String: Any]
        return (object["streams"] as! [[String: Any]])[0]
    }

    func testVideoOfAContiguousSequenceWithOddSize() throws {
        let frames: [UInt32] = Array(10 ... 16)
        let out = try writer(frames)
        // Written out of order; colour i for frame 10+i.
        for frame in frames.reversed() {
            try out.write(frame: frame, png: try png(width: 7, height: 5, colour: Int(frame - 10)), attempt: UInt64(frame),
                          worker: "w", renderSeconds: 1)
        }
        let video = root.appendingPathComponent("clip.mp4")
        let record = try out.makeVideo(at: video, fps: 12)
        let stream = try probe(video)
        XCTAssertEqual(stream["codec_name"] as? String, "h264")
        XCTAssertEqual(stream["pix_fmt"] as? String, "yuv420p")
        XCTAssertEqual(stream["width"] as? Int, 8)   // 7 padded to even
        XCTAssertEqual(stream["height"] as? Int, 6)  // 5 padded to even
        XCTAssertEqual(stream["r_frame_rate"] as? String, "12/1")
        XCTAssertEqual(stream["nb_read_frames"] as? String, "7")
        XCTAssertEqual(try colourSequence(video, width: 8, height: 6), Array(0 ..< 7))
        XCTAssertEqual(record.frames, 7)
        XCTAssertEqual(record.sha256, sha256(try Data(contentsOf: video)))
        XCTAssertEqual(out.currentManifest.video, record)
        // No temp files are left next to the video or in the output folder.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root.path).sorted(), ["clip.mp4", "out"])
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: out.directory.path).contains { $0.hasPrefix(".") })
    }

    func testVideoOfAGappySequenceKeepsOrderWithoutGaps() throws {
        let frames: [UInt32] = [3, 7, 8, 20, 21, 99]
        let out = try writer(frames)
        for (i, frame) in frames.enumerated() {
            try out.write(frame: frame, png: try png(width: 8, height: 6, colour: i), attempt: 1, worker: "w", renderSeconds: 1)
        }
        let video = root.appendingPathComponent("gappy.mp4")
        try out.makeVideo(at: video)  // default 30 fps
        let stream = try probe(video)
        XCTAssertEqual(stream["r_frame_rate"] as? String, "30/1")
        XCTAssertEqual(stream["nb_read_frames"] as? String, "6")
        XCTAssertEqual(try colourSequence(video, width: 8, height: 6), Array(0 ..< 6))
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: out.directory.path).contains { $0.hasPrefix(".") })
    }

    func testNoVideoFromAnIncompleteSequenceOrAFailedFfmpeg() throws {
        let out = try writer([0, 1, 2, 3])
        try out.write(frame: 0, png: try png(width: 4, height: 4, colour: 0), attempt: 1, worker: "w", renderSeconds: 1)
        try out.write(frame: 3, png: try png(width: 4, height: 4, colour: 1), attempt: 1, worker: "w", renderSeconds: 1)
        let video = root.appendingPathComponent("v.mp4")
        XCTAssertThrowsError(try out.makeVideo(at: video)) {
            XCTAssertEqual($0 as? OutputError, .incomplete(jobID: 7, missing: [1, 2]))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: video.path))
        try out.write(frame: 1, png: try png(width: 4, height: 4, colour: 2), attempt: 1, worker: "w", renderSeconds: 1)
        try out.write(frame: 2, png: try png(width: 4, height: 4, colour: 3), attempt: 1, worker: "w", renderSeconds: 1)
        XCTAssertThrowsError(try out.makeVideo(at: video, ffmpeg: "/bin/false")) { error in
            guard case .ffmpegFailed? = error as? OutputError else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root.path), ["out"])
        XCTAssertNil(out.currentManifest.video)
    }
}

// Support for FarmFailureTests: child processes of the real binaries (dp-coord, dp-worker), a free
// loopback port, a renderer wrapper that counts finished renders, and the golden pipeline job as a
// JobSubmission (everything read from the case's job.json).
import DPCoordinator
import DPFileKit
import DPLog
import DPPipeline
import DPWorker
import Foundation
import Synchronization
import XCTest

/// Reading `--log-format json` output back: every line that is a log record, its event decoded with
/// JSONDecoder (FarmLogRecord) into a FarmEvent. Other lines (a CLI's own output, a crash message) are skipped.
enum FarmLogLines {
    static func records(in text: String) -> [FarmLogRecord] {
        text.split(separator: "\n").compactMap { FarmLogRecord.decode($0) }
    }

    static func events(in text: String) -> [FarmEvent] {
        records(in: text).compactMap(\.farmEvent)
    }
}

/// A child process of one of the package's binaries; stdout and stderr go to files (a pipe nobody
/// drains could block the child). Killed with SIGKILL by `stop()` (tests call it in tearDown).
final class FarmChild {
    let name: String
    let process = Process()
    let logURL: URL

    /// The binaries sit next to the test bundle (`.build/<config>/`).
    static func binary(_ name: String) throws -> URL {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        var url = dir.appendingPathComponent(name)
        if !FileManager.default.isExecutableFile(atPath: url.path) {
            // xctest may be run as `xctest <bundle>`: look beside the bundle too.
            for arg in CommandLine.arguments.dropFirst() where arg.hasSuffix(".xctest") {
                url = URL(fileURLWithPath: arg).deletingLastPathComponent().appendingPathComponent(name)
            }
        }
        guard FileManager.default.isExecutableFile(atPath: url.path) else {
            throw XCTSkip("no \(name) binary beside the tests at \(url.path) (build it: swift build --product \(name))")
        }
        return url
    }

    init(_ binary: String, _ arguments: [String], logDirectory: URL, name: String) throws {
        self.name = name
        logURL = logDirectory.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(8)).log")
        FileManager.default.createFile(atPath: logURL.path, contents: nil)
        let log = try FileHandle(forWritingTo: logURL)
        process.executableURL = try FarmChild.binary(binary)
        process.arguments = arguments
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        try? log.close()
    }

    var pid: Int32 { process.processIdentifier }

    /// Everything the child wrote so far.
    var output: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    /// The typed events in the child's output (it runs with `--log-format json`): each JSON line decoded.
    var events: [FarmEvent] { FarmLogLines.events(in: output) }

    /// Waits (polling every 10 ms) until the child has logged an event matching `predicate`; returns it.
    @discardableResult
    func waitForEvent(timeout: Double = 20, _ predicate: (FarmEvent) -> Bool) -> FarmEvent? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let running = process.isRunning
            if let event = events.first(where: predicate) { return event }
            if !running || Date() >= deadline { return nil }
            usleep(10_000)
        }
    }

    /// SIGKILL now, and reap it.
    func killHard() {
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
    }

    /// Sends `signal` and waits up to `timeout` s for the exit; SIGKILL after that. Returns the exit status.
    @discardableResult
    func stop(signal: Int32 = SIGKILL, timeout: Double = 10) -> Int32 {
        if process.isRunning {
            kill(pid, signal)
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline { usleep(5_000) }
            if process.isRunning { kill(pid, SIGKILL) }
        }
        process.waitUntilExit()
        return process.terminationStatus
    }
}

enum FarmPorts {
    /// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read back, closed).
    static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CoordinatorTestError("socket() failed: errno \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw CoordinatorTestError("bind(127.0.0.1:0) failed: errno \(errno)") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard named == 0 else { throw CoordinatorTestError("getsockname failed: errno \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}

/// Wraps a renderer and counts, per job id and frame, the renders that finished with a PNG (cancelled
/// or failed renders are not counted).
final class CountingRenderer: FrameRenderer {
    let inner: FrameRenderer
    private let finished = Mutex<[Int: Int]>([:])

    init(_ inner: FrameRenderer) { self.inner = inner }

    /// Finished renders of `frame` (any job).
    func count(_ frame: Int) -> Int {
        finished.withLock { $0[frame, default: 0] }
    }

    var counts: [Int: Int] {
        finished.withLock { $0 }
    }

    fileprivate func record(_ frame: Int) {
        finished.withLock { $0[frame, default: 0] += 1 }
    }

    func prepare(job: JobRenderSpec, modelDirectory: URL) throws -> any PreparedFrameRenderer {
        CountingPrepared(try inner.prepare(job: job, modelDirectory: modelDirectory), owner: self)
    }
}

private final class CountingPrepared: PreparedFrameRenderer {
    let inner: any PreparedFrameRenderer
    let owner: CountingRenderer
    init(_ inner: any PreparedFrameRenderer, owner: CountingRenderer) {
        self.inner = inner
        self.owner = owner
    }
    var totalSteps: Int { inner.totalSteps }
    func render(frame: Int, poseWindow: [Data], progress: (Int) -> Void,
                isCancelled: () -> Bool) throws -> (png: Data, seconds: Double) {
        let result = try inner.render(frame: frame, poseWindow: poseWindow, progress: progress, isCancelled: isCancelled)
        owner.record(frame)
        return result
    }
}

/// The golden pipeline case (../shared/golden/pipeline-a1) as a farm job; every number comes from its
/// job.json, so another case with other sizes works too.
struct GoldenFarmJob {
    let root: URL
    let model: URL
    let frames: [Int]
    private let poses: [Int: Data]
    private let subject: Data
    private let noiseNPY: Data
    private let job: [String: Any]

    static func load(_ name: String = "pipeline-a1") throws -> GoldenFarmJob {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("shared/golden/\(name)", isDirectory: true)
        let jobURL = root.appendingPathComponent("job.json")
        guard FileManager.default.fileExists(atPath: jobURL.path) else { throw XCTSkip("no golden case at \(root.path)") }
        let job = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: jobURL)) as? [String: Any])
        let frames = try XCTUnwrap(job["frames"] as? [Int], "\(jobURL.path): frames")
        let poseDir = root.appendingPathComponent(try XCTUnwrap(job["poses_dir"] as? String), isDirectory: true)
        let parts = try XCTUnwrap(job["pose_file"] as? String, "\(jobURL.path): pose_file").components(separatedBy: "{n}")
        XCTAssertEqual(parts.count, 2, "pose_file pattern")
        var poses: [Int: Data] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: poseDir.path) {
            guard name.hasPrefix(parts[0]), name.hasSuffix(parts[1]),
                  let n = Int(name.dropFirst(parts[0].count).dropLast(parts[1].count)) else { continue }
            poses[n] = try Data(contentsOf: poseDir.appendingPathComponent(name))
        }
        let noise = try XCTUnwrap(job["noise"] as? [String: Any], "\(jobURL.path): noise")
        let raw = try Data(contentsOf: root.appendingPathComponent(try XCTUnwrap(noise["file"] as? String)))
        let shape = try XCTUnwrap(noise["shape"] as? [Int])
        let values: [Float] = raw.withUnsafeBytes { buf in
            (0 ..< (raw.count / 4)).map {
                Float(bitPattern: UInt32(littleEndian: buf.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)))
            }
        }
        XCTAssertEqual(values.count, shape.reduce(1, *), "noise file size vs shape \(shape)")
        return GoldenFarmJob(root: root,
                             model: root.appendingPathComponent(try XCTUnwrap(job["model"] as? String), isDirectory: true),
                             frames: frames, poses: poses,
                             subject: try Data(contentsOf: root.appendingPathComponent(try XCTUnwrap(job["subject"] as? String))),
                             noiseNPY: NPY.encode(shape: shape, values: values), job: job)
    }

    /// The case's job, rendering `frames` (default: the case's frames) into `out`.
    func submission(out: URL, frames: [Int]? = nil, name: String = "golden") -> JobSubmission {
        JobSubmission(name: name, modelDirectory: model, subjectPNG: subject, poses: poses,
                      request: RenderRequest(steps: job["steps"] as? Int,
                                             sampler: (job["sampler"] as? String).flatMap(SamplerKind.init(rawValue:)),
                                             imageGuidance: (job["s_image"] as? Double).map(Float.init),
                                             poseGuidance: (job["s_pose"] as? Double).map(Float.init),
                                             noise: .npy(noiseNPY), frames: frames ?? self.frames),
                      outputDirectory: out.path)
    }

    /// nil when `png` meets the golden acceptance rule (golden/README.md 7.5: every channel within 3
    /// levels, at most 2 % of pixels off by more than 1) against expected/frame_<n>.png; else why not.
    func mismatch(frame n: Int, png: Data) throws -> String? {
        let got = try PNGCodec.decode(png, name: "farm frame \(n)")
        let expected = try PNGCodec.read(root.appendingPathComponent("expected/frame_\(n).png"))
        guard got.width == expected.width, got.height == expected.height, got.pixels.count == expected.pixels.count else {
            return "size \(got.width)x\(got.height) (\(got.pixels.count) values), expected \(expected.width)x\(expected.height) "
                + "(\(expected.pixels.count) values)"
        }
        let pixels = got.width * got.height
        let channels = got.pixels.count / max(1, pixels)
        var worst = 0, off = 0
        for p in 0 ..< pixels {
            var w = 0
            for c in 0 ..< channels {
                w = max(w, abs(Int(got.pixels[p * channels + c]) - Int(expected.pixels[p * channels + c])))
            }
            worst = max(worst, w)
            if w > 1 { off += 1 }
        }
        if worst > 3 { return "max channel error \(worst) > 3" }
        if Double(off) > 0.02 * Double(pixels) { return "\(off) of \(pixels) pixels off by more than 1 level (> 2 %)" }
        return nil
    }
}

/// manifest.json's per-frame entries by frame number (each frame must be listed once).
func manifestEntries(_ out: URL, file: StaticString = #filePath, line: UInt = #line) throws -> [Int: [String: Any]] {
    let manifest = try FarmFixtures.manifest(out)
    let frames = try XCTUnwrap(manifest["frames"] as? [[String: Any]], "manifest.json has no frames list: \(manifest)")
    var byFrame: [Int: [String: Any]] = [:]
    for entry in frames {
        let n = try XCTUnwrap(entry["frame"] as? Int, "manifest entry without frame: \(entry)")
        XCTAssertNil(byFrame[n], "frame \(n) listed twice in \(out.path)/manifest.json", file: file, line: line)
        byFrame[n] = entry
    }
    return byFrame
}

/// The frame_<n>.png files in `out`, by frame number.
func framePNGs(_ out: URL) throws -> [Int: Data] {
    var pngs: [Int: Data] = [:]
    for name in try FileManager.default.contentsOfDirectory(atPath: out.path)
    where name.hasPrefix("frame_") && name.hasSuffix(".png") {
        guard let n = Int(name.dropFirst("frame_".count).dropLast(".png".count)) else { continue }
        pngs[n] = try Data(contentsOf: out.appendingPathComponent(name))
    }
    return pngs
}

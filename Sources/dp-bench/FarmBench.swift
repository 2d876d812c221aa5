import DPFileKit
import ArgumentParser
import CDPSys
import DPCoordinator
import DPPipeline
import DPTransport
import DPWorker
import Foundation

/// `dp-bench farm`: the farm's own overhead. A real Coordinator (journal, output PNGs and manifest on
/// disk, TCP loopback) and N real WorkerService loops rendering with `SyntheticFrameRenderer`
/// (constant time per frame, default 3 ms, so the numbers are the farm's: dispatch, result, journal,
/// output writing, following). Measures one job of `--frames` frames with 1 worker, then with
/// `--workers` workers, in the same invocation, and prints dispatch+result cycles per second, the CPU
/// time per cycle (all threads of the process) and the scaling efficiency = throughput(N) /
/// (N x throughput(1)).
///
/// Each run first renders a short warm-up job (`--warm-up-frames`, default 8 per worker slot; not
/// counted): every worker fetches the model, connects and times a frame, which decides its
/// prefetch. That start-up costs each worker 10-30 ms, once per model, not per cycle; left in, it is
/// 1-2 % of a 2 s run of 16 workers and nothing of the 30 s one-worker run, so the efficiency would
/// measure it instead of the farm's steady state. `--warm-up-frames 0` measures a cold start.
///
/// Cycles per second count from the submit's reply (the job is journaled and queued) to the last
/// frame's FrameDone event (its result is journaled and its PNG written): that is when dispatch+result
/// cycles happen. The job's two per-job costs are printed next to it: the submit before (the client
/// hashes and lists every pose, the coordinator validates and journals every frame: ~0.1 s for
/// 10,000 frames here) and the end after (JobFinished follows once the final manifest.json is
/// written: ~15-20 ms for 10,000 frames), and so is the end-to-end rate that includes both, for both
/// runs and the efficiency.
///
/// Why 3 ms: with 0 ms the one-worker run measures a round trip, not a worker's share of the farm, so
/// the efficiency ratio says nothing; at 3 ms, 16 workers ask for up to 5,333 frames/s, so the run
/// shows whether the coordinator keeps up with them (>= 5,000 cycles/s at >= 0.97 efficiency means it
/// adds under 0.1 ms to each frame). `--render-ms 0` measures the coordinator's raw capacity.
struct FarmBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "farm",
        abstract: "Coordinator + N worker loops with a constant-time fake renderer over TCP loopback: cycles/s, scaling.")

    @Option(help: "Workers of the scaled run.") var workers = 16
    @Option(help: "Frames of the job (each run).") var frames = 10_000
    @Option(name: .customLong("render-ms"), help: "Constant render time of the fake renderer per frame, in ms.") var renderMs = 3.0
    @Option(help: "Folder for the runs' state, models and output (default: /dev/shm when it is a writable tmpfs, else the temp folder).")
    var scratch: String?
    @Option(help: "Slots (frames at once) per worker.") var slots = 1
    @Flag(help: "Print the coordinator's and workers' log lines.") var verbose = false
    @Flag(name: .customLong("shared-context"),
          help: "One ZeroMQ context (one I/O thread) for all workers, as in the embedded farm, instead of one per worker as separate dp-worker processes have.")
    var sharedContext = false
    @Flag(name: .customLong("scaled-only"),
          help: "Skip the 1-worker run (no efficiency is printed): for profiling the scaled run alone.")
    var scaledOnly = false
    @Option(name: .customLong("turn-interval-us"), help: "The coordinator's group-commit interval (default: its default, 500).")
    var turnIntervalUs: Int?
    @Option(name: .customLong("prefetch-window-ms"), help: "The workers' prefetch window (default: their default, 10).")
    var prefetchWindowMs: Double?
    @Option(name: .customLong("warm-up-frames"),
            help: "Frames of the warm-up job each run renders first, not counted (default: 8 per worker slot; 0 = measure a cold start).")
    var warmUpFrames: Int?
    @Option(name: .customLong("coordinator-nice"),
            help: "Nice value of the coordinator's loop thread (default -10; 0 = leave it). The simulated workers stand in for other machines; below 0 needs CAP_SYS_NICE.")
    var coordinatorNice = -10

    func validate() throws {
        if workers < 1 { throw ValidationError("--workers must be at least 1") }
        if frames < 1 { throw ValidationError("--frames must be at least 1") }
        if slots < 1 { throw ValidationError("--slots must be at least 1") }
        if !(renderMs >= 0) { throw ValidationError("--render-ms must be zero or positive") }
        if let t = turnIntervalUs, t < 0 { throw ValidationError("--turn-interval-us must be 0 or more") }
        if let w = prefetchWindowMs, !(w >= 0) { throw ValidationError("--prefetch-window-ms must be 0 or more") }
        if let w = warmUpFrames, w < 0 { throw ValidationError("--warm-up-frames must be 0 or more") }
        if !(-20...19).contains(coordinatorNice) { throw ValidationError("--coordinator-nice must be between -20 and 19") }
    }

    func run() throws {
        print("farm benchmark: \(frames) frames, fake renderer \(renderMs) ms/frame, \(slots) slot(s)/worker, "
            + "TCP loopback, \(ProcessInfo.processInfo.activeProcessorCount) cores")
        // Each run's folders are removed only when the command ends: deleting the first run's 10,000
        // frame files right before the second run would slow every file creation of the second run
        // (ext4 without a journal skips recently deleted inodes when it allocates one), which is the
        // file system's cost, not the farm's.
        let base = scratch.map { URL(fileURLWithPath: $0, isDirectory: true) } ?? FarmBench.defaultScratch()
        let scratch = base.appendingPathComponent("dp-bench-farm-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        print("scratch folder (journal, PNGs, manifest): \(scratch.path)")
        // One timed run with `n` workers and this command's settings, its lines printed.
        func timedRun(workers n: Int) throws -> FarmBench.Result {
            let result = try FarmBench.run(workers: n, frames: frames, renderSeconds: renderMs / 1000, slots: slots,
                                           verbose: verbose, sharedContext: sharedContext, scratch: scratch,
                                           turnIntervalUs: turnIntervalUs, prefetchWindowMs: prefetchWindowMs,
                                           warmUpFrames: warmUpFrames, coordinatorNice: coordinatorNice)
            print(result.line)
            print(result.rampLine)
            print(result.rolesLine)
            return result
        }
        if scaledOnly {
            _ = try timedRun(workers: workers)
            return
        }
        let one = try timedRun(workers: 1)
        guard workers > 1 else { return }
        let many = try timedRun(workers: workers)
        let efficiency = many.cyclesPerSecond / (Double(workers) * one.cyclesPerSecond)
        let endToEnd = many.endToEndPerSecond / (Double(workers) * one.endToEndPerSecond)
        print(String(format: "scaling efficiency %.3f = %.0f / (%d x %.0f) cycles/s (end to end, with the submit and the job's end: %.3f)",
                     efficiency, many.cyclesPerSecond, workers, one.cyclesPerSecond, endToEnd))
    }
}

enum FarmBench {
    struct Result {
        var workers: Int
        var frames: Int
        /// From the submit's start to the JobFinished event.
        var seconds: Double
        /// From the submit's start to the last FrameDone event.
        var lastDoneSeconds: Double
        /// From the submit's start to its reply (the job is in the journal and queued; the client has
        /// built the job, the coordinator validated and journaled its frames).
        var submitSeconds: Double
        /// User + system CPU seconds of the whole process (coordinator, workers, ZeroMQ, follower).
        var cpuSeconds: Double
        /// CPU seconds by thread role (`ThreadCPU`), from the submit to JobFinished.
        var roleCPUSeconds: [String: Double]
        /// The workers' compute threads: time per frame computing, and waiting for a frame.
        var slots: WorkerService.SlotStatistics
        /// Per worker: from the submit's reply to its first frame's start, and from its last frame's
        /// end to the job's last FrameDone (seconds): the run's ramp and tail.
        var startLags: [Double]
        var endLags: [Double]
        /// Dispatch+result cycles per second, from the job's acceptance to its last frame's FrameDone.
        var cyclesPerSecond: Double { Double(frames) / (lastDoneSeconds - submitSeconds) }
        /// Frames per second from the submit's start to JobFinished (with the per-job costs).
        var endToEndPerSecond: Double { Double(frames) / seconds }
        var line: String {
            let n = Double(max(slots.frames, 1))
            return String(format: "%2d worker(s): %d frames: submit %.3f s, then %.3f s = %.0f dispatch+result cycles/s, "
                          + "JobFinished %.0f ms later (end to end %.0f/s); CPU %.0f us/cycle (all threads); "
                          + "per frame a slot computed %.3f ms, waited for work %.3f ms",
                          workers, frames, submitSeconds, lastDoneSeconds - submitSeconds, cyclesPerSecond,
                          (seconds - lastDoneSeconds) * 1e3, endToEndPerSecond,
                          cpuSeconds / Double(frames) * 1e6, Double(slots.computingNs) / n / 1e6, Double(slots.waitingNs) / n / 1e6)
        }
        /// CPU per cycle by thread role, largest first: where the cycles' CPU goes (the coordinator's
        /// loop thread is the one that would limit a real farm; the others stand in for other machines).
        var rolesLine: String {
            guard !roleCPUSeconds.isEmpty else { return "   CPU by thread: not available (no /proc/self/task)" }
            let parts = roleCPUSeconds.sorted { $0.value > $1.value }.map { role, seconds in
                String(format: "%@ %.0f", role, seconds / Double(frames) * 1e6)
            }
            return "   CPU by thread, us/cycle: " + parts.joined(separator: ", ")
        }
        var rampLine: String {
            func mean(_ x: [Double]) -> Double { x.isEmpty ? 0 : x.reduce(0, +) / Double(x.count) }
            return String(format: "   ramp and tail: a worker's first frame started %.1f ms after the submit's reply (max %.1f), "
                          + "its last ended %.1f ms before the last FrameDone (max %.1f)",
                          mean(startLags) * 1e3, (startLags.max() ?? 0) * 1e3, mean(endLags) * 1e3, (endLags.max() ?? 0) * 1e3)
        }
    }

    /// /dev/shm when it is a writable folder (a tmpfs on Linux): the benchmark measures the farm,
    /// not the disk; on this kind of machine creating a file on a busy ext4 /tmp costs 0.3-0.4 ms.
    static func defaultScratch() -> URL {
        let shm = "/dev/shm"
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: shm, isDirectory: &isDirectory), isDirectory.boolValue,
           access(shm, W_OK) == 0 {
            return URL(fileURLWithPath: shm, isDirectory: true)
        }
        return FileManager.default.temporaryDirectory
    }

    static func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    struct BenchError: Error, CustomStringConvertible {
        let description: String
    }

    /// One timed job: from the submit being accepted to the JobFinished event. Its files go to a
    /// new folder in `scratch` (removed by the caller).
    static func run(workers: Int, frames: Int, renderSeconds: Double, slots: Int, verbose: Bool,
                    sharedContext: Bool, scratch: URL, turnIntervalUs: Int? = nil,
                    prefetchWindowMs: Double? = nil, warmUpFrames: Int? = nil, coordinatorNice: Int = 0) throws -> Result {
        let fm = FileManager.default
        let root = scratch.appendingPathComponent("run-\(workers)-\(UUID().uuidString)")
        try fm.createDirectory(at: root, withIntermediateDirectories: true)

        // A model folder the coordinator can serve: its dreampose.json holds the defaults the coordinator
        // reads (the fake renderer never loads weights; one step per frame).
        let model = root.appendingPathComponent("model")
        try fm.createDirectory(at: model, withIntermediateDirectories: true)
        let config: [String: Any] = [
            "format": "dreampose-model/1", "name": "farm-bench (no weights)", "height": 8, "width": 8,  // the synthetic renderer's 8x8 frames
            "vae_scaling_factor": 0.18215, "pose_window": 5,
            "defaults": ["steps": 1, "sampler": "ddim", "image_guidance": 1.0, "pose_guidance": 1.0] as [String: Any],
        ]
        try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys])
            .write(to: model.appendingPathComponent("dreampose.json"))
        // Tiny real inputs: a 1x1 pose per frame, a small PNG subject.
        let pose = NPY.encode(shape: [2, 1, 1], values: [0.25, 0.75])
        var poses: [Int: Data] = [:]
        for n in 0..<frames { poses[n] = pose }
        let subject = try PNGCodec.encode(RGBImage(width: 8, height: 8, pixels: [UInt8](repeating: 128, count: 8 * 8 * 3)))

        let log: @Sendable (String) -> Void = { line in
            if verbose || line.hasPrefix("coordinator loop thread") {
                FileHandle.standardError.write(Data(("   " + line + "\n").utf8))
            }
        }
        var settings = CoordinatorSettings(bind: "tcp://127.0.0.1:*", stateDirectory: root.appendingPathComponent("state"))
        settings.outputRoot = root  // as dp-coord serve: the jobs name their output folders inside it
        if let turnIntervalUs { settings.minTurnIntervalMicroseconds = turnIntervalUs }
        if coordinatorNice != 0 { settings.loopThreadNice = coordinatorNice }
        let coordinator = try Coordinator(settings: settings, log: log)
        let coordThread = Joinable(name: ThreadCPU.coordinatorLoop) { try coordinator.run() }

        var services: [WorkerService] = []
        var threads: [Joinable] = []
        // By default each worker gets its own context, like a dp-worker process on its own machine.
        let workerContext = sharedContext ? try ZMQContext() : nil
        for i in 0..<workers {
            var ws = WorkerSettings(connect: coordinator.endpoint, name: "bench-\(i + 1)",
                                    cacheDirectory: root.appendingPathComponent("cache-\(i + 1)"))
            ws.slots = slots
            if let prefetchWindowMs { ws.prefetchWindowSeconds = prefetchWindowMs / 1000 }
            ws.threads = 1
            let service = try WorkerService(settings: ws, renderer: SyntheticFrameRenderer(steps: 1, stepDelaySeconds: renderSeconds),
                                            context: workerContext,
                                            log: log)
            services.append(service)
            threads.append(Joinable(name: ThreadCPU.workerIO) { try service.run() })
        }
        defer {
            for s in services { s.shutdown(handBack: true) }
            for t in threads { t.join() }
            coordinator.shutdown()
            coordThread.join()
        }

        let client = try FarmClient(endpoint: coordinator.endpoint, timeoutSeconds: 60)
        defer { client.close() }
        let warmUp = min(frames, warmUpFrames ?? 8 * workers * slots)
        if warmUp > 0 {
            let job = JobSubmission(name: "bench warm-up", modelDirectory: model, subjectPNG: subject, poses: poses,
                                    request: RenderRequest(frames: Array(0..<warmUp)), outputDirectory: "out-warm-up")
            let start = Date()
            let id = try client.submit(job)
            var state: String?
            try client.follow(job: id) { event in
                if case .finished(let s, _) = event { state = s; return false }
                return true
            }
            guard state == "completed" else {
                throw BenchError(description: "farm bench warm-up job \(id) ended \(state ?? "without a JobFinished event")")
            }
            let cold = services.filter { $0.slotStatistics.frames == 0 }.count
            print(String(format: "   warm-up: %d frames in %.3f s, not counted", warmUp, Date().timeIntervalSince(start))
                  + (cold > 0 ? " (\(cold) worker(s) rendered none of them: they start the timed job cold)" : ""))
            for s in services { s.resetSlotStatistics() }
        }
        let job = JobSubmission(name: "bench", modelDirectory: model, subjectPNG: subject, poses: poses,
                                request: RenderRequest(frames: Array(0..<frames)), outputDirectory: "out")
        let start = Date()
        let cpuStart = processCPUSeconds()
        let threadsStart = ThreadCPU.byThread()
        let id = try client.submit(job)
        let submitted = Date().timeIntervalSince(start)
        let repliedNs = DispatchTime.now().uptimeNanoseconds
        var state: String?
        var firstDone: Double?, lastDone = 0.0
        var lastDoneNs: UInt64 = 0
        try client.follow(job: id) { event in
            if case .frameDone = event {
                let t = Date().timeIntervalSince(start)
                if firstDone == nil { firstDone = t }
                lastDone = t
                lastDoneNs = DispatchTime.now().uptimeNanoseconds
            }
            if case .finished(let s, _) = event { state = s; return false }
            return true
        }
        let seconds = Date().timeIntervalSince(start)
        print(String(format: "   timeline: submit replied %.3f s, first frame done %.3f s, last %.3f s, JobFinished %.3f s",
                     submitted, firstDone ?? -1, lastDone, seconds))
        let cpuSeconds = processCPUSeconds() - cpuStart
        let roles = ThreadCPU.secondsByRole(from: threadsStart, to: ThreadCPU.byThread())
        var slots = WorkerService.SlotStatistics()
        var startLags: [Double] = [], endLags: [Double] = []
        for s in services {
            let x = s.slotStatistics
            slots.frames += x.frames
            slots.computingNs += x.computingNs
            slots.waitingNs += x.waitingNs
            if x.frames > 0 {
                startLags.append(Double(Int64(bitPattern: x.firstStartNs &- repliedNs)) / 1e9)
                endLags.append(Double(Int64(bitPattern: lastDoneNs &- x.lastEndNs)) / 1e9)
            }
        }
        guard state == "completed" else {
            throw BenchError(description: "farm bench job \(id) with \(workers) worker(s) ended \(state ?? "without a JobFinished event")")
        }
        return Result(workers: workers, frames: frames, seconds: seconds, lastDoneSeconds: lastDone,
                      submitSeconds: submitted, cpuSeconds: cpuSeconds, roleCPUSeconds: roles,
                      slots: slots, startLags: startLags, endLags: endLags)
    }
}

/// A thread running `body`, joinable.
final class Joinable {
    private let done = DispatchSemaphore(value: 0)
    init(name: String? = nil, _ body: @escaping @Sendable () throws -> Void) {
        let done = self.done
        let t = Thread {
            if let name { _ = dp_set_thread_name(name) }
            do { try body() } catch { FileHandle.standardError.write(Data("farm bench thread: \(error)\n".utf8)) }
            done.signal()
        }
        t.stackSize = 8 << 20
        t.start()
    }
    func join() { done.wait(); done.signal() }
}

/// CPU time of this process's threads grouped by role, from Linux's per-thread scheduler
/// statistics (`/proc/self/task/TID/schedstat`: nanoseconds on a CPU; `comm`: the thread's name).
enum ThreadCPU {
    static let coordinatorLoop = "coord-loop"
    static let workerIO = "worker-io"

    /// Each thread's role and nanoseconds on a CPU so far, by thread id; empty where /proc is not there.
    static func byThread() -> [String: (role: String, ns: UInt64)] {
        let tasks = "/proc/self/task"
        guard let tids = try? FileManager.default.contentsOfDirectory(atPath: tasks) else { return [:] }
        let main = String(getpid())
        var out: [String: (role: String, ns: UInt64)] = [:]
        for tid in tids {
            guard let stat = read(tasks + "/" + tid + "/schedstat"),
                  let ns = stat.split(separator: " ").first.flatMap({ UInt64($0) }),
                  let name = read(tasks + "/" + tid + "/comm") else { continue }
            out[tid] = (tid == main ? "client" : role(name.trimmingCharacters(in: .whitespacesAndNewlines)), ns)
        }
        return out
    }

    /// CPU seconds between two `byThread` readings, summed by role (a thread that ended in between
    /// is left out; one that started counts from zero).
    static func secondsByRole(from start: [String: (role: String, ns: UInt64)],
                              to end: [String: (role: String, ns: UInt64)]) -> [String: Double] {
        var out: [String: Double] = [:]
        for (tid, now) in end {
            let before = start[tid]?.ns ?? 0
            out[now.role, default: 0] += Double(now.ns >= before ? now.ns - before : 0) / 1e9
        }
        return out
    }

    /// Thread names as set by the bench, by WorkerService and by libzmq (Linux keeps 15 bytes of a
    /// name); the main thread (the client) is told by its id.
    static func role(_ name: String) -> String {
        if name.hasPrefix(coordinatorLoop) { return "coordinator loop" }
        if name.hasPrefix(workerIO) { return "worker I/O" }
        if name.hasPrefix("dp-compute") { return "worker compute" }
        if name.hasPrefix("ZMQbg") { return "ZeroMQ" }
        return "other"
    }

    private static func read(_ path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }
}

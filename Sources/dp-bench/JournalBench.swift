import ArgumentParser
import DPJournal
import Foundation

/// `dp-bench journal`: the journal's share of a farm cycle, without sockets, workers or files. One job
/// of `--frames` frames; then loop turns like the coordinator's: each turn is one `Journal.batch`
/// that completes the frames dispatched `--in-flight` turns earlier (resultTarget + completeAttempt,
/// as `Coordinator.onFrameResult`) and dispatches `--per-turn` new ones (nextFrames + bannedJobs once, startAttempt(checked:) each,
/// as `Coordinator.dispatch`) to 16 worker names in turn. Prints microseconds per dispatch+result
/// cycle in total and per call kind.
struct JournalBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "journal",
        abstract: "The coordinator's journal calls per dispatch+result cycle, in loop-turn batches (no sockets, no files).")

    @Option(help: "Frames of the job.") var frames = 20_000
    @Option(name: .customLong("per-turn"), help: "Frames dispatched (and completed) per loop turn.") var perTurn = 2
    @Option(name: .customLong("in-flight"), help: "Turns between a frame's dispatch and its result.") var inFlight = 8
    @Option(help: "Folder for the journal (default: /dev/shm when writable, else the temp folder).") var scratch: String?

    func validate() throws {
        if frames < 1 || perTurn < 1 || inFlight < 1 { throw ValidationError("--frames, --per-turn and --in-flight must be at least 1") }
    }

    func run() throws {
        let base = scratch.map { URL(fileURLWithPath: $0, isDirectory: true) } ?? FarmBench.defaultScratch()
        let folder = base.appendingPathComponent("dp-bench-journal-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let journal = try Journal(path: folder.appendingPathComponent("journal.sqlite").path)
        let workers = (1 ... 16).map { "bench-\($0)" }
        for w in workers { try journal.recordWorker(name: w, host: "bench", slots: 1, threads: 1) }

        var clock = Stopwatch()
        let job = try journal.createJob(NewJob(name: "bench", spec: Data(count: 200), modelID: "m", outputDir: folder.path,
                                               frames: Array(0 ..< frames))).id
        let createSeconds = clock.lap()

        var times: [String: Double] = [:]
        func timed<T>(_ what: String, _ body: () throws -> T) rethrows -> T {
            let t0 = threadCPUSeconds()
            defer { times[what, default: 0] += threadCPUSeconds() - t0 }
            return try body()
        }
        var inFlightTurns: [[AttemptRecord]] = []
        var done = 0, turns = 0, nextWorker = 0
        _ = clock.lap()
        let cpuStart = threadCPUSeconds()
        while done < frames {
            try timed("batch (begin + commit)") {
                try journal.batch {
                    if inFlightTurns.count >= inFlight || done + inFlightTurns.joined().count >= frames {
                        for a in inFlightTurns.removeFirst() {
                            guard let (record, current) = try timed("resultTarget", { try journal.resultTarget(a.id) }), current else {
                                throw BenchError(description: "attempt \(a.id) is not current")
                            }
                            let outcome = try timed("completeAttempt", {
                                try journal.completeAttempt(record.id, output: FrameOutput(sha256: String(repeating: "a", count: 64),
                                                                                           size: 200, renderSeconds: 0.003))
                            })
                            if !outcome.applied { throw BenchError(description: "attempt \(a.id) not applied") }
                            done += 1
                        }
                    }
                    // As Coordinator.dispatch: one queue read (and one ban read) for the turn's
                    // credit, each frame started with startAttempt(checked:).
                    var started: [AttemptRecord] = []
                    let candidates = try timed("nextFrames", { try journal.nextFrames(limit: perTurn) })
                    _ = try timed("bannedJobs", { try journal.bannedJobs() })
                    for c in candidates {
                        let worker = workers[nextWorker % workers.count]
                        nextWorker += 1
                        started.append(try timed("startAttempt", { try journal.startAttempt(checked: c, worker: worker) }))
                    }
                    if !started.isEmpty { inFlightTurns.append(started) }
                }
            }
            turns += 1
        }
        let loopSeconds = clock.lap()
        let loopCPUSeconds = threadCPUSeconds() - cpuStart
        guard try journal.job(job)?.state == .completed else { throw BenchError(description: "the job did not complete") }
        print(String(format: "journal: %.1f us (CPU) per dispatch+result cycle (%.1f us wall); createJob of %d frames %.1f ms; %d turns of %d",
                     loopCPUSeconds / Double(frames) * 1e6, loopSeconds / Double(frames) * 1e6, frames, createSeconds * 1000,
                     turns, perTurn))
        print("CPU time per cycle by call (thread CPU clock):")
        var inner = 0.0
        for (what, seconds) in times.sorted(by: { $0.value > $1.value }) where what != "batch (begin + commit)" {
            inner += seconds
            print("  " + what.padding(toLength: 24, withPad: " ", startingAt: 0) + String(format: "%6.1f us", seconds / Double(frames) * 1e6))
        }
        print("  " + "begin + commit + rest".padding(toLength: 24, withPad: " ", startingAt: 0)
            + String(format: "%6.1f us", ((times["batch (begin + commit)"] ?? 0) - inner) / Double(frames) * 1e6))
    }

    struct BenchError: Error, CustomStringConvertible { let description: String }
}

struct Stopwatch {
    private var last = DispatchTime.now().uptimeNanoseconds
    mutating func lap() -> Double {
        let t = DispatchTime.now().uptimeNanoseconds
        defer { last = t }
        return Double(t - last) / 1e9
    }
}

/// CPU seconds of the calling thread (user + system).
func threadCPUSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

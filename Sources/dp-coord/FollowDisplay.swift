import DPCoordinator
import Foundation
import Synchronization

/// Shows the events of a followed job: a live progress bar on a terminal (stderr), plain lines when stderr is
/// not a terminal, or (`--json`) one JSON object per event on stdout. Thread-safe: the embedded farm's log
/// lines and the signal handler write through it while the main thread follows the job; each call holds the
/// display's lock while it writes, so a log line never cuts a bar or an event in two.
final class FollowDisplay: Sendable {
    typealias Mode = FollowState.Mode
    let mode: Mode
    private let state: Mutex<FollowState>

    init(json: Bool, isTTY: Bool = isatty(STDERR_FILENO) != 0, now: @escaping @Sendable () -> Date = Date.init) {
        let state = FollowState(json: json, isTTY: isTTY, now: now)
        mode = state.mode
        self.state = Mutex(state)
    }

    /// Handles one event; returns false once the job finished.
    func handle(_ event: FarmJobEvent) -> Bool { state.withLock { $0.handle(event) } }
    /// Shows the submit's upload progress (`FarmClient.submit`'s callback).
    func upload(_ progress: UploadProgress) { state.withLock { $0.upload(progress) } }
    var finalState: String? { state.withLock { $0.finalState } }
    var video: String? { state.withLock { $0.video } }
    func line(_ s: String) { state.withLock { $0.line(s) } }
    func emit(_ object: [String: Any]) {
        guard let line = FollowState.jsonLine(object) else { return }
        state.withLock { _ in FileHandle.standardOutput.write(line) }
    }

    /// A Codable value as a JSON object for `JSONSerialization`.
    static func jsonObject<T: Encodable>(_ value: T) -> Any { FollowState.jsonObject(value) }
}

/// `FollowDisplay`'s state and output, only reached through its Mutex.
final class FollowState {
    enum Mode { case bar, lines, json }
    let mode: Mode
    private let start: Date
    private let now: () -> Date
    private var total = 0
    private var done = 0
    private var failed = 0
    private var inFlight = 0
    /// Frames each worker finished while we followed, and when it finished its first.
    private var perWorker: [String: (frames: Int, first: Date, last: Date)] = [:]
    /// Latest step of each frame in flight.
    private var steps: [Int: (step: Int, total: Int, worker: String)] = [:]
    private var doneAtStart = 0
    private var barShown = false
    /// Workers in a long phase for the job (model fetch, verification, preparation), by name.
    private var phases: [String: WorkerPhaseInfo] = [:]
    /// When a lines-mode progress line (upload, phase bytes) was last printed, by what it is about.
    private var lastProgressLine: [String: Date] = [:]
    /// Seconds between progress lines of one upload or phase in lines mode (changes print at once).
    static let progressLineSeconds = 5.0
    private(set) var finalState: String?
    private(set) var video: String?

    init(json: Bool, isTTY: Bool, now: @escaping () -> Date) {
        mode = json ? .json : (isTTY ? .bar : .lines)
        self.now = now
        start = now()
    }

    /// Handles one event; returns false once the job finished.
    func handle(_ event: FarmJobEvent) -> Bool {
        switch event {
        case .snapshot(let s):
            total = s.total
            done = s.done
            failed = s.failed
            inFlight = s.inFlight
            doneAtStart = s.done
            if mode == .json {
                emit(["event": "snapshot", "job": Self.jsonObject(s)])
            } else {
                line("job \(s.id) \"\(s.name)\": \(s.state), \(s.done)/\(s.total) frames done, \(s.failed) failed, "
                    + "\(s.inFlight) in flight, output \(s.outputDirectory)")
            }
        case let .frameDone(frame, attempt, worker, seconds, _):
            done += 1
            steps[frame] = nil
            inFlight = steps.count
            let t = now()
            if let w = perWorker[worker] { perWorker[worker] = (w.frames + 1, w.first, t) } else { perWorker[worker] = (1, start, t) }
            switch mode {
            case .json:
                emit(["event": "frame_done", "frame": frame, "attempt": attempt, "worker": worker,
                      "seconds": seconds, "done": done, "total": total])
            case .lines:
                line("frame \(frame) done by \(worker) in \(String(format: "%.1f", seconds)) s  "
                    + "(\(done)/\(total) done, ETA \(Self.duration(eta())))")
            case .bar:
                line("frame \(frame) done by \(worker) in \(String(format: "%.1f", seconds)) s")
            }
        case let .frameProgress(frame, worker, step, totalSteps):
            steps[frame] = (step, totalSteps, worker)
            inFlight = steps.count
            if mode == .json {
                emit(["event": "frame_progress", "frame": frame, "worker": worker, "step": step, "total": totalSteps])
            }
        case let .frameFailed(frame, error):
            failed += 1
            steps[frame] = nil
            inFlight = steps.count
            if mode == .json {
                emit(["event": "frame_failed", "frame": frame, "error": error])
            } else {
                line("frame \(frame) FAILED: \(error)")
            }
        case .workerPhase(let p):
            let previous = phases[p.worker]
            phases[p.worker] = p.ended ? nil : p
            switch mode {
            case .json:
                emit(p.jsonFields)
            case .lines:
                if previous?.phase != p.phase || progressLineDue("worker " + p.worker) {
                    line(p.ended ? "worker \(p.worker): \(previous?.phase.replacingOccurrences(of: "_", with: " ") ?? "phase") done"
                                 : "worker \(p.worker): \(p.summary)")
                    lastProgressLine["worker " + p.worker] = now()
                }
            case .bar:
                break
            }
        case .notice(let message):
            if mode == .json {
                emit(["event": "notice", "message": message])
            } else {
                line("note: \(message)")
            }
        case let .finished(state, video):
            finalState = state
            self.video = video
            if mode == .json {
                var o: [String: Any] = ["event": "finished", "state": state, "done": done, "failed": failed, "total": total,
                                        "seconds": now().timeIntervalSince(start)]
                if let video { o["video"] = video }
                emit(o)
            } else {
                line("job \(state): \(done)/\(total) frames done, \(failed) failed in "
                    + "\(Self.duration(now().timeIntervalSince(start)))\(video.map { ", video \($0)" } ?? "")")
            }
            return false
        }
        if mode == .bar { drawBar() }
        return true
    }

    func upload(_ p: UploadProgress) {
        switch mode {
        case .json:
            emit(p.jsonFields)
        case .lines:
            if p.bytesSent == 0 || p.finished || progressLineDue("upload") {
                line(p.summary)
                lastProgressLine["upload"] = now()
            }
        case .bar:
            let width = 24
            let filled = p.bytesTotal > 0 ? Int(min(UInt64(width), p.bytesSent * UInt64(width) / p.bytesTotal)) : width
            FileHandle.standardError.write(Data(("\r\u{1B}[K[" + String(repeating: "#", count: filled)
                + String(repeating: ".", count: width - filled) + "] " + p.summary).utf8))
            barShown = true
            if p.finished { line(p.summary) }
        }
    }

    private func progressLineDue(_ key: String) -> Bool {
        guard let last = lastProgressLine[key] else { return true }
        return now().timeIntervalSince(last) >= Self.progressLineSeconds
    }

    /// Seconds left at the rate frames finished since we started following.
    func eta() -> Double {
        let finished = done - doneAtStart
        let left = total - done - failed
        guard finished > 0 else { return .infinity }
        if left <= 0 { return 0 }
        return now().timeIntervalSince(start) / Double(finished) * Double(left)
    }

    /// "w1 2.0/min, w2 1.8/min": frames per minute of each worker since we started following.
    func workerRates() -> String {
        let elapsed = max(now().timeIntervalSince(start), 1e-3)
        return perWorker.keys.sorted().map { name in
            let w = perWorker[name]!
            return "\(name) \(String(format: "%.1f", Double(w.frames) * 60 / elapsed))/min"
        }.joined(separator: ", ")
    }

    func drawBar() {
        let width = 24
        let filled = total > 0 ? min(width, done * width / total) : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let stepText = steps.sorted { $0.key < $1.key }.prefix(4)
            .map { "f\($0.key) \($0.value.step)/\($0.value.total)" }.joined(separator: " ")
        var s = "[\(bar)] \(done)/\(total) frames, \(inFlight) in flight"
        if failed > 0 { s += ", \(failed) failed" }
        if !stepText.isEmpty { s += " (\(stepText))" }
        // Workers still getting ready (model fetch, verification, preparation): what each is doing.
        let phaseText = phases.keys.sorted().prefix(2).map { "\($0): \(phases[$0]!.summary)" }.joined(separator: "; ")
        if !phaseText.isEmpty { s += " [\(phaseText)]" }
        let rates = workerRates()
        if !rates.isEmpty { s += "  \(rates)" }
        s += "  ETA \(Self.duration(eta()))"
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + s).utf8))
        barShown = true
    }

    func line(_ s: String) {
        if barShown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)); barShown = false }
        FileHandle.standardError.write(Data((s + "\n").utf8))
    }

    func emit(_ object: [String: Any]) {
        guard let line = Self.jsonLine(object) else { return }
        FileHandle.standardOutput.write(line)
    }

    /// `object` as one line of JSON (sorted keys).
    static func jsonLine(_ object: [String: Any]) -> Data? {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return nil }
        return data + Data("\n".utf8)
    }

    /// A Codable value as a JSON object for `JSONSerialization`.
    static func jsonObject<T: Encodable>(_ value: T) -> Any {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(value), let o = try? JSONSerialization.jsonObject(with: data) else { return NSNull() }
        return o
    }

    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "?" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", (s % 3600) / 60))m"
            : s >= 60 ? "\(s / 60)m\(String(format: "%02d", s % 60))s" : "\(s)s"
    }
}

/// The counting rules of the frame and job lifecycle, as pure functions of plain values. The journal's
/// writes (`failAttempt`, `completeAttempt`, the job's settlement) persist what these decide; the
/// coordinator's `FrameLifecycle` (which decides which of those writes to make, and what to send)
/// builds on them. Tested without SQLite (DPFarmTests' LifecycleTests).
public enum LifecycleRules {
    /// A frame after a failed attempt of it: the different workers it failed on (`failedAttemptWorkers`:
    /// the worker of each of its failed attempts, this one included; a worker counts once however often
    /// it failed the frame) and its state: failed once that reaches `budget` (`maxFailedWorkersPerFrame`,
    /// 3: a poison frame that kills every worker it reaches ends), queued again before.
    public static func frameAfterFailure(failedAttemptWorkers: [String], budget: Int) -> (distinctWorkers: Int, state: FrameState) {
        let distinct = Set(failedAttemptWorkers).count
        return (distinct, distinct >= budget ? .failed : .queued)
    }

    /// Whether a worker with `failures` failed frames of a job (this one counted) gets no more of its
    /// frames (`maxFailedFramesPerWorker`, 3).
    public static func workerBanned(failures: Int, limit: Int) -> Bool {
        failures >= limit
    }

    /// The state a job ends in once none of its frames is pending (neither done nor failed): failed
    /// if any frame failed, completed otherwise; nil while frames are pending or when it already ended.
    public static func settlement(state: JobState, total: Int, done: Int, failed: Int) -> JobState? {
        guard !state.isFinished, total - done - failed <= 0 else { return nil }
        return failed > 0 ? .failed : .completed
    }

    /// One failed frame for the job's error: the frame and its workers' errors, last first.
    public struct FailedFrame: Sendable, Equatable {
        public var frame: Int
        public var errors: [(worker: String, error: String)]

        public init(frame: Int, errors: [(worker: String, error: String)]) {
            self.frame = frame
            self.errors = errors
        }

        public static func == (a: FailedFrame, b: FailedFrame) -> Bool {
            a.frame == b.frame && a.errors.map(\.worker) == b.errors.map(\.worker)
                && a.errors.map(\.error) == b.errors.map(\.error)
        }
    }

    /// Frames the job's error names (the first, in frame order) and errors it quotes per frame (the last).
    public static let reportedFrames = 3
    public static let reportedErrorsPerFrame = 3

    /// A failed job's error: "N frame(s) failed: frame F ('worker': error | ...); ..." naming `frames`
    /// (the first `reportedFrames` failed frames with their workers' last errors, each cut to 300
    /// characters), and "; ..." when more than those failed.
    public static func failedFramesReport(failed: Int, frames: [FailedFrame]) -> String {
        let parts = frames.map { frame in
            "frame \(frame.frame) (" + frame.errors.map { entry in
                "'\(entry.worker)': " + (entry.error.count > 300 ? String(entry.error.prefix(300)) + "..." : entry.error)
            }.joined(separator: " | ") + ")"
        }
        return "\(failed) frame(s) failed" + (parts.isEmpty ? "" : ": " + parts.joined(separator: "; "))
            + (failed > frames.count ? "; ..." : "")
    }
}

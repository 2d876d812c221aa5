// Jobs: their contexts (opened on first use, done frames checked), failure as a whole, Cancel{job} to
// workers, and their end (final manifest and video off the loop, then JobFinished).
import DPJournal
import DPLog
import DPProtocol
import Foundation
import Synchronization

extension Coordinator {
    // MARK: jobs

    /// The job's context, opened on first use. Opening checks every frame the journal says is done
    /// against its PNG (SHA-256 and size); a missing or corrupt one is requeued (an unfinished job)
    /// so it is rendered again.
    func jobContext(_ id: Int64) throws -> JobContext {
        if let context = jobContexts[id] { return context }
        guard let record = try journal.job(id) else { throw JournalError.unknownJob(id) }
        let context = try JobContext(record: record, doneFrames: try journal.frames(job: id, state: .done),
                                     models: models, inputs: inputsDirectory, placement: outputPlacement)
        jobContexts[id] = context
        for (frame, reason) in context.output.invalidRecords {
            applyLogging(lifecycle.doneFrameLost(id, frame: Int(frame), reason: reason, jobState: record.state), from: nil)
        }
        return context
    }

    func failJob(_ id: Int64, error: String) {
        do {
            let running = try journal.failJob(id, error: error)
            dispatchNeeded = true  // credit that was meant for this job goes to the next one
            let effects = lifecycle.jobFailed(id, running: running, error: error)
            try apply(effects.filter { if case .finishJob = $0 { false } else { true } }, from: nil)
            log.warning("job \(id) failed: \(error)", .jobFailed(job: id, error: error))
            try apply(effects.filter { if case .finishJob = $0 { true } else { false } }, from: nil)
        } catch {
            log.error("cannot fail job \(id): \(error)", job: id)
        }
    }

    /// Sends Cancel{job} to every session holding the job's prep or one of its attempts.
    func cancelOnWorkers(job: Int64, attempts: [AttemptRecord], reason: String) {
        let holders = Set(attempts.map(\.worker))
        for session in Array(sessions.values)
        where session.preps.contains(job) || holders.contains(session.name)
            || session.attempts.values.contains(where: { $0.jobID == job }) {
            session.preps.remove(job)
            var cancel = FarmCancel()
            cancel.jobID = UInt64(job)
            cancel.reason = reason
            send(session.routingID, .cancel(cancel))
            log.info("sent Cancel{job \(job)} to worker '\(peer: session.name)'", job: job, worker: session.name)
        }
    }

    /// The job reached a final state (in this turn's transaction). Its last manifest.json rewrite
    /// and, for a completed job that asked for one, its video are made off the loop thread: the
    /// manifest on `manifestQueue` (after any periodic rewrite of it), the video then on
    /// `videoQueue`. A 10,000-frame job's manifest and its context's teardown took ~25 ms, which
    /// held up every other job's dispatch. When both are written, `drainFinishedOutputs` marks
    /// the job's outputs final in the journal and sends JobFinished to its followers, so a
    /// follower that sees JobFinished finds every output in place. A crash before that is
    /// finished by the next start-up (`startUp`: finished jobs whose outputs are not final).
    func finishJob(_ id: Int64) {
        guard !finishing.contains(id), let record = try? journal.job(id, includingSpec: false) else { return }
        finishing.insert(id)
        // Its context leaves the loop: the job gets no more frames, and the background work owns its
        // OutputWriter. A job whose output cannot be opened (it failed for that) has nothing to write.
        let context: JobContext?
        if let open = jobContexts.removeValue(forKey: id) {
            context = open
        } else {
            do {
                context = try jobContext(id)
                jobContexts[id] = nil
            } catch {
                log.error("job \(id): cannot open its output to finish it: \(error)", job: id)
                context = nil
            }
        }
        writeFinalOutputs(record, output: context?.output)  // all the background work needs of the context
    }

    /// `finishJob`'s background work: the last manifest.json rewrite on `manifestQueue`, then, for a
    /// completed job that asked for one, the video on `videoQueue`; reported to the loop through
    /// `finishedOutputs` (and a wake-up) when done.
    private func writeFinalOutputs(_ record: JobRecord, output: OutputWriter?) {
        let id = record.id
        let wantsVideo = record.state == .completed && !(record.videoPath ?? "").isEmpty && !record.videoWritten
        let journal = self.journal
        let ffmpeg = settings.ffmpegPath
        let log = self.log
        let report: @Sendable (String?, String, Bool) -> Void = { [weak self] video, message, final in
            guard let self else { return }
            self.finishedOutputs.withLock {
                $0.append(FinishedOutputs(job: id, state: record.state, video: video, message: message, final: final))
            }
            self.wakeLoop()
        }
        let message = record.error ?? ""
        let videoQueue = self.videoQueue
        manifestQueue.async {
            do {
                try output?.flush()
            } catch {
                log.error("job \(id): cannot write its final manifest.json: \(error)", job: id)
            }
            guard wantsVideo, let output else {
                report(record.videoWritten ? record.videoPath : nil, message, true)
                return
            }
            videoQueue.async {
                do {
                    let video = try output.makeVideo(at: URL(fileURLWithPath: record.videoPath ?? ""),
                                                             fps: record.videoFPS, ffmpeg: ffmpeg)
                    try journal.markVideoWritten(job: id)
                    report(video.path, message, true)
                } catch let error as OutputError {
                    // A file in the way that this job did not create stays untouched, for good (final);
                    // anything else (ffmpeg) is tried again by the next start-up (not final).
                    if case .notOwned = error {
                        report(nil, "video failed: \(error)", true)
                    } else {
                        report(nil, "video failed: \(error)", false)
                    }
                } catch {
                    report(nil, "video failed: \(error)", false)  // not final: the next start-up tries again
                }
            }
        }
    }

    /// What `finishJob`'s background work reports back to the loop.
    struct FinishedOutputs: Sendable {
        var job: Int64
        var state: JobState
        var video: String?
        var message: String
        /// False when the video failed: its outputs stay not final, so a restart tries it again.
        var final: Bool
    }

    /// Jobs whose final outputs were written since the last turn: marked final in the journal
    /// (this turn's transaction), then JobFinished to their followers.
    func drainFinishedOutputs() {
        let done = finishedOutputs.withLock { outputs in
            defer { outputs.removeAll() }
            return outputs
        }
        for f in done {
            finishing.remove(f.job)
            if f.final {
                do {
                    try journal.markOutputsFinal(job: f.job)
                } catch {
                    log.error("job \(f.job): cannot mark its outputs final: \(error)", job: f.job)
                }
            }
            if f.message.hasPrefix("video failed") { log.error("job \(f.job): \(f.message)", .videoFailed(job: f.job, error: f.message)) }
            announceFinished(f.job, state: f.state, video: f.video, message: f.message)
        }
    }

    func announceFinished(_ id: Int64, state: JobState, video: String?, message: String) {
        var finished = FarmJobFinished()
        finished.state = FarmJobState(state)
        finished.videoPath = video ?? ""
        finished.message = message
        log.notice("job \(id) finished: \(state.rawValue)" + (video.map { ", video \($0)" } ?? "")
            + (message.isEmpty ? "" : " (\(message))"), JobEnd(rawValue: state.rawValue).map { .jobFinished(job: id, state: $0) })
        emit(job: id, .jobFinished(finished))
        followers[id] = nil
    }
}

// Start-up: the journal's leftovers (interrupted uploads, unfinished outputs, unfinished jobs'
// outputs checked), the restart grace period, the loop thread's priority and the serving lines.
import CDPSys
import DPJournal
import DPLog
import Foundation

extension Coordinator {
    /// Runs the loop thread at `settings.loopThreadNice`, if set.
    func setLoopThreadNice() {
        if let nice = settings.loopThreadNice {
            if dp_set_thread_nice(Int32(clamping: nice)) == 0 {
                log.info("coordinator loop thread at nice \(nice)", .loopThreadNice(nice: nice, applied: true))
            } else {
                log.warning("coordinator loop thread: cannot set nice \(nice) (\(String(cString: strerror(errno)))); running at the "
                    + "inherited priority (a lower nice value needs CAP_SYS_NICE)", .loopThreadNice(nice: nice, applied: false))
            }
        }
    }

    /// Where it serves, and how peers authenticate (loudly when they do not).
    func logServing() {
        log.notice("coordinator \(coordinatorID) serving on \(endpoint) (state \(settings.stateDirectory.path))", .serving(endpoint: endpoint))
        switch settings.auth {
        case .insecureNoAuth:
            for i in 0 ..< 3 {
                log.warning("WARNING: --insecure-no-auth: NO AUTHENTICATION. Anyone who can reach \(endpoint) can submit, "
                    + "cancel and read every job and register as a worker. Use CURVE keys (dp-coord keygen).",
                        i == 0 ? .insecureNoAuth(endpoint: endpoint) : nil)
            }
        case .curve(let auth):
            log.notice("CURVE authentication on: server public key \(auth.serverKeys.publicKey); "
                + "\(authorizedKeys?.counts.description ?? "")")
        }
    }

    // MARK: start-up

    func startUp() throws {
        // Temp files of uploads that a stop interrupted (their jobs are failed below).
        for name in (try? FileManager.default.contentsOfDirectory(atPath: inputsDirectory.path)) ?? []
        where name.hasPrefix(".upload-") {
            try? FileManager.default.removeItem(at: inputsDirectory.appendingPathComponent(name))
        }
        for (id, why) in models.refusedAtStart.sorted(by: { $0.key < $1.key }) {
            log.warning("model \(id) is not served: \(why)")
        }
        for job in try journal.jobs(states: [.uploading], includingSpec: false) {
            _ = try journal.failJob(job.id, error: "upload interrupted by a coordinator restart; submit the job again")
            log.warning("job \(job.id) '\(peer: job.name)': was uploading when the coordinator stopped; marked failed", job: job.id)
        }
        // A crash (or a stop) between a job's end and its last manifest rewrite or video: finish them now.
        for job in try journal.jobs(states: [.completed, .failed, .cancelled], includingSpec: false) where !job.outputsFinal {
            let video = job.state == .completed && (job.videoPath ?? "") != "" && !job.videoWritten
            log.notice("job \(job.id) '\(peer: job.name)': \(job.state.rawValue) before its final manifest.json"
                + (video ? " and video" : "") + " were written; writing them now", .jobOutputsResumed(job: job.id))
            finishJob(job.id)
        }
        // Open every unfinished job's output now: its done frames' PNGs are checked against the
        // journal (a missing or corrupt one is requeued) before anything is dispatched.
        for job in try journal.jobs(states: [.queued, .running], includingSpec: false) {
            do {
                _ = try jobContext(job.id)
            } catch {
                // A job that cannot be loaded (its model's dreampose.json refused, its output folder in
                // the way, ...) fails with the reason; the coordinator comes up (no crash loop).
                log.error("job \(job.id) '\(peer: job.name)': cannot load it at start-up: \(error); marking it failed", job: job.id)
                failJob(job.id, error: "cannot load the job at coordinator start-up: \(error)")
            }
        }
        let inFlight = try journal.runningAttempts()
        if !inFlight.isEmpty {
            log.notice("\(inFlight.count) attempt(s) in flight from before the restart: requeued after "
                + "\(settings.restartGraceSeconds) s unless their workers re-adopt them", .restartAttemptsInFlight(attempts: inFlight.count))
        }
        if settings.restartGraceSeconds <= 0 { endGrace() }
    }

    func endGrace() {
        graceDone = true
        let keep = Set(sessions.values.flatMap { $0.attempts.keys })
        applyLogging(lifecycle.graceOver(keeping: keep, graceSeconds: settings.restartGraceSeconds), from: nil)
    }
}

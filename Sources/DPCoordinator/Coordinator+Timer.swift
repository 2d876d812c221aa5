// The loop's timer tick (restart grace, silent and stalled workers, heartbeats, idle uploads, finished
// outputs) and the periodic manifest.json rewrites.
import DPLog
import DPProtocol
import Foundation

extension Coordinator {
    /// Rewrites the manifest.json of every job with frames written since its last rewrite, at most
    /// once per `manifestIntervalSeconds` unless `force`d (the coordinator is stopping).
    ///
    /// The periodic rewrites run on `manifestQueue`, off the loop thread: for a job of 10,000 frames
    /// one takes ~10 ms, which would hold up dispatching (OutputWriter snapshots under its lock and
    /// writes outside it). At most one batch of them is pending; a forced flush waits for it first.
    func flushOutputs(force: Bool) {
        let t = now
        guard force || Double(t - lastManifestFlushMs) >= manifestIntervalSeconds * 1000 else { return }
        lastManifestFlushMs = t
        let due = jobContexts.filter { $0.value.output.needsFlush }.map { ($0.key, $0.value.output) }
        let log = self.log
        let rewrite: @Sendable () -> Void = {
            for (id, output) in due {
                do {
                    try output.flush(durable: force)
                } catch {
                    log.error("job \(id): cannot rewrite manifest.json: \(error)", job: id)
                }
            }
        }
        if force {
            manifestQueue.sync {}
            rewrite()
            return
        }
        guard !due.isEmpty, !manifestRewritePending.exchange(true) else { return }
        let pending = manifestRewritePending
        manifestQueue.async {
            rewrite()
            _ = pending.exchange(false)
        }
    }

    // MARK: timer

    func tick() {
        let t = now
        if !graceDone, Double(t - startedMs) >= settings.restartGraceSeconds * 1000 { endGrace() }
        let lifecycle = self.lifecycle
        for session in Array(sessions.values) where lifecycle.isSilent(lastHeardMs: session.lastHeardMs, now: t) {
            endSession(session, cause: .silent, reason: "silent for \(t - session.lastHeardMs) ms "
                + "(\(settings.heartbeatLiveness) x \(settings.heartbeatIntervalMs) ms heartbeats)")
        }
        for session in Array(sessions.values) {
            for attempt in lifecycle.stalled(Array(session.attempts.values), now: t) {
                session.attempts[attempt.id] = nil
                applyLogging(lifecycle.attemptsLost([attempt.id], worker: session.name,
                                                    .stalled(milliseconds: t - attempt.lastProgressMs)), from: session)
            }
        }
        let interval = Int64(settings.heartbeatIntervalMs)
        for session in Array(sessions.values) where t - session.lastSentMs >= interval {
            heartbeatSequence += 1
            var hb = FarmHeartbeat()
            hb.sequence = heartbeatSequence
            hb.sentUnixMs = UInt64(max(0, t))
            send(session.routingID, .heartbeat(hb))
        }
        expireIdleUploads()
        drainFinishedOutputs()
        // Receipt accounts of connections that went away: forgotten, or probed (DeliveryLedger.sweep).
        if t - lastLedgerSweepMs >= 1000 {
            lastLedgerSweepMs = t
            let idle = max(60_000, 2 * lifecycle.silentAfterMs)
            for peer in ledger.sweep(now: t, idleMs: idle) {
                heartbeatSequence += 1
                var hb = FarmHeartbeat()
                hb.sequence = heartbeatSequence
                hb.sentUnixMs = UInt64(max(0, t))
                sendNow(peer, .heartbeat(hb), requestID: 0, probe: true)
            }
        }
    }
}

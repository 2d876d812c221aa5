// Sending, and the queued-bytes cap's two ends on the loop (DeliveryLedger.swift keeps the accounts):
// `send`/`sendNow` (every message with its delivery receipt), what is done with a message `sendNow` may not
// send (`withhold`), and the ack each peer message carries (`noteAck`).
import DPProtocol
import DPTransport
import Foundation

extension Coordinator {
    // MARK: sending

    /// Sends one Envelope to `peer`; false if it could not be queued (then the peer may be dropped).
    /// Inside a loop turn (`turn`) the message is held until the turn's journal commit (true).
    @discardableResult
    func send(_ peer: Data, _ body: FarmEnvelope.OneOf_Body, requestID: UInt64 = 0) -> Bool {
        if outbox != nil {
            outbox!.append(OutgoingMessage(peer: peer, body: body, requestID: requestID))
            return true
        }
        return sendNow(peer, body, requestID: requestID)
    }

    /// Every message gets its delivery receipt here, and none goes out that would take the peer past
    /// its queued-bytes cap (`withhold`). `probe`: sent even then (the ledger's idle probe).
    @discardableResult
    func sendNow(_ peer: Data, _ body: FarmEnvelope.OneOf_Body, requestID: UInt64, probe: Bool = false) -> Bool {
        // Never more than the cap (it could not be sent), nor than the peer takes, with room for the receipt.
        let maxBytes = min(sessions[peer]?.maxMessageBytes ?? FarmProtocol.defaultMaxMessageBytes,
                           settings.limits.maxQueuedBytesPerPeer) - DeliveryLedger.receiptReserve
        do {
            var data = try FarmEnvelope(body, requestID: requestID).encoded(maxBytes: maxBytes)
            switch ledger.admit(peer, bytes: data.count, now: now, force: probe) {
            case .send(let receipt):
                data.append(try DeliveryLedger.encodedReceipt(receipt))
            case let .overCap(alreadyCutOff, queued, unacked):
                withhold(peer, body, requestID: requestID, alreadyCutOff: alreadyCutOff, queued: queued, unacked: unacked)
                return false
            }
            guard try router.send([peer, data], flags: .dontWait) else {
                log.warning("send queue to \(peerName(peer)) is full: dropped \(body.name)")
                return false
            }
            sessions[peer]?.lastSentMs = now
            return true
        } catch let error as ZMQError where error.isHostUnreachable {
            ledger.forget(peer)
            if probe { return false }  // a client that left: nothing else to drop
            log.warning("\(peerName(peer)) is gone (sending \(body.name)): dropping it")
            dropPeer(peer, reason: "connection gone")
            return false
        } catch {
            log.error("cannot send \(body.name) to \(peerName(peer)): \(error)")
            return false
        }
    }

    /// A message `sendNow` did not send: `peer` has the cap's worth of messages it has not acknowledged
    /// reading. A follow event drops its follow stream (told QUEUE_FULL once the peer reads again);
    /// anything else cuts the peer off: its session ends (its attempts count as lost, as for a dead
    /// worker), its follow streams go, and it gets nothing until it acks. Logged once per cut-off.
    func withhold(_ peer: Data, _ body: FarmEnvelope.OneOf_Body, requestID: UInt64, alreadyCutOff: Bool,
                  queued: UInt64, unacked: UInt64) {
        deliveryStats.withLock { $0.messagesWithheld += 1 }
        guard !alreadyCutOff else { return }
        let limits = settings.limits
        let state = "\(queued) bytes in \(unacked) message(s) sent and not acknowledged (the caps are "
            + "\(limits.maxQueuedBytesPerPeer) bytes and \(limits.maxQueuedMessagesPerPeer) messages per peer)"
        switch body {
        case .jobEvent, .jobEvents:
            var dropped = 0
            for (job, list) in followers {
                let kept = list.filter { !($0.peer == peer && $0.requestID == requestID) }
                dropped += list.count - kept.count
                followers[job] = kept.isEmpty ? nil : kept
            }
            guard dropped > 0 else { return }
            ledger.droppedStream(peer, requestID: requestID, limit: limits.maxFollowsPerClient)
            deliveryStats.withLock { $0.followStreamsDropped += 1 }
            if let line = queueLog.line("follow stream \(requestID) of \(peerName(peer)) dropped: it does not read "
                                        + "its socket; \(state)", nowMilliseconds: now) {
                log(line)
            }
        default:
            ledger.cutOff(peer)
            deliveryStats.withLock { $0.peersCutOff += 1 }
            if let line = queueLog.line("\(peerName(peer)) cut off: it does not read its socket (withheld "
                                        + "\(body.name)); \(state); nothing more is sent to it until it acks",
                                        nowMilliseconds: now) {
                log(line)
            }
            dropPeer(peer, reason: "cut off at the queued-bytes cap (it does not read its socket)")
        }
    }

    /// Reads the ack a peer's message carries (`DeliveryLedger.acknowledge`). A peer that was cut off
    /// or lost follow streams and now reads again is told so: QUEUE_FULL on each dropped stream, and
    /// once unsolicited for a cut-off (a worker's next message then gets NOT_REGISTERED: Hello again).
    func noteAck(_ peer: Data, _ ack: FarmReceipt?) {
        switch ledger.acknowledge(peer, ack, now: now) {
        case .stale:
            return
        case .refused:
            deliveryStats.withLock { $0.acksRefused += 1 }
            if let line = ackLog.line("ignored an ack from \(peerName(peer)): its token, sequence or byte count "
                                      + "matches nothing sent on this connection", nowMilliseconds: now) {
                log(line)
            }
        case .accepted(let recovered):
            deliveryStats.withLock {
                $0.acksAccepted += 1
                if recovered?.wasCutOff == true { $0.peersRecovered += 1 }
            }
            guard let recovered else { return }
            for stream in recovered.droppedStreams {
                send(peer, .error(FarmError(.queueFull, "this follow stream was dropped: the coordinator had the "
                    + "most it queues for one connection waiting for you to read; follow the job again")),
                     requestID: stream)
            }
            if recovered.wasCutOff {
                send(peer, .error(FarmError(.queueFull, "this connection was cut off: \(recovered.withheld) message(s) "
                    + "were not sent because it did not read the ones before; a worker must say Hello again")))
            }
        }
    }
}

struct OutgoingMessage {
    let peer: Data
    let body: FarmEnvelope.OneOf_Body
    let requestID: UInt64
    /// A JobEvent whose counts are filled in when it is sent (after the turn's commit).
    var countsOfJob: Int64? = nil
}

// The cap on bytes queued per peer (issue 12, item 5; DESIGN.md, "Bytes queued per peer").
//
// The ROUTER's high-water mark counts messages, not bytes, and the protocol has no replies to
// replies: a peer that keeps asking (status pages, 16 MiB model chunks, follow streams) and never
// reads its socket would make libzmq queue for it without bound. So every message the coordinator
// sends carries a receipt - the connection's message sequence number, the bytes sent on it so far,
// and a token, a keyed hash of both - and every message a peer sends carries the newest receipt it
// has read (Envelope.ack). The token proves the read: the key never leaves the coordinator, so a
// peer that has not received a message cannot name its token. Queued bytes = bytes sent - bytes
// covered by the latest valid ack; nothing is sent that would take them past the cap.
//
// The state is O(1) per connection (no ring of tokens: the token is recomputed from the ack's own
// sequence and byte count), and an entry is forgotten when its peer is gone (a send says the
// connection is unknown) or idle with everything acknowledged.
import Crypto
import DPProtocol
import Foundation

/// What the coordinator counted about the queued-bytes cap since it started (tests and operators
/// read it through `Coordinator.deliveryCounters`).
public struct DeliveryCounters: Sendable, Equatable {
    /// Times a peer was cut off at the cap (its session ended, nothing more sent until it acks).
    public var peersCutOff = 0
    /// Follow streams dropped at the cap (their client gets QUEUE_FULL on the stream once it acks).
    public var followStreamsDropped = 0
    /// Messages not sent because their peer was at its cap.
    public var messagesWithheld = 0
    /// Acks that moved a peer's read mark forward.
    public var acksAccepted = 0
    /// Acks refused: a token that does not match, or a sequence or byte count the coordinator never
    /// sent. Ignored (the allowance stays where it was); a stale ack of an earlier connection lands here too.
    public var acksRefused = 0
    /// Peers that were cut off and read their queue since (acked back under the cap).
    public var peersRecovered = 0

    public init() {}
}

/// One connection's account.
struct PeerQueue {
    /// Mixed into every token of this entry: an entry made again for the same routing id (after it
    /// was forgotten) does not accept the acks of the old one.
    let salt: UInt64
    var sentSequence: UInt64 = 0
    var sentBytes: UInt64 = 0
    var ackedSequence: UInt64 = 0
    var ackedBytes: UInt64 = 0
    /// Over the cap with a message that is not a follow event: nothing is sent until an ack.
    var cutOff = false
    /// Follow streams (their FollowJob request ids) dropped at the cap, told QUEUE_FULL after the next ack.
    var droppedStreams: [UInt64] = []
    var withheld = 0
    var lastActivityMs: Int64
    var lastProbeMs: Int64

    var queuedBytes: UInt64 { sentBytes - ackedBytes }
    var unackedMessages: UInt64 { sentSequence - ackedSequence }
}

struct DeliveryLedger {
    /// Bytes a receipt adds to an encoded Envelope, at most (field 3 with five fields set: 50 bytes).
    static let receiptReserve = 64

    let capBytes: UInt64
    let capMessages: UInt64
    private let key: SymmetricKey
    private(set) var queues: [Data: PeerQueue] = [:]

    init(capBytes: Int, capMessages: Int) {
        self.capBytes = UInt64(max(1, capBytes))
        self.capMessages = UInt64(max(1, capMessages))
        key = SymmetricKey(size: .bits256)
    }

    enum Admission: Equatable {
        /// Send it with this receipt.
        case send(FarmReceipt)
        /// Over the cap: not sent. `alreadyCutOff`: the peer was cut off before this message.
        case overCap(alreadyCutOff: Bool, queuedBytes: UInt64, unackedMessages: UInt64)
    }

    /// Counts a message of `bytes` (encoded, without its receipt) to `peer`, or refuses it when
    /// it would take the peer past either cap. `force`: counted and sent even then (the idle probe
    /// of `sweep`, a few dozen bytes a minute).
    mutating func admit(_ peer: Data, bytes: Int, now: Int64, force: Bool = false) -> Admission {
        var q = queues[peer] ?? PeerQueue(salt: UInt64.random(in: 0 ... .max), lastActivityMs: now, lastProbeMs: now)
        let counted = UInt64(max(0, bytes)) + UInt64(Self.receiptReserve)
        let (total, overflow) = q.queuedBytes.addingReportingOverflow(counted)
        if !force && (q.cutOff || overflow || total > capBytes || q.unackedMessages >= capMessages) {
            q.withheld += 1
            let already = q.cutOff
            queues[peer] = q
            return .overCap(alreadyCutOff: already, queuedBytes: q.queuedBytes, unackedMessages: q.unackedMessages)
        }
        q.sentSequence &+= 1
        q.sentBytes &+= counted
        q.lastActivityMs = now
        var receipt = FarmReceipt()
        receipt.sequence = q.sentSequence
        receipt.bytes = q.sentBytes
        receipt.token = token(peer, salt: q.salt, sequence: q.sentSequence, bytes: q.sentBytes)
        receipt.capBytes = capBytes
        receipt.capMessages = UInt32(clamping: capMessages)
        queues[peer] = q
        return .send(receipt)
    }

    /// Marks `peer` cut off: nothing more is sent to it until it acks.
    mutating func cutOff(_ peer: Data) {
        queues[peer]?.cutOff = true
    }

    /// Remembers a follow stream dropped at the cap (at most `limit` per peer).
    mutating func droppedStream(_ peer: Data, requestID: UInt64, limit: Int) {
        guard var q = queues[peer], q.droppedStreams.count < limit else { return }
        q.droppedStreams.append(requestID)
        queues[peer] = q
    }

    enum AckOutcome: Equatable {
        /// Nothing new (no ack, an ack already counted or older, or no account for the peer).
        case stale
        /// Token, sequence or bytes do not match anything sent: ignored.
        case refused
        /// The read mark moved. `recovered`: the peer had been cut off or had streams dropped, and
        /// what was withheld and the dropped streams' request ids (the caller tells it QUEUE_FULL).
        case accepted(recovered: Recovery?)
    }

    struct Recovery: Equatable {
        var wasCutOff: Bool
        var withheld: Int
        var droppedStreams: [UInt64]
    }

    /// Reads a peer's ack. Every value comes from the peer: compared before any arithmetic, never trapped on.
    mutating func acknowledge(_ peer: Data, _ ack: FarmReceipt?, now: Int64) -> AckOutcome {
        guard var q = queues[peer] else { return .stale }
        q.lastActivityMs = now
        guard let ack, ack.sequence > q.ackedSequence else {
            queues[peer] = q
            return .stale
        }
        guard ack.sequence <= q.sentSequence, ack.bytes > q.ackedBytes, ack.bytes <= q.sentBytes,
              ack.token == token(peer, salt: q.salt, sequence: ack.sequence, bytes: ack.bytes) else {
            queues[peer] = q
            return .refused
        }
        q.ackedSequence = ack.sequence
        q.ackedBytes = ack.bytes
        var recovery: Recovery?
        if q.cutOff || !q.droppedStreams.isEmpty {
            recovery = Recovery(wasCutOff: q.cutOff, withheld: q.withheld, droppedStreams: q.droppedStreams)
            q.cutOff = false
            q.droppedStreams = []
            q.withheld = 0
        }
        queues[peer] = q
        return .accepted(recovered: recovery)
    }

    /// Forgets a connection (its peer is gone).
    mutating func forget(_ peer: Data) {
        queues[peer] = nil
    }

    /// Entries idle (nothing sent or received) for `idleMs`: forgotten when everything sent was
    /// acknowledged; otherwise returned, at most once per `idleMs` each, for a probe (a send to a gone
    /// connection fails, and then `forget`). Keeps the table to the connections that are still there.
    mutating func sweep(now: Int64, idleMs: Int64) -> [Data] {
        var probes: [Data] = []
        for (peer, q) in queues where now - q.lastActivityMs >= idleMs {
            if q.unackedMessages == 0 {
                queues[peer] = nil
            } else if now - q.lastProbeMs >= idleMs {
                queues[peer]?.lastProbeMs = now
                probes.append(peer)
            }
        }
        return probes
    }

    /// The token of (connection, sequence, bytes): HMAC-SHA256 under a key made at start-up, cut to 64 bits.
    func token(_ peer: Data, salt: UInt64, sequence: UInt64, bytes: UInt64) -> UInt64 {
        var mac = HMAC<SHA256>(key: key)
        let fixed = [salt.littleEndian, sequence.littleEndian, bytes.littleEndian, UInt64(peer.count).littleEndian]
        fixed.withUnsafeBytes { mac.update(data: $0) }
        mac.update(data: peer)
        var out: UInt64 = 0
        for (i, byte) in Data(mac.finalize()).prefix(8).enumerated() { out |= UInt64(byte) << (8 * UInt64(i)) }
        return out
    }

    /// The bytes to append to an encoded Envelope to give it `receipt` (protobuf merges a field
    /// appended to a message's encoding; the Envelope is encoded once, whatever its size).
    static func encodedReceipt(_ receipt: FarmReceipt) throws -> Data {
        var carrier = FarmEnvelope()
        carrier.receipt = receipt
        return try carrier.serializedBytes()
    }
}

// The peer side of delivery receipts (the coordinator's cap on bytes queued per peer; DESIGN.md,
// "Bytes queued per peer"). A worker or client keeps the newest receipt it has read and copies it into
// every message it sends (Envelope.ack); one that only listens sends an Acknowledge once it has read a
// quarter of the coordinator's cap since its last message, so a peer that reads is never cut off.

/// What a peer has read from the coordinator and when it owes an Acknowledge. Owned by the one thread
/// that reads and sends on the peer's socket.
public struct FarmReceiptTracker: Sendable {
    /// Used until a receipt says the coordinator's caps (and when one says 0).
    public static let defaultAckEveryBytes: UInt64 = 1 << 20
    public static let defaultAckEveryMessages: UInt64 = 64
    /// Bounds on the byte interval a receipt's cap sets: a hostile cap makes a peer neither ack after
    /// every few bytes nor (below a 1 GiB cap) wait past what the coordinator allows.
    public static let minimumAckEveryBytes: UInt64 = 4 << 10
    public static let maximumAckEveryBytes: UInt64 = 256 << 20

    /// The newest receipt read (nil before the first): what the next message acknowledges.
    public private(set) var latest: FarmReceipt?
    private var bytesSinceAck: UInt64 = 0
    private var messagesSinceAck: UInt64 = 0
    public private(set) var ackEveryBytes = FarmReceiptTracker.defaultAckEveryBytes
    public private(set) var ackEveryMessages = FarmReceiptTracker.defaultAckEveryMessages

    public init() {}

    /// Records a message read from the coordinator (`wireBytes`: its encoded size). True when the
    /// peer should send an Acknowledge now (it has read a quarter of a cap since it last sent).
    public mutating func read(_ envelope: FarmEnvelope, wireBytes: Int) -> Bool {
        guard envelope.hasReceipt else { return false }
        let receipt = envelope.receipt
        // The newest message read is the last one: a connection delivers in order (a new connection
        // or coordinator starts its numbers again, and its receipts are the ones to echo).
        latest = receipt
        if receipt.capBytes > 0 {
            ackEveryBytes = min(max(receipt.capBytes / 4, Self.minimumAckEveryBytes), Self.maximumAckEveryBytes)
        }
        if receipt.capMessages > 0 { ackEveryMessages = max(1, UInt64(receipt.capMessages) / 4) }
        let bytes = UInt64(max(0, wireBytes))
        bytesSinceAck = bytesSinceAck > UInt64.max - bytes ? .max : bytesSinceAck + bytes
        messagesSinceAck += 1
        return bytesSinceAck >= ackEveryBytes || messagesSinceAck >= ackEveryMessages
    }

    /// Puts the ack into a message about to be sent (every message carries it) and starts counting again.
    public mutating func stamp(_ envelope: inout FarmEnvelope) {
        guard let latest else { return }
        var ack = FarmReceipt()
        ack.sequence = latest.sequence
        ack.bytes = latest.bytes
        ack.token = latest.token
        envelope.ack = ack
        bytesSinceAck = 0
        messagesSinceAck = 0
    }

    /// Forgets everything read (a new connection: its receipts start again).
    public mutating func reset() {
        self = FarmReceiptTracker()
    }
}

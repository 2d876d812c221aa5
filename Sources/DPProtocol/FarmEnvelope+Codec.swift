import Foundation
import SwiftProtobuf

/// Why bytes from a peer were refused. Every case says what was expected and what was found, so
/// the log line that names the peer is enough to act on.
public enum FarmProtocolError: Error, Equatable, CustomStringConvertible {
    /// The encoded message is over the size limit.
    case tooLarge(bytes: Int, limit: Int)
    /// The bytes are not an Envelope (truncated, garbage, wrong wire types).
    case malformed(String)
    /// The Envelope's protocol_version is not `FarmProtocol.version` (0 = the field was missing).
    case unsupportedVersion(found: UInt32, supported: UInt32)
    /// A version-1 Envelope without a body (or with a body this build does not know).
    case missingBody

    public var description: String {
        switch self {
        case let .tooLarge(bytes, limit):
            return "message of \(bytes) bytes is over the limit of \(limit) bytes"
        case let .malformed(why):
            return "malformed message: \(why)"
        case let .unsupportedVersion(found, supported):
            let shown = found == 0 ? "none (field missing)" : String(found)
            return "unsupported protocol version \(shown); this peer speaks version \(supported)"
        case .missingBody:
            return "message has no body (or a body unknown to protocol version \(FarmProtocol.version))"
        }
    }

    /// The wire error code to answer the peer with.
    public var code: FarmErrorCode {
        switch self {
        case .tooLarge: return .tooLarge
        case .malformed, .missingBody: return .malformed
        case .unsupportedVersion: return .unsupportedVersion
        }
    }
}

extension FarmEnvelope {
    /// An Envelope of the current protocol version holding `body`.
    public init(_ body: FarmEnvelope.OneOf_Body, requestID: UInt64 = 0) {
        self.init()
        self.protocolVersion = FarmProtocol.version
        self.requestID = requestID
        self.body = body
    }

    /// An Envelope holding an Error reply.
    public static func error(_ code: FarmErrorCode, _ message: String, jobID: UInt64 = 0,
                             attemptID: UInt64 = 0, requestID: UInt64 = 0) -> FarmEnvelope {
        FarmEnvelope(.error(FarmError(code, message, jobID: jobID, attemptID: attemptID)), requestID: requestID)
    }

    /// The wire bytes. Throws `tooLarge` when the result is over `maxBytes`, so a sender finds out
    /// before the receiver drops its connection.
    public func encoded(maxBytes: Int = FarmProtocol.defaultMaxMessageBytes) throws -> Data {
        let data: Data
        do {
            data = try serializedBytes()
        } catch {
            throw FarmProtocolError.malformed("cannot encode \(bodyName): \(error)")
        }
        guard data.count <= maxBytes else { throw FarmProtocolError.tooLarge(bytes: data.count, limit: maxBytes) }
        return data
    }

    /// Decodes a peer's bytes: size limit first, then the Envelope, then its version. Only when the
    /// bytes do not decode is the version read on its own (a `FarmVersionProbe` ignoring every other
    /// field), so a peer of another version gets `unsupportedVersion` rather than a decode error; the
    /// common case decodes once.
    public static func decode(_ data: Data, maxBytes: Int = FarmProtocol.defaultMaxMessageBytes) throws -> FarmEnvelope {
        guard data.count <= maxBytes else { throw FarmProtocolError.tooLarge(bytes: data.count, limit: maxBytes) }
        let envelope: FarmEnvelope
        do {
            envelope = try FarmEnvelope(serializedBytes: data)
        } catch {
            var options = BinaryDecodingOptions()
            options.discardUnknownFields = true
            let probe: FarmVersionProbe
            do {
                probe = try FarmVersionProbe(serializedBytes: data, options: options)
            } catch {
                throw FarmProtocolError.malformed("\(data.count) bytes are not a protobuf message (\(error))")
            }
            guard probe.protocolVersion == FarmProtocol.version else {
                throw FarmProtocolError.unsupportedVersion(found: probe.protocolVersion, supported: FarmProtocol.version)
            }
            throw FarmProtocolError.malformed("\(data.count) bytes are not a dpfarm.v1.Envelope (\(error))")
        }
        guard envelope.protocolVersion == FarmProtocol.version else {
            throw FarmProtocolError.unsupportedVersion(found: envelope.protocolVersion, supported: FarmProtocol.version)
        }
        guard envelope.body != nil else { throw FarmProtocolError.missingBody }
        return envelope
    }

    /// The body's field name for logs ("frame_task", "heartbeat", ...; "none" without a body).
    public var bodyName: String { body?.name ?? "none" }
}

extension FarmEnvelope.OneOf_Body {
    /// The proto field name of this body ("frame_task"), for log lines and error messages.
    public var name: String {
        switch self {
        case .hello: return "hello"
        case .credit: return "credit"
        case .progress: return "progress"
        case .frameResult: return "frame_result"
        case .modelManifestRequest: return "model_manifest_request"
        case .modelChunkRequest: return "model_chunk_request"
        case .goodbye: return "goodbye"
        case .welcome: return "welcome"
        case .jobPrep: return "job_prep"
        case .frameTask: return "frame_task"
        case .cancel: return "cancel"
        case .modelManifest: return "model_manifest"
        case .modelChunk: return "model_chunk"
        case .heartbeat: return "heartbeat"
        case .error: return "error"
        case .acknowledge: return "acknowledge"
        case .submitJob: return "submit_job"
        case .uploadChunk: return "upload_chunk"
        case .followJob: return "follow_job"
        case .statusRequest: return "status_request"
        case .cancelJob: return "cancel_job"
        case .workersRequest: return "workers_request"
        case .submitReply: return "submit_reply"
        case .uploadAck: return "upload_ack"
        case .jobEvent: return "job_event"
        case .jobEvents: return "job_events"
        case .statusReply: return "status_reply"
        case .cancelReply: return "cancel_reply"
        case .workersReply: return "workers_reply"
        }
    }
}

extension FarmError {
    public init(_ code: FarmErrorCode, _ message: String, jobID: UInt64 = 0, attemptID: UInt64 = 0) {
        self.init()
        self.code = code
        self.message = message
        self.jobID = jobID
        self.attemptID = attemptID
    }

    public init(_ error: FarmProtocolError) {
        self.init(error.code, error.description)
    }
}

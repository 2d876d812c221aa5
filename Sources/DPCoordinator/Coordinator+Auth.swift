// Per-message identity and role checks (Auth.swift has the keys and the ZAP handler).
import DPJournal
import DPLog
import DPProtocol
import Foundation

extension Coordinator {
    /// The sender of a message from its connection's ZAP user id ("<roles>:<key>"), with the key's
    /// roles as they are NOW (a key removed by a reload has none). nil: the message is dropped
    /// (logged, and answered when the peer can be named).
    func identify(_ peer: Data, userID: String?) -> PeerIdentity? {
        guard let authorizedKeys else { return .insecure }
        guard let userID, let colon = userID.firstIndex(of: ":") else {
            // Cannot happen with the ZAP handler bound: every CURVE connection got a user id.
            log.warning("dropped a message from \(peerName(peer)): its connection has no authenticated key")
            return nil
        }
        let key = String(userID[userID.index(after: colon)...])
        let roles = authorizedKeys.roles(of: key)
        guard !roles.isEmpty else {
            log.warning("refused a message from \(peerName(peer)), key \(key): the key is no longer authorized")
            if !peer.isEmpty {
                send(peer, .error(FarmError(.badRequest, "this key (\(key)) is not authorized on this coordinator")))
            }
            return nil
        }
        return PeerIdentity(key: key, roles: roles)
    }

    /// The role a message needs: worker traffic or client requests (nil: neither, answered by `route`).
    static func requiredRole(_ body: FarmEnvelope.OneOf_Body) -> PeerRoles? {
        switch body {
        case .hello, .credit, .progress, .frameResult, .goodbye, .heartbeat, .modelManifestRequest, .modelChunkRequest:
            return .worker
        case .submitJob, .uploadChunk, .followJob, .statusRequest, .cancelJob:
            return .client
        case .workersRequest:
            // Read-only (names, hosts, counts): clients, and workers for `dp-worker health` probes.
            return [.client, .worker]
        default:
            return nil
        }
    }

    /// Whether the sender's key may send `body`; a refused message is answered with an Error and
    /// logged, and nothing else happens.
    func senderMaySend(_ body: FarmEnvelope.OneOf_Body, peer: Data, requestID: UInt64) -> Bool {
        guard let role = Self.requiredRole(body), sender.roles.isDisjoint(with: role) else { return true }
        let what = role == .worker ? "a worker message" : "a client request"
        log.warning("refused \(body.name) from \(peerName(peer)), \(sender.label): \(what), and this key is not authorized "
            + "as a \(role == .worker ? "worker" : "client")")
        send(peer, .error(FarmError(.badRequest, "\(body.name) is \(what); this key (\(sender.key ?? "")) is not "
            + "authorized as a \(role == .worker ? "worker" : "client") on this coordinator")), requestID: requestID)
        return false
    }

    /// Whether the sender may see, follow, cancel or upload to `record`: its own job, or an admin key.
    func senderMayAccess(_ record: JobRecord) -> Bool {
        if sender.roles.contains(.admin) { return true }
        guard let owner = record.ownerKey, let key = sender.key else { return false }
        return owner == key
    }

    /// The job `jobID` if the sender may access it; otherwise answers UNKNOWN_JOB (another client's
    /// job looks like no job at all), logs why, and returns nil.
    func accessibleJob(_ peer: Data, _ requestID: UInt64, _ jobID: UInt64, for what: String) throws -> JobRecord? {
        guard let record = try journal.job(Int64(truncatingIfNeeded: jobID), includingSpec: false) else {
            badRequest(peer, requestID, .unknownJob, "no job \(jobID)", job: jobID)
            return nil
        }
        guard senderMayAccess(record) else {
            log.warning("refused \(what) of job \(jobID) from \(peerName(peer)), \(sender.label): the job belongs to another client",
                job: Int64(exactly: jobID))
            send(peer, .error(FarmError(.unknownJob, "no job \(jobID)", jobID: jobID)), requestID: requestID)
            return nil
        }
        return record
    }

    /// Why a Hello for worker `name` from the sender's key is refused (nil: accepted). A name is
    /// owned by the key it last registered with: another key may take it only while that one has
    /// no live session and no attempts in flight, and then adopts nothing.
    func workerNameProblem(_ name: String) throws -> String? {
        guard let key = sender.key else { return nil }
        if let live = sessionByName[name].flatMap({ sessions[$0] }), live.key != key {
            return "worker name '\(name)' is in use by another key's live session; choose another --name"
        }
        if let owner = try journal.workerKey(name), owner != key, try journal.hasRunningAttempts(worker: name) {
            return "worker name '\(name)' belongs to another key that still has attempts in flight; choose another --name"
        }
        return nil
    }
}

// The long phases of a job that are not frames (issue 14, "no silent minutes"): the client's upload
// (`FarmClient.submit`'s progress callback) and each worker's model fetch, verification and job
// preparation (Heartbeat.phase, relayed to followers as JobEvent.worker_phase). Bytes, rate and ETA.
import DPProtocol
import Foundation

/// How far `FarmClient.submit` got uploading the files the coordinator lacks.
public struct UploadProgress: Sendable, Equatable, Codable {
    /// Files fully sent (and acknowledged) / files to send.
    public var filesDone: Int
    public var files: Int
    public var bytesSent: UInt64
    public var bytesTotal: UInt64
    /// Seconds since the upload started.
    public var seconds: Double

    public init(filesDone: Int, files: Int, bytesSent: UInt64, bytesTotal: UInt64, seconds: Double) {
        self.filesDone = filesDone
        self.files = files
        self.bytesSent = bytesSent
        self.bytesTotal = bytesTotal
        self.seconds = seconds
    }

    public var finished: Bool { filesDone >= files && bytesSent >= bytesTotal }
    /// Bytes per second so far (nil before any time passed).
    public var bytesPerSecond: Double? { PhaseRate.rate(bytesSent, seconds) }
    /// Seconds left at that rate (nil without a rate).
    public var etaSeconds: Double? { PhaseRate.eta(bytesSent, bytesTotal, seconds) }

    /// "upload 3/9 files, 1.2 GB/3.9 GB at 64.0 MB/s, ETA 42s"
    public var summary: String {
        "upload \(filesDone)/\(files) files, " + PhaseRate.bytesText(bytesSent, bytesTotal, seconds)
    }

    /// The `--json` event (`"event": "upload"`).
    public var jsonFields: [String: Any] {
        var o: [String: Any] = ["event": "upload", "files_done": filesDone, "files": files, "bytes": bytesSent,
                                "total_bytes": bytesTotal, "seconds": seconds]
        if let r = bytesPerSecond { o["bytes_per_second"] = r }
        if let e = etaSeconds { o["eta_seconds"] = e }
        return o
    }
}

/// A worker's long phase as a client sees it (`dp-coord workers`, `status`, and followed jobs).
public struct WorkerPhaseInfo: Sendable, Equatable, Codable {
    /// "fetching_model", "verifying_model", "preparing_job", or "none" (the phase ended).
    public var phase: String
    public var worker: String
    public var modelID: String
    /// The job it is for (0 = none).
    public var job: Int64
    public var bytesDone: UInt64
    public var bytesTotal: UInt64
    public var seconds: Double

    public init(phase: String, worker: String, modelID: String = "", job: Int64 = 0, bytesDone: UInt64 = 0,
                bytesTotal: UInt64 = 0, seconds: Double = 0) {
        self.phase = phase
        self.worker = worker
        self.modelID = modelID
        self.job = job
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
        self.seconds = seconds
    }

    public init(_ p: FarmWorkerPhase) {
        self.init(phase: Self.name(p.kind), worker: p.workerName, modelID: p.modelID,
                  job: Int64(truncatingIfNeeded: p.jobID), bytesDone: p.bytesDone, bytesTotal: p.bytesTotal,
                  seconds: p.seconds.isFinite ? p.seconds : 0)
    }

    static func name(_ kind: FarmWorkerPhaseKind) -> String {
        switch kind {
        case .fetchingModel: return "fetching_model"
        case .verifyingModel: return "verifying_model"
        case .preparingJob: return "preparing_job"
        default: return "none"
        }
    }

    public var ended: Bool { phase == "none" }
    public var bytesPerSecond: Double? { bytesTotal > 0 ? PhaseRate.rate(bytesDone, seconds) : nil }
    public var etaSeconds: Double? { bytesTotal > 0 ? PhaseRate.eta(bytesDone, bytesTotal, seconds) : nil }

    /// "fetching model 1a2b3c4d5e6f: 1.2 GB/3.9 GB at 120.0 MB/s, ETA 22s" (without the worker's name).
    public var summary: String {
        let model = modelID.isEmpty ? "" : " " + String(modelID.prefix(12))
        switch phase {
        case "fetching_model": return "fetching model\(model): " + PhaseRate.bytesText(bytesDone, bytesTotal, seconds)
        case "verifying_model":
            return "verifying model\(model) (\(PhaseRate.bytes(bytesTotal)), \(PhaseRate.duration(seconds)))"
        case "preparing_job": return "preparing job \(job)\(model.isEmpty ? "" : " (model\(model))") (\(PhaseRate.duration(seconds)))"
        default: return "done"
        }
    }

    /// The `--json` event (`"event": "worker_phase"`).
    public var jsonFields: [String: Any] {
        var o: [String: Any] = ["event": "worker_phase", "phase": phase, "worker": worker, "model_id": modelID,
                                "job": job, "bytes": bytesDone, "total_bytes": bytesTotal, "seconds": seconds]
        if let r = bytesPerSecond { o["bytes_per_second"] = r }
        if let e = etaSeconds { o["eta_seconds"] = e }
        return o
    }
}

/// Rate, ETA and their text, shared by the phases.
public enum PhaseRate {
    /// nil unless finite (a coordinator's phase with a tiny time must not put inf in a JSON line).
    public static func rate(_ done: UInt64, _ seconds: Double) -> Double? {
        guard seconds.isFinite, seconds > 0 else { return nil }
        let r = Double(done) / seconds
        return r.isFinite ? r : nil
    }

    public static func eta(_ done: UInt64, _ total: UInt64, _ seconds: Double) -> Double? {
        if done >= total { return 0 }
        guard let r = rate(done, seconds), r > 0 else { return nil }
        let e = Double(total - done) / r
        return e.isFinite ? e : nil
    }

    /// "1.2 GB/3.9 GB at 64.0 MB/s, ETA 42s"
    public static func bytesText(_ done: UInt64, _ total: UInt64, _ seconds: Double) -> String {
        var s = "\(bytes(done))/\(bytes(total))"
        if done > 0, let r = rate(done, seconds) { s += " at \(bytes(UInt64(min(r, 1e18))))/s" }
        if done < total { s += ", ETA " + (eta(done, total, seconds).map(duration) ?? "?") }
        return s
    }

    public static func bytes(_ n: UInt64) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var v = Double(n)
        var i = 0
        while v >= 1000, i < units.count - 1 { v /= 1000; i += 1 }
        return i == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[i])
    }

    public static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0, seconds < 1e9 else { return "?" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", (s % 3600) / 60))m"
            : s >= 60 ? "\(s / 60)m\(String(format: "%02d", s % 60))s" : "\(s)s"
    }
}

import Foundation

/// Workers (by name) and models (by id).
extension Journal {
    /// A worker said Hello: create or refresh its row; `key` is the public key it authenticated
    /// with (nil: insecure mode), which then owns the name (`workerKey`).
    public func recordWorker(name: String, host: String, slots: Int, threads: Int, key: String? = nil) throws {
        try write {
            let t = now
            try db.run("""
                INSERT INTO workers (name, host, slots, threads, first_seen_ms, last_seen_ms, key) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)
                ON CONFLICT (name) DO UPDATE SET host = ?2, slots = ?3, threads = ?4, last_seen_ms = ?5, key = ?6
                """, [.text(name), .text(host), .int(slots), .int(threads), .integer(t), .optionalText(key)])
        }
    }

    /// The public key worker `name` last registered with (nil: unknown name, or registered without a key).
    public func workerKey(_ name: String) throws -> String? {
        try locked {
            try db.query("SELECT key FROM workers WHERE name = ?", [.text(name)]).first?.string("key")
        }
    }

    /// Whether `worker` holds running attempts in the journal.
    public func hasRunningAttempts(worker: String) throws -> Bool {
        try locked {
            try !db.query("SELECT 1 AS x FROM attempts WHERE state = 'running' AND worker = ? LIMIT 1",
                          [.text(worker)]).isEmpty
        }
    }

    /// Any message from the worker: bump last seen.
    public func touchWorker(_ name: String) throws {
        try write { _ = try db.run("UPDATE workers SET last_seen_ms = ? WHERE name = ?", [.integer(now), .text(name)]) }
    }

    public func workers() throws -> [WorkerRecord] {
        try locked {
            try db.query("SELECT * FROM workers ORDER BY name").map {
                WorkerRecord(name: $0.string("name") ?? "", host: $0.string("host") ?? "", slots: $0.int("slots") ?? 0,
                             threads: $0.int("threads") ?? 0, framesDone: $0.int("frames_done") ?? 0,
                             framesFailed: $0.int("frames_failed") ?? 0, firstSeenMs: $0.int64("first_seen_ms") ?? 0,
                             lastSeenMs: $0.int64("last_seen_ms") ?? 0, key: $0.string("key"))
            }
        }
    }

    /// Frames of `job` that failed on `worker`, and whether the worker is banned from the job.
    public func workerJobFailures(worker: String, job: Int64) throws -> (failures: Int, banned: Bool) {
        try locked {
            let row = try db.query("SELECT failures, banned FROM worker_job_failures WHERE worker = ? AND job_id = ?",
                                   [.text(worker), .integer(job)]).first
            return (row?.int("failures") ?? 0, (row?.int("banned") ?? 0) != 0)
        }
    }

    /// Jobs `worker` gets no more frames of.
    public func bannedJobs(worker: String) throws -> [Int64] {
        try locked {
            try db.query("SELECT job_id FROM worker_job_failures WHERE worker = ? AND banned = 1 ORDER BY job_id",
                         [.text(worker)]).compactMap { $0.int64("job_id") }
        }
    }

    // MARK: models

    /// Stores (or replaces) a model the coordinator holds in `directory`.
    public func putModel(id: String, directory: String, files: [ModelFileRecord]) throws {
        let sorted = files.sorted { Array($0.path.utf8).lexicographicallyPrecedes(Array($1.path.utf8)) }
        let json = try JSONEncoder().encode(sorted)
        let total = sorted.reduce(Int64(0)) { $0 + $1.size }
        try write {
            let t = now
            try db.run("""
                INSERT INTO models (id, directory, files, total_bytes, added_at_ms, last_used_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                ON CONFLICT (id) DO UPDATE SET directory = ?2, files = ?3, total_bytes = ?4, last_used_ms = ?5
                """, [.text(id), .text(directory), .text(String(decoding: json, as: UTF8.self)), .integer(total), .integer(t)])
        }
    }

    public func model(_ id: String) throws -> ModelRecord? {
        try locked { try db.query("SELECT * FROM models WHERE id = ?", [.text(id)]).first.map(Journal.modelRecord) }
    }

    public func models() throws -> [ModelRecord] {
        try locked { try db.query("SELECT * FROM models ORDER BY id").map(Journal.modelRecord) }
    }

    public func touchModel(_ id: String) throws {
        try write { _ = try db.run("UPDATE models SET last_used_ms = ? WHERE id = ?", [.integer(now), .text(id)]) }
    }

    static func modelRecord(_ r: SQLiteRow) -> ModelRecord {
        let files = (r.data("files")).flatMap { try? JSONDecoder().decode([ModelFileRecord].self, from: $0) } ?? []
        return ModelRecord(id: r.string("id") ?? "", directory: r.string("directory") ?? "", files: files,
                           totalBytes: r.int64("total_bytes") ?? 0, addedAtMs: r.int64("added_at_ms") ?? 0,
                           lastUsedMs: r.int64("last_used_ms") ?? 0)
    }
}

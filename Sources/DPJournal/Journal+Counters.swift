/// The job and worker counters of accepted results (`jobs.frames_done`, `workers.frames_done`),
/// counted in memory and written once per job and per worker when the transaction ends.
///
/// A coordinator turn accepts tens of results in one `batch`; writing each job's and worker's row
/// (and reading the job's row back to see whether it is finished) once per result was three of
/// the five statements of `completeAttempt`. Nothing can observe the difference: every other journal
/// call writes the deferred counters before it runs (`Journal.locked`), the outermost transaction
/// writes them before its commit, and a rollback drops them together with the rows it undoes.
/// When a result completes its job the counters are written at once and the job is settled as
/// before.
struct DeferredCounters {
    /// A job's counters as read at its first deferred result, plus the results counted since.
    struct Job {
        var counters: JobCounters
        /// Results counted in memory and not written yet (at least 1: an entry exists only once counted).
        var unwritten: Int
        var updatedAtMs: Int64
    }

    var jobs: [Int64: Job] = [:]
    var workers: [String: Int] = [:]

    var isEmpty: Bool { jobs.isEmpty && workers.isEmpty }
}

/// A job's state and frame counters (the `jobs` row's).
struct JobCounters {
    var state: JobState
    var total: Int
    var done: Int
    var failed: Int

    /// Frames neither done nor failed.
    var pending: Int { total - done - failed }
}

extension Journal {
    /// Counts an accepted result of `jobID` by `worker` (inside a transaction, lock held) and returns
    /// the job's counters including it.
    func deferFrameDone(job jobID: Int64, worker: String, at t: Int64) throws -> JobCounters {
        var job = try deferred.jobs[jobID] ?? DeferredCounters.Job(counters: jobCounters(jobID), unwritten: 0, updatedAtMs: t)
        job.counters.done += 1
        job.unwritten += 1
        job.updatedAtMs = t
        deferred.jobs[jobID] = job
        deferred.workers[worker, default: 0] += 1
        return job.counters
    }

    /// Writes the deferred counters (inside a transaction, lock held), forgetting each once written:
    /// if a write fails, what it did not write stays deferred.
    func writeDeferredCounters() throws {
        for (id, job) in deferred.jobs.sorted(by: { $0.key < $1.key }) {
            try db.run("UPDATE jobs SET frames_done = frames_done + ?, updated_at_ms = ? WHERE id = ?",
                       [.int(job.unwritten), .integer(job.updatedAtMs), .integer(id)])
            deferred.jobs[id] = nil
        }
        for (worker, count) in deferred.workers.sorted(by: { $0.key < $1.key }) {
            try db.run("UPDATE workers SET frames_done = frames_done + ? WHERE name = ?", [.int(count), .text(worker)])
            deferred.workers[worker] = nil
        }
    }
}

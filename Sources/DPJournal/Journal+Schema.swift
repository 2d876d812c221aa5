/// A numbered schema change. Migrations run at start-up in version order, each in its own
/// transaction together with its row in `schema_migrations`; applied ones are never edited,
/// a change is always a new migration appended here.
public struct Migration: Sendable {
    public let version: Int
    public let name: String
    public let sql: String
    /// The migration replaces tables (create new, copy, drop old, rename): it runs with foreign-key
    /// enforcement off, as SQLite's documented procedure for table changes requires (a DROP TABLE
    /// would otherwise cascade into the tables that refer to it), and commits only if
    /// `PRAGMA foreign_key_check` finds nothing.
    public let rebuildsTables: Bool

    public init(version: Int, name: String, sql: String, rebuildsTables: Bool = false) {
        self.version = version
        self.name = name
        self.sql = sql
        self.rebuildsTables = rebuildsTables
    }
}

extension Journal {
    public static let migrations: [Migration] = [
        Migration(version: 1, name: "jobs, frames, attempts, workers, models", sql: """
            CREATE TABLE jobs (
                id              INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused
                name            TEXT    NOT NULL DEFAULT '',
                spec            BLOB    NOT NULL,                   -- the coordinator's encoded job spec (opaque here)
                model_id        TEXT    NOT NULL,
                priority        INTEGER NOT NULL DEFAULT 0,         -- higher first
                order_mode      TEXT    NOT NULL CHECK (order_mode IN ('frame', 'preview')),
                state           TEXT    NOT NULL CHECK (state IN ('uploading', 'queued', 'running', 'completed', 'failed', 'cancelled')),
                output_dir      TEXT    NOT NULL,
                video_path      TEXT,
                video_fps       INTEGER NOT NULL DEFAULT 30,
                video_written   INTEGER NOT NULL DEFAULT 0,
                frames_total    INTEGER NOT NULL,
                frames_done     INTEGER NOT NULL DEFAULT 0,
                frames_failed   INTEGER NOT NULL DEFAULT 0,
                error           TEXT,
                created_at_ms   INTEGER NOT NULL,
                updated_at_ms   INTEGER NOT NULL,
                finished_at_ms  INTEGER
            );
            CREATE INDEX jobs_dispatch ON jobs(priority DESC, id) WHERE state IN ('queued', 'running');

            CREATE TABLE frames (
                job_id              INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                frame               INTEGER NOT NULL,               -- pose frame number
                dispatch_rank       INTEGER NOT NULL,               -- position in the job's dispatch order
                state               TEXT    NOT NULL CHECK (state IN ('queued', 'dispatched', 'done', 'failed', 'cancelled')),
                current_attempt_id  INTEGER,                        -- set iff state = 'dispatched'
                failures            INTEGER NOT NULL DEFAULT 0,     -- distinct workers it failed on
                output_sha256       TEXT,
                output_size         INTEGER,
                render_seconds      REAL,
                worker              TEXT,                           -- who rendered the accepted result
                done_attempt_id     INTEGER,
                updated_at_ms       INTEGER NOT NULL,
                PRIMARY KEY (job_id, frame)
            ) WITHOUT ROWID;
            CREATE INDEX frames_queued ON frames(job_id, dispatch_rank) WHERE state = 'queued';

            CREATE TABLE attempts (
                id              INTEGER PRIMARY KEY AUTOINCREMENT,  -- the fencing token; never reused
                job_id          INTEGER NOT NULL,
                frame           INTEGER NOT NULL,
                worker          TEXT    NOT NULL,
                state           TEXT    NOT NULL CHECK (state IN ('running', 'finished')),
                result          TEXT    CHECK (result IN ('ok', 'failed', 'stale', 'lost', 'cancelled')),
                started_at_ms   INTEGER NOT NULL,
                finished_at_ms  INTEGER,
                render_seconds  REAL,
                error           TEXT,
                FOREIGN KEY (job_id, frame) REFERENCES frames(job_id, frame) ON DELETE CASCADE,
                CHECK ((state = 'running') = (result IS NULL))
            );
            CREATE INDEX attempts_frame ON attempts(job_id, frame);
            CREATE INDEX attempts_running ON attempts(id) WHERE state = 'running';

            CREATE TABLE workers (
                name            TEXT    PRIMARY KEY,
                host            TEXT    NOT NULL DEFAULT '',
                slots           INTEGER NOT NULL DEFAULT 0,
                threads         INTEGER NOT NULL DEFAULT 0,
                frames_done     INTEGER NOT NULL DEFAULT 0,
                frames_failed   INTEGER NOT NULL DEFAULT 0,
                first_seen_ms   INTEGER NOT NULL,
                last_seen_ms    INTEGER NOT NULL
            );

            CREATE TABLE worker_job_failures (
                worker          TEXT    NOT NULL,
                job_id          INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                failures        INTEGER NOT NULL DEFAULT 0,
                banned          INTEGER NOT NULL DEFAULT 0,         -- 1: this job goes to this worker no more
                PRIMARY KEY (worker, job_id)
            ) WITHOUT ROWID;

            CREATE TABLE models (
                id              TEXT    PRIMARY KEY,                -- SHA-256 identity (docs/model-format.md)
                directory       TEXT    NOT NULL,
                files           TEXT    NOT NULL,                   -- JSON [{"path","size","sha256"}], sorted by path
                total_bytes     INTEGER NOT NULL,
                added_at_ms     INTEGER NOT NULL,
                last_used_ms    INTEGER NOT NULL
            );
            """),
        // A job's spec (all its pose file entries: ~100 bytes a frame) lived in its jobs row, so every
        // counter update on a result rewrote it and every read of a column after it walked its
        // overflow pages: O(frames) per event. The hot row is small now.
        Migration(version: 2, name: "job specs in their own table", sql: """
            CREATE TABLE job_specs (
                job_id          INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
                spec            BLOB    NOT NULL                    -- the coordinator's encoded job spec (opaque here)
            );
            INSERT INTO job_specs (job_id, spec) SELECT id, spec FROM jobs;
            ALTER TABLE jobs DROP COLUMN spec;
            """),
        // A finished job's last manifest.json rewrite (and its video) run off the coordinator's loop
        // thread after the commit that finished it; this marks them done, so a restart redoes what a
        // crash cut short. Jobs finished before this migration had theirs written in that commit.
        Migration(version: 3, name: "job outputs final", sql: """
            ALTER TABLE jobs ADD COLUMN outputs_final INTEGER NOT NULL DEFAULT 0;
            UPDATE jobs SET outputs_final = 1 WHERE state IN ('completed', 'failed', 'cancelled');
            """),
        // SQLite checks `x IN ('a', 'b', 'c', ...)` (three values or more) by building a temporary
        // b-tree of the list, on every INSERT or UPDATE that sets x: of the four per-frame writes
        // (attempt insert and finish, frame dispatched and done) that was more than half the cost.
        // The same checks as comparisons. Same columns, rows, indexes and attempt id sequence.
        Migration(version: 4, name: "state checks as comparisons", sql: """
            CREATE TABLE new_frames (
                job_id              INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                frame               INTEGER NOT NULL,
                dispatch_rank       INTEGER NOT NULL,
                state               TEXT    NOT NULL CHECK (state = 'queued' OR state = 'dispatched' OR state = 'done'
                                                            OR state = 'failed' OR state = 'cancelled'),
                current_attempt_id  INTEGER,
                failures            INTEGER NOT NULL DEFAULT 0,
                output_sha256       TEXT,
                output_size         INTEGER,
                render_seconds      REAL,
                worker              TEXT,
                done_attempt_id     INTEGER,
                updated_at_ms       INTEGER NOT NULL,
                PRIMARY KEY (job_id, frame)
            ) WITHOUT ROWID;
            INSERT INTO new_frames (job_id, frame, dispatch_rank, state, current_attempt_id, failures, output_sha256,
                                    output_size, render_seconds, worker, done_attempt_id, updated_at_ms)
                SELECT job_id, frame, dispatch_rank, state, current_attempt_id, failures, output_sha256,
                       output_size, render_seconds, worker, done_attempt_id, updated_at_ms FROM frames;
            DROP TABLE frames;
            ALTER TABLE new_frames RENAME TO frames;
            CREATE INDEX frames_queued ON frames(job_id, dispatch_rank) WHERE state = 'queued';

            CREATE TABLE new_attempts (
                id              INTEGER PRIMARY KEY AUTOINCREMENT,
                job_id          INTEGER NOT NULL,
                frame           INTEGER NOT NULL,
                worker          TEXT    NOT NULL,
                state           TEXT    NOT NULL CHECK (state = 'running' OR state = 'finished'),
                result          TEXT    CHECK (result = 'ok' OR result = 'failed' OR result = 'stale' OR result = 'lost'
                                               OR result = 'cancelled'),
                started_at_ms   INTEGER NOT NULL,
                finished_at_ms  INTEGER,
                render_seconds  REAL,
                error           TEXT,
                FOREIGN KEY (job_id, frame) REFERENCES frames(job_id, frame) ON DELETE CASCADE,
                CHECK ((state = 'running') = (result IS NULL))
            );
            INSERT INTO new_attempts (id, job_id, frame, worker, state, result, started_at_ms, finished_at_ms,
                                      render_seconds, error)
                SELECT id, job_id, frame, worker, state, result, started_at_ms, finished_at_ms, render_seconds, error
                FROM attempts;
            -- Attempt ids are fencing tokens, never reused: the new table goes on from the old
            -- sequence, which can be past the largest id left (attempts of deleted jobs).
            DELETE FROM sqlite_sequence WHERE name = 'new_attempts';
            INSERT INTO sqlite_sequence (name, seq)
                SELECT 'new_attempts', last FROM (SELECT MAX(n) AS last FROM (
                    SELECT seq AS n FROM sqlite_sequence WHERE name = 'attempts' UNION ALL SELECT MAX(id) FROM attempts))
                WHERE last IS NOT NULL;
            DROP TABLE attempts;
            ALTER TABLE new_attempts RENAME TO attempts;
            CREATE INDEX attempts_frame ON attempts(job_id, frame);
            CREATE INDEX attempts_running ON attempts(id) WHERE state = 'running';
            """, rebuildsTables: true),
        // CurveZMQ authentication: a job belongs to the client key that submitted it (others see it
        // only with an admin key), a worker name to the key it last registered with (another key
        // cannot take over its attempts). NULL: recorded without authentication (older journals,
        // --insecure-no-auth); such jobs are visible to admin keys only.
        Migration(version: 5, name: "owner keys", sql: """
            ALTER TABLE jobs ADD COLUMN owner_key TEXT;
            ALTER TABLE workers ADD COLUMN key TEXT;
            """),
    ]

    /// Applies the migrations `db` lacks, in order, each in a transaction. Refuses a database
    /// written by a newer build, or one whose applied migrations have other names.
    /// Returns the versions applied now.
    @discardableResult
    public static func migrate(_ db: SQLiteDatabase, migrations: [Migration] = Journal.migrations,
                               clock: JournalClock) throws -> [Int] {
        try db.execute("""
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version       INTEGER PRIMARY KEY,
                name          TEXT    NOT NULL,
                applied_at_ms INTEGER NOT NULL
            )
            """)
        let sorted = migrations.sorted { $0.version < $1.version }
        let known = Dictionary(uniqueKeysWithValues: sorted.map { ($0.version, $0) })
        var applied: [Int: String] = [:]
        for row in try db.query("SELECT version, name FROM schema_migrations") {
            applied[row.int("version") ?? -1] = row.string("name") ?? ""
        }
        let newestKnown = sorted.last?.version ?? 0
        for (version, name) in applied {
            guard let migration = known[version] else {
                throw JournalError.schemaMismatch(path: db.path,
                    "the journal has migration \(version) ('\(name)') but this build knows migrations up to \(newestKnown)")
            }
            guard migration.name == name else {
                throw JournalError.schemaMismatch(path: db.path,
                    "migration \(version) is '\(name)' in the journal but '\(migration.name)' in this build")
            }
        }
        var now: [Int] = []
        for migration in sorted where applied[migration.version] == nil {
            // PRAGMA foreign_keys is a no-op inside a transaction: set around it.
            if migration.rebuildsTables { try db.execute("PRAGMA foreign_keys=OFF") }
            defer { if migration.rebuildsTables { try? db.execute("PRAGMA foreign_keys=ON") } }
            try db.transaction {
                try db.execute(migration.sql)
                if migration.rebuildsTables, let bad = try db.query("PRAGMA foreign_key_check").first {
                    throw JournalError.schemaMismatch(path: db.path,
                        "migration \(migration.version) ('\(migration.name)') would leave a row of table "
                        + "'\(bad.string("table") ?? "?")' without its '\(bad.string("parent") ?? "?")' row; not applied")
                }
                try db.run("INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?, ?, ?)",
                           [.int(migration.version), .text(migration.name), .integer(clock.nowMilliseconds())])
            }
            now.append(migration.version)
        }
        return now
    }
}

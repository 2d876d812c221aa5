import CSQLite3
import Foundation

/// A failed SQLite call: result code, SQLite's message and the SQL (or file) it was about.
public struct SQLiteError: Error, CustomStringConvertible {
    public let code: Int32
    public let message: String
    public let context: String

    public var description: String { "SQLite error \(code) (\(message)) in \(context)" }

    /// SQLITE_CONSTRAINT and its extended codes.
    public var isConstraint: Bool { code & 0xff == SQLITE_CONSTRAINT }
}

/// A value bound to or read from a statement.
public enum SQLiteValue: Equatable, Sendable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob(Data)
}

extension SQLiteValue: ExpressibleByIntegerLiteral, ExpressibleByStringLiteral, ExpressibleByNilLiteral,
    ExpressibleByFloatLiteral {
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(stringLiteral value: String) { self = .text(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(floatLiteral value: Double) { self = .real(value) }

    public static func int(_ v: Int) -> SQLiteValue { .integer(Int64(v)) }
    public static func optionalText(_ v: String?) -> SQLiteValue { v.map { .text($0) } ?? .null }
    public static func optionalInt(_ v: Int64?) -> SQLiteValue { v.map { .integer($0) } ?? .null }
    public static func optionalReal(_ v: Double?) -> SQLiteValue { v.map { .real($0) } ?? .null }
    public static func bool(_ v: Bool) -> SQLiteValue { .integer(v ? 1 : 0) }
}

/// SQLite's "copy this buffer now" destructor (the SQLITE_TRANSIENT macro is not importable).
private let sqliteTransient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// One row of a query result; columns by index or name.
public struct SQLiteRow {
    public let columns: [String]
    public let values: [SQLiteValue]

    public subscript(_ name: String) -> SQLiteValue {
        guard let i = columns.firstIndex(of: name) else { return .null }
        return values[i]
    }

    public func int64(_ name: String) -> Int64? {
        switch self[name] {
        case .integer(let v): return v
        case .real(let v): return Int64(v)
        default: return nil
        }
    }
    public func int(_ name: String) -> Int? { int64(name).map { Int($0) } }
    public func double(_ name: String) -> Double? {
        switch self[name] {
        case .real(let v): return v
        case .integer(let v): return Double(v)
        default: return nil
        }
    }
    public func string(_ name: String) -> String? {
        if case .text(let s) = self[name] { return s }
        return nil
    }
    public func data(_ name: String) -> Data? {
        switch self[name] {
        case .blob(let d): return d
        case .text(let s): return Data(s.utf8)
        default: return nil
        }
    }
}

/// A prepared statement. Reused (reset + rebind) by `SQLiteDatabase`'s statement cache.
public final class SQLiteStatement {
    let handle: OpaquePointer
    public let sql: String
    unowned let database: SQLiteDatabase

    init(database: SQLiteDatabase, sql: String) throws {
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v2(database.handle, sql, -1, &stmt, nil)
        guard rc == SQLITE_OK, let s = stmt else {
            throw database.error(rc, "prepare: \(sql)")
        }
        self.handle = s
        self.sql = sql
        self.database = database
    }

    deinit { sqlite3_finalize(handle) }

    /// Resets the statement and binds `values` to parameters 1...n (typed binds).
    public func bind(_ values: [SQLiteValue]) throws {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
        let expected = Int(sqlite3_bind_parameter_count(handle))
        guard expected == values.count else {
            throw SQLiteError(code: SQLITE_RANGE, message: "expected \(expected) bound values, got \(values.count)", context: sql)
        }
        for (i, value) in values.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch value {
            case .null: rc = sqlite3_bind_null(handle, index)
            case .integer(let v): rc = sqlite3_bind_int64(handle, index, v)
            case .real(let v): rc = sqlite3_bind_double(handle, index, v)
            case .text(let s): rc = sqlite3_bind_text(handle, index, s, -1, sqliteTransient)
            case .blob(let d):
                rc = d.withUnsafeBytes { buf in
                    sqlite3_bind_blob64(handle, index, buf.baseAddress ?? UnsafeRawPointer(bitPattern: 1), sqlite3_uint64(buf.count), sqliteTransient)
                }
            }
            if rc != SQLITE_OK { throw database.error(rc, "bind parameter \(index) of: \(sql)") }
        }
    }

    /// Runs the statement to completion (for INSERT/UPDATE/DELETE).
    public func run() throws {
        while try step() {}
    }

    /// Advances one row: true while a row is available.
    public func step() throws -> Bool {
        let rc = sqlite3_step(handle)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: sqlite3_reset(handle); return false
        default:
            let error = database.error(rc, sql)
            sqlite3_reset(handle)
            throw error
        }
    }

    /// Column names of the last row read (one array shared by every row of this statement; read
    /// again when the column count changes, as after a schema change re-prepares the statement).
    private var columnNames: [String] = []

    /// The current row's values (after `step()` returned true).
    public func row() -> SQLiteRow {
        let n = sqlite3_column_count(handle)
        if columnNames.count != Int(n) {
            columnNames = (0 ..< n).map { String(cString: sqlite3_column_name(handle, $0)) }
        }
        var values: [SQLiteValue] = []
        values.reserveCapacity(Int(n))
        for i in 0..<n {
            switch sqlite3_column_type(handle, i) {
            case SQLITE_INTEGER: values.append(.integer(sqlite3_column_int64(handle, i)))
            case SQLITE_FLOAT: values.append(.real(sqlite3_column_double(handle, i)))
            case SQLITE_TEXT: values.append(.text(String(cString: sqlite3_column_text(handle, i))))
            case SQLITE_BLOB:
                let count = Int(sqlite3_column_bytes(handle, i))
                if count == 0 { values.append(.blob(Data())) } else {
                    values.append(.blob(Data(bytes: sqlite3_column_blob(handle, i), count: count)))
                }
            default: values.append(.null)
            }
        }
        return SQLiteRow(columns: columnNames, values: values)
    }

    /// All remaining rows.
    public func rows() throws -> [SQLiteRow] {
        var out: [SQLiteRow] = []
        while try step() { out.append(row()) }
        return out
    }
}

/// A connection to one SQLite file, opened with WAL, foreign_keys ON and a busy timeout.
///
/// Not thread-safe: use it from one thread at a time (`Journal` serialises its calls with a lock).
public final class SQLiteDatabase {
    let handle: OpaquePointer
    public let path: String
    private var cache: [String: SQLiteStatement] = [:]
    private var transactionDepth = 0

    /// Opens (creating if needed) `path`. `synchronous` NORMAL in WAL mode keeps every committed
    /// transaction across a process crash (kill -9); only an OS crash can lose the last ones.
    public init(path: String, busyTimeoutMilliseconds: Int32 = 5000, synchronousFull: Bool = false) throws {
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let h = db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            if let d = db { sqlite3_close_v2(d) }
            throw SQLiteError(code: rc, message: message, context: "open \(path)")
        }
        self.handle = h
        self.path = path
        sqlite3_extended_result_codes(h, 1)
        sqlite3_busy_timeout(h, busyTimeoutMilliseconds)
        do {
            let mode = try query("PRAGMA journal_mode=WAL").first?.string("journal_mode")
            guard mode?.lowercased() == "wal" else {
                throw SQLiteError(code: SQLITE_ERROR, message: "journal_mode is \(mode ?? "unknown"), expected wal", context: "open \(path)")
            }
            try execute("PRAGMA foreign_keys=ON; PRAGMA synchronous=\(synchronousFull ? "FULL" : "NORMAL"); PRAGMA cache_size=-65536; PRAGMA mmap_size=268435456;")
        } catch {
            cache.removeAll()
            sqlite3_close_v2(h)
            throw error
        }
    }

    deinit {
        cache.removeAll()
        sqlite3_close_v2(handle)
    }

    func error(_ rc: Int32, _ context: String) -> SQLiteError {
        SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(handle)), context: "\(path): \(context)")
    }

    /// Runs one or more SQL statements without results.
    public func execute(_ sql: String) throws {
        var errmsg: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &errmsg)
        if rc != SQLITE_OK {
            let message = errmsg.map { String(cString: $0) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_free(errmsg)
            throw SQLiteError(code: rc, message: message, context: "\(path): \(sql)")
        }
    }

    /// A cached prepared statement for `sql` (one per distinct SQL text).
    public func statement(_ sql: String) throws -> SQLiteStatement {
        if let s = cache[sql] { return s }
        let s = try SQLiteStatement(database: self, sql: sql)
        cache[sql] = s
        return s
    }

    /// Runs a statement with binds (INSERT/UPDATE/DELETE); returns the number of changed rows.
    @discardableResult
    public func run(_ sql: String, _ values: [SQLiteValue] = []) throws -> Int {
        let s = try statement(sql)
        try s.bind(values)
        try s.run()
        return Int(sqlite3_changes(handle))
    }

    /// Runs a query with binds and returns every row.
    public func query(_ sql: String, _ values: [SQLiteValue] = []) throws -> [SQLiteRow] {
        let s = try statement(sql)
        try s.bind(values)
        return try s.rows()
    }

    /// The rowid of the last INSERT on this connection.
    public var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }

    /// Runs `body` in one transaction (BEGIN IMMEDIATE, so the write lock is taken up front);
    /// commits when it returns, rolls back when it throws.
    ///
    /// A nested call joins the outer transaction without a savepoint (a SAVEPOINT + RELEASE pair per
    /// call was a fifth of the coordinator's journal time). If it throws before changing a row (the
    /// usual case: a refused dispatch, an unknown attempt) the outer transaction goes on as if it had
    /// not been called. If it throws after changing rows, those changes cannot be undone alone: the
    /// whole outer transaction is rolled back when it ends, and the outer call throws
    /// `SQLiteError` naming the nested error (nothing half-done is ever committed).
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        if transactionDepth > 0 {
            let changesBefore = sqlite3_total_changes64(handle)
            transactionDepth += 1
            defer { transactionDepth -= 1 }
            do {
                return try body()
            } catch {
                if poisonedBy == nil, sqlite3_total_changes64(handle) != changesBefore { poisonedBy = error }
                throw error
            }
        }
        try run("BEGIN IMMEDIATE")
        transactionDepth = 1
        poisonedBy = nil
        do {
            let result = try body()
            transactionDepth = 0
            if let nested = poisonedBy {
                poisonedBy = nil
                _ = try? run("ROLLBACK")
                throw SQLiteError(code: SQLITE_ABORT, message: "a nested change failed after writing rows, so the whole transaction was rolled back: \(nested)",
                                  context: path)
            }
            try run("COMMIT")
            return result
        } catch {
            transactionDepth = 0
            if poisonedBy != nil { poisonedBy = nil }
            if sqlite3_get_autocommit(handle) == 0 { _ = try? run("ROLLBACK") }
            throw error
        }
    }

    /// The first error of a nested transaction that had already changed rows (see `transaction`).
    private var poisonedBy: Error?

    public var isInTransaction: Bool { transactionDepth > 0 }
}

// A job's output folder: `frame_<n>.png` per finished frame (n = pose frame number, 5-digit
// zero-padded), `manifest.json` describing the job and every frame written, and optionally a video
// made by ffmpeg once every frame is there.
//
// Crash safety, two modes (`Durability`):
// * `.syncEachFrame` (standalone use): each PNG is written to a temp file, fsynced and linked into
//   place (never replacing an existing file); manifest.json is rewritten the same way (temp +
//   rename). The manifest is the record of what was written: on reopening, a frame PNG that the
//   manifest does not list (the crash hit between the PNG and the manifest) is removed so the frame
//   can be written again.
// * `.batched` (the coordinator): PNGs are written temp + link without an fsync each, and the
//   manifest is rewritten only by `flush()` (the coordinator: at most about once a second, and when a
//   job ends or the coordinator stops). The caller's journal is the record: on reopening it passes
//   the frames its journal says are done (`recorded`); each one's PNG is checked against the
//   recorded SHA-256 and size and kept, and a missing or corrupt one is reported in
//   `invalidRecords` (the caller requeues that frame). Every other frame PNG is removed. See
//   DESIGN.md, "Durability and batching".
//
// Here: the folder (opened, checked, its PNGs vouched for) and manifest rewrites. The frame files are
// in OutputWriter+Frames.swift, manifest.json's records and text in OutputManifest.swift, the video in
// OutputWriter+Video.swift.
import DPFileKit
import Foundation
import Synchronization

/// Why the writer refused; `description` names the job, frame, file and expected vs found.
public enum OutputError: Error, CustomStringConvertible, Equatable {
    case alreadyWritten(jobID: UInt64, frame: UInt32, writtenBy: UInt64, refusedAttempt: UInt64)
    case unexpectedFrame(jobID: UInt64, frame: UInt32)
    case checksumMismatch(jobID: UInt64, frame: UInt32, claimed: String, found: String)
    case manifestMismatch(path: String, message: String)
    case incomplete(jobID: UInt64, missing: [UInt32])
    case ffmpegFailed(status: Int32, command: String, stderr: String)
    case io(path: String, message: String)
    /// A file or folder in the way that this job did not create (confined output): nothing touched.
    case notOwned(path: String, message: String)

    public var description: String {
        switch self {
        case let .alreadyWritten(job, frame, writtenBy, refused):
            return "job \(job): frame \(frame) was already written by attempt \(writtenBy); "
                + "refusing the result of attempt \(refused)"
        case let .unexpectedFrame(job, frame):
            return "job \(job): frame \(frame) is not one of the job's frames"
        case let .checksumMismatch(job, frame, claimed, found):
            return "job \(job): frame \(frame) PNG has sha256 \(found), the worker claimed \(claimed)"
        case let .manifestMismatch(path, message):
            return "\(path): \(message)"
        case let .incomplete(job, missing):
            let shown = missing.prefix(10).map(String.init).joined(separator: ", ")
            return "job \(job): cannot make the video, \(missing.count) frame(s) missing (\(shown)"
                + (missing.count > 10 ? ", ...)" : ")")
        case let .ffmpegFailed(status, command, stderr):
            return "ffmpeg exited with status \(status): \(command)\n\(stderr)"
        case let .io(path, message), let .notOwned(path, message):
            return "\(path): \(message)"
        }
    }
}

public final class OutputWriter: Sendable {
    /// How frame PNGs are made durable (see the file comment).
    public enum Durability: Sendable {
        /// fsync each PNG and its folder; `write(flush: true)` also rewrites manifest.json durably.
        case syncEachFrame
        /// No fsync per PNG (temp + link only); the caller's journal is the record and vouches for
        /// frames through `recorded` when the folder is reopened.
        case batched
    }

    public let directory: URL
    /// The path every file operation goes through: `directory.path`, or for a writer confined to an
    /// output root its folder's `/proc/<pid>/fd/<n>` name (OutputConfinement.swift). The per-frame
    /// writes build paths from strings, not URLs.
    let directoryPath: String
    /// The output root this writer is confined to (nil: `directory` is used as given).
    public let root: URL?
    /// The open output folder of a confined writer (kept open for the writer's lifetime).
    let folder: ConfinedFolder?
    public let durability: Durability
    /// Frames of `recorded` whose PNG was missing or did not match its record when the folder was
    /// opened (frame, what was wrong), ascending; their files were removed and they count as missing.
    public let invalidRecords: [(frame: UInt32, reason: String)]
    /// Serialises manifest rewrites (taken before `state`): a rewrite snapshots the manifest holding
    /// `state` and builds and writes the JSON after releasing it, so frames keep being written
    /// meanwhile; a later rewrite always writes a later snapshot.
    private let rewriteLock = Mutex(())
    struct State {
        var manifest: OutputManifest
        var written: [UInt32: OutputFrameRecord] = [:]
        var dirty = false
        /// Each written frame's manifest entry, encoded once when it is written (`ManifestJSON`).
        var entryJSON: [UInt32: String] = [:]
    }
    let state: Mutex<State>
    let expected: Set<UInt32>
    /// The sorted frame list of manifest.json, encoded once.
    private let expectedJSON: String

    /// The file name of frame `n`: `frame_00042.png` (at least 5 digits).
    public static func fileName(frame: UInt32) -> String {
        FrameFileName.png(frame: Int(frame))
    }

    /// Opens the output folder of a job (created if needed). A manifest.json there of another job
    /// or model is an error. With `recorded` nil, the frames listed by a manifest.json of the same
    /// job (a coordinator restart) are kept; with `recorded` (the frames the caller's journal says
    /// are done), those are kept instead, each only if its PNG matches its record's SHA-256 and
    /// size (the others land in `invalidRecords`). Every other frame PNG is removed (see the file
    /// comment).
    public init(directory: URL, jobID: UInt64, modelID: String, settings: OutputJobSettings,
                frames: [UInt32], durability: Durability = .syncEachFrame,
                recorded: [OutputFrameRecord]? = nil, confinedTo root: URL? = nil) throws {
        self.directory = directory.standardizedFileURL
        self.durability = durability
        self.root = root?.standardizedFileURL
        (folder, directoryPath) = try OutputWriter.openFolder(self.directory, root: self.root, jobID: jobID)
        let work = URL(fileURLWithPath: directoryPath, isDirectory: true)
        let sortedFrames = Array(Set(frames)).sorted()
        let expected = Set(sortedFrames)
        self.expected = expected
        var manifest = OutputManifest(format: OutputManifest.currentFormat, jobID: jobID, modelID: modelID,
                                  settings: settings, framesExpected: sortedFrames, frames: [],
                                  complete: sortedFrames.isEmpty, video: nil)
        let expectedJSON = ManifestJSON.list(sortedFrames)
        self.expectedJSON = expectedJSON
        var written: [UInt32: OutputFrameRecord] = [:]
        var invalid: [(frame: UInt32, reason: String)] = []
        if let old = try OutputWriter.readManifest(self.directory, folder: folder, jobID: jobID, modelID: modelID) {
            if recorded == nil {
                for record in old.frames where expected.contains(record.frame) {
                    written[record.frame] = record
                }
            }
            manifest.video = old.video
        }
        if let recorded {
            (written, invalid) = OutputWriter.checkRecorded(recorded, expected: expected, directory: self.directory,
                                                            work: work, folder: folder)
        }
        invalidRecords = invalid
        OutputWriter.removeUnvouched(written: written, directory: self.directory, work: work, folder: folder)
        var entryJSON: [UInt32: String] = [:]
        for (frame, record) in written { entryJSON[frame] = ManifestJSON.entry(record) }
        manifest.complete = written.count == expected.count
        try OutputWriter.writeManifest(manifest, entries: entryJSON, expectedJSON: expectedJSON,
                                       directory: work, durable: true)
        state = Mutex(State(manifest: manifest, written: written, dirty: false, entryJSON: entryJSON))
    }

    /// The output folder and the path every file operation goes through (see `directoryPath`): for a
    /// writer confined to `root`, reached from it without following links, and only a folder this job
    /// made (new, empty, or holding its manifest.json); otherwise `directory`, created if needed.
    private static func openFolder(_ directory: URL, root: URL?, jobID: UInt64) throws -> (ConfinedFolder?, String) {
        guard let root else {
            do {
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            } catch {
                throw OutputError.io(path: directory.path, message: "cannot create output folder: \(error)")
            }
            return (nil, directory.path)
        }
        // Confined (OutputConfinement.swift): reached from the root without following links, and
        // only a folder this job made (new, empty, or holding its manifest.json) is written to.
        let prefix = root.path + "/"
        guard directory.path.hasPrefix(prefix) else {
            throw OutputError.io(path: directory.path, message: "is outside the output root \(root.path)")
        }
        let open = try ConfinedFolder(root: root, relative: String(directory.path.dropFirst(prefix.count)), create: true)
        if !open.created, open.entryType("manifest.json") == nil {
            let names = open.names().sorted()
            if !names.isEmpty {
                throw OutputError.notOwned(path: directory.path, message: "already exists and holds "
                    + "\(names.count) entr\(names.count == 1 ? "y" : "ies") (\(names.prefix(3).joined(separator: ", "))"
                    + (names.count > 3 ? ", ..." : "") + ") but no manifest.json of job \(jobID): it is not this job's "
                    + "output folder; nothing was touched (choose a new output name)")
            }
        }
        return (open, open.path)
    }

    /// The folder's manifest.json, if any; one of another job or model (or unreadable) is an error.
    private static func readManifest(_ directory: URL, folder: ConfinedFolder?, jobID: UInt64,
                                     modelID: String) throws -> OutputManifest? {
        let manifestURL = directory.appendingPathComponent("manifest.json")
        let manifestData: Data?
        if let folder {
            manifestData = try folder.read("manifest.json", maxBytes: 1 << 30)
        } else {
            manifestData = try? Data(contentsOf: manifestURL)
        }
        guard let data = manifestData else { return nil }
        let old: OutputManifest
        do {
            old = try JSONDecoder().decode(OutputManifest.self, from: data)
        } catch {
            throw OutputError.manifestMismatch(path: manifestURL.path, message: "not a readable manifest: \(error)")
        }
        guard old.format == OutputManifest.currentFormat, old.jobID == jobID, old.modelID == modelID else {
            throw OutputError.manifestMismatch(
                path: manifestURL.path,
                message: "belongs to job \(old.jobID) (model \(old.modelID), format \(old.format)), "
                    + "not job \(jobID) (model \(modelID)); choose another output folder")
        }
        return old
    }

    /// The caller's journal's done frames: each kept only if its PNG matches its record's SHA-256 and
    /// size; the others, with what was wrong, are invalid (ascending).
    private static func checkRecorded(_ recorded: [OutputFrameRecord], expected: Set<UInt32>, directory: URL, work: URL,
                                      folder: ConfinedFolder?)
        -> (written: [UInt32: OutputFrameRecord], invalid: [(frame: UInt32, reason: String)]) {
        var written: [UInt32: OutputFrameRecord] = [:]
        var invalid: [(frame: UInt32, reason: String)] = []
        for record in recorded.sorted(by: { $0.frame < $1.frame }) where expected.contains(record.frame) {
            let name = OutputWriter.fileName(frame: record.frame)
            let url = directory.appendingPathComponent(name)
            let found = folder.map { (try? $0.read(name)) ?? nil } ?? (try? Data(contentsOf: work.appendingPathComponent(name)))
            guard let data = found else {
                invalid.append((record.frame, "\(url.path) is missing (journal: done by attempt \(record.attempt))"))
                continue
            }
            let digest = FileDigest.sha256(data)
            guard digest == record.pngSHA256, data.count == record.pngSize else {
                invalid.append((record.frame, "\(url.path) has \(data.count) bytes, sha256 \(digest); journal expects "
                    + "\(record.pngSize) bytes, sha256 \(record.pngSHA256) (attempt \(record.attempt))"))
                continue
            }
            written[record.frame] = record
        }
        return (written, invalid)
    }

    /// Removes every frame PNG that `written` (the manifest or the journal) does not vouch for, and temp files.
    private static func removeUnvouched(written: [UInt32: OutputFrameRecord], directory: URL, work: URL,
                                        folder: ConfinedFolder?) {
        let fm = FileManager.default
        let names = folder?.names() ?? (try? fm.contentsOfDirectory(atPath: directory.path)) ?? []
        for name in names where name.hasPrefix("frame_") && name.hasSuffix(".png") {
            let number = name.dropFirst("frame_".count).dropLast(".png".count)
            if let n = UInt32(number), OutputWriter.fileName(frame: n) == name, written[n] != nil { continue }
            if let folder {
                unlink(folder.path + "/" + name)  // confined: a file or link only, never a folder's contents
            } else {
                try? fm.removeItem(at: work.appendingPathComponent(name))
            }
        }
        for name in names where name.hasPrefix(".") && name.contains(".tmp-") {
            try? fm.removeItem(at: work.appendingPathComponent(name))
        }
    }

    /// A snapshot of manifest.json's content.
    public var currentManifest: OutputManifest {
        state.withLock { state in
            var copy = state.manifest
            copy.frames = state.written.values.sorted { $0.frame < $1.frame }
            return copy
        }
    }

    /// The record of frame `n` if it was written.
    public func record(frame: UInt32) -> OutputFrameRecord? {
        state.withLock { $0.written[frame] }
    }

    /// Frames of the job not written yet, ascending.
    public var missingFrames: [UInt32] {
        state.withLock { state in state.manifest.framesExpected.filter { state.written[$0] == nil } }
    }

    public var isComplete: Bool { missingFrames.isEmpty }

    /// Rewrites manifest.json if frames were written since the last rewrite. `durable: false` (the
    /// coordinator's periodic rewrite of a running job) skips the fsyncs: the journal is the record,
    /// the manifest a report rebuilt from it on reopening; the rewrite when a job ends is durable.
    /// Thread-safe; the JSON is built and written outside the writer's lock (see `rewriteLock`).
    public func flush(durable: Bool = true) throws {
        try rewriteLock.withLock { _ in
            let expectedCount = expected.count
            let snapshot = state.withLock { state -> (OutputManifest, [UInt32: String])? in
                guard state.dirty else { return nil }
                state.manifest.complete = state.written.count == expectedCount
                state.dirty = false
                // entryJSON is copied on write: the next frame written pays for the copy, once.
                return (state.manifest, state.entryJSON)
            }
            guard let (manifest, entries) = snapshot else { return }
            do {
                try OutputWriter.writeManifest(manifest, entries: entries, expectedJSON: expectedJSON,
                                               directory: URL(fileURLWithPath: directoryPath, isDirectory: true),
                                               durable: durable)
            } catch {
                state.withLock { $0.dirty = true }
                throw error
            }
        }
    }

    /// True when frames were written since manifest.json was last rewritten.
    public var needsFlush: Bool {
        state.withLock { $0.dirty }
    }
}

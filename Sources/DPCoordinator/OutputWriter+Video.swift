// OutputWriter's video: the job's frames encoded by ffmpeg (a child process) once every frame is there,
// into the video's folder (confined: opened beneath the output root; only this job's own video replaced).
import DPFileKit
import Foundation

extension OutputWriter {
    /// Encodes the whole sequence with ffmpeg into `video` (H.264, yuv420p, `fps` frames per second),
    /// via a temp file in the video's folder that is renamed into place. Refused while any frame is
    /// missing. Frames are fed in ascending frame number: directly with `-start_number` when the
    /// numbers are contiguous, otherwise through numbered symbolic links in a temp folder, so the
    /// video never has a gap or a wrong order. Odd frame sizes are padded to even.
    @discardableResult
    public func makeVideo(at video: URL, fps: Int = 30, ffmpeg: String = "ffmpeg") throws -> OutputVideoRecord {
        precondition(fps > 0, "fps must be positive, got \(fps)")
        flushIgnoringErrors()
        let (frames, job) = state.withLock { ($0.manifest.framesExpected, $0.manifest.jobID) }
        let missing = missingFrames
        guard missing.isEmpty, !frames.isEmpty else {
            throw OutputError.incomplete(jobID: job, missing: frames.isEmpty ? [] : missing)
        }
        let fm = FileManager.default
        // Confined: the video's folder opened beneath the root like the output folder, and an
        // existing file there that manifest.json does not record as this job's video is refused.
        let videoFolder = try confinedVideoFolder(video)
        let work = URL(fileURLWithPath: directoryPath, isDirectory: true)
        var linkFolder: URL?
        defer { if let linkFolder { try? fm.removeItem(at: linkFolder) } }
        let (pattern, startNumber) = try OutputWriter.framePattern(frames, work: work, linkFolder: &linkFolder)
        let logical = video.standardizedFileURL
        let target = videoFolder.map { URL(fileURLWithPath: $0.folder.path).appendingPathComponent($0.name) } ?? logical
        let temp = target.deletingLastPathComponent()
            .appendingPathComponent(".tmp-\(UInt32.random(in: 0 ... .max))-" + target.lastPathComponent)
        defer { try? fm.removeItem(at: temp) }
        let arguments = ["-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                         "-framerate", String(fps), "-start_number", String(startNumber), "-i", pattern,
                         "-frames:v", String(frames.count),
                         "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
                         "-c:v", "libx264", "-pix_fmt", "yuv420p", temp.path]
        try OutputWriter.run(ffmpeg, arguments)
        if let videoFolder, !videoFolder.ours {
            // Not this job's file: link(2) refuses to replace whatever appeared there meanwhile.
            if link(temp.path, target.path) != 0 {
                let why = errno == EEXIST ? "exists and was not written by this job (refusing to replace it)"
                    : "link from \(temp.path) failed: \(String(cString: strerror(errno)))"
                throw OutputError.notOwned(path: logical.path, message: why)
            }
        } else if rename(temp.path, target.path) != 0 {
            throw OutputError.io(path: logical.path, message: "rename from \(temp.path) failed: \(String(cString: strerror(errno)))")
        }
        DurableFile.syncDirectory(target.deletingLastPathComponent().path)
        let digest: String
        do {
            digest = try FileDigest.sha256(ofFile: target.path).sha256
        } catch {
            throw OutputError.io(path: logical.path, message: "\(error)")
        }
        let record = OutputVideoRecord(path: logical.path, fps: fps, frames: frames.count, sha256: digest)
        state.withLock { state in
            state.manifest.video = record
            state.dirty = true
        }
        try flush()
        return record
    }

    /// ffmpeg's input pattern and start number for `frames` (ascending) in `work`: the frame files
    /// themselves when the numbers are contiguous, otherwise numbered symbolic links in a temp folder
    /// (`linkFolder`, set as soon as it exists: the caller removes it).
    private static func framePattern(_ frames: [UInt32], work: URL, linkFolder: inout URL?) throws -> (String, UInt32) {
        let contiguous = zip(frames, frames.dropFirst()).allSatisfy { $1 == $0 + 1 }
        guard !contiguous else { return (work.appendingPathComponent("frame_%05d.png").path, frames[0]) }
        let fm = FileManager.default
        let folder = work.appendingPathComponent(".video-frames.tmp-\(UInt32.random(in: 0 ... .max))")
        do {
            try fm.createDirectory(at: folder, withIntermediateDirectories: true)
            linkFolder = folder
            for (index, frame) in frames.enumerated() {
                try fm.createSymbolicLink(atPath: folder.appendingPathComponent(String(format: "seq_%08d.png", index)).path,
                                          withDestinationPath: work.appendingPathComponent(OutputWriter.fileName(frame: frame)).path)
            }
        } catch {
            throw OutputError.io(path: folder.path, message: "cannot prepare the ordered frame list: \(error)")
        }
        return (folder.appendingPathComponent("seq_%08d.png").path, 0)
    }

    private func flushIgnoringErrors() { try? flush() }

    /// For a confined writer: the video's folder (opened beneath the root without following links,
    /// created if missing), its file name, and whether a file already there is this job's own video
    /// (manifest.json records it at this path). Throws `notOwned` for any other existing entry.
    /// nil for a writer that is not confined. The coordinator calls it when it opens a job, so a
    /// video name in the way fails the job before a frame is rendered.
    @discardableResult
    public func checkVideoTarget(_ video: URL) throws -> Bool {
        try confinedVideoFolder(video)?.ours ?? true
    }

    func confinedVideoFolder(_ video: URL) throws -> (folder: ConfinedFolder, name: String, ours: Bool)? {
        guard let root else { return nil }
        let path = video.standardizedFileURL.path
        let prefix = root.path + "/"
        guard path.hasPrefix(prefix) else {
            throw OutputError.io(path: path, message: "video is outside the output root \(root.path)")
        }
        let relative = String(path.dropFirst(prefix.count))
        let parts = relative.split(separator: "/", omittingEmptySubsequences: false)
        let name = String(parts.last ?? "")
        let parent = parts.dropLast().joined(separator: "/")
        let folder = try ConfinedFolder(root: root, relative: parent, create: true)
        guard let type = folder.entryType(name) else { return (folder, name, false) }
        let recorded = state.withLock { $0.manifest.video }
        guard type == S_IFREG, let recorded, recorded.path == path,
              let data = try folder.read(name), FileDigest.sha256(data) == recorded.sha256 else {
            throw OutputError.notOwned(path: path, message: "exists and was not written by this job "
                + "(refusing to replace it; choose another video name)")
        }
        return (folder, name, true)
    }

    /// Runs `tool` (a path, or a name looked up in PATH) and throws with its stderr if it fails.
    static func run(_ tool: String, _ arguments: [String]) throws {
        let process = Process()
        if tool.contains("/") {
            process.executableURL = URL(fileURLWithPath: tool)
            process.arguments = arguments
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [tool] + arguments
        }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        let command = ([tool] + arguments).joined(separator: " ")
        do {
            try process.run()
        } catch {
            throw OutputError.ffmpegFailed(status: -1, command: command, stderr: "cannot start: \(error)")
        }
        let stderr = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            throw OutputError.ffmpegFailed(status: process.terminationStatus, command: command,
                                           stderr: String(decoding: stderr, as: UTF8.self))
        }
    }
}

// Output confinement (issue 12, item 2): every job's outputs live inside one root folder the
// coordinator owns (`CoordinatorSettings.outputRoot`, default `<state>/outputs`).
//
// * At submit, a job's output folder and video are relative names inside the root, checked like
//   every other peer path (`RelativePath.problem`: no absolute path, no `..` or `.`, no empty
//   component) and refused when they would land on the state's own files (journal.sqlite*,
//   models/, inputs/) or hold the state folder; nothing is journalled for a refused job.
// * When a job's output is opened, its folder is reached from the root one component at a time:
//   `openat(parent, name, O_DIRECTORY | O_NOFOLLOW)` (creating missing folders with `mkdirat`), so a
//   symbolic link anywhere below the root is refused, not followed. The writer then works only
//   through that open descriptor, named `/proc/<pid>/fd/<n>`: the kernel resolves that name to the
//   very folder that was opened, whatever is renamed or swapped in its path afterwards (ffmpeg, a
//   child process, gets the same name). Frames are created new (O_TMPFILE + linkat, or a temp file
//   + link), which never follows a link and never replaces a file; manifest.json is replaced by
//   rename, which replaces a link itself, never its target.
// * A job writes only files it created: its folder must be new, empty, or hold this job's own
//   manifest.json (the coordinator writes it when it first opens the folder); its video must not
//   exist unless manifest.json records it as this job's. Anything else fails the job with an error
//   naming the file, and nothing is touched.
import DPProtocol
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A folder beneath a root, opened without following symbolic links (see the file comment).
final class ConfinedFolder: Sendable {
    /// The open folder.
    let fd: Int32
    /// `/proc/<pid>/fd/<fd>`: a path naming exactly this folder, for this process and its children.
    let path: String
    /// The folder's ordinary path (root + relative), for messages.
    let displayPath: String
    /// True when this open created the folder itself (it did not exist).
    let created: Bool

    /// Opens (creating with `create`) `relative` beneath `root`. `relative` must pass
    /// `RelativePath.problem`; the root itself is the operator's folder and may be reached through links.
    init(root: URL, relative: String, create: Bool) throws {
        displayPath = relative.isEmpty ? root.path : root.path + "/" + relative
        if !relative.isEmpty, let problem = RelativePath.problem(relative) {
            throw OutputError.io(path: displayPath, message: "not a name inside the output root \(root.path): \(problem)")
        }
        if create {
            do {
                try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
            } catch {
                throw OutputError.io(path: root.path, message: "cannot create the output root: \(error)")
            }
        }
        var current = open(root.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard current >= 0 else {
            throw OutputError.io(path: root.path, message: "cannot open the output root: \(String(cString: strerror(errno)))")
        }
        var madeLast = false
        let components = relative.isEmpty ? [] : relative.split(separator: "/").map(String.init)
        var walked = root.path
        for (index, name) in components.enumerated() {
            walked += "/" + name
            if create {
                if mkdirat(current, name, 0o755) == 0 {
                    madeLast = index == components.count - 1
                } else if errno != EEXIST {
                    let why = String(cString: strerror(errno))
                    close(current)
                    throw OutputError.io(path: walked, message: "cannot create folder: \(why)")
                }
            }
            let next = openat(current, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            let why = errno
            var info = stat()
            let isLink = next < 0 && fstatat(current, name, &info, AT_SYMLINK_NOFOLLOW) == 0 && info.st_mode & S_IFMT == S_IFLNK
            close(current)
            guard next >= 0 else {
                let message: String
                if isLink || why == ELOOP {
                    message = "is a symbolic link (outputs are opened beneath the output root without following links)"
                } else if why == ENOTDIR {
                    message = "is not a folder"
                } else {
                    message = "cannot open: \(String(cString: strerror(why)))"
                }
                throw OutputError.io(path: walked, message: message)
            }
            current = next
        }
        fd = current
        path = "/proc/\(getpid())/fd/\(fd)"
        created = madeLast
    }

    deinit { close(fd) }

    /// What is at `name` in this folder, without following a link: nil when nothing is there.
    func entryType(_ name: String) -> mode_t? {
        var info = stat()
        guard fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { return nil }
        return info.st_mode & S_IFMT
    }

    /// The names in the folder (without "." and "..").
    func names() -> [String] {
        let dup = dup(fd)
        guard dup >= 0, let dir = fdopendir(dup) else { return [] }
        defer { closedir(dir) }
        rewinddir(dir)
        var out: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { out.append(name) }
        }
        return out
    }

    /// The bytes of regular file `name` here (a link is not followed: refused).
    func read(_ name: String, maxBytes: Int = 1 << 30) throws -> Data? {
        let file = openat(fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard file >= 0 else {
            if errno == ENOENT { return nil }
            throw OutputError.io(path: displayPath + "/" + name, message: String(cString: strerror(errno)))
        }
        defer { close(file) }
        var info = stat()
        guard fstat(file, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            throw OutputError.io(path: displayPath + "/" + name, message: "not a regular file")
        }
        guard Int(info.st_size) <= maxBytes else {
            throw OutputError.io(path: displayPath + "/" + name, message: "\(info.st_size) bytes, more than \(maxBytes)")
        }
        var data = Data(count: Int(info.st_size))
        var done = 0
        let size = data.count
        let failed = data.withUnsafeMutableBytes { (buffer: UnsafeMutableRawBufferPointer) -> Bool in
            while done < size {
                let n = Glibc.read(file, buffer.baseAddress! + done, size - done)
                if n < 0 { if errno == EINTR { continue }; return true }
                if n == 0 { break }
                done += n
            }
            return false
        }
        if failed { throw OutputError.io(path: displayPath + "/" + name, message: String(cString: strerror(errno))) }
        data.count = done
        return data
    }
}

/// Where a coordinator puts job outputs, and the submit-time checks of a job's names for them.
struct OutputPlacement {
    /// The output root; nil when local paths are allowed (`allowLocalOutputPaths`, the embedded farm).
    let root: URL?
    let stateDirectory: URL
    let maxPathBytes: Int

    init(settings: CoordinatorSettings) {
        root = settings.allowLocalOutputPaths ? nil : settings.resolvedOutputRoot
        stateDirectory = settings.stateDirectory.standardizedFileURL
        maxPathBytes = settings.limits.maxPathBytes
    }

    /// The state's own files and folders: no output may be one of them, inside one, or hold the state folder.
    var reserved: [String] {
        let state = Self.real(stateDirectory.path)
        return ["journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm", "journal.sqlite-journal", "models", "inputs"]
            .map { state + "/" + $0 }
    }

    /// `path` with symbolic links of its existing leading part resolved (the rest kept as written).
    static func real(_ path: String) -> String {
        var head = path
        var tail: [String] = []
        while !head.isEmpty && head != "/" {
            if let resolved = realpath(head, nil) {
                defer { free(resolved) }
                return ([String(cString: resolved)] + tail.reversed()).joined(separator: "/")
            }
            let url = URL(fileURLWithPath: head)
            tail.append(url.lastPathComponent)
            head = url.deletingLastPathComponent().path
        }
        return "/" + tail.reversed().joined(separator: "/")
    }

    /// The absolute path a job's `name` (output folder or video) stands for, or why it is refused.
    /// `what` names the field in the message ("output folder", "video path").
    func resolve(_ name: String, what: String) -> Result<String, SubmitRefusal> {
        guard name.utf8.count <= maxPathBytes else {
            return .failure(SubmitRefusal("\(what): \(name.utf8.count) bytes, more than the \(maxPathBytes) allowed"))
        }
        let absolute: String
        if let root {
            if let problem = RelativePath.problem(name) {
                return .failure(SubmitRefusal("\(what) '\(PeerText.escaped(name))' refused: it must be a name inside the "
                    + "coordinator's output root (\(root.path)), relative and without '.', '..' or empty components: \(problem)"))
            }
            absolute = root.path + "/" + name
        } else {
            guard !name.isEmpty, !name.utf8.contains(0) else { return .failure(SubmitRefusal("\(what) is empty")) }
            if name.hasPrefix("/") {
                absolute = URL(fileURLWithPath: name).standardizedFileURL.path
            } else {
                if let problem = RelativePath.problem(name) {
                    return .failure(SubmitRefusal("\(what) refused: \(problem)"))
                }
                absolute = stateDirectory.appendingPathComponent(name).standardizedFileURL.path
            }
        }
        let real = Self.real(absolute)
        let state = Self.real(stateDirectory.path)
        for r in reserved where real == r || real.hasPrefix(r + "/") {
            return .failure(SubmitRefusal("\(what) '\(PeerText.escaped(name))' refused: it resolves to \(real), inside the "
                + "coordinator's own state (\(r))"))
        }
        if root != nil, real == state || state.hasPrefix(real + "/") {
            return .failure(SubmitRefusal("\(what) '\(PeerText.escaped(name))' refused: it resolves to \(real), which holds the "
                + "coordinator's state folder \(state)"))
        }
        return .success(absolute)
    }

    /// The part of a journalled absolute output path below the root (confined mode).
    func relative(_ absolute: String, what: String) throws -> String {
        guard let root else { return absolute }
        let prefix = root.path + "/"
        guard absolute.hasPrefix(prefix) else {
            throw OutputError.io(path: absolute, message: "\(what) is outside the output root \(root.path) "
                + "(was --output-root changed since the job was submitted?)")
        }
        return String(absolute.dropFirst(prefix.count))
    }
}

/// Why a submit was refused (the message goes to the client as BAD_REQUEST).
struct SubmitRefusal: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

extension Coordinator {
    var outputPlacement: OutputPlacement { OutputPlacement(settings: settings) }
}

extension OutputPlacement {
    /// The job's output folder and video as absolute paths, or why the job is refused: names checked
    /// (`resolve`), and with a root, a folder or video already there is refused too (a job writes only
    /// what it creates; the writer checks again when it opens them).
    func place(outputDir: String, video: String?) -> Result<(outputDir: String, video: String?), SubmitRefusal> {
        let dir: String
        switch resolve(outputDir, what: "output folder") {
        case .failure(let why): return .failure(why)
        case .success(let path): dir = path
        }
        var videoPath: String?
        if let video {
            switch resolve(video, what: "video path") {
            case .failure(let why): return .failure(why)
            case .success(let path): videoPath = path
            }
            let lower = video.lowercased()
            guard [".mp4", ".mkv", ".mov"].contains(where: { lower.hasSuffix($0) }) else {
                return .failure(SubmitRefusal("video path '\(PeerText.escaped(video))': expected a .mp4, .mkv or .mov file name"))
            }
        }
        // Local paths (the embedded farm, the operator's own machine): as given, a video inside the folder too.
        guard root != nil else { return .success((dir, videoPath)) }
        if let video, let videoPath, videoPath == dir || videoPath.hasPrefix(dir + "/") {
            return .failure(SubmitRefusal("video path '\(PeerText.escaped(video))' is inside the job's output folder; name it beside the folder"))
        }
        var info = stat()
        if lstat(dir, &info) == 0 {
            let isFolder = info.st_mode & S_IFMT == S_IFDIR
            let empty = isFolder && ((try? FileManager.default.contentsOfDirectory(atPath: dir).isEmpty) ?? false)
            if !empty {
                return .failure(SubmitRefusal("output folder '\(PeerText.escaped(outputDir))' already exists in the output root "
                    + (isFolder ? "and is not empty" : "and is not a folder") + "; a job writes only into a folder it creates "
                    + "(choose a new name)"))
            }
        }
        if let videoPath, lstat(videoPath, &info) == 0 {
            return .failure(SubmitRefusal("video path '\(PeerText.escaped(video ?? ""))' already exists in the output root; "
                + "a job never replaces a file it did not create (choose a new name)"))
        }
        return .success((dir, videoPath))
    }
}

// FarmClient's submit: the job spec, then every file the coordinator asks for, in chunks, with upload progress.
import DPFileKit
import DPProtocol
import DPTransport
import Foundation

extension FarmClient {
    // MARK: submit

    /// Submits a job: uploads the model files the coordinator lacks and the inputs it lacks, and
    /// returns the job id once every upload is acknowledged.
    /// - onUpload: the upload's progress (files, bytes sent of the total, time): once before the first
    ///   chunk, after acknowledged chunks at most every `uploadProgressInterval`, and once when every file
    ///   is sent (bytes sent = total). Not called when the coordinator lacks nothing.
    public func submit(_ job: JobSubmission, onUpload: ((UploadProgress) -> Void)? = nil) throws -> Int64 {
        let manifest: ModelManifest
        do {
            manifest = try ModelManifest.compute(directory: job.modelDirectory)
        } catch {
            throw FarmClientError.invalid("cannot read model folder \(job.modelDirectory.path): \(error)")
        }
        guard !job.poses.isEmpty else { throw FarmClientError.invalid("job '\(job.name)' has no poses") }
        for frame in job.request.frames where job.poses[frame] == nil {
            throw FarmClientError.invalid("job '\(job.name)': frame \(frame) has no pose")
        }
        var inputs: [String: Data] = [:]
        func inputFile(_ path: String, _ data: Data) -> FarmInputFile {
            inputs[path] = data
            return FarmInputFile(path: path, data: data)
        }
        var spec = FarmJobSpec()
        spec.name = job.name
        spec.modelID = manifest.modelID
        var render = job.request
        render.frames.sort()
        spec.set(render)
        spec.priority = Int32(clamping: job.priority)
        spec.subject = inputFile("subject.png", job.subjectPNG)
        spec.poses = job.poses.keys.sorted().map { n in
            var p = FarmPoseInput()
            p.frame = UInt32(n)
            p.file = inputFile("poses/" + FrameFileName.name(frame: n, extension: "npy"), job.poses[n]!)
            return p
        }
        spec.outputDir = job.outputDirectory
        var video = FarmVideoOptions()
        video.path = job.videoPath ?? ""
        video.fps = UInt32(max(0, job.fps))
        spec.video = video
        var submit = FarmSubmitJob()
        submit.spec = spec
        submit.model = FarmModelManifest(manifest)

        let reply = try request(.submitJob(submit))
        guard case .submitReply(let submitted)? = reply.body else {
            throw FarmClientError.protocolError("expected submit_reply, got \(reply.bodyName)")
        }
        // The bytes to send: the manifest's sizes for model files, the inputs' own sizes.
        let modelSizes = Dictionary(manifest.files.map { ($0.path, $0.size) }, uniquingKeysWith: { a, _ in a })
        var total: UInt64 = 0
        for ref in submitted.missing {
            let size = ref.kind == .model ? modelSizes[ref.path] ?? 0 : UInt64(inputs[ref.path]?.count ?? 0)
            total = total.addingReportingOverflow(size).overflow ? UInt64.max : total + size
        }
        let started = Date()
        var progress = UploadProgress(filesDone: 0, files: submitted.missing.count, bytesSent: 0, bytesTotal: total,
                                      seconds: 0)
        var lastReport = started
        func report(force: Bool) {
            guard let onUpload else { return }
            let t = Date()
            guard force || t.timeIntervalSince(lastReport) >= uploadProgressInterval else { return }
            lastReport = t
            progress.seconds = t.timeIntervalSince(started)
            onUpload(progress)
        }
        if !submitted.missing.isEmpty { report(force: true) }
        for ref in submitted.missing {
            var attempts = 0
            let before = progress.bytesSent
            while true {
                attempts += 1
                do {
                    try upload(job: submitted.jobID, ref: ref, model: job.modelDirectory, inputs: inputs) { sent in
                        // A file sent again (checksum mismatch) counts from 0 again; a file larger than
                        // announced does not push the count past the total.
                        progress.bytesSent = min(total, before.addingReportingOverflow(sent).overflow ? total : before + sent)
                        report(force: false)
                    }
                    break
                } catch FarmClientError.remote(let code, let message) where code == .checksumMismatch && attempts < 3 {
                    _ = message  // the file changed or was corrupted on the way: send it again from 0
                }
            }
            progress.filesDone += 1
        }
        if !submitted.missing.isEmpty {
            progress.bytesSent = total
            report(force: true)
        }
        return Int64(submitted.jobID)
    }

    /// - sent: bytes of this file acknowledged so far, after each chunk.
    func upload(job: UInt64, ref: FarmFileRef, model: URL, inputs: [String: Data],
                        sent: (UInt64) -> Void) throws {
        let reader: (UInt64, Int) throws -> Data
        let size: UInt64
        switch ref.kind {
        case .model:
            guard RelativePath.isSafe(ref.path) else {
                throw FarmClientError.protocolError("coordinator asked for model file '\(ref.path)' (unsafe path)")
            }
            let url = model.appendingPathComponent(ref.path)
            let handle: FileHandle
            do {
                handle = try FileHandle(forReadingFrom: url)
                size = try handle.seekToEnd()
            } catch {
                throw FarmClientError.invalid("cannot read model file \(url.path): \(error)")
            }
            reader = { offset, count in
                try handle.seek(toOffset: offset)
                return try handle.read(upToCount: count) ?? Data()
            }
        case .input:
            guard let data = inputs[ref.path] else {
                throw FarmClientError.protocolError("coordinator asked for unknown input '\(ref.path)'")
            }
            size = UInt64(data.count)
            reader = { offset, count in
                let start = Int(offset)
                return data.subdata(in: start ..< min(data.count, start + count))
            }
        default:
            throw FarmClientError.protocolError("coordinator asked for '\(ref.path)' of unknown kind \(ref.kind)")
        }
        var offset: UInt64 = 0
        repeat {
            let data = try reader(offset, chunkBytes)
            var chunk = FarmUploadChunk()
            chunk.jobID = job
            chunk.file = ref
            chunk.offset = offset
            chunk.data = data
            chunk.last = offset + UInt64(data.count) >= size
            let reply = try request(.uploadChunk(chunk))
            guard case .uploadAck(let ack)? = reply.body else {
                throw FarmClientError.protocolError("expected upload_ack, got \(reply.bodyName)")
            }
            offset += UInt64(data.count)
            guard ack.nextOffset == offset else {
                throw FarmClientError.protocolError("upload of '\(ref.path)': coordinator has \(ack.nextOffset) bytes, sent \(offset)")
            }
            sent(offset)
            if data.isEmpty { break }
        } while offset < size
    }
}

// A model manifest (DPFileKit.ModelManifest) on the wire: ModelManifest replies to workers and the model
// part of SubmitJob. One conversion each way for the coordinator, the client and the worker.
import DPFileKit
import Foundation

extension FarmModelManifest {
    /// The wire form of `manifest`: its model id and every file's path, size and SHA-256.
    public init(_ manifest: ModelManifest) {
        self.init()
        modelID = manifest.modelID
        files = manifest.files.map {
            var f = FarmModelFile()
            f.path = $0.path
            f.size = $0.size
            f.sha256 = $0.sha256
            return f
        }
    }
}

extension ModelManifest {
    /// The manifest a peer sent, as sent: check it (`validate()`, paths) before trusting it.
    public init(wire: FarmModelManifest) {
        self.init(modelID: wire.modelID,
                  files: wire.files.map { ModelFileEntry(path: $0.path, size: $0.size, sha256: $0.sha256) })
    }
}

extension FarmInputFile {
    /// The wire description of a job input: its path in the job, its size and its SHA-256.
    public init(path: String, data: Data) {
        self.init()
        self.path = path
        size = UInt64(data.count)
        sha256 = FileDigest.sha256(data)
    }
}

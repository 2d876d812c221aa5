// Model identity, the coordinator's model store, the worker's on-disk cache, the chunked fetch
// driver and the in-memory loaded-model cache: all on real files with real SHA-256.
import Crypto
import DPCoordinator
import DPFileKit
import DPPipeline
import DPProtocol
@testable import DPWorker
import Foundation
import XCTest

final class ModelCacheTests: XCTestCase {
    private var root: URL!

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory
            .appendingPathComponent("dp-modelcache-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: root)
    }

    /// A model-like folder with files of pseudo-random bytes (seeded, so sizes and contents vary).
    private func makeModel(_ name: String, seed: UInt64, files: [String: Int]) throws -> URL {
        let dir = root.appendingPathComponent(name, isDirectory: true)
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        for (path, size) in files {
            var bytes = [UInt8](repeating: 0, count: size)
            for i in 0 ..< size {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                bytes[i] = UInt8(truncatingIfNeeded: state)
            }
            let url = dir.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(bytes).write(to: url)
        }
        return dir
    }

    private func standardModel(_ name: String, seed: UInt64, scale: Int = 1) throws -> URL {
        try makeModel(name, seed: seed, files: [
            "dreampose.json": 300 * scale,
            "unet/diffusion_pytorch_model.safetensors": 10_000 * scale + 17,
            "unet/config.json": 400,
            "vae/diffusion_pytorch_model.safetensors": 5_000 * scale + 3,
            "scheduler/scheduler_config.json": 0,
        ])
    }

    private func shell(_ script: String, in dir: URL) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", script]
        process.currentDirectoryURL = dir
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, script)
        return String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    // MARK: - Identity

    func testIdentityMatchesTheSpecFormulaComputedBySha256sum() throws {
        // Bytewise order puts "Z" before "a" and "a b" before "a/"; a hidden file counts.
        let dir = try makeModel("m", seed: 1, files: ["b.txt": 10, "a/x.bin": 5000, ".hidden": 3, "a b/c": 7, "Z": 1])
        // docs/model-format.md "Identity", computed by coreutils, independently of our code.
        let script = #"find . -type f | sed 's|^\./||' | LC_ALL=C sort | while IFS= read -r f; do "#
            + #"printf '%s\0%s\n' "$f" "$(sha256sum -- "$f" | cut -d' ' -f1)"; done | sha256sum | cut -d' ' -f1"#
        let expected = try shell(script, in: dir)
        let manifest = try ModelManifest.compute(directory: dir)
        XCTAssertEqual(manifest.modelID, expected)
        XCTAssertEqual(manifest.files.map(\.path), [".hidden", "Z", "a b/c", "a/x.bin", "b.txt"])
        XCTAssertEqual(manifest.files.map(\.size), [3, 1, 7, 5000, 10])
        XCTAssertEqual(manifest.files[3].sha256, try shell("sha256sum a/x.bin | cut -d' ' -f1", in: dir))
        XCTAssertNoThrow(try manifest.validate())
    }

    func testManifestValidationCatchesWrongIDDuplicatesAndOrder() throws {
        let dir = try standardModel("m", seed: 2)
        let good = try ModelManifest.compute(directory: dir)
        var wrongID = good
        wrongID.modelID = String(repeating: "0", count: 64)
        XCTAssertThrowsError(try wrongID.validate()) { XCTAssertTrue("\($0)".contains(good.modelID), "\($0)") }
        var swapped = good
        swapped.files.swapAt(0, 1)
        XCTAssertThrowsError(try swapped.validate()) { XCTAssertTrue("\($0)".contains("not sorted"), "\($0)") }
        var doubled = good
        doubled.files.insert(good.files[0], at: 0)
        XCTAssertThrowsError(try doubled.validate()) { XCTAssertTrue("\($0)".contains("listed twice"), "\($0)") }
        // A changed file changes the id.
        try Data("changed".utf8).write(to: dir.appendingPathComponent("unet/config.json"))
        XCTAssertNotEqual(try ModelManifest.compute(directory: dir).modelID, good.modelID)
    }

    // MARK: - Coordinator model store

    func testStoreServesChunksAndRefusesBadRequests() throws {
        let src = try standardModel("src", seed: 3)
        let store = try ModelStore(directory: root.appendingPathComponent("state/models"), maxChunkBytes: 4096)
        let manifest = try store.importFolder(src)
        XCTAssertEqual(manifest, try ModelManifest.compute(directory: src))
        XCTAssertEqual(store.modelIDs, [manifest.modelID])
        XCTAssertEqual(try store.manifest(for: manifest.modelID), manifest)

        let path = "unet/diffusion_pytorch_model.safetensors"
        let whole = try Data(contentsOf: src.appendingPathComponent(path))
        let chunk = try store.readChunk(modelID: manifest.modelID, path: path, offset: 100, length: 4096)
        XCTAssertEqual(chunk.data, whole.subdata(in: 100 ..< 4196))
        XCTAssertEqual(chunk.fileSize, UInt64(whole.count))
        let tail = try store.readChunk(modelID: manifest.modelID, path: path, offset: UInt64(whole.count - 10), length: 4096)
        XCTAssertEqual(tail.data, whole.suffix(10))
        let end = try store.readChunk(modelID: manifest.modelID, path: path, offset: UInt64(whole.count), length: 1)
        XCTAssertEqual(end.data.count, 0)

        func code(_ body: () throws -> Any) -> FarmErrorCode? {
            do { _ = try body(); return nil } catch let error as ModelStoreError { return error.code } catch { return .internal }
        }
        let id = manifest.modelID
        XCTAssertEqual(code { try store.readChunk(modelID: id, path: "../state/x", offset: 0, length: 10) }, .unknownFile)
        XCTAssertEqual(code { try store.readChunk(modelID: id, path: "/etc/passwd", offset: 0, length: 10) }, .unknownFile)
        XCTAssertEqual(code { try store.readChunk(modelID: id, path: "unet/../dreampose.json", offset: 0, length: 10) }, .unknownFile)
        XCTAssertEqual(code { try store.readChunk(modelID: id, path: "unet/other.bin", offset: 0, length: 10) }, .unknownFile)
        XCTAssertEqual(code { try store.readChunk(modelID: id, path: path, offset: UInt64(whole.count + 1), length: 10) }, .badRequest)
        XCTAssertEqual(code { try store.readChunk(modelID: id, path: path, offset: 0, length: 4097) }, .badRequest)
        XCTAssertEqual(code { try store.readChunk(modelID: id, path: path, offset: 0, length: 0) }, .badRequest)
        XCTAssertEqual(code { try store.readChunk(modelID: String(repeating: "a", count: 64), path: path, offset: 0, length: 1) },
                       .unknownModel)

        // A restart reads the sidecar manifest; a folder whose files changed size is re-hashed and refused:
        // not served, reported, and the store (so the coordinator) still opens (issue 12: no crash loop).
        XCTAssertEqual(try ModelStore(directory: store.directory).modelIDs, [id])
        try Data("grown".utf8).write(to: store.folder(for: id).appendingPathComponent("unet/config.json"))
        let reopened = try ModelStore(directory: store.directory)
        XCTAssertEqual(reopened.modelIDs, [])
        XCTAssertFalse(reopened.contains(id))
        let why = try XCTUnwrap(reopened.refusedAtStart[id])
        XCTAssertTrue(why.contains("its files changed"), why)
    }

    func testStoreUploadRefusesCorruptedFileNamingBothHashes() throws {
        let src = try standardModel("src", seed: 4)
        let manifest = try ModelManifest.compute(directory: src)
        let store = try ModelStore(directory: root.appendingPathComponent("models"))
        let staging = try store.beginUpload(manifest)
        var corruptHash = ""
        for file in manifest.files {
            var data = try Data(contentsOf: src.appendingPathComponent(file.path))
            if file.path == "vae/diffusion_pytorch_model.safetensors" {
                data[42] ^= 0x01
                corruptHash = FileDigest.sha256(data)
            }
            try staging.write(path: file.path, offset: 0, data: data)
        }
        XCTAssertThrowsError(try store.finishUpload(staging)) { error in
            XCTAssertEqual((error as? ModelStoreError)?.code, .checksumMismatch)
            let text = "\(error)"
            XCTAssertTrue(text.contains("vae/diffusion_pytorch_model.safetensors"), text)
            XCTAssertTrue(text.contains(corruptHash), text)
            XCTAssertTrue(text.contains(manifest.entry(for: "vae/diffusion_pytorch_model.safetensors")!.sha256), text)
        }
        XCTAssertFalse(store.contains(manifest.modelID))
        XCTAssertFalse(FileManager.default.fileExists(atPath: store.folder(for: manifest.modelID).path))
        XCTAssertTrue(ModelStaging.leftovers(in: store.directory).isEmpty)
        XCTAssertThrowsError(try store.beginUpload(ModelManifest(files: [ModelFileEntry(path: "../x", size: 1,
                                                                                          sha256: String(repeating: "0", count: 64))])))
    }

    // MARK: - Chunked fetch into the worker cache

    private func fetchSetup(seed: UInt64) throws -> (ModelStore, ModelManifest) {
        let store = try ModelStore(directory: root.appendingPathComponent("coord/models"))
        let manifest = try store.importFolder(try standardModel("src\(seed)", seed: seed))
        return (store, manifest)
    }

    func testFetchDownloadsInChunksVerifiesAndInstalls() throws {
        let (store, manifest) = try fetchSetup(seed: 5)
        let cache = try ModelCache(directory: root.appendingPathComponent("cache"), maxBytes: 1 << 20)
        var requests: [(String, UInt64, Int)] = []
        var lastProgress: (UInt64, UInt64) = (0, 0)
        let lease = try ModelFetcher(chunkBytes: 1000).fetch(manifest, into: cache, progress: { lastProgress = ($0, $1) }) {
            requests.append(($0, $1, $2))
            return try store.readChunk(modelID: manifest.modelID, path: $0, offset: $1, length: $2).data
        }
        XCTAssertEqual(lease.modelID, manifest.modelID)
        XCTAssertEqual(lease.directory, cache.folder(for: manifest.modelID))
        XCTAssertEqual(try ModelManifest.compute(directory: lease.directory), manifest)
        XCTAssertEqual(cache.modelIDs, [manifest.modelID])
        XCTAssertEqual(cache.usedBytes, manifest.totalBytes)
        XCTAssertEqual(lastProgress.0, manifest.totalBytes)
        XCTAssertEqual(lastProgress.1, manifest.totalBytes)
        let expectedRequests = manifest.files.reduce(0) { $0 + Int(($1.size + 999) / 1000) }
        XCTAssertEqual(requests.count, expectedRequests)
        XCTAssertTrue(requests.allSatisfy { $0.2 <= 1000 })
        XCTAssertTrue(ModelStaging.leftovers(in: cache.directory).isEmpty)

        // Already cached: no chunk is fetched again.
        let again = try ModelFetcher(chunkBytes: 1000).fetch(manifest, into: cache) { _, _, _ in
            XCTFail("fetched a cached model"); return Data()
        }
        XCTAssertEqual(again.modelID, manifest.modelID)
    }

    func testCorruptedChunkIsDetectedAndFileRefetched() throws {
        let (store, manifest) = try fetchSetup(seed: 6)
        let cache = try ModelCache(directory: root.appendingPathComponent("cache"), maxBytes: 1 << 20)
        let victim = "unet/diffusion_pytorch_model.safetensors"
        var victimStarts = 0
        var corrupted = false
        var reports: [ModelFetcher.Corrupted] = []
        let fetcher = ModelFetcher(chunkBytes: 4096, maxAttemptsPerFile: 3) { reports.append($0) }
        let lease = try fetcher.fetch(manifest, into: cache) { path, offset, length in
            var data = try store.readChunk(modelID: manifest.modelID, path: path, offset: offset, length: length).data
            if path == victim, offset == 0 { victimStarts += 1 }
            if path == victim, offset == 4096, !corrupted {  // flip one bit in the second chunk, once
                data[7] ^= 0x20
                corrupted = true
            }
            return data
        }
        XCTAssertEqual(victimStarts, 2, "the corrupted file is fetched again from the start")
        XCTAssertEqual(try ModelManifest.compute(directory: lease.directory).modelID, manifest.modelID)
        XCTAssertEqual(reports.count, 1)
        XCTAssertEqual(reports.first?.path, victim)
        XCTAssertEqual(reports.first?.expected, manifest.entry(for: victim)!.sha256)
        XCTAssertEqual(reports.first?.attempt, 1)
        XCTAssertEqual(reports.first?.givingUp, false)
    }

    func testPersistentCorruptionFailsAfterBoundedRetriesAndLeavesNothing() throws {
        let (store, manifest) = try fetchSetup(seed: 7)
        let cache = try ModelCache(directory: root.appendingPathComponent("cache"), maxBytes: 1 << 20)
        let victim = "vae/diffusion_pytorch_model.safetensors"
        var whole = try Data(contentsOf: store.folder(for: manifest.modelID).appendingPathComponent(victim))
        whole[whole.count - 1] ^= 0xFF  // what the corrupting transport always delivers
        var victimStarts = 0
        XCTAssertThrowsError(try ModelFetcher(chunkBytes: 1500, maxAttemptsPerFile: 3).fetch(manifest, into: cache) {
            path, offset, length in
            if path == victim {
                if offset == 0 { victimStarts += 1 }
                return whole.subdata(in: Int(offset) ..< Int(offset) + length)
            }
            return try store.readChunk(modelID: manifest.modelID, path: path, offset: offset, length: length).data
        }) { error in
            guard case let .corrupted(id, path, attempts, expected, found)? = error as? ModelFetchError else {
                return XCTFail("unexpected \(error)")
            }
            XCTAssertEqual(id, manifest.modelID)
            XCTAssertEqual(path, victim)
            XCTAssertEqual(attempts, 3)
            XCTAssertEqual(expected, manifest.entry(for: victim)!.sha256)
            XCTAssertEqual(found, FileDigest.sha256(whole))
            XCTAssertTrue("\(error)".contains(found) && "\(error)".contains(expected))
        }
        XCTAssertEqual(victimStarts, 3)
        XCTAssertFalse(cache.contains(manifest.modelID))
        XCTAssertTrue(ModelStaging.leftovers(in: cache.directory).isEmpty)
        XCTAssertFalse(FileManager.default.fileExists(atPath: cache.folder(for: manifest.modelID).path))
        // The reservation was released: the whole budget is available again.
        XCTAssertNoThrow(try ModelFetcher().fetch(manifest, into: cache) {
            try store.readChunk(modelID: manifest.modelID, path: $0, offset: $1, length: min($2, 1 << 16)).data
        })
    }

    func testShortChunkIsAnError() throws {
        let (store, manifest) = try fetchSetup(seed: 8)
        let cache = try ModelCache(directory: root.appendingPathComponent("cache"), maxBytes: 1 << 20)
        XCTAssertThrowsError(try ModelFetcher(chunkBytes: 1000).fetch(manifest, into: cache) { path, offset, length in
            try store.readChunk(modelID: manifest.modelID, path: path, offset: offset, length: length).data.dropLast()
        }) { error in
            // The first file in manifest order is dreampose.json (300 bytes): one short chunk of it.
            XCTAssertTrue("\(error)".contains("chunk of 'dreampose.json' at offset 0: asked for 300 bytes, got 299"), "\(error)")
        }
        XCTAssertFalse(cache.contains(manifest.modelID))
    }

    func testCommitRejectsCorruptedMissingAndExtraFilesOnDisk() throws {
        let src = try standardModel("src", seed: 9)
        let manifest = try ModelManifest.compute(directory: src)
        let cache = try ModelCache(directory: root.appendingPathComponent("cache"), maxBytes: 1 << 20)
        func stage(skip: String? = nil, corrupt: String? = nil, extra: Bool = false) throws -> ModelInstall {
            let install = try cache.beginInstall(manifest)
            for file in manifest.files where file.path != skip {
                var data = try Data(contentsOf: src.appendingPathComponent(file.path))
                if file.path == corrupt { data[0] ^= 1 }
                try install.staging.write(path: file.path, offset: 0, data: data)
            }
            if extra { try Data("x".utf8).write(to: install.staging.directory.appendingPathComponent("stray.txt")) }
            return install
        }
        let corrupt = "unet/config.json"
        var bad = try Data(contentsOf: src.appendingPathComponent(corrupt))
        bad[0] ^= 1
        XCTAssertThrowsError(try cache.commit(try stage(corrupt: corrupt))) { error in
            XCTAssertEqual(error as? ModelInstallError, .checksumMismatch(modelID: manifest.modelID, path: corrupt,
                                                                          expected: manifest.entry(for: corrupt)!.sha256,
                                                                          found: FileDigest.sha256(bad)))
        }
        XCTAssertThrowsError(try cache.commit(try stage(skip: "dreampose.json"))) {
            XCTAssertEqual($0 as? ModelInstallError, .missingFile(modelID: manifest.modelID, path: "dreampose.json"))
        }
        XCTAssertThrowsError(try cache.commit(try stage(extra: true))) {
            XCTAssertEqual($0 as? ModelInstallError, .extraFile(modelID: manifest.modelID, path: "stray.txt"))
        }
        let install = try cache.beginInstall(manifest)
        XCTAssertThrowsError(try install.staging.write(path: "dreampose.json", offset: 299, data: Data([1, 2]))) {
            XCTAssertTrue("\($0)".contains("run past its size 300"), "\($0)")
        }
        XCTAssertThrowsError(try install.staging.write(path: "nope", offset: 0, data: Data([1])))
        cache.abandon(install)
        XCTAssertFalse(cache.contains(manifest.modelID))
        XCTAssertTrue(ModelStaging.leftovers(in: cache.directory).isEmpty)
        XCTAssertThrowsError(try ModelStaging(manifest: ModelManifest(files: [
            ModelFileEntry(path: "a/../../b", size: 0, sha256: FileDigest.sha256(Data())),
        ]), in: root))
    }

    // MARK: - Size bound and LRU

    private func install(_ manifest: ModelManifest, from store: ModelStore, into cache: ModelCache) throws -> ModelLease {
        try ModelFetcher(chunkBytes: 1 << 16).fetch(manifest, into: cache) {
            try store.readChunk(modelID: manifest.modelID, path: $0, offset: $1, length: $2).data
        }
    }

    func testLeastRecentlyUsedIsEvictedAndOrderSurvivesRestart() throws {
        let store = try ModelStore(directory: root.appendingPathComponent("coord/models"), maxChunkBytes: 1 << 16)
        let models = try (0 ..< 4).map { try store.importFolder(try standardModel("m\($0)", seed: 100 + UInt64($0))) }
        let size = models.map(\.totalBytes).max()!
        let bound = models[0].totalBytes + models[1].totalBytes + size / 2  // room for two models, not three
        let cacheDir = root.appendingPathComponent("cache")
        var cache = try ModelCache(directory: cacheDir, maxBytes: bound)
        try install(models[0], from: store, into: cache).release()
        try install(models[1], from: store, into: cache).release()
        try cache.lease(models[0].modelID)!.release()  // m0 is now the most recently used
        XCTAssertEqual(cache.modelIDs, [models[0].modelID, models[1].modelID])
        try install(models[2], from: store, into: cache).release()  // evicts m1
        XCTAssertEqual(Set(cache.modelIDs), [models[0].modelID, models[2].modelID])
        XCTAssertFalse(FileManager.default.fileExists(atPath: cache.folder(for: models[1].modelID).path))
        XCTAssertLessThanOrEqual(cache.usedBytes, bound)

        // Restart: the order comes from index.json, so m0 (older than m2) goes next.
        cache = try ModelCache(directory: cacheDir, maxBytes: bound)
        XCTAssertEqual(cache.modelIDs, [models[2].modelID, models[0].modelID])
        try install(models[3], from: store, into: cache).release()
        XCTAssertEqual(Set(cache.modelIDs), [models[2].modelID, models[3].modelID])

        // A smaller bound at start-up evicts down to it.
        cache = try ModelCache(directory: cacheDir, maxBytes: models[3].totalBytes)
        XCTAssertEqual(cache.modelIDs, [models[3].modelID])
    }

    func testModelInUseIsNeverEvicted() throws {
        let store = try ModelStore(directory: root.appendingPathComponent("coord/models"), maxChunkBytes: 1 << 16)
        let models = try (0 ..< 3).map { try store.importFolder(try standardModel("m\($0)", seed: 200 + UInt64($0))) }
        let bound = models[0].totalBytes + models[1].totalBytes + models[2].totalBytes / 2
        let cache = try ModelCache(directory: root.appendingPathComponent("cache"), maxBytes: bound)
        let held = try install(models[0], from: store, into: cache)  // oldest, but in use
        try install(models[1], from: store, into: cache).release()
        try install(models[2], from: store, into: cache).release()  // must evict m1, not m0
        XCTAssertEqual(Set(cache.modelIDs), [models[0].modelID, models[2].modelID])
        XCTAssertEqual(try ModelManifest.compute(directory: held.directory), models[0])

        // With room for one model and that one in use, an install is refused, naming what blocks it.
        let small = try ModelCache(directory: root.appendingPathComponent("cache2"), maxBytes: models.map(\.totalBytes).max()!)
        let pinned = try install(models[0], from: store, into: small)
        XCTAssertThrowsError(try install(models[1], from: store, into: small)) { error in
            guard case .noRoom? = error as? ModelCacheError else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains(models[0].modelID), "\(error)")
        }
        pinned.release()
        XCTAssertNoThrow(try install(models[1], from: store, into: small).release())
        XCTAssertEqual(small.modelIDs, [models[1].modelID])

        XCTAssertThrowsError(try ModelCache(directory: root.appendingPathComponent("cache3"), maxBytes: 10)
            .beginInstall(models[0])) { error in
            guard case .tooLarge? = error as? ModelCacheError else { return XCTFail("\(error)") }
        }
    }

    func testStartupRemovesStagingLeftoversAndAdoptsUnindexedModels() throws {
        let src = try standardModel("src", seed: 300)
        let manifest = try ModelManifest.compute(directory: src)
        let cacheDir = root.appendingPathComponent("cache")
        try FileManager.default.createDirectory(at: cacheDir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: src, to: cacheDir.appendingPathComponent(manifest.modelID))
        let leftover = cacheDir.appendingPathComponent(".staging-deadbeef-1-2")
        try FileManager.default.createDirectory(at: leftover, withIntermediateDirectories: true)
        try Data("half".utf8).write(to: leftover.appendingPathComponent("x"))
        let cache = try ModelCache(directory: cacheDir, maxBytes: 1 << 20)
        XCTAssertFalse(FileManager.default.fileExists(atPath: leftover.path))
        XCTAssertEqual(cache.modelIDs, [manifest.modelID])
        XCTAssertEqual(cache.usedBytes, manifest.totalBytes)
        XCTAssertTrue(FileManager.default.fileExists(atPath: cacheDir.appendingPathComponent("index.json").path))
    }

    // MARK: - Loaded models in memory

    func testLoadedModelCacheKeepsTheMostRecentlyUsed() throws {
        final class Loaded: Sendable { let id: String; init(_ id: String) { self.id = id } }
        let cache = LoadedModelCache<Loaded>(capacity: 2)
        var loads: [String] = []
        func get(_ id: String) throws -> Loaded {
            try cache.value(for: id) { loads.append(id); return Loaded(id) }
        }
        let a = try get("a")
        XCTAssertTrue(try get("a") === a)
        _ = try get("b")
        _ = try get("a")  // b is now least recently used
        _ = try get("c")  // drops b
        XCTAssertEqual(cache.modelIDs, ["a", "c"])
        _ = try get("b")
        XCTAssertEqual(loads, ["a", "b", "c", "b"])
        struct Boom: Error {}
        XCTAssertThrowsError(try cache.value(for: "d") { throw Boom() })
        XCTAssertFalse(cache.modelIDs.contains("d"))
    }
}

import DPCoordinator
import DPFileKit
import DPJournal
import DPProtocol
import DPTransport
import DPWorker
import Foundation
import XCTest

/// CurveZMQ authentication with roles, through real CURVE sockets on 127.0.0.1 and real key files:
/// unknown peers get nothing, each key may send only its role's messages, a worker's session and
/// attempts belong to its key, a client sees and cancels only its own jobs (admins every job),
/// pinned server keys, key file checks, and reloading the authorized folders.
final class AuthTests: XCTestCase {
    var root: URL!
    var keysDir: URL!
    var server: ZMQCurveKeyPair!
    /// Key pairs by name, written as NAME.key / NAME.pub in `keysDir`.
    var pairs: [String: ZMQCurveKeyPair] = [:]

    override func setUpWithError() throws {
        root = try FarmFixtures.tempDirectory("auth")
        keysDir = root.appendingPathComponent("keys")
        for dir in ["keys", "workers.d", "clients.d", "admins.d"] {
            try FileManager.default.createDirectory(at: root.appendingPathComponent(dir), withIntermediateDirectories: true)
        }
        server = try makeKey("coordinator")
        for (name, folder) in [("worker1", "workers.d"), ("worker2", "workers.d"), ("client1", "clients.d"),
                               ("client2", "clients.d"), ("admin", "admins.d")] {
            _ = try makeKey(name)
            try FileManager.default.copyItem(at: keysDir.appendingPathComponent("\(name).pub"),
                                             to: root.appendingPathComponent("\(folder)/\(name).pub"))
        }
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: root)
    }

    @discardableResult
    func makeKey(_ name: String) throws -> ZMQCurveKeyPair {
        let made = try CurveKeyFile.generate(base: keysDir.appendingPathComponent(name).path)
        pairs[name] = made.pair
        return made.pair
    }

    /// `name`'s keys as a client pinned to the coordinator (or to `serverKey`).
    func curve(_ name: String, serverKey: String? = nil) throws -> CurveClientKeys {
        try CurveClientKeys.load(keyFile: keysDir.appendingPathComponent("\(name).key").path,
                                 serverKeyFile: keysDir.appendingPathComponent("\(serverKey ?? "coordinator").pub").path)
    }

    func startCoordinator() throws -> RunningCoordinator {
        let serverKeys = try CurveKeyFile.readSecret(keysDir.appendingPathComponent("coordinator.key").path)
        return try RunningCoordinator(state: root.appendingPathComponent("state"), clock: ManualClock()) { s in
            s.auth = .curve(CurveAuthSettings(
                serverKeys: serverKeys,
                workers: .directory(self.root.appendingPathComponent("workers.d")),
                clients: .directory(self.root.appendingPathComponent("clients.d")),
                admins: .directory(self.root.appendingPathComponent("admins.d"))))
        }
    }

    func client(_ name: String, coord: RunningCoordinator, timeout: Double = 10) throws -> FarmClient {
        try FarmClient(endpoint: coord.endpoint, timeoutSeconds: timeout, curve: try curve(name))
    }

    func submit(as name: String, coord: RunningCoordinator, frames: [Int] = [0, 1]) throws -> Int64 {
        let model = try FarmFixtures.model(in: root)
        let c = try client(name, coord: coord)
        defer { c.close() }
        return try c.submit(FarmFixtures.submission(model: model, frames: frames,
                                                    out: root.appendingPathComponent("out-\(name)-\(UUID().uuidString)")))
    }

    func assertRemote(_ code: FarmErrorCode, _ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard case FarmClientError.remote(let got, _) = error else {
                return XCTFail("expected a \(code) reply, got \(error)", file: file, line: line)
            }
            XCTAssertEqual(got, code, "\(error)", file: file, line: line)
        }
    }

    // MARK: unauthenticated peers

    func testUnauthenticatedPeersGetNothing() throws {
        let coord = try startCoordinator()
        defer { coord.stop() }
        // A job with data a stray peer must never see.
        let job = try submit(as: "client1", coord: coord)

        // No CURVE at all: the handshake fails; not even an error comes back.
        let plain = try RawPeer(coord.endpoint, name: "plain")
        var hello = FarmHello()
        hello.workerName = "plain"
        hello.slots = 4
        try plain.send(.hello(hello))
        var credit = FarmCredit()
        credit.credits = 100
        try plain.send(.credit(credit))
        var status = FarmStatusRequest()
        status.jobID = UInt64(job)
        try plain.send(.statusRequest(status), requestID: 1)
        XCTAssertNil(try plain.next(timeout: 1.5), "a peer without CURVE got an answer")

        // CURVE with a key the coordinator does not list: refused by the ZAP handler.
        let strangerKeys = try ZMQCurveKeyPair.generate()
        let stranger = try RawPeer(coord.endpoint, name: "stranger",
                                   curve: CurveClientKeys(keys: strangerKeys, serverPublicKey: server.publicKey))
        hello.workerName = "stranger"
        try stranger.send(.hello(hello))
        try stranger.send(.credit(credit))
        try stranger.send(.statusRequest(status), requestID: 1)
        XCTAssertNil(try stranger.next(timeout: 1.5), "a peer with an unknown key got an answer")

        // FarmClient with the unknown key says so (the ZAP refusal), without waiting out its timeout.
        let strangerClient = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 20,
                                            curve: CurveClientKeys(keys: strangerKeys, serverPublicKey: server.publicKey))
        defer { strangerClient.close() }
        let started = Date()
        XCTAssertThrowsError(try strangerClient.status(job: nil)) { error in
            guard case FarmClientError.handshake(let why) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(why.contains("refused this key"), why)
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 15)

        // Nothing was registered and nothing dispatched: an admin sees no worker, the job untouched.
        let admin = try client("admin", coord: coord)
        defer { admin.close() }
        XCTAssertEqual(try admin.workers().count, 0)
        XCTAssertEqual(try coord.coordinator.journal.runningAttempts().count, 0)

        // A listed worker key does get in (the same coordinator, so the refusals above were about keys).
        let worker = try RawPeer(coord.endpoint, name: "w1", curve: try curve("worker1"))
        _ = try worker.hello()
    }

    // MARK: roles

    func testWorkerKeyCannotSubmitOrCancel() throws {
        let coord = try startCoordinator()
        defer { coord.stop() }
        let job = try submit(as: "client1", coord: coord)
        let asWorker = try client("worker1", coord: coord)
        defer { asWorker.close() }
        let model = try FarmFixtures.model(in: root)
        assertRemote(.badRequest) {
            _ = try asWorker.submit(FarmFixtures.submission(model: model, frames: [0], out: self.root.appendingPathComponent("w")))
        }
        assertRemote(.badRequest) { _ = try asWorker.cancel(job: job) }
        assertRemote(.badRequest) { _ = try asWorker.status(job: nil) }
        XCTAssertEqual(try coord.coordinator.journal.jobs(includingSpec: false).map(\.id), [job])
        XCTAssertEqual(try coord.coordinator.journal.job(job)?.state, .queued)
    }

    func testClientKeyCannotRegisterAsWorker() throws {
        let coord = try startCoordinator()
        defer { coord.stop() }
        _ = try submit(as: "client1", coord: coord)
        let peer = try RawPeer(coord.endpoint, name: "sneaky", curve: try curve("client1"))
        var hello = FarmHello()
        hello.workerName = "sneaky"
        hello.slots = 8
        try peer.send(.hello(hello))
        let error = try peer.expect("error") { if case .error(let e) = $0 { return e } else { return nil } }
        XCTAssertEqual(error.code, .badRequest)
        XCTAssertTrue(error.message.contains("not authorized as a worker"), error.message)
        try peer.credit(100)
        let next = try peer.expect("error") { if case .error(let e) = $0 { return e } else { return nil } }
        XCTAssertEqual(next.code, .badRequest)
        XCTAssertNil(try peer.next(timeout: 0.5), "a client key got worker traffic")
        let admin = try client("admin", coord: coord)
        defer { admin.close() }
        XCTAssertEqual(try admin.workers().count, 0)
        XCTAssertEqual(try coord.coordinator.journal.runningAttempts().count, 0)

        // A WorkerService run with a client key is refused, and says so.
        var settings = WorkerSettings(connect: coord.endpoint, name: "client-as-worker",
                                      cacheDirectory: root.appendingPathComponent("cache"))
        settings.heartbeatIntervalMs = 100
        settings.reconnectInitialMs = 20
        settings.curve = try curve("client1")
        let worker = try WorkerService(settings: settings, renderer: SyntheticFrameRenderer(), log: { _ in })
        let done = DispatchSemaphore(value: 0)
        Thread { try? worker.run(); done.signal() }.start()
        defer {
            worker.shutdown(handBack: true)
            XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
        }
        let deadline = Date().addingTimeInterval(20)
        while worker.connectionProblem == nil, Date() < deadline { usleep(20_000) }
        guard case .refused(let why)? = worker.connectionProblem else {
            return XCTFail("expected a refused Hello, got \(String(describing: worker.connectionProblem))")
        }
        XCTAssertTrue(why.contains("not authorized as a worker"), why)
        XCTAssertEqual(try admin.workers().count, 0)
    }

    func testAnotherClientCannotUploadIntoAJob() throws {
        let coord = try startCoordinator()
        defer { coord.stop() }
        let model = try FarmFixtures.model(in: root)
        let manifest = try ModelManifest.compute(directory: model)
        let owner = try RawPeer(coord.endpoint, name: "owner", curve: try curve("client1"))
        let subject = Data("subject".utf8)
        let submit = FarmFixtures.rawSubmitJob(manifest: manifest, name: "mine", subject: subject,
                                               pose: Data("pose".utf8), out: "out")
        try owner.send(.submitJob(submit), requestID: 1)
        let reply = try owner.expect("submit_reply") { if case .submitReply(let r) = $0 { return r } else { return nil } }

        // client2 (and a worker key) sending the subject for client1's job: refused as an unknown job.
        var chunk = FarmUploadChunk()
        chunk.jobID = reply.jobID
        chunk.file.kind = .input
        chunk.file.path = "subject.png"
        chunk.data = subject
        chunk.last = true
        for (name, code) in [("client2", FarmErrorCode.unknownJob), ("worker1", .badRequest)] {
            let other = try RawPeer(coord.endpoint, name: name, curve: try curve(name))
            try other.send(.uploadChunk(chunk), requestID: 2)
            let refused = try other.expect("error") { if case .error(let e) = $0 { return e } else { return nil } }
            XCTAssertEqual(refused.code, code, "\(name): \(refused.message)")
        }
        // The owner's own chunk is taken (the subject was still missing).
        try owner.send(.uploadChunk(chunk), requestID: 3)
        let ack = try owner.expect("upload_ack") { if case .uploadAck(let a) = $0 { return a } else { return nil } }
        XCTAssertTrue(ack.fileComplete)
    }

    // MARK: worker sessions belong to keys

    func testAnotherKeyWithABusyWorkersNameGetsNoneOfItsAttempts() throws {
        let coord = try startCoordinator()
        defer { coord.stop() }
        _ = try submit(as: "client1", coord: coord, frames: [0])
        let real = try RawPeer(coord.endpoint, name: "render-1", curve: try curve("worker1"))
        _ = try real.hello()
        try real.credit(1)
        let (_, task) = try real.expectPrepAndTask()

        // worker2's key, the same name, claiming the running attempt: refused, no Welcome, no attempt.
        let impostor = try RawPeer(coord.endpoint, name: "render-1", curve: try curve("worker2"))
        var hello = FarmHello()
        hello.workerName = "render-1"
        hello.slots = 1
        hello.runningAttemptIds = [task.attemptID]
        try impostor.send(.hello(hello))
        let refused = try impostor.expect("error") { if case .error(let e) = $0 { return e } else { return nil } }
        XCTAssertTrue(refused.message.contains("in use by another key"), refused.message)
        try impostor.credit(1)
        _ = try impostor.expect("not registered") { if case .error(let e) = $0, e.code == .notRegistered { return e } else { return nil } }
        // Its result for the real worker's attempt goes nowhere.
        try impostor.result(task, png: Data("not a png".utf8))
        _ = try impostor.expect("not registered") { if case .error(let e) = $0, e.code == .notRegistered { return e } else { return nil } }
        XCTAssertNil(try impostor.next(timeout: 0.3))

        // The real worker still holds it: the attempt is current and running, and nothing reached it.
        XCTAssertTrue(try coord.coordinator.journal.isCurrent(Int64(task.attemptID)))
        XCTAssertEqual(try coord.coordinator.journal.runningAttempts().map(\.id), [Int64(task.attemptID)])
        XCTAssertNil(try real.next(timeout: 0.3), "the real worker was disturbed")

        // The same key on a new connection (a reconnect) re-adopts it.
        let again = try RawPeer(coord.endpoint, name: "render-1", curve: try curve("worker1"))
        let welcome = try again.hello(running: [task.attemptID])
        XCTAssertEqual(welcome.adoptedAttemptIds, [task.attemptID])
        XCTAssertEqual(try coord.coordinator.journal.workers().first { $0.name == "render-1" }?.key, pairs["worker1"]!.publicKey)
    }

    // MARK: job ownership

    func testClientsSeeAndCancelOnlyTheirOwnJobsAdminsEvery() throws {
        let coord = try startCoordinator()
        defer { coord.stop() }
        let mine = try submit(as: "client1", coord: coord)
        let theirs = try submit(as: "client2", coord: coord)
        XCTAssertEqual(try coord.coordinator.journal.job(mine)?.ownerKey, pairs["client1"]!.publicKey)
        XCTAssertEqual(try coord.coordinator.journal.job(theirs)?.ownerKey, pairs["client2"]!.publicKey)

        let c1 = try client("client1", coord: coord)
        defer { c1.close() }
        XCTAssertEqual(try c1.status(job: nil).map(\.id), [mine])
        XCTAssertEqual(try c1.status(job: mine).map(\.id), [mine])
        assertRemote(.unknownJob) { _ = try c1.status(job: theirs) }
        assertRemote(.unknownJob) { _ = try c1.cancel(job: theirs) }
        assertRemote(.unknownJob) { try c1.follow(job: theirs) { _ in false } }
        XCTAssertEqual(try coord.coordinator.journal.job(theirs)?.state, .queued)

        let admin = try client("admin", coord: coord)
        defer { admin.close() }
        XCTAssertEqual(try admin.status(job: nil).map(\.id), [mine, theirs])
        XCTAssertEqual(try admin.cancel(job: theirs), "cancelled")
        XCTAssertEqual(try c1.cancel(job: mine), "cancelled")
    }

    // MARK: pinned server key

    func testWorkerPinnedToAnotherServerKeyDoesNotConnectAndSaysSo() throws {
        let coord = try startCoordinator()
        defer { coord.stop() }
        _ = try makeKey("other-coordinator")
        var settings = WorkerSettings(connect: coord.endpoint, name: "pinned",
                                      cacheDirectory: root.appendingPathComponent("cache"))
        settings.heartbeatIntervalMs = 100
        settings.heartbeatLiveness = 3
        settings.reconnectInitialMs = 20
        settings.reconnectMaxMs = 100
        settings.curve = try curve("worker1", serverKey: "other-coordinator")
        let worker = try WorkerService(settings: settings, renderer: SyntheticFrameRenderer(), log: { _ in })
        let done = DispatchSemaphore(value: 0)
        Thread { try? worker.run(); done.signal() }.start()
        defer {
            worker.shutdown(handBack: true)
            XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
        }
        let deadline = Date().addingTimeInterval(20)
        var problem: WorkerSessionProblem?
        while Date() < deadline {
            problem = worker.connectionProblem
            if problem != nil { break }
            usleep(20_000)
        }
        guard case .handshake(let why)? = problem else { return XCTFail("no handshake problem reported: \(String(describing: problem))") }
        XCTAssertTrue(why.contains("--server-key") || why.contains("handshake"), why)
        let admin = try client("admin", coord: coord)
        defer { admin.close() }
        XCTAssertEqual(try admin.workers().count, 0)

        // A client pinned to the wrong key fails with a handshake error after its timeout, not a hang.
        let wrong = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 2,
                                   curve: try curve("client1", serverKey: "other-coordinator"))
        defer { wrong.close() }
        XCTAssertThrowsError(try wrong.status(job: nil)) { error in
            guard case FarmClientError.handshake(let why) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(why.contains("--server-key") || why.contains("handshake"), why)
        }
    }

    // MARK: key files

    func testKeyFilesAreOwnerOnlyAndMalformedOnesAreNamed() throws {
        let made = try CurveKeyFile.generate(base: root.appendingPathComponent("k").path)
        func mode(_ path: String) throws -> Int {
            (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? -1
        }
        XCTAssertEqual(try mode(made.secretPath), 0o600)
        XCTAssertEqual(try mode(made.publicPath), 0o644)
        XCTAssertEqual(try CurveKeyFile.readSecret(made.secretPath), made.pair)
        XCTAssertEqual(try CurveKeyFile.readPublic(made.publicPath), made.pair.publicKey)
        XCTAssertTrue(try String(contentsOfFile: made.secretPath, encoding: .utf8).contains("secret-key = \"\(made.pair.secretKey)\""))
        // Never replaced.
        XCTAssertThrowsError(try CurveKeyFile.generate(base: root.appendingPathComponent("k").path)) { error in
            XCTAssertTrue("\(error)".contains("already exists"), "\(error)")
        }
        XCTAssertEqual(try CurveKeyFile.readSecret(made.secretPath), made.pair)

        // Hostile / broken files: each error names the file and what was expected.
        func expectError(_ name: String, _ text: String, secret: Bool = false, _ expected: String,
                         file: StaticString = #filePath, line: UInt = #line) throws {
            let path = root.appendingPathComponent(name).path
            FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
            XCTAssertThrowsError(try { () throws -> Void in
                if secret { _ = try CurveKeyFile.readSecret(path) } else { _ = try CurveKeyFile.readPublic(path) }
            }(), file: file, line: line) { error in
                guard let e = error as? CurveKeyFileError else { return XCTFail("\(error)", file: file, line: line) }
                XCTAssertEqual(e.path, path, file: file, line: line)
                XCTAssertTrue(e.description.contains(path), e.description, file: file, line: line)
                XCTAssertTrue(e.message.contains(expected), e.message, file: file, line: line)
            }
        }
        let key = made.pair.publicKey
        try expectError("short.pub", "curve\n    public-key = \"\(key.dropLast())\"\n", "expected 40 Z85 characters, got 39")
        try expectError("badchar.pub", "curve\n    public-key = \"\(key.dropLast())\\\"\n", "not in the Z85 alphabet")
        try expectError("overflow.pub", "curve\n    public-key = \"\(String(repeating: "#", count: 40))\"\n", "more than 32 bits")
        try expectError("empty.pub", "", "not a key file")
        try expectError("words.pub", "hello\nworld\n", "not a key file")
        try expectError("huge.pub", String(repeating: "#", count: CurveKeyFile.maxFileBytes + 1), "larger than")
        try expectError("nosecret.key", "curve\n    public-key = \"\(key)\"\n", secret: true, "no curve secret-key")
        let other = try ZMQCurveKeyPair.generate()
        try expectError("mismatch.key", "curve\n    public-key = \"\(key)\"\n    secret-key = \"\(other.secretKey)\"\n",
                        secret: true, "does not belong")
        // A secret key other users may read is refused.
        let open = root.appendingPathComponent("open.key").path
        try FileManager.default.copyItem(atPath: made.secretPath, toPath: open)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: open)
        XCTAssertThrowsError(try CurveKeyFile.readSecret(open)) { error in
            XCTAssertTrue("\(error)".contains("chmod 600"), "\(error)")
        }
        // A bare key line is a public key file too.
        let bare = root.appendingPathComponent("bare.pub").path
        try Data((key + "\n").utf8).write(to: URL(fileURLWithPath: bare))
        XCTAssertEqual(try CurveKeyFile.readPublic(bare), key)

        // A malformed file in an authorized folder stops the coordinator from starting, naming it.
        let bad = root.appendingPathComponent("clients.d/broken.pub").path
        try Data("curve\n    public-key = \"tooshort\"\n".utf8).write(to: URL(fileURLWithPath: bad))
        XCTAssertThrowsError(try startCoordinator()) { error in
            XCTAssertTrue("\(error)".contains(bad), "\(error)")
        }
    }

    // MARK: reload

    func testReloadAdmitsANewKeyAndDropsARemovedOne() throws {
        let coord = try startCoordinator()
        defer { coord.stop() }
        try makeKey("late")
        let late = try FarmClient(endpoint: coord.endpoint, timeoutSeconds: 3, curve: try curve("late"))
        XCTAssertThrowsError(try late.status(job: nil)) { error in
            guard case FarmClientError.handshake = error else { return XCTFail("\(error)") }
        }
        late.close()

        try FileManager.default.copyItem(at: keysDir.appendingPathComponent("late.pub"),
                                         to: root.appendingPathComponent("clients.d/late.pub"))
        let counts = try XCTUnwrap(try coord.coordinator.reloadAuthorizedKeys())
        XCTAssertEqual(counts, AuthorizedKeys.Counts(workers: 2, clients: 3, admins: 1))
        let admitted = try client("late", coord: coord)
        defer { admitted.close() }
        XCTAssertEqual(try admitted.status(job: nil).count, 0)

        // Removed and reloaded: the open connection's next request is refused.
        try FileManager.default.removeItem(at: root.appendingPathComponent("clients.d/late.pub"))
        try coord.coordinator.reloadAuthorizedKeys()
        assertRemote(.badRequest) { _ = try admitted.status(job: nil) }

        // A reload that fails keeps the keys in use.
        try Data("garbage".utf8).write(to: root.appendingPathComponent("clients.d/zz.pub"))
        XCTAssertThrowsError(try coord.coordinator.reloadAuthorizedKeys())
        let c1 = try client("client1", coord: coord)
        defer { c1.close() }
        XCTAssertEqual(try c1.status(job: nil).count, 0)
    }
}

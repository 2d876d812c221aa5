// The coordinator's message handlers as a fuzz target: one Coordinator (real ROUTER socket on 127.0.0.1, journal
// and state in a temporary folder) started once per process; each input is split into up to 8 messages (at each
// "\n--\n") that one DEALER peer sends as they are (undecodable ones included), after which a second peer's
// WorkersRequest must be answered within 10 s. A handler that traps kills the process (a crash for libFuzzer);
// one that wedges the loop fails the liveness check.
//
// Harness safety until outputs are confined to a root (issue 12 item 2): a SubmitJob whose output_dir or
// video.path is not a plain relative path is not sent (it could write anywhere the fuzzing user can); relative
// ones land under the coordinator's temporary state folder.
import DPCoordinator
import DPProtocol
import DPTransport
import Foundation

final class CoordinatorHarness: @unchecked Sendable {   // used from the fuzzing thread only
    let coordinator: Coordinator
    let state: URL
    let stopped = DispatchSemaphore(value: 0)
    let context: ZMQContext
    let peer: ZMQSocket
    let probe: ZMQSocket
    var probeID: UInt64 = 1

    init() throws {
        state = FileManager.default.temporaryDirectory
            .appendingPathComponent("dp-fuzz-coordinator-\(getpid())", isDirectory: true)
        try? FileManager.default.removeItem(at: state)
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        var settings = CoordinatorSettings(bind: "tcp://127.0.0.1:*", stateDirectory: state)
        settings.heartbeatIntervalMs = 100
        settings.restartGraceSeconds = 0
        let started = DispatchSemaphore(value: 0)
        coordinator = try Coordinator(settings: settings, log: { line in
            if line.contains("serving on") { started.signal() }
        })
        let coordinator = self.coordinator
        let stopped = self.stopped
        Thread.detachNewThread {
            do { try coordinator.run() } catch { fatalError("coordinator run() threw: \(error)") }
            stopped.signal()
        }
        guard started.wait(timeout: .now() + 30) == .success else { fatalError("coordinator did not start") }
        context = try ZMQContext()
        peer = try context.socket(.dealer)
        try peer.set(.routingID(Data("fuzz-peer".utf8)))
        try peer.connect(coordinator.endpoint)
        probe = try context.socket(.dealer)
        try probe.set(.routingID(Data("fuzz-probe".utf8)))
        try probe.connect(coordinator.endpoint)
    }

    /// Stops the coordinator and removes its state (the replay test; a fuzzing process just exits).
    func stop() {
        peer.close()
        probe.close()
        context.terminate()
        coordinator.shutdown()
        _ = stopped.wait(timeout: .now() + 10)
        try? FileManager.default.removeItem(at: state)
    }

    static func allowed(_ message: Data) -> Bool {
        guard let envelope = try? FarmEnvelope.decode(message), case .submitJob(let submit)? = envelope.body else {
            return true
        }
        let dir = submit.spec.outputDir, video = submit.spec.video.path
        return (dir.isEmpty || RelativePath.isSafe(dir)) && (video.isEmpty || RelativePath.isSafe(video))
    }

    func run(_ data: Data) {
        let separator = Data("\n--\n".utf8)
        var messages: [Data] = []
        var rest = data[...]
        while messages.count < 8, let r = rest.range(of: separator) {
            messages.append(Data(rest[rest.startIndex ..< r.lowerBound]))
            rest = rest[r.upperBound...]
        }
        if messages.count < 8 { messages.append(Data(rest)) }
        for message in messages where Self.allowed(message) {
            _ = try? peer.send([message])
        }
        // Drain what the coordinator said to the peer (keeps its queue short).
        while (try? peer.receive(flags: .dontWait)) ?? nil != nil {}
        probeID += 1
        guard let ping = try? FarmEnvelope(.workersRequest(FarmWorkersRequest()), requestID: probeID).encoded(),
              (try? probe.send([ping])) == true else { fatalError("cannot send the liveness probe") }
        let deadline = Date().addingTimeInterval(10)
        let poller = ZMQPoller()
        _ = try? poller.add(probe)
        while Date() < deadline {
            guard let ready = try? poller.poll(timeoutMilliseconds: 50), ready[0].contains(.readable),
                  let frames = try? probe.receive(flags: .dontWait), let reply = frames.last,
                  let envelope = try? FarmEnvelope.decode(reply) else { continue }
            if envelope.requestID == probeID { return }
        }
        fatalError("the coordinator did not answer a WorkersRequest within 10 s after the input")
    }
}

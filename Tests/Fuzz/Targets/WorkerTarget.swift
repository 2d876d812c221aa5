// The worker's message handlers as a fuzz target: a WorkerService (synthetic 8x8 renderer, model cache in a
// temporary folder) connected to a scripted coordinator (a ROUTER socket on 127.0.0.1) started once per process.
// Each input is split into up to 8 messages (at each "\n--\n") that the scripted coordinator sends the worker as
// they are; then the worker must still talk (its heartbeats, a reply or a new Hello) within 1 s, or else stop
// within 10 s when asked (a Welcome may legitimately set a heartbeat interval of days), and is then started
// again. A handler that traps kills the process (a crash for libFuzzer); a wedged I/O thread fails the check.
// A worker whose run() returns (it may give up on a coordinator) is started again.
import DPProtocol
import DPTransport
import DPWorker
import Foundation

final class WorkerHarness: @unchecked Sendable {   // used from the fuzzing thread only
    let context: ZMQContext
    let router: ZMQSocket
    let endpoint: String
    let cache: URL
    var service: WorkerService?
    var finished = DispatchSemaphore(value: 0)
    var workerID: Data?

    init() throws {
        cache = FileManager.default.temporaryDirectory
            .appendingPathComponent("dp-fuzz-worker-\(getpid())", isDirectory: true)
        try? FileManager.default.removeItem(at: cache)
        context = try ZMQContext()
        router = try context.socket(.router)
        endpoint = try router.bind("tcp://127.0.0.1:*")
        try startWorker()
    }

    func startWorker() throws {
        var settings = WorkerSettings(connect: endpoint, name: "fuzz-worker", cacheDirectory: cache)
        settings.heartbeatIntervalMs = 50
        settings.heartbeatLiveness = 20
        settings.reconnectInitialMs = 10
        settings.reconnectMaxMs = 50
        settings.modelRequestTimeoutSeconds = 1
        let service = try WorkerService(settings: settings, renderer: SyntheticFrameRenderer(), log: { _ in })
        let finished = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            _ = try? service.run()
            finished.signal()
        }
        self.service = service
        self.finished = finished
        workerID = nil
    }

    /// Waits up to `seconds` for any message of the worker; remembers its routing id.
    func heard(within seconds: Double) -> Bool {
        let poller = ZMQPoller()
        _ = try? poller.add(router)
        let deadline = Date().addingTimeInterval(seconds)
        var heard = false
        while Date() < deadline {
            guard let ready = try? poller.poll(timeoutMilliseconds: heard ? 0 : 20) else { continue }
            guard ready[0].contains(.readable), let frames = try? router.receive(flags: .dontWait),
                  frames.count == 2 else {
                if heard { return true }
                continue
            }
            workerID = frames[0]
            heard = true
        }
        return heard
    }

    func stop() {
        service?.shutdown(handBack: false)
        _ = finished.wait(timeout: .now() + 10)
        router.close()
        context.terminate()
        try? FileManager.default.removeItem(at: cache)
    }

    func run(_ data: Data) {
        if workerID == nil, !heard(within: 10) { fatalError("the worker did not say Hello within 10 s") }
        let separator = Data("\n--\n".utf8)
        var messages: [Data] = []
        var rest = data[...]
        while messages.count < 8, let r = rest.range(of: separator) {
            messages.append(Data(rest[rest.startIndex ..< r.lowerBound]))
            rest = rest[r.upperBound...]
        }
        if messages.count < 8 { messages.append(Data(rest)) }
        // What the worker said before this input does not count for the liveness check below.
        while let frames = try? router.receive(flags: .dontWait), frames.count == 2 { workerID = frames[0] }
        if let id = workerID {
            for message in messages { _ = try? router.send([id, message]) }
        }
        if finished.wait(timeout: .now()) == .success {
            // The worker gave up (a legitimate answer to some inputs): start a fresh one.
            do { try startWorker() } catch { fatalError("cannot restart the worker: \(error)") }
            return
        }
        if !heard(within: 1), finished.wait(timeout: .now()) != .success {
            // Silence can be legitimate (a Welcome may set a heartbeat interval of days): the worker must then
            // still stop when asked, which its I/O thread does only if it is not wedged. Then a fresh one.
            service?.shutdown(handBack: false)
            guard finished.wait(timeout: .now() + 10) == .success else {
                fatalError("the worker went silent after the input and did not stop within 10 s when asked")
            }
            do { try startWorker() } catch { fatalError("cannot restart the worker: \(error)") }
        }
    }
}

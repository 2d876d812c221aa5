import DPCLISupport
import DPCoordinator
import DPLog
import DPTransport
import DPWorker
import Foundation
import Synchronization

/// `dp-coord submit` without `--coordinator`: a whole farm in this process. A real `Coordinator` on
/// tcp://127.0.0.1:* with its state under `<out>/.dp-state`, and `workers` real `WorkerService`s rendering
/// with `PipelineFrameRenderer`, each with its own model cache under the state folder. The job goes through
/// the same messages as on a farm of machines (submit with upload, model fetch, dispatch, follow), so the
/// outputs are the same.
final class EmbeddedFarm: Sendable {
    let stateDirectory: URL
    let coordinator: Coordinator
    private let services: [WorkerService]
    private let workerThreads: [BackgroundThread]
    private let coordinatorThread: BackgroundThread
    private let timeout: Double
    private let stopped = Mutex(false)
    /// The submitting client's keys (ephemeral, like every key of the embedded farm).
    private let clientKeys: CurveClientKeys

    /// - log: the log for a swift-log label and a text-line prefix ("coordinator: ", "local-1: ").
    init(outputDirectory: URL, workers: Int, threads: Int?, timeout: Double,
         log: (_ label: String, _ textPrefix: String) -> FarmLog) throws {
        self.timeout = timeout
        stateDirectory = outputDirectory.appendingPathComponent(".dp-state")
        try FileManager.default.createDirectory(at: stateDirectory, withIntermediateDirectories: true)
        // Ephemeral keys, in memory only: the coordinator's port on 127.0.0.1 is open to every user of
        // the machine, so even this farm admits only its own workers and client.
        let server = try ZMQCurveKeyPair.generate()
        let workerKeys = try ZMQCurveKeyPair.generate()
        let client = try ZMQCurveKeyPair.generate()
        clientKeys = CurveClientKeys(keys: client, serverPublicKey: server.publicKey)
        var settings = CoordinatorSettings(bind: "tcp://127.0.0.1:*", stateDirectory: stateDirectory)
        // The operator's own machine: --out and --video are local paths, taken as given.
        settings.allowLocalOutputPaths = true
        // A fixed set of workers: no other worker will ever come. A frame fails once it failed on every one
        // of them (at most the farm's 3), and no worker is banned from the job (on a farm a banned worker's
        // frames wait for another; here they would wait forever and submit would never return).
        settings.maxFailedWorkersPerFrame = min(settings.maxFailedWorkersPerFrame, max(1, workers))
        settings.maxFailedFramesPerWorkerJob = Int(Int32.max)
        settings.auth = .curve(CurveAuthSettings(serverKeys: server, workers: .keys([workerKeys.publicKey]),
                                                 clients: .keys([client.publicKey])))
        coordinator = try Coordinator(settings: settings, logger: log(Coordinator.logLabel, "coordinator: "))
        let coordinator = self.coordinator
        coordinatorThread = BackgroundThread(name: "dp-coord") { try coordinator.run() }

        let totalThreads = threads ?? ProcessInfo.processInfo.activeProcessorCount
        let perWorker = Self.split(threads: totalThreads, workers: workers)
        var services: [WorkerService] = []
        var workerThreads: [BackgroundThread] = []
        let workerContext = try ZMQContext()  // one ZeroMQ context (one I/O thread) for all local workers
        for i in 0..<workers {
            let name = "local-\(i + 1)"
            var ws = WorkerSettings(connect: coordinator.endpoint, name: name,
                                    cacheDirectory: stateDirectory.appendingPathComponent("workers/\(name)/models"))
            ws.threads = perWorker[i]
            ws.curve = CurveClientKeys(keys: workerKeys, serverPublicKey: server.publicKey)
            let service = try WorkerService(settings: ws, renderer: PipelineFrameRenderer(), context: workerContext,
                                            logger: log(WorkerService.logLabel, "\(name): "))
            services.append(service)
            workerThreads.append(BackgroundThread(name: "dp-worker-\(name)") { try service.run() })
        }
        self.services = services
        self.workerThreads = workerThreads
    }

    /// `total` engine threads shared by `workers`: every worker gets at least one, the first ones any remainder.
    static func split(threads total: Int, workers: Int) -> [Int] {
        let base = max(1, total / workers)
        let extra = total > workers ? total % workers : 0
        return (0..<workers).map { base + ($0 < extra ? 1 : 0) }
    }

    /// Submits the job to the embedded coordinator and follows it to the end; returns the final job state.
    func runJob(_ job: JobSubmission, display: FollowDisplay) throws -> String {
        let client = try FarmClient(endpoint: coordinator.endpoint, timeoutSeconds: timeout, curve: clientKeys)
        defer { client.close() }
        let id = try client.submit(job, onUpload: { display.upload($0) })
        if display.mode == .json { display.emit(["event": "submitted", "job": id]) }
        try client.follow(job: id) { display.handle($0) }
        guard let state = display.finalState else {
            throw CLIError("the embedded coordinator stopped sending events before job \(id) finished")
        }
        return state
    }

    /// Stops the workers (each hands back what it holds), then the coordinator, and waits for their threads.
    func shutdown() {
        let first = stopped.withLock { stopped in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        for s in services { s.shutdown(handBack: true) }
        for t in workerThreads {
            let r = t.join(timeout: 30)
            if let e = r.error { FileHandle.standardError.write(Data("worker stopped with an error: \(e)\n".utf8)) }
        }
        coordinator.shutdown()
        if let e = coordinatorThread.join(timeout: 30).error {
            FileHandle.standardError.write(Data("coordinator stopped with an error: \(e)\n".utf8))
        }
    }
}

import Dispatch
import Foundation
import Synchronization

/// Runs `handler` (once) on a background queue when SIGTERM or SIGINT arrives; the default actions of both
/// signals are ignored from then on, so the process shuts down through `handler`, not by being killed.
/// A second signal while the handler runs exits at once (code 130), for an impatient Ctrl-C.
final class SignalTrap {
    private var sources: [DispatchSourceSignal] = []
    private let queue = DispatchQueue(label: "dp-coord.signals")
    private var fired = false

    /// - repeats: every signal runs `handler` again (SIGHUP: reload), none exits.
    init(_ signals: [Int32] = [SIGTERM, SIGINT], repeats: Bool = false, handler: @escaping @Sendable (Int32) -> Void) {
        for sig in signals {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler { [weak self] in
                guard let self else { return }
                if repeats {
                    handler(sig)
                    return
                }
                if self.fired {
                    FileHandle.standardError.write(Data("second signal: exiting now\n".utf8))
                    exit(130)
                }
                self.fired = true
                // Run the handler off the signal queue so a second signal is still seen.
                DispatchQueue.global().async { handler(sig) }
            }
            source.resume()
            sources.append(source)
        }
    }

    func cancel() {
        for s in sources { s.cancel() }
        sources.removeAll()
    }
}

/// Runs `body` on a thread of its own with a large stack (the engine recurses through networks), and lets
/// the caller wait for it.
final class BackgroundThread: Sendable {
    private final class State: Sendable {
        let error = Mutex<(any Error)?>(nil)
        let done = DispatchSemaphore(value: 0)
    }
    private let state: State

    init(name: String, _ body: @escaping @Sendable () throws -> Void) {
        let state = State()
        self.state = state
        let thread = Thread {
            do { try body() } catch { state.error.withLock { $0 = error } }
            state.done.signal()
        }
        thread.name = name
        thread.stackSize = 16 << 20
        thread.start()
    }

    /// Waits until the body returned (false after `timeout` seconds), and returns its error if any.
    @discardableResult
    func join(timeout: Double? = nil) -> (finished: Bool, error: Error?) {
        if let timeout {
            if state.done.wait(timeout: .now() + timeout) == .timedOut { return (false, nil) }
        } else {
            state.done.wait()
        }
        state.done.signal()  // later joins return at once
        return (true, state.error.withLock { $0 })
    }
}

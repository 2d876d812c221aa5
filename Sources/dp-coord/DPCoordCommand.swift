import ArgumentParser
import DPCLISupport
import DPCoordinator
import DPFileKit
import DPLog
import DPPipeline
import DPTransport
import Foundation

/// `dp-coord`: the render farm's coordinator (`serve`) and its clients (`submit`, `status`, `cancel`, `workers`).
struct DPCoordCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dp-coord",
        abstract: "Run a DreamPose render farm coordinator, or submit and watch jobs.",
        subcommands: [Serve.self, Submit.self, Status.self, Cancel.self, Workers.self, Finalize.self, Health.self,
                      Keygen.self])

    /// The coordinator a client command talks to: `--coordinator`, else `$DP_COORDINATOR`, else local port 5555.
    static func coordinatorEndpoint(_ option: String?) -> String {
        givenCoordinator(option) ?? "tcp://127.0.0.1:5555"
    }

    /// `--coordinator`, else `$DP_COORDINATOR`, else nil: the one rule every client command follows (`submit`
    /// renders with an embedded farm when it is nil; the others talk to local port 5555).
    static func givenCoordinator(_ option: String?) -> String? {
        if let option, !option.isEmpty { return option }
        if let env = ProcessInfo.processInfo.environment["DP_COORDINATOR"], !env.isEmpty { return env }
        return nil
    }

    static func stderrLine(_ s: String) {
        FileHandle.standardError.write(Data((s + "\n").utf8))
    }
}

struct ClientOptions: ParsableArguments {
    @Option(help: "Coordinator endpoint (default: $DP_COORDINATOR, else tcp://127.0.0.1:5555).")
    var coordinator: String?
    @Option(help: "Seconds to wait for the coordinator's reply.") var timeout: Double = 30
    @OptionGroup var keys: ClientKeyOptions

    func client() throws -> FarmClient {
        try FarmClient(endpoint: DPCoordCommand.coordinatorEndpoint(coordinator), timeoutSeconds: timeout,
                       curve: keys.load())
    }
}

/// `--key` / `--server-key` of the client commands (a client key: `dp-coord keygen`).
struct ClientKeyOptions: ParsableArguments {
    @Option(help: "This client's secret key file (NAME.key from `dp-coord keygen NAME`; default: $DP_CLIENT_KEY).")
    var key: String?
    @Option(name: .customLong("server-key"),
            help: "The coordinator's public key file, pinned (its NAME.pub; default: $DP_SERVER_KEY).")
    var serverKey: String?

    /// The keys, or nil when neither is given (a coordinator run with --insecure-no-auth).
    func load() throws -> CurveClientKeys? {
        let env = ProcessInfo.processInfo.environment
        let key = self.key ?? env["DP_CLIENT_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        let server = serverKey ?? env["DP_SERVER_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        switch (key, server) {
        case (nil, nil): return nil
        case let (k?, s?):
            do { return try CurveClientKeys.load(keyFile: k, serverKeyFile: s) } catch { throw CLIError("\(error)") }
        case (nil, _): throw CLIError("--server-key needs --key (this client's secret key file)")
        case (_, nil): throw CLIError("--key needs --server-key (the coordinator's public key file)")
        }
    }
}

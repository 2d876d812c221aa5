import ArgumentParser

/// `dp-worker`: renders DreamPose frames, alone (`render`) or for a coordinator (`serve`).
struct DPWorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dp-worker",
        abstract: "Render DreamPose frames on this machine.",
        subcommands: [RenderCommand.self])
}

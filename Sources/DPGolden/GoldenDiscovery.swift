import Foundation

extension GoldenCase {
    /// The golden root: `$DP_GOLDEN_DIR`, else `<repo>/../shared/golden` (the layout CI and sessions use).
    public static var goldenRoot: URL {
        if let env = ProcessInfo.processInfo.environment["DP_GOLDEN_DIR"], !env.isEmpty {
            return URL(fileURLWithPath: env).standardizedFileURL
        }
        return URL(fileURLWithPath: #filePath)            // <repo>/Sources/DPGolden/GoldenDiscovery.swift
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("../shared/golden").standardizedFileURL
    }

    /// Every case folder under `root` (a folder holding manifest.json), loaded, sorted by folder name,
    /// optionally only those of one manifest `format`. A missing root is an error, not an empty list:
    /// golden checks must not pass by finding nothing.
    public static func discover(format: String? = nil, root: URL = goldenRoot) throws -> [GoldenCase] {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: root.path) else {
            throw GoldenError.io(file: root.path, reason: "golden directory not found (set DP_GOLDEN_DIR)")
        }
        return try names.sorted().compactMap { name -> GoldenCase? in
            let dir = root.appendingPathComponent(name)
            guard fm.fileExists(atPath: dir.appendingPathComponent("manifest.json").path) else { return nil }
            let golden = try GoldenCase(directory: dir)
            return format == nil || golden.format == format ? golden : nil
        }
    }

    /// The case's name (its folder name).
    public var name: String { directory.lastPathComponent }

    /// Whether the manifest lists a tensor called `name`.
    public func hasTensor(_ name: String) -> Bool { tensors[name] != nil }

    /// Every tensor name the manifest lists.
    public var tensorNames: [String] { tensors.keys.sorted() }
}

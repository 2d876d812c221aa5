// dp-fuzz: runs one fuzz target (DPFuzzTargets) under libFuzzer, or replays inputs through it.
//
//   dp-fuzz --list                            the targets
//   dp-fuzz replay TARGET FILE|DIR...         each input once, no fuzzer: prints accepted/rejected per file
//   DP_FUZZ_TARGET=TARGET dp-fuzz [libFuzzer flags] [CORPUS_DIR...]
//                                             (only in the build of Scripts/fuzz.sh, compiled with
//                                             -sanitize=fuzzer,address -DDP_LIBFUZZER)
//
// The libFuzzer build links libFuzzer's own `main` too; this executable's entry point wins (the link uses
// --allow-multiple-definition) and calls LLVMFuzzerRunDriver, so one binary serves every target. In case
// libFuzzer's `main` is the one linked, LLVMFuzzerTestOneInput dispatches on DP_FUZZ_TARGET as well.
import DPFuzzTargets
import Foundation

#if DP_LIBFUZZER
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

/// The target DP_FUZZ_TARGET names, looked up at first use (a global let: initialised once, thread-safe).
let selectedTarget: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["DP_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTargets.target(named: name) else {
        FileHandle.standardError.write(Data("dp-fuzz: set DP_FUZZ_TARGET to one of: \(FuzzTargets.all.map(\.name).joined(separator: ", "))\n".utf8))
        exit(2)
    }
    return target
}()

func selectTarget() -> FuzzTarget { selectedTarget }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    let data = bytes.map { Data(bytes: $0, count: count) } ?? Data()
    _ = selectTarget().run(data)
    return 0
}
#endif

@main
struct FuzzDriver {
    static func main() {
        let args = CommandLine.arguments
        if args.count >= 2, args[1] == "--list" {
            for t in FuzzTargets.all { print("\(t.name)\t\(t.summary)") }
            return
        }
        if args.count >= 3, args[1] == "replay" {
            exit(replay(target: args[2], paths: Array(args.dropFirst(3))))
        }
        #if DP_LIBFUZZER
        _ = selectTarget()
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { bytes, count in fuzzOneInput(bytes, count) })
        #else
        FileHandle.standardError.write(Data("""
            usage: dp-fuzz --list | dp-fuzz replay TARGET FILE|DIR...
            (fuzzing needs the libFuzzer build: Scripts/fuzz.sh)

            """.utf8))
        exit(2)
        #endif
    }

    /// Runs every file (directories: every file in them) once; 0 unless a file could not be read.
    static func replay(target name: String, paths: [String]) -> Int32 {
        guard let target = FuzzTargets.target(named: name) else {
            FileHandle.standardError.write(Data("dp-fuzz: unknown target '\(name)' (\(FuzzTargets.all.map(\.name).joined(separator: ", ")))\n".utf8))
            return 2
        }
        var files: [String] = []
        for path in paths {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                FileHandle.standardError.write(Data("dp-fuzz: \(path) does not exist\n".utf8))
                return 2
            }
            if isDir.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
                files += names.filter { !$0.hasPrefix(".") }.sorted().map { path + "/" + $0 }
            } else {
                files.append(path)
            }
        }
        var accepted = 0, rejected = 0
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else {
                FileHandle.standardError.write(Data("dp-fuzz: cannot read \(file)\n".utf8))
                return 2
            }
            switch target.run(data) {
            case .accepted:
                accepted += 1
                print("accepted \(file)")
            case .rejected(let why):
                rejected += 1
                print("rejected \(file): \(why.prefix(300))")
            }
        }
        FuzzTargets.stopCoordinator()
        print("\(name): \(files.count) inputs, \(accepted) accepted, \(rejected) rejected, 0 crashes")
        return 0
    }
}

// Reading a golden case directory (shared/golden/README.md): manifest.json in either the
// unit format "dreampose-golden/1" (a list of cases) or the pipeline format
// "dreampose-pipeline-golden/1" (one DreamPose job; unit-style entries are derived from it),
// and its raw little-endian float32 tensors (shape from the manifest).

import DPTensor
import Foundation

public enum GoldenError: Error, CustomStringConvertible {
    case io(file: String, reason: String)
    case malformed(file: String, reason: String)
    case unknownTensor(manifest: String, name: String)
    case missingField(caseName: String, field: String)

    public var description: String {
        switch self {
        case let .io(file, reason): return "\(file): \(reason)"
        case let .malformed(file, reason): return "\(file): malformed: \(reason)"
        case let .unknownTensor(manifest, name): return "\(manifest): no tensor named \"\(name)\""
        case let .missingField(caseName, field): return "case \(caseName): missing or invalid field \"\(field)\""
        }
    }
}

/// One tensor listed in a manifest's "tensors".
public struct GoldenTensorInfo {
    public let name: String
    /// Path relative to the case directory.
    public let file: String
    public let shape: [Int]
    /// "input", "expected" or "intermediate".
    public let role: String
    /// How far diffusers' own float32 run is from the float64 reference (when given).
    public let torchFP32MaxAbsDiff: Double?
}

/// One case: a `kind` a handler knows how to run, and its free-form fields.
public struct GoldenEntry {
    public let name: String
    public let kind: String
    /// The case's JSON object ("inputs", "outputs", "intermediates", "timestep", "model", ...).
    public let fields: JSONValue

    public init(name: String, kind: String, fields: JSONValue) {
        self.name = name
        self.kind = kind
        self.fields = fields
    }

    /// Tensor names of an input role: a string, or a list (concatenated along axis 0).
    public func inputNames(_ role: String) -> [String]? {
        guard let v = fields["inputs"]?[role] else { return nil }
        if let s = v.string { return [s] }
        return v.array?.compactMap(\.string)
    }

    /// role -> expected tensor name.
    public var outputs: [String: String] { fields["outputs"]?.stringMap ?? [:] }
    /// module name (as the networks report it) -> expected tensor name.
    public var intermediates: [String: String] { fields["intermediates"]?.stringMap ?? [:] }
}

public final class GoldenCase {
    public static let unitFormat = "dreampose-golden/1"
    public static let pipelineFormat = "dreampose-pipeline-golden/1"

    public let directory: URL
    public let format: String
    public let manifest: JSONValue
    public let tensors: [String: GoldenTensorInfo]
    /// The cases: the manifest's "cases" (unit format) or those derived from the job (pipeline format).
    public let entries: [GoldenEntry]

    var manifestPath: String { directory.appendingPathComponent("manifest.json").path }

    /// Reads `directory/manifest.json`.
    public init(directory: URL) throws {
        self.directory = directory
        let path = directory.appendingPathComponent("manifest.json")
        let data: Data
        do { data = try Data(contentsOf: path) } catch {
            throw GoldenError.io(file: path.path, reason: "cannot read: \(error.localizedDescription)")
        }
        do { manifest = try JSONDecoder().decode(JSONValue.self, from: data) } catch {
            throw GoldenError.malformed(file: path.path, reason: "not JSON: \(error)")
        }
        guard let format = manifest["format"]?.string else {
            throw GoldenError.malformed(file: path.path, reason: "no \"format\" string")
        }
        self.format = format
        var infos: [String: GoldenTensorInfo] = [:]
        for (name, t) in manifest["tensors"]?.object ?? [:] {
            guard let file = t["file"]?.string, let dims = t["shape"]?.array else {
                throw GoldenError.malformed(file: path.path, reason: "tensor \(name) lacks file/shape")
            }
            let shape = dims.compactMap(\.int)
            guard shape.count == dims.count else {
                throw GoldenError.malformed(file: path.path, reason: "tensor \(name) has shape \(dims)")
            }
            if let dtype = t["dtype"]?.string, dtype != "float32" {
                throw GoldenError.malformed(file: path.path, reason: "tensor \(name) has dtype \(dtype), expected float32")
            }
            infos[name] = GoldenTensorInfo(name: name, file: file, shape: shape,
                                           role: t["role"]?.string ?? "", 
                                           torchFP32MaxAbsDiff: t["torch_fp32_max_abs_diff"]?.double)
        }
        tensors = infos
        switch format {
        case Self.unitFormat:
            guard let cases = manifest["cases"]?.array else {
                throw GoldenError.malformed(file: path.path, reason: "no \"cases\" list")
            }
            entries = try cases.enumerated().map { i, c in
                guard let name = c["name"]?.string, let kind = c["kind"]?.string else {
                    throw GoldenError.malformed(file: path.path, reason: "case \(i) lacks name/kind")
                }
                return GoldenEntry(name: name, kind: kind, fields: c)
            }
        case Self.pipelineFormat:
            entries = Self.pipelineEntries(manifest)
        default:
            throw GoldenError.malformed(file: path.path, reason:
                "format \"\(format)\", expected \"\(Self.unitFormat)\" or \"\(Self.pipelineFormat)\"")
        }
    }

    /// A path inside the case directory.
    public func url(_ relative: String) -> URL { directory.appendingPathComponent(relative) }

    /// Loads one tensor by its manifest name.
    public func tensor(_ name: String) throws -> Tensor {
        guard let info = tensors[name] else {
            throw GoldenError.unknownTensor(manifest: manifestPath, name: name)
        }
        let file = url(info.file)
        let data: Data
        do { data = try Data(contentsOf: file, options: .mappedIfSafe) } catch {
            throw GoldenError.io(file: file.path, reason: "cannot read tensor \(name): \(error.localizedDescription)")
        }
        let count = info.shape.reduce(1, *)
        guard data.count == 4 * count else {
            throw GoldenError.malformed(file: file.path, reason:
                "\(data.count) bytes, shape \(info.shape) needs \(4 * count)")
        }
        let values = [Float](unsafeUninitializedCapacity: count) { buf, n in
            data.withUnsafeBytes { raw in
                for i in 0..<count {
                    buf[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                }
            }
            n = count
        }
        return Tensor(shape: info.shape, data: values)
    }

    /// The tensor(s) of an input role, concatenated along axis 0 when the role lists several.
    public func input(_ entry: GoldenEntry, _ role: String) throws -> Tensor {
        guard let names = entry.inputNames(role), !names.isEmpty else {
            throw GoldenError.missingField(caseName: entry.name, field: "inputs.\(role)")
        }
        let parts = try names.map { try tensor($0) }
        return parts.count == 1 ? parts[0] : concat(parts, axis: 0)
    }

    /// The model files of a case: its own "config"/"weights" fields, else
    /// manifest.models[case.model].{config, weights}.
    public func modelFiles(for entry: GoldenEntry) throws -> (config: URL, weights: URL) {
        if let c = entry.fields["config"]?.string, let w = entry.fields["weights"]?.string {
            return (url(c), url(w))
        }
        guard let model = entry.fields["model"]?.string else {
            throw GoldenError.missingField(caseName: entry.name, field: "model (or config + weights)")
        }
        return try modelFiles(named: model)
    }

    /// manifest.models[model].{config, weights} (unit format: "unet", "vae").
    public func modelFiles(named model: String) throws -> (config: URL, weights: URL) {
        guard let m = manifest["models"]?[model], let c = m["config"]?.string, let w = m["weights"]?.string else {
            throw GoldenError.malformed(file: manifestPath, reason: "models.\(model) lacks config/weights")
        }
        return (url(c), url(w))
    }

    // MARK: - Pipeline format

    /// Unit-style entries derived from a pipeline manifest, checking each network on the job's
    /// own tensors, plus one "dreampose_pipeline" entry for the whole job (a handler for it is
    /// registered by the pipeline's tests/tools):
    ///  * clip_vision: clip_pixel_values -> c_clip (last_hidden_state) with model/image_encoder;
    ///  * unet_forward per frame that has unet_in_step0/unet_out_step0: the 3-row batch at the
    ///    first timestep with contexts [c_0, c_I, c_I] (rows (x,0,c_0) (x,pose,c_I) (x,0,c_I));
    ///  * vae_decode per frame: latents_final / scaling_factor (the VAE config's) -> decoded.
    static func pipelineEntries(_ m: JSONValue) -> [GoldenEntry] {
        let modelDir = m["model"]?["dir"]?.string ?? "model"
        let expected = m["expected"]
        var out: [GoldenEntry] = []
        if let pv = expected?["clip_pixel_values"]?.string, let cClip = expected?["c_clip"]?.string {
            out.append(GoldenEntry(name: "pipeline_clip_vision", kind: "clip_vision", fields: .object([
                "config": .string(modelDir + "/image_encoder/config.json"),
                "weights": .string(modelDir + "/image_encoder/model.safetensors"),
                "inputs": .object(["pixel_values": .string(pv)]),
                "outputs": .object(["last_hidden_state": .string(cClip)]),
            ])))
        }
        let unetModel: [String: JSONValue] = [
            "config": .string(modelDir + "/unet/config.json"),
            "weights": .string(modelDir + "/unet/diffusion_pytorch_model.safetensors"),
        ]
        let vaeModel: [String: JSONValue] = [
            "config": .string(modelDir + "/vae/config.json"),
            "weights": .string(modelDir + "/vae/diffusion_pytorch_model.safetensors"),
        ]
        let firstTimestep = m["pipeline"]?["first_timestep"] ?? m["pipeline"]?["timesteps"]?[0]
        for frame in m["frames"]?.array ?? [] {
            guard let n = frame["n"]?.int, let t = frame["tensors"] else { continue }
            if let xin = t["unet_in_step0"]?.string, let eout = t["unet_out_step0"]?.string,
               let c0 = expected?["c_0"]?.string, let cI = expected?["c_I"]?.string,
               let ts = firstTimestep {
                var f = unetModel
                f["timestep"] = ts
                f["inputs"] = .object(["sample": .string(xin),
                                       "encoder_hidden_states": .array([.string(c0), .string(cI), .string(cI)])])
                f["outputs"] = .object(["sample": .string(eout)])
                out.append(GoldenEntry(name: "pipeline_frame\(n)_unet_step0", kind: "unet_forward",
                                       fields: .object(f)))
            }
            if let lat = t["latents_final"]?.string, let dec = t["decoded"]?.string {
                var f = vaeModel
                f["divide_by_scaling_factor"] = .bool(true)     // vae config's scaling_factor
                f["inputs"] = .object(["z": .string(lat)])
                f["outputs"] = .object(["sample": .string(dec)])
                out.append(GoldenEntry(name: "pipeline_frame\(n)_vae_decode", kind: "vae_decode",
                                       fields: .object(f)))
            }
        }
        out.append(GoldenEntry(name: "pipeline_job", kind: "dreampose_pipeline", fields: m))
        return out
    }
}

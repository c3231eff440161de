#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A PEFT LoRA adapter folder as a merge input: `adapter_config.json` (`peft_type` LORA)
/// and `adapter_model.safetensors`.
///
/// The task vector of an adapted weight is `scaling * (B @ A)` (transposed for
/// `fan_in_fan_out` and for embeddings), computed tile by tile inside the merge tiles
/// (`LoraTaskVector`), never as a whole matrix; a module in `modules_to_save` contributes
/// `saved - base`; every other tensor of the base has a zero task vector. The order of the
/// float32 operations is in `formats/methods.md`.
///
/// Keys are PEFT's, `base_model.model.<module>.lora_A.weight` and the like, with or
/// without an adapter name (`lora_A.default.weight`); they map to the base's
/// `<module>.weight`.
public final class LoraAdapter: MergeInput, @unchecked Sendable {
    /// The config file of an adapter folder.
    public static let configFileName = "adapter_config.json"
    /// The weights file of an adapter folder.
    public static let weightsFileName = "adapter_model.safetensors"

    /// Whether `path` is a folder holding an adapter config.
    public static func isAdapterFolder(_ path: String) -> Bool {
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else { return false }
        return access("\(path)/\(configFileName)", F_OK) == 0
    }

    /// What an adapter does to one base tensor.
    enum Update {
        /// `scaling * (B @ A)` on a 2-D weight.
        case lowRank(module: String, a: TensorInfo, b: TensorInfo, embedding: Bool)
        /// A full tensor saved by the adapter (`modules_to_save`): `saved - base`.
        case full(TensorInfo)
    }

    public let path: String
    /// The adapter's config.
    public let config: LoraAdapterConfig
    /// The adapter's weights.
    public let weights: SafetensorsFile
    /// Base tensor name to its update.
    let updates: [String: Update]
    /// Base tensor names in the order the adapter stores them.
    let targets: [String]

    /// Opens and checks the adapter folder at `path`: its config, and the keys of its
    /// weights (every key is a LoRA factor with its partner, or a saved full tensor).
    /// Shapes are checked against a base by `checkCompatible`.
    public init(path: String) throws {
        self.path = path
        config = try LoraAdapterConfig(path: "\(path)/\(Self.configFileName)")
        let weightsPath = "\(path)/\(Self.weightsFileName)"
        guard access(weightsPath, F_OK) == 0 else {
            for other in ["adapter_model.bin", "adapter_model.pt", "pytorch_model.bin"] where access("\(path)/\(other)", F_OK) == 0 {
                throw NegPatchError(.invalidArgument, file: "\(path)/\(other)",
                                    "unsupported adapter: .bin (pickle) weights are not read; save the adapter with safe_serialization=True (\(Self.weightsFileName))")
            }
            throw NegPatchError(.malformed, file: path, "adapter folder holds \(Self.configFileName) but no \(Self.weightsFileName)")
        }
        weights = try SafetensorsFile(path: weightsPath)
        (updates, targets) = try Self.parseKeys(weights)
    }

    /// One key of the weights file, split into module and role.
    private enum Key {
        case factor(module: String, role: String, adapter: String?)
        case saved(target: String, adapter: String?)
    }

    private static let factorRoles: Set<String> = ["lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"]

    private static func parseKey(_ key: String, file: String) throws -> Key {
        var name = Substring(key)
        if name.hasPrefix("base_model.model.") { name = name.dropFirst("base_model.model.".count) }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        // <module>.lora_A[.<adapter>].weight and <module>.lora_embedding_A[.<adapter>]
        if let r = parts.lastIndex(where: { factorRoles.contains($0) }), r > 0 {
            let role = parts[r], tail = Array(parts[(r + 1)...])
            let embedding = role.hasPrefix("lora_embedding")
            let adapter: String?
            switch (embedding, tail.count) {
            case (false, 1) where tail[0] == "weight": adapter = nil
            case (false, 2) where tail[1] == "weight": adapter = tail[0]
            case (true, 0): adapter = nil
            case (true, 1): adapter = tail[0]
            default:
                throw NegPatchError(.invalidArgument, file: file, tensor: key, "unsupported adapter: a LoRA key of an unknown form (bias training or another kind of adapter?)")
            }
            return .factor(module: parts[..<r].joined(separator: "."), role: role, adapter: adapter)
        }
        if parts.contains(where: { $0.hasPrefix("lora_") }) {
            let what = parts.contains("lora_magnitude_vector") ? "a DoRA magnitude vector" : "a LoRA key of an unknown kind"
            throw NegPatchError(.invalidArgument, file: file, tensor: key, "unsupported adapter: \(what)")
        }
        if let m = parts.firstIndex(of: "modules_to_save"), m > 0, parts.count >= m + 3 {
            return .saved(target: (parts[..<m] + parts[(m + 2)...]).joined(separator: "."), adapter: parts[m + 1])
        }
        // PEFT saves a modules_to_save copy (and resized embeddings) under the base's own name.
        return .saved(target: String(name), adapter: nil)
    }

    private static func parseKeys(_ weights: SafetensorsFile) throws -> ([String: Update], [String]) {
        let file = weights.path
        var factors: [String: [String: TensorInfo]] = [:]
        var moduleOrder: [String] = []
        var updates: [String: Update] = [:]
        var targets: [String] = []
        var adapterName: String?? = nil
        func note(_ adapter: String?, _ key: String) throws {
            if let seen = adapterName, seen != adapter {
                throw NegPatchError(.invalidArgument, file: file, tensor: key,
                                    "unsupported adapter: keys of several adapters ('\(seen ?? "")' and '\(adapter ?? "")'); merge one adapter per folder")
            }
            adapterName = .some(adapter)
        }
        for tensor in weights.tensors {
            guard tensor.dtype.isFloating else {
                throw NegPatchError(.malformed, file: file, tensor: tensor.name, "adapter tensor of dtype \(tensor.dtype), expected a floating dtype")
            }
            switch try parseKey(tensor.name, file: file) {
            case let .factor(module, role, adapter):
                try note(adapter, tensor.name)
                if factors[module] == nil { moduleOrder.append(module) }
                guard factors[module, default: [:]].updateValue(tensor, forKey: role) == nil else {
                    throw NegPatchError(.malformed, file: file, tensor: tensor.name, "\(role) of module '\(module)' is stored twice")
                }
            case let .saved(target, adapter):
                if adapter != nil { try note(adapter, tensor.name) }
                guard updates.updateValue(.full(tensor), forKey: target) == nil else {
                    throw NegPatchError(.malformed, file: file, tensor: tensor.name, "a second saved copy of '\(target)'")
                }
                targets.append(target)
            }
        }
        for module in moduleOrder {
            let roles = factors[module]!
            let embedding = roles.keys.contains { $0.hasPrefix("lora_embedding") }
            let (aRole, bRole) = embedding ? ("lora_embedding_A", "lora_embedding_B") : ("lora_A", "lora_B")
            guard roles.count == 2, let a = roles[aRole], let b = roles[bRole] else {
                let key = roles.values.first!.name
                throw NegPatchError(.malformed, file: file, tensor: key,
                                    "module '\(module)' has \(roles.keys.sorted().joined(separator: " and ")), expected \(aRole) and \(bRole)")
            }
            let target = "\(module).weight"
            guard updates.updateValue(.lowRank(module: module, a: a, b: b, embedding: embedding), forKey: target) == nil else {
                throw NegPatchError(.malformed, file: file, tensor: a.name, "module '\(module)' is both adapted and saved whole")
            }
            targets.append(target)
        }
        return (updates, targets)
    }

    public func checkCompatible(base: Checkpoint) throws {
        let file = weights.path
        for target in targets {
            let update = updates[target]!
            let key: String
            switch update {
            case let .lowRank(_, a, _, _): key = a.name
            case let .full(saved): key = saved.name
            }
            guard let tensor = base.tensor(named: target) else {
                throw NegPatchError(.mismatch, file: file, tensor: key, "targets '\(target)', which the base \(base.path) does not have")
            }
            let shape = tensor.info.shape
            guard tensor.info.dtype.isFloating else {
                throw NegPatchError(.mismatch, file: file, tensor: key, "targets '\(target)', a \(tensor.info.dtype) tensor of the base (not floating)")
            }
            switch update {
            case let .full(saved):
                guard saved.shape == shape else {
                    throw NegPatchError(.mismatch, file: file, tensor: key,
                                        "shape \(describeShape(saved.shape)) differs from \(describeShape(shape)) of '\(target)' in \(base.file(of: tensor))")
                }
            case let .lowRank(module, a, b, embedding):
                guard shape.count == 2 else {
                    throw NegPatchError(.invalidArgument, file: file, tensor: key,
                                        "unsupported adapter: LoRA on the \(shape.count)-D weight '\(target)' (only 2-D weights and embeddings are merged)")
                }
                let (rank, _) = config.rankAndScaling(module: module)
                let layout = LoraTaskVector.Layout(embedding: embedding, fanInFanOut: config.fanInFanOut)
                // A is (r, in) and B is (out, r); the weight is (out, in), or (in, out) when
                // stored transposed; an embedding is (vocab, dim) with A (r, vocab), B (dim, r).
                let (rows, columns) = layout == .bRows ? (b.shape.first, a.shape.last) : (a.shape.last, b.shape.first)
                guard a.shape.count == 2, b.shape.count == 2, a.shape[0] == b.shape[1] else {
                    throw NegPatchError(.mismatch, file: file, tensor: key,
                                        "A \(describeShape(a.shape)) and B \(describeShape(b.shape)) of module '\(module)' do not multiply")
                }
                guard a.shape[0] == rank else {
                    throw NegPatchError(.mismatch, file: file, tensor: key,
                                        "rank \(a.shape[0]) differs from the config's rank \(rank) for module '\(module)' (r, rank_pattern)")
                }
                guard [rows ?? -1, columns ?? -1] == shape else {
                    let update = layout == .bRows ? "B @ A" : "(B @ A)^T"
                    throw NegPatchError(.mismatch, file: file, tensor: key,
                                        "\(update) has shape \(describeShape([rows ?? 0, columns ?? 0])) but '\(target)' has \(describeShape(shape)) in \(base.file(of: tensor))"
                                        + (embedding ? "" : config.fanInFanOut ? " (fan_in_fan_out is set)" : " (is fan_in_fan_out missing?)"))
                }
            }
        }
    }

    public func taskVector(of tensor: CheckpointTensor, base: Checkpoint, nonFinite: UnsafeMutablePointer<UInt8>?) -> any TaskVectorSource {
        let name = tensor.info.name
        switch updates[name] {
        case nil:
            return ZeroTaskVector(name: name, shape: tensor.info.shape, dtype: tensor.info.dtype)
        case let .full(saved)?:
            return StoredTaskVector(name: name, shape: tensor.info.shape, ft: TensorSource(file: weights.file, tensor: saved, nonFinite: nonFinite))
        case let .lowRank(module, a, b, embedding)?:
            let (rank, scaling) = config.rankAndScaling(module: module)
            return LoraTaskVector(name: name, shape: tensor.info.shape, dtype: tensor.info.dtype,
                                  a: TensorSource(file: weights.file, tensor: a), b: TensorSource(file: weights.file, tensor: b),
                                  rank: rank, scaling: Float(scaling),
                                  layout: LoraTaskVector.Layout(embedding: embedding, fanInFanOut: config.fanInFanOut), nonFinite: nonFinite)
        }
    }

    public func firstNonFinite(tensor name: String) -> NegPatchError? {
        guard let update = updates[name] else { return nil }
        let stored: [TensorInfo]
        switch update {
        case let .full(saved): stored = [saved]
        case let .lowRank(_, a, b, _): stored = [a, b]
        }
        for info in stored {
            let data = weights.data(info)
            guard let start = data.baseAddress,
                  let bad = FiniteValues.firstNonFinite(start, dtype: info.dtype, count: info.elementCount) else { continue }
            return NegPatchError(.invalidValue, file: weights.path, tensor: info.name,
                                 "non-finite value \(FiniteValues.value(start, dtype: info.dtype, at: bad)) at "
                                 + "\(FiniteValues.describe(element: bad, shape: info.shape)) (use --allow-nonfinite to merge anyway)")
        }
        guard case let .lowRank(module, a, b, embedding) = update else { return nil }
        // Finite factors whose product overflows: find the element.
        let (rank, scaling) = config.rankAndScaling(module: module)
        let rows = embedding || config.fanInFanOut ? a.shape[1] : b.shape[0]
        let columns = embedding || config.fanInFanOut ? b.shape[0] : a.shape[1]
        let source = LoraTaskVector(name: name, shape: [rows, columns], dtype: .F32,
                                    a: TensorSource(file: weights.file, tensor: a), b: TensorSource(file: weights.file, tensor: b),
                                    rank: rank, scaling: Float(scaling),
                                    layout: LoraTaskVector.Layout(embedding: embedding, fanInFanOut: config.fanInFanOut), nonFinite: nil)
        var chunk = [Float](repeating: 0, count: 4096)
        let zero = [Float](repeating: 0, count: 4096)
        var offset = 0
        while offset < rows * columns {
            let count = min(chunk.count, rows * columns - offset)
            let bad: Int? = chunk.withUnsafeMutableBufferPointer { out in
                zero.withUnsafeBufferPointer { source.load(offset, count, base: $0.baseAddress!, into: out.baseAddress!) }
                return out.prefix(count).firstIndex { !$0.isFinite }
            }
            if let bad {
                return NegPatchError(.invalidValue, file: weights.path, tensor: a.name,
                                     "scaling * B @ A is not finite at \(FiniteValues.describe(element: offset + bad, shape: [rows, columns])) of '\(name)' (use --allow-nonfinite to merge anyway)")
            }
            offset += count
        }
        return nil
    }
}

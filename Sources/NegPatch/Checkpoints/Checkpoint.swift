#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A tensor of a checkpoint: its validated location and the file that holds it.
public struct CheckpointTensor: Sendable {
    /// Name, dtype, shape and byte range.
    public let info: TensorInfo
    /// Index into `Checkpoint.shards` of the file that holds it.
    public let shard: Int
}

/// A model checkpoint in safetensors form: a single `.safetensors` file, a folder with
/// `model.safetensors`, or a folder with a sharded `model.safetensors.index.json`.
///
/// Every file is memory-mapped and validated when the checkpoint is opened; tensors are
/// listed in storage order (shard by shard, by data offset within each).
public final class Checkpoint: @unchecked Sendable {
    /// How the checkpoint is laid out on disk.
    public enum Layout: Sendable, Equatable {
        /// One `.safetensors` file given directly.
        case file
        /// A folder holding `model.safetensors`.
        case folder
        /// A folder holding `model.safetensors.index.json` and the shards it names.
        case sharded
    }

    /// The name of the index file of a sharded checkpoint.
    public static let indexFileName = "model.safetensors.index.json"

    /// The path the user gave.
    public let path: String
    /// The layout found at `path`.
    public let layout: Layout
    /// The files, in order. For `.sharded`, in order of first appearance in the sorted
    /// weight map.
    public let shards: [SafetensorsFile]
    /// Every tensor, in storage order.
    public let tensors: [CheckpointTensor]
    /// The sharded layout's `model.safetensors.index.json`, kept open so that, like the
    /// shards, it counts as an input no output may replace (`OpenInputs`).
    private let indexFile: MappedFile?
    private let index: [TensorName: Int]

    /// Opens the checkpoint at `path`. Throws `NegPatchError` naming the offending file (and
    /// tensor) when any file is malformed, the weight map disagrees with the shards, or a
    /// tensor name appears twice.
    public init(path: String) throws {
        self.path = path
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw NegPatchError(.io, file: path, "cannot open checkpoint: \(systemErrorText(errno))")
        }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            let indexPath = "\(path)/\(Self.indexFileName)"
            let singlePath = "\(path)/model.safetensors"
            if access(indexPath, F_OK) == 0 {
                layout = .sharded
                indexFile = try MappedFile(path: indexPath)
                shards = try Self.openShards(folder: path, index: indexFile!)
            } else if access(singlePath, F_OK) == 0 {
                layout = .folder
                indexFile = nil
                shards = [try SafetensorsFile(path: singlePath)]
            } else {
                throw NegPatchError(.malformed, file: path, "folder holds neither model.safetensors nor \(Self.indexFileName)")
            }
        } else {
            layout = .file
            indexFile = nil
            shards = [try SafetensorsFile(path: path)]
        }
        var tensors: [CheckpointTensor] = []
        var index: [TensorName: Int] = [:]
        let total = shards.reduce(0) { $0 + $1.tensors.count }
        index.reserveCapacity(total)
        tensors.reserveCapacity(total)
        for (s, shard) in shards.enumerated() {
            for tensor in shard.tensors {
                if let previous = index[TensorName(tensor.name)] {
                    throw NegPatchError(.malformed, file: shard.path, tensor: tensor.name,
                                        "tensor also stored in \(shards[tensors[previous].shard].path)")
                }
                index[TensorName(tensor.name)] = tensors.count
                tensors.append(CheckpointTensor(info: tensor, shard: s))
            }
        }
        self.tensors = tensors
        self.index = index
        if layout == .sharded {
            try checkWeightMap()
        }
    }

    private static func openShards(folder: String, index file: MappedFile) throws -> [SafetensorsFile] {
        let indexPath = file.path
        let json: JSONValue
        do {
            json = try StrictJSON.parse(file.bytes)
        } catch {
            throw NegPatchError(.malformed, file: indexPath, "not a valid index: \(error)")
        }
        guard case let .object(map)? = json["weight_map"] else {
            throw NegPatchError(.malformed, file: indexPath, "not a valid index: missing 'weight_map' object")
        }
        var shardNames: [String] = []
        var seen = Set<TensorName>()
        for (name, value) in map.sorted(by: { $0.key.precedesByBytes($1.key) }) {
            guard let shard = value.string else {
                throw NegPatchError(.malformed, file: indexPath, tensor: name, "weight_map value is a \(value.kind), expected a file name")
            }
            guard !shard.isEmpty, !shard.contains("/"), shard != ".", shard != ".." else {
                throw NegPatchError(.malformed, file: indexPath, tensor: name, "shard '\(shard)' is not a plain file name in the checkpoint folder")
            }
            if seen.insert(TensorName(shard)).inserted { shardNames.append(shard) }
        }
        guard !shardNames.isEmpty else {
            throw NegPatchError(.malformed, file: indexPath, "weight_map is empty")
        }
        return try shardNames.map { try SafetensorsFile(path: "\(folder)/\($0)") }
    }

    private func checkWeightMap() throws {
        guard let file = indexFile else { return }
        let indexPath = file.path
        guard let json = try? StrictJSON.parse(file.bytes), case let .object(map)? = json["weight_map"] else {
            throw NegPatchError(.malformed, file: indexPath, "not a valid index")
        }
        let shardIndex = Dictionary(uniqueKeysWithValues: shards.enumerated().map { (TensorName(lastPathComponent($0.element.path)), $0.offset) })
        for (name, value) in map {
            guard let tensor = index[TensorName(name)] else {
                throw NegPatchError(.malformed, file: indexPath, tensor: name, "listed in weight_map but stored in no shard")
            }
            let expected = value.string ?? ""
            guard shardIndex[TensorName(expected)] == tensors[tensor].shard else {
                throw NegPatchError(.malformed, file: indexPath, tensor: name,
                                    "weight_map says '\(expected)' but the tensor is stored in '\(lastPathComponent(shards[tensors[tensor].shard].path))'")
            }
        }
        if map.count != tensors.count {
            let listed = Set(map.map { TensorName($0.key) })
            let extra = tensors.first { !listed.contains(TensorName($0.info.name)) }!
            throw NegPatchError(.malformed, file: shards[extra.shard].path, tensor: extra.info.name, "stored in a shard but missing from \(Self.indexFileName)")
        }
    }

    /// The tensor called `name`, if present.
    public func tensor(named name: String) -> CheckpointTensor? {
        index[TensorName(name)].map { tensors[$0] }
    }

    /// The raw bytes of `tensor`.
    public func data(_ tensor: CheckpointTensor) -> UnsafeRawBufferPointer {
        shards[tensor.shard].data(tensor.info)
    }

    /// The file that holds `tensor`.
    public func file(of tensor: CheckpointTensor) -> String {
        shards[tensor.shard].path
    }

    /// The total number of elements of floating-point tensors.
    public var floatingElementCount: Int {
        tensors.reduce(0) { $0 + ($1.info.dtype.isFloating ? $1.info.elementCount : 0) }
    }

    /// The total number of bytes of tensor data.
    public var dataByteCount: Int {
        tensors.reduce(0) { $0 + $1.info.byteCount }
    }
}

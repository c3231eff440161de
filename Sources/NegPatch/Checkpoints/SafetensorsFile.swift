/// Where one tensor's data lies in a safetensors file, after validation.
public struct TensorInfo: Sendable, Equatable {
    /// The tensor's name.
    public let name: String
    /// Its element type.
    public let dtype: DType
    /// Its shape; `[]` is a scalar of one element.
    public let shape: [Int]
    /// Number of elements (product of `shape`).
    public let elementCount: Int
    /// Absolute byte offset of its data in the file.
    public let fileOffset: Int
    /// Byte length of its data (`elementCount * dtype.size`).
    public let byteCount: Int
}

/// A memory-mapped safetensors file whose header has been fully validated.
///
/// Construction checks everything a reader must (file length, header length limit, UTF-8
/// JSON without duplicate keys, known dtypes, offsets that tile the data section exactly
/// with no gaps, overlaps or backwards ranges, and byte sizes that match the shapes with
/// overflow checks), so downstream code can trust every `TensorInfo`.
public final class SafetensorsFile: @unchecked Sendable {
    /// The largest header NegPatch accepts, as the safetensors specification does.
    public static let maxHeaderLength = 100_000_000

    /// The file's path.
    public let path: String
    /// The mapped bytes.
    public let file: MappedFile
    /// Tensors in data order (ascending offsets), which is the order they are stored in.
    public let tensors: [TensorInfo]
    /// The optional `__metadata__` map.
    public let metadata: [(key: String, value: String)]
    /// The length of the JSON header.
    public let headerLength: Int
    private let index: [TensorName: Int]

    /// Maps and validates `path`. Throws `NegPatchError` naming the file (and tensor) on the
    /// first problem found.
    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    /// Validates an already mapped file.
    public init(file: MappedFile) throws {
        self.file = file
        self.path = file.path
        let path = file.path
        let bytes = file.bytes
        func malformed(_ message: String, tensor: String? = nil) -> NegPatchError {
            NegPatchError(.malformed, file: path, tensor: tensor, "not a valid safetensors file: \(message)")
        }
        guard bytes.count >= 8 else {
            throw malformed("file is \(bytes.count) bytes, shorter than the 8-byte header length")
        }
        let declared = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        // A length that cannot be a header is most often another kind of file given where a
        // checkpoint belongs (a patch, a sharded index): say which.
        if declared > UInt64(bytes.count - 8) || declared > UInt64(Self.maxHeaderLength), let kind = Self.describeOtherKind(bytes) {
            throw NegPatchError(.malformed, file: path, "not a safetensors checkpoint: \(kind)")
        }
        guard declared <= UInt64(Self.maxHeaderLength) else {
            throw malformed("header length \(declared) exceeds the limit of \(Self.maxHeaderLength) bytes")
        }
        guard declared <= UInt64(bytes.count - 8) else {
            throw malformed("header of \(declared) bytes runs past the end of the \(bytes.count)-byte file")
        }
        let headerLength = Int(declared)
        self.headerLength = headerLength
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + headerLength)])
        let json: JSONValue
        do {
            json = try StrictJSON.parse(headerBytes)
        } catch {
            throw malformed("header is not valid JSON (\(error))")
        }
        guard case let .object(entries) = json else {
            throw malformed("header is a JSON \(json.kind), expected an object")
        }
        let dataStart = 8 + headerLength
        let dataLength = bytes.count - dataStart

        var metadata: [(key: String, value: String)] = []
        var parsed: [(info: TensorInfo, begin: Int, end: Int)] = []
        parsed.reserveCapacity(entries.count)
        for (name, value) in entries {
            if name == "__metadata__" {
                // The reference implementation reads `null` as no metadata.
                if case .null = value { continue }
                guard case let .object(pairs) = value else {
                    throw malformed("__metadata__ is a \(value.kind), expected an object of strings")
                }
                for (key, item) in pairs {
                    guard let text = item.string else {
                        throw malformed("__metadata__ value for '\(key)' is a \(item.kind), expected a string")
                    }
                    metadata.append((key, text))
                }
                continue
            }
            guard case .object = value else {
                throw malformed("entry is a \(value.kind), expected an object", tensor: name)
            }
            guard let dtypeName = value["dtype"]?.string else {
                throw malformed("missing or non-string 'dtype'", tensor: name)
            }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw malformed("unsupported dtype '\(dtypeName)'", tensor: name)
            }
            guard case let .array(dims)? = value["shape"] else {
                throw malformed("missing or non-array 'shape'", tensor: name)
            }
            var shape: [Int] = []
            for dim in dims {
                guard let d = dim.nonNegativeInt else {
                    throw malformed("shape entry \(dim.shown) is not a non-negative integer", tensor: name)
                }
                shape.append(d)
            }
            guard case let .array(offsets)? = value["data_offsets"], offsets.count == 2,
                  let begin = offsets[0].nonNegativeInt, let end = offsets[1].nonNegativeInt
            else {
                throw malformed("'data_offsets' must be two non-negative integers", tensor: name)
            }
            guard begin <= end else {
                throw malformed("data_offsets [\(begin), \(end)] run backwards", tensor: name)
            }
            guard end <= dataLength else {
                throw malformed("data_offsets [\(begin), \(end)] run past the end of the \(dataLength)-byte data section", tensor: name)
            }
            guard let elements = checkedElementCount(shape) else {
                throw malformed("shape \(describeShape(shape)) overflows", tensor: name)
            }
            guard let byteCount = dtype.byteCount(elements: elements) else {
                throw malformed(dtype.bits % 8 == 0 ? "shape \(describeShape(shape)) of \(dtype) overflows"
                                : "shape \(describeShape(shape)) of \(dtype) (\(dtype.bits) bits each) does not end on a byte boundary", tensor: name)
            }
            guard byteCount == end - begin else {
                throw malformed("data_offsets [\(begin), \(end)] hold \(end - begin) bytes but shape \(describeShape(shape)) of \(dtype) needs \(byteCount)", tensor: name)
            }
            let info = TensorInfo(name: name, dtype: dtype, shape: shape, elementCount: elements,
                                  fileOffset: dataStart + begin, byteCount: byteCount)
            parsed.append((info, begin, end))
        }
        // Offsets must tile the data section: sorted by begin, each starting where the
        // previous ended, the first at 0 and the last at the end of the file.
        // Sorted by offsets; empty tensors sharing an offset keep their header order.
        parsed = parsed.enumerated().sorted { ($0.element.begin, $0.element.end, $0.offset) < ($1.element.begin, $1.element.end, $1.offset) }
            .map(\.element)
        var cursor = 0
        for entry in parsed {
            if entry.begin < cursor {
                throw malformed("data_offsets [\(entry.begin), \(entry.end)] overlap the previous tensor, which ends at \(cursor)", tensor: entry.info.name)
            }
            if entry.begin > cursor {
                throw malformed("gap of \(entry.begin - cursor) bytes before data_offsets [\(entry.begin), \(entry.end)]", tensor: entry.info.name)
            }
            cursor = entry.end
        }
        guard cursor == dataLength else {
            throw malformed("tensor data ends at \(cursor) but the data section holds \(dataLength) bytes")
        }
        self.tensors = parsed.map(\.info)
        self.metadata = metadata
        var index: [TensorName: Int] = [:]
        index.reserveCapacity(tensors.count)
        for (i, info) in tensors.enumerated() { index[TensorName(info.name)] = i }
        self.index = index
    }

    /// What a file that is not a safetensors checkpoint looks like, when it is a kind people
    /// give by mistake: a patch (arguments swapped), or a JSON file (a sharded index, whose
    /// folder is the checkpoint).
    static func describeOtherKind(_ bytes: UnsafeRawBufferPointer) -> String? {
        let prefix = Array(bytes.prefix(16))
        if let format = PatchFormats.all.first(where: { $0.recognises(prefix) }) {
            return "it is a NegPatch patch (\(format.name) format); are --base and --patch swapped?"
        }
        if prefix.starts(with: [0x89, 0x48, 0x44, 0x46]) {
            return "it is an HDF5 file"
        }
        if let first = bytes.first(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }), first == UInt8(ascii: "{") {
            return "it is a JSON file; for a sharded checkpoint give its folder (which holds \(Checkpoint.indexFileName))"
        }
        return nil
    }

    /// The tensor called `name`, if present.
    public func tensor(named name: String) -> TensorInfo? {
        index[TensorName(name)].map { tensors[$0] }
    }

    /// The raw bytes of a tensor of this file.
    public func data(_ info: TensorInfo) -> UnsafeRawBufferPointer {
        file.slice(info.fileOffset, info.byteCount)
    }
}

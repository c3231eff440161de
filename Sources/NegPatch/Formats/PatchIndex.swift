/// What a patch says about itself: how it was made and what it should be applied to.
public struct PatchMetadata: Sendable, Equatable {
    /// The merge method's registry name, e.g. `negmerge`.
    public var method: String
    /// The method's parameters, name to JSON number or string, in a stable order.
    public var parameters: [(key: String, value: JSONValue)]
    /// How many fine-tuned checkpoints were merged.
    public var n: Int
    /// The fine-tuned checkpoints' file or folder names, in merge order.
    public var inputs: [String]
    /// The base checkpoint's file or folder name.
    public var base: String
    /// The recommended lambda for `theta = base - lambda * tau`.
    public var lambda: Double
    /// The writer, e.g. `negpatch 0.1.0`.
    public var tool: String
    /// Whether any values are stored with less than float32 precision.
    public var lossy: Bool
    /// Whether applying subtracts tau (task negation, the default) or adds it.
    public var direction: PatchDirection

    /// Creates metadata.
    public init(method: String, parameters: [(key: String, value: JSONValue)], n: Int, inputs: [String],
                base: String, lambda: Double, tool: String = NegPatchVersion.tool, lossy: Bool = false,
                direction: PatchDirection = .subtract) {
        self.method = method
        self.parameters = parameters
        self.n = n
        self.inputs = inputs
        self.base = base
        self.lambda = lambda
        self.tool = tool
        self.lossy = lossy
        self.direction = direction
    }

    public static func == (a: PatchMetadata, b: PatchMetadata) -> Bool {
        a.method == b.method && JSONValue.object(a.parameters) == JSONValue.object(b.parameters) && a.n == b.n
            && a.inputs == b.inputs && a.base == b.base && a.lambda == b.lambda && a.tool == b.tool && a.lossy == b.lossy
            && a.direction == b.direction
    }
}

/// How a patch's task vector is applied to its base.
public enum PatchDirection: String, Sendable, CaseIterable {
    /// `theta = base - lambda * tau`: task negation (NegMerge and its baselines). Patches
    /// without a recorded direction are of this kind.
    case subtract
    /// `theta = base + lambda * tau`: the inputs are already unlearned models (the SemEval
    /// way), and their merged update is added.
    case add

    /// The lambda that the subtracting kernels use to apply this direction: `lambda` for
    /// `subtract`, `-lambda` for `add` (exact: `base - (-lambda) * tau` rounds as
    /// `base + lambda * tau`).
    public func kernelLambda(_ lambda: Double) -> Double {
        self == .subtract ? lambda : -lambda
    }

    /// The update formula, `theta = base - lambda * tau` or `theta = base + lambda * tau`.
    public var formula: String {
        self == .subtract ? "theta = base - lambda * tau" : "theta = base + lambda * tau"
    }
}

/// The tool's version, as recorded in patches.
public enum NegPatchVersion {
    /// The semantic version of this build.
    public static let version = "0.1.0"
    /// `negpatch VERSION`, the `tool` field of patch metadata.
    public static let tool = "negpatch \(version)"
}

/// One tensor of the base a patch belongs to, identified by content.
public struct FingerprintEntry: Sendable, Equatable {
    /// Tensor name.
    public let name: String
    /// Its dtype.
    public let dtype: DType
    /// Its shape.
    public let shape: [Int]
    /// XXH64 (seed 0) of its raw bytes.
    public let digest: UInt64

    /// Creates an entry.
    public init(name: String, dtype: DType, shape: [Int], digest: UInt64) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.digest = digest
    }
}

/// How a block's values are stored.
public enum BlockEncoding: String, Sendable {
    /// A bitmask of nonzero elements plus the nonzero values.
    case sparse
    /// Every value of the block, zeros included.
    case dense
}

/// How a sparse block's mask is stored.
public enum MaskCodec: Sendable, Equatable {
    /// The raw bitmask in a zstd frame.
    case zstd
    /// Rice codes of the gaps between set bits, with parameter `k` (`RiceMask`).
    case rice(k: Int)
}

/// Where a compressed part lies in a `.negpatch` file and how to check it.
public struct PartLocation: Sendable, Equatable {
    /// Absolute byte offset of the zstd frame.
    public var offset: Int
    /// Its compressed length.
    public var length: Int
    /// Its decompressed size.
    public var size: Int
    /// XXH64 of its compressed bytes.
    public var checksum: UInt64
}

/// One block of a patched tensor.
public struct PatchBlock: Sendable, Equatable {
    /// How its values are stored.
    public var encoding: BlockEncoding
    /// Its number of nonzero values.
    public var nonzeros: Int
    /// The mask part (sparse blocks only).
    public var mask: PartLocation?
    /// The values part.
    public var values: PartLocation
    /// How the values are stored (the tensor's type, or f32 where that could not hold them).
    public var valueType: ValueType = .f32
    /// The int8 scale (int8 blocks only).
    public var scale: Float?
    /// How the mask is stored (sparse blocks).
    public var maskCodec: MaskCodec = .zstd
}

/// One patched tensor: identity, counts and blocks.
public struct PatchTensor: Sendable, Equatable {
    /// Tensor name, as in the base.
    public var name: String
    /// The base tensor's dtype (the task vector itself is float32).
    public var dtype: DType
    /// The tensor's shape.
    public var shape: [Int]
    /// Number of elements.
    public var elements: Int
    /// Number of nonzero elements of the task vector.
    public var nonzeros: Int
    /// Elements per block; the last block may be shorter.
    public var blockElements: Int
    /// The blocks, in element order.
    public var blocks: [PatchBlock]
    /// Sign statistics: entry m counts elements where m task vectors agree with the
    /// majority sign (n + 1 entries), or empty when the patch does not record them.
    public var agreement: [Int]
    /// The value type requested for the tensor's blocks.
    public var valueType: ValueType = .f32
    /// The largest |value - stored value| over the tensor, for lossy value types.
    public var maxAbsError: Double?

    /// Element count of block `b`.
    public func elementCount(ofBlock b: Int) -> Int {
        min(blockElements, elements - b * blockElements)
    }

    /// Bytes the task vector of this tensor occupies dense, as float32.
    public var denseBytes: Int { elements * 4 }
}

/// The whole index of a patch: metadata, base fingerprint, tensors.
public struct PatchIndex: Sendable, Equatable {
    /// How the patch was made.
    public var metadata: PatchMetadata
    /// Every tensor of the base, with its digest.
    public var fingerprint: [FingerprintEntry]
    /// The patched (floating) tensors, in base order.
    public var tensors: [PatchTensor]

    /// Total elements of the patched tensors.
    public var elements: Int { tensors.reduce(0) { $0 + $1.elements } }
    /// Total nonzero elements.
    public var nonzeros: Int { tensors.reduce(0) { $0 + $1.nonzeros } }
    /// Share of nonzero elements (0 for an empty patch).
    public var density: Double { elements == 0 ? 0 : Double(nonzeros) / Double(elements) }
}

// MARK: - JSON form

extension PatchIndex {
    /// The index as JSON, in the layout of `formats/negpatch-v1.md`.
    public func json() -> JSONValue {
        .object([
            ("format", .string("negpatch")),
            ("version", .int(1)),
            ("metadata", metadata.json()),
            ("base_fingerprint", .object([
                ("algorithm", .string("xxh64")),
                ("tensors", .array(fingerprint.map { entry in
                    .object([
                        ("name", .string(entry.name)),
                        ("dtype", .string(entry.dtype.rawValue)),
                        ("shape", .array(entry.shape.map { .int($0) })),
                        ("digest", .string(XXH64.hex(entry.digest))),
                    ])
                })),
            ])),
            ("tensors", .array(tensors.map { $0.json() })),
        ])
    }
}

extension PatchMetadata {
    /// The metadata object of the index.
    public func json() -> JSONValue {
        .object([
            ("method", .string(method)),
            ("parameters", .object(parameters)),
            ("n", .int(n)),
            ("inputs", .array(inputs.map { .string($0) })),
            ("base", .string(base)),
            ("lambda", .double(lambda)),
            ("tool", .string(tool)),
            ("lossy", .bool(lossy)),
        ] + (direction == .subtract ? [] : [("direction", .string(direction.rawValue))]))
    }
}

extension PatchTensor {
    func json() -> JSONValue {
        func part(_ p: PartLocation) -> JSONValue {
            .object([
                ("offset", .int(p.offset)), ("length", .int(p.length)), ("size", .int(p.size)),
                ("xxh64", .string(XXH64.hex(p.checksum))),
            ])
        }
        var entries: [(key: String, value: JSONValue)] = [
            ("name", .string(name)),
            ("dtype", .string(dtype.rawValue)),
            ("shape", .array(shape.map { .int($0) })),
            ("elements", .int(elements)),
            ("nonzeros", .int(nonzeros)),
            ("value_type", .string(valueType.rawValue)),
            ("block_elements", .int(blockElements)),
            ("blocks", .array(blocks.map { block in
                var fields: [(key: String, value: JSONValue)] = [
                    ("encoding", .string(block.encoding.rawValue)),
                    ("nonzeros", .int(block.nonzeros)),
                    ("values", part(block.values)),
                ]
                if let mask = block.mask { fields.append(("mask", part(mask))) }
                if block.valueType != valueType { fields.append(("value_type", .string(block.valueType.rawValue))) }
                if let scale = block.scale { fields.append(("scale", .double(Double(scale)))) }
                if case let .rice(k) = block.maskCodec {
                    fields.append(("mask_codec", .string("rice")))
                    fields.append(("rice_k", .int(k)))
                }
                return .object(fields)
            })),
        ]
        if !agreement.isEmpty {
            entries.append(("agreement", .array(agreement.map { .int($0) })))
        }
        if let maxAbsError {
            entries.append(("max_abs_error", .double(maxAbsError)))
        }
        return .object(entries)
    }
}

/// Decodes and validates an index; every error names `file` and, where it applies, the
/// tensor and block.
struct PatchIndexDecoder {
    let file: String
    /// What the messages call the decoded text.
    var subject = "invalid patch index"

    private func bad(_ message: String, tensor: String? = nil) -> NegPatchError {
        NegPatchError(.malformed, file: file, tensor: tensor, "\(subject): \(message)")
    }

    func decode(_ json: JSONValue) throws -> PatchIndex {
        guard case .object = json else { throw bad("not a JSON object") }
        guard json["format"]?.string == "negpatch" else { throw bad("'format' is not \"negpatch\"") }
        guard json["version"]?.nonNegativeInt == 1 else { throw bad("unsupported 'version' (this reader knows 1)") }
        guard let metadataJSON = json["metadata"] else { throw bad("missing 'metadata'") }
        let metadata = try decodeMetadata(metadataJSON)
        guard let fp = json["base_fingerprint"], fp["algorithm"]?.string == "xxh64",
              case let .array(fpEntries)? = fp["tensors"]
        else { throw bad("missing or unsupported 'base_fingerprint'") }
        var fingerprint: [FingerprintEntry] = []
        var fpNames = Set<TensorName>()
        for entry in fpEntries {
            guard let name = entry["name"]?.string else { throw bad("base_fingerprint entry without a name") }
            guard fpNames.insert(TensorName(name)).inserted else { throw bad("base_fingerprint lists the tensor twice", tensor: name) }
            guard let dtype = entry["dtype"]?.string.flatMap(DType.init(rawValue:)) else {
                throw bad("base_fingerprint entry has an unknown dtype", tensor: name)
            }
            let shape = try decodeShape(entry["shape"], tensor: name)
            guard let digest = entry["digest"]?.string.flatMap(XXH64.parseHex) else {
                throw bad("base_fingerprint digest is not 16 hex digits", tensor: name)
            }
            fingerprint.append(FingerprintEntry(name: name, dtype: dtype, shape: shape, digest: digest))
        }
        guard case let .array(tensorEntries)? = json["tensors"] else { throw bad("missing 'tensors' array") }
        var tensors: [PatchTensor] = []
        var names = Set<TensorName>()
        for entry in tensorEntries {
            let tensor = try decodeTensor(entry, n: metadata.n)
            guard names.insert(TensorName(tensor.name)).inserted else { throw bad("tensor listed twice", tensor: tensor.name) }
            tensors.append(tensor)
        }
        return PatchIndex(metadata: metadata, fingerprint: fingerprint, tensors: tensors)
    }

    private func decodeShape(_ value: JSONValue?, tensor: String) throws -> [Int] {
        guard case let .array(dims)? = value else { throw bad("missing 'shape'", tensor: tensor) }
        return try dims.map { dim in
            guard let d = dim.nonNegativeInt else { throw bad("shape entry is not a non-negative integer", tensor: tensor) }
            return d
        }
    }

    private func decodeMetadata(_ json: JSONValue) throws -> PatchMetadata {
        guard let method = json["method"]?.string else { throw bad("metadata lacks 'method'") }
        guard case let .object(parameters)? = json["parameters"] else { throw bad("metadata lacks 'parameters'") }
        guard let n = json["n"]?.nonNegativeInt, n >= 1 else { throw bad("metadata 'n' is not a positive integer") }
        guard case let .array(inputItems)? = json["inputs"] else { throw bad("metadata lacks 'inputs'") }
        let inputs = try inputItems.map { item -> String in
            guard let text = item.string else { throw bad("metadata 'inputs' holds a \(item.kind)") }
            return text
        }
        guard let base = json["base"]?.string else { throw bad("metadata lacks 'base'") }
        guard let lambda = json["lambda"]?.double, lambda.isFinite else { throw bad("metadata 'lambda' is not a finite number") }
        guard let tool = json["tool"]?.string else { throw bad("metadata lacks 'tool'") }
        guard case let .bool(lossy)? = json["lossy"] else { throw bad("metadata 'lossy' is not a boolean") }
        // Absent in patches written before directions existed: those subtract.
        var direction = PatchDirection.subtract
        if let value = json["direction"] {
            guard let parsed = value.string.flatMap(PatchDirection.init(rawValue:)) else {
                throw bad("metadata 'direction' is not \"subtract\" or \"add\"")
            }
            direction = parsed
        }
        return PatchMetadata(method: method, parameters: parameters, n: n, inputs: inputs, base: base,
                             lambda: lambda, tool: tool, lossy: lossy, direction: direction)
    }

    private func decodePart(_ json: JSONValue?, tensor: String, block: Int, kind: String) throws -> PartLocation {
        guard let json, let offset = json["offset"]?.nonNegativeInt, let length = json["length"]?.nonNegativeInt,
              let size = json["size"]?.nonNegativeInt,
              let checksum = json["xxh64"]?.string.flatMap(XXH64.parseHex)
        else { throw bad("block \(block): \(kind) part lacks offset, length, size or xxh64", tensor: tensor) }
        return PartLocation(offset: offset, length: length, size: size, checksum: checksum)
    }

    private func decodeTensor(_ json: JSONValue, n: Int) throws -> PatchTensor {
        guard let name = json["name"]?.string else { throw bad("tensor entry without a name") }
        guard let dtype = json["dtype"]?.string.flatMap(DType.init(rawValue:)), dtype.isFloating else {
            throw bad("dtype is missing or not floating", tensor: name)
        }
        let shape = try decodeShape(json["shape"], tensor: name)
        guard let elements = checkedElementCount(shape), elements.multipliedReportingOverflow(by: 8).overflow == false else {
            throw bad("shape \(describeShape(shape)) overflows", tensor: name)
        }
        guard json["elements"]?.nonNegativeInt == elements else {
            throw bad("'elements' disagrees with shape \(describeShape(shape))", tensor: name)
        }
        guard let nonzeros = json["nonzeros"]?.nonNegativeInt, nonzeros <= elements else {
            throw bad("'nonzeros' is missing or exceeds the element count", tensor: name)
        }
        guard let valueType = json["value_type"]?.string.flatMap(ValueType.init(rawValue:)) else {
            throw bad("unsupported 'value_type'", tensor: name)
        }
        guard let blockElements = json["block_elements"]?.nonNegativeInt, blockElements > 0, blockElements % 64 == 0,
              blockElements <= PatchWorkBound.maxBlockElements
        else { throw bad("'block_elements' must be a positive multiple of 64 up to 2^26", tensor: name) }
        guard case let .array(blockItems)? = json["blocks"] else { throw bad("missing 'blocks'", tensor: name) }
        let expectedBlocks = elements == 0 ? 0 : (elements - 1) / blockElements + 1
        guard blockItems.count == expectedBlocks else {
            throw bad("\(blockItems.count) blocks, expected \(expectedBlocks)", tensor: name)
        }
        var blocks: [PatchBlock] = []
        blocks.reserveCapacity(expectedBlocks)
        var total = 0
        for (b, item) in blockItems.enumerated() {
            let count = min(blockElements, elements - b * blockElements)
            guard let encoding = item["encoding"]?.string.flatMap(BlockEncoding.init(rawValue:)) else {
                throw bad("block \(b): unknown 'encoding'", tensor: name)
            }
            guard let blockNonzeros = item["nonzeros"]?.nonNegativeInt, blockNonzeros <= count else {
                throw bad("block \(b): 'nonzeros' is missing or exceeds the block's \(count) elements", tensor: name)
            }
            let values = try decodePart(item["values"], tensor: name, block: b, kind: "values")
            var blockType = valueType
            if let override = item["value_type"] {
                guard let type = override.string.flatMap(ValueType.init(rawValue:)) else {
                    throw bad("block \(b): unsupported 'value_type'", tensor: name)
                }
                blockType = type
            }
            var scale: Float?
            if blockType == .int8 {
                guard let value = item["scale"]?.double, value.isFinite, value >= 0 else {
                    throw bad("block \(b): int8 values need a finite, non-negative 'scale'", tensor: name)
                }
                scale = Float(value)
            } else if item["scale"] != nil {
                throw bad("block \(b): 'scale' on a block that is not int8", tensor: name)
            }
            let width = blockType.width
            var mask: PartLocation?
            var maskCodec = MaskCodec.zstd
            switch encoding {
            case .sparse:
                mask = try decodePart(item["mask"], tensor: name, block: b, kind: "mask")
                switch item["mask_codec"]?.string {
                case nil:
                    guard item["rice_k"] == nil else { throw bad("block \(b): 'rice_k' without mask_codec rice", tensor: name) }
                    guard mask!.size == (count + 7) / 8 else {
                        throw bad("block \(b): mask size \(mask!.size), expected \((count + 7) / 8)", tensor: name)
                    }
                    guard mask!.size <= PatchWorkBound.maxZstdExpansion(mask!.length) else {
                        throw bad("block \(b): a \(mask!.length)-byte mask frame cannot hold \(mask!.size) bytes (zstd expands at most 32,768 times)", tensor: name)
                    }
                case "rice":
                    guard let k = item["rice_k"]?.nonNegativeInt, k <= RiceMask.maxParameter else {
                        throw bad("block \(b): 'rice_k' must be an integer from 0 to \(RiceMask.maxParameter)", tensor: name)
                    }
                    // At most one zero-bit and k + (count >> k) + 1 bits per set bit: a stream
                    // longer than that cannot be valid, so it bounds what a reader allocates.
                    guard mask!.size == mask!.length, mask!.size <= (blockNonzeros * (k + 2) + (count >> k) + 8) / 8 + 1 else {
                        throw bad("block \(b): Rice mask size \(mask!.size) is not its stored length or too large", tensor: name)
                    }
                    maskCodec = .rice(k: k)
                default:
                    throw bad("block \(b): unknown 'mask_codec'", tensor: name)
                }
                guard values.size == width * blockNonzeros else {
                    throw bad("block \(b): values size \(values.size), expected \(width * blockNonzeros)", tensor: name)
                }
            case .dense:
                guard item["mask"] == nil else { throw bad("block \(b): dense block has a mask", tensor: name) }
                guard values.size == width * count else {
                    throw bad("block \(b): values size \(values.size), expected \(width * count)", tensor: name)
                }
            }
            guard values.size <= PatchWorkBound.maxZstdExpansion(values.length) else {
                throw bad("block \(b): a \(values.length)-byte values frame cannot hold \(values.size) bytes (zstd expands at most 32,768 times)", tensor: name)
            }
            total += blockNonzeros
            blocks.append(PatchBlock(encoding: encoding, nonzeros: blockNonzeros, mask: mask, values: values,
                                     valueType: blockType, scale: scale, maskCodec: maskCodec))
        }
        guard total == nonzeros else {
            throw bad("blocks hold \(total) nonzeros, the tensor says \(nonzeros)", tensor: name)
        }
        var agreement: [Int] = []
        if let value = json["agreement"] {
            guard case let .array(items) = value, items.count == n + 1 else {
                throw bad("'agreement' must hold n + 1 = \(n + 1) counts", tensor: name)
            }
            agreement = try items.map { item in
                guard let count = item.nonNegativeInt else { throw bad("'agreement' holds a non-count", tensor: name) }
                return count
            }
            guard agreement.reduce(0, { $0 &+ $1 }) == elements else {
                throw bad("'agreement' counts do not sum to the element count", tensor: name)
            }
        }
        var maxAbsError: Double?
        if let value = json["max_abs_error"] {
            guard let error = value.double, error >= 0 else { throw bad("'max_abs_error' is not a non-negative number", tensor: name) }
            maxAbsError = error
        }
        return PatchTensor(name: name, dtype: dtype, shape: shape, elements: elements, nonzeros: nonzeros,
                           blockElements: blockElements, blocks: blocks, agreement: agreement,
                           valueType: valueType, maxAbsError: maxAbsError)
    }
}

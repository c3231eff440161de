/// The `.negpatch` v1 format (`formats/negpatch-v1.md`): zstd-compressed parts with
/// checksums, a JSON index, and a fixed footer.
public enum NegPatchFormat: PatchFormat {
    public static let name = "negpatch"
    public static let extensions = ["negpatch"]

    /// The 8-byte magic at the start and end of the file.
    static let magic: [UInt8] = Array("NEGPATCH".utf8)
    /// Bytes before the first part.
    static let headerSize = 16
    /// Bytes of the footer.
    static let footerSize = 32
    /// The largest index a reader accepts.
    static let maxIndexLength = 1 << 30

    public static func recognises(_ prefix: [UInt8]) -> Bool {
        prefix.count >= 8 && Array(prefix[0..<8]) == magic
    }

    public static func open(path: String) throws -> any PatchSource {
        try NegPatchFile(path: path)
    }

    public static func writer(path: String, options: PatchWriterOptions) throws -> any PatchWriter {
        try NegPatchWriter(path: path, level: options.zstdLevel, valueType: options.valueType)
    }
}

/// Writes a `.negpatch` file through `AtomicOutput`.
public final class NegPatchWriter: PatchWriter {
    public let path: String
    private let output: AtomicOutput
    private let level: Int32
    private let valueType: ValueType
    private var tensors: [PatchTensor] = []
    private var current: PatchTensor?

    /// Starts writing `path` (atomically) with zstd `level`, storing values as `valueType`.
    public init(path: String, level: Int32, valueType: ValueType = .f32) throws {
        self.path = path
        self.level = level
        self.valueType = valueType
        output = try AtomicOutput(destination: path)
        var header = NegPatchFormat.magic
        header += littleEndianBytes(UInt32(1))
        header += littleEndianBytes(UInt32(0))
        try output.write(header)
    }

    public func prepare(dense: UnsafePointer<Float>, count: Int) throws -> PreparedBlock {
        // The mask, the packed values and their encoded and compressed forms.
        try Memory.reserve(9 * count, for: "encoding a block of \(count) elements")
        let (mask, packed) = Bitmask.pack(dense, count: count)
        return try packed.withUnsafeBufferPointer { v in
            try Self.encode(dense: dense, count: count, mask: mask, packed: v.baseAddress!, nonzeros: v.count,
                            level: level, valueType: valueType)
        }
    }

    /// The block as a `.negpatch` v1 writer at zstd `level` with `valueType` stores it, given
    /// its dense values and their packed form (`mask` and the `nonzeros` packed values):
    /// sparse, unless the block `triesDense` and its dense values compress smaller than mask
    /// and packed values together. The HDF5 writer asks the same question, so both formats
    /// of one merge hold the same blocks.
    static func encode(dense: UnsafePointer<Float>, count: Int, mask: [UInt8], packed: UnsafePointer<Float>,
                       nonzeros: Int, level: Int32, valueType: ValueType = .f32) throws -> PreparedBlock {
        let (sparseMask, maskCodec) = try maskPart(mask, count: count, nonzeros: nonzeros, level: level)
        let sparseValues = try valueFrame(packed, count: nonzeros, as: valueType, level: level)
        var block = PreparedBlock(encoding: .sparse, count: count, nonzeros: nonzeros, mask: sparseMask, values: sparseValues.frame)
        block.maskCodec = maskCodec
        block.valueType = sparseValues.type
        block.scale = sparseValues.encoded.scale
        block.maxAbsError = sparseValues.encoded.maxAbsError
        if triesDense(nonzeros: nonzeros, count: count) {
            let dense = try valueFrame(dense, count: count, as: valueType, level: level)
            if dense.frame.count < sparseMask.count + sparseValues.frame.count {
                block = PreparedBlock(encoding: .dense, count: count, nonzeros: nonzeros, mask: [], values: dense.frame)
                block.valueType = dense.type
                block.scale = dense.encoded.scale
                block.maxAbsError = dense.encoded.maxAbsError
            }
        }
        block.maskChecksum = block.encoding == .sparse ? XXH64.hash(block.mask) : 0
        block.valuesChecksum = XXH64.hash(block.values)
        return block
    }

    /// Whether a block of `count` elements, `nonzeros` of them nonzero, is worth compressing
    /// a second time in dense form: only when more than three quarters are nonzero. Every
    /// zero then costs a byte in each of the four value planes instead of a bit of mask; on
    /// merged task vectors the dense form came out 1.3-1.6x larger at 25-45% density and
    /// won only from about 95%.
    static func triesDense(nonzeros: Int, count: Int) -> Bool { nonzeros * 4 > count * 3 }

    /// The stored mask of a sparse block: the bitmask in a zstd frame or, for a block at
    /// most a quarter nonzero, the Rice codes of its gaps when they are smaller.
    private static func maskPart(_ mask: [UInt8], count: Int, nonzeros: Int, level: Int32) throws -> ([UInt8], MaskCodec) {
        var sparseMask = try mask.withUnsafeBytes { try Zstd.compress($0, level: level) }
        var maskCodec = MaskCodec.zstd
        // Sparse masks close to independent bits: Rice codes of the gaps come within about
        // 1% of the entropy, well under what a byte-wise compressor reaches.
        if nonzeros > 0, nonzeros * 4 <= count {
            var indices = [UInt32](repeating: 0, count: nonzeros + 8)
            let rice: [UInt8]? = indices.withUnsafeMutableBufferPointer { idx in
                mask.withUnsafeBufferPointer { _ = Bitmask.setBitIndices($0.baseAddress!, count: count, into: idx.baseAddress!) }
                let best = RiceMask.bestParameter(idx.baseAddress!, count: nonzeros)
                guard best.bytes < sparseMask.count else { return nil }
                maskCodec = .rice(k: best.k)
                return RiceMask.encode(idx.baseAddress!, count: nonzeros, k: best.k)
            }
            if let rice { sparseMask = rice }
        }
        return (sparseMask, maskCodec)
    }

    public func prepare(_ block: SparseBlock, encoding: BlockEncoding) throws -> PreparedBlock {
        let stored = StoredBlock(block, encoding: encoding)
        var prepared = PreparedBlock(encoding: encoding, count: block.count, nonzeros: stored.nonzeros, mask: [], values: [])
        if encoding == .sparse {
            (prepared.mask, prepared.maskCodec) = try Self.maskPart(stored.mask, count: block.count, nonzeros: stored.nonzeros, level: level)
            prepared.maskChecksum = XXH64.hash(prepared.mask)
        }
        let values = try stored.values.withUnsafeBufferPointer {
            try Self.valueFrame($0.baseAddress ?? UnsafePointer(bitPattern: 4)!, count: $0.count, as: valueType, level: level)
        }
        prepared.values = values.frame
        prepared.valueType = values.type
        prepared.scale = values.encoded.scale
        prepared.maxAbsError = values.encoded.maxAbsError
        prepared.valuesChecksum = XXH64.hash(prepared.values)
        return prepared
    }

    /// The values compressed as the requested type, or as f32 where that type cannot hold
    /// them (binary16 overflow).
    private static func valueFrame(_ values: UnsafePointer<Float>, count: Int, as requested: ValueType,
                                   level: Int32) throws -> (frame: [UInt8], type: ValueType, encoded: ValueCodec.Encoded) {
        var type = requested
        var encoded = ValueCodec.encode(values, count: count, as: type)
        if encoded == nil {
            type = .f32
            encoded = ValueCodec.encode(values, count: count, as: .f32)
        }
        let frame = try encoded!.bytes.withUnsafeBytes { try Zstd.compress($0, level: level) }
        return (frame, type, encoded!)
    }

    public func beginTensor(_ header: PatchTensorHeader) throws {
        current = PatchTensor(name: header.name, dtype: header.dtype, shape: header.shape, elements: header.elements,
                              nonzeros: 0, blockElements: header.blockElements, blocks: [], agreement: [],
                              valueType: valueType, maxAbsError: valueType.isLossy ? 0 : nil)
    }

    public func append(_ block: PreparedBlock) throws {
        var maskLocation: PartLocation?
        if block.encoding == .sparse {
            let size = block.maskCodec == .zstd ? Bitmask.byteCount(block.count) : block.mask.count
            maskLocation = PartLocation(offset: output.bytesWritten, length: block.mask.count,
                                        size: size, checksum: block.maskChecksum)
            try output.write(block.mask)
        }
        let valuesSize = block.valueType.width * (block.encoding == .sparse ? block.nonzeros : block.count)
        let valuesLocation = PartLocation(offset: output.bytesWritten, length: block.values.count,
                                          size: valuesSize, checksum: block.valuesChecksum)
        try output.write(block.values)
        current!.blocks.append(PatchBlock(encoding: block.encoding, nonzeros: block.nonzeros,
                                          mask: maskLocation, values: valuesLocation,
                                          valueType: block.valueType, scale: block.scale, maskCodec: block.maskCodec))
        current!.nonzeros += block.nonzeros
        if let error = current!.maxAbsError { current!.maxAbsError = max(error, Double(block.maxAbsError)) }
    }

    public func endTensor(agreement: [Int]) throws {
        current!.agreement = agreement
        tensors.append(current!)
        current = nil
    }

    public func finish(metadata: PatchMetadata, fingerprint: [FingerprintEntry]) throws -> Int {
        var metadata = metadata
        metadata.lossy = metadata.lossy || tensors.contains { $0.blocks.contains { $0.valueType.isLossy } }
        let index = PatchIndex(metadata: metadata, fingerprint: fingerprint, tensors: tensors)
        let json = CanonicalJSON.encode(index.json())
        let indexOffset = output.bytesWritten
        try output.write(json)
        var footer = littleEndianBytes(UInt64(indexOffset))
        footer += littleEndianBytes(UInt64(json.count))
        footer += littleEndianBytes(XXH64.hash(json))
        footer += NegPatchFormat.magic
        try output.write(footer)
        let size = output.bytesWritten
        try output.commit()
        return size
    }

    public func abort() {
        output.discard()
    }
}

/// A validated `.negpatch` file, memory-mapped.
public final class NegPatchFile: PatchSource, @unchecked Sendable {
    public let path: String
    public let formatName = NegPatchFormat.name
    public let index: PatchIndex
    private let file: MappedFile

    public var fileSize: Int { file.size }

    /// Opens `path` and checks its header, footer, index checksum, index and the tiling of
    /// its parts (`formats/negpatch-v1.md`, section 6, items 1-3). Part checksums are
    /// verified when blocks are read.
    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path)
        let bytes = file.bytes
        func corrupt(_ message: String) -> NegPatchError {
            NegPatchError(.corrupt, file: path, message)
        }
        let minimum = NegPatchFormat.headerSize + NegPatchFormat.footerSize
        guard bytes.count >= minimum else {
            throw corrupt("file is \(bytes.count) bytes, too short for a .negpatch (truncated?)")
        }
        guard Array(bytes[0..<8]) == NegPatchFormat.magic else {
            throw NegPatchError(.malformed, file: path, "not a .negpatch file (bad magic)")
        }
        let version = bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian
        guard version == 1 else { throw NegPatchError(.malformed, file: path, "unsupported .negpatch version \(version)") }
        guard bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self) == 0 else {
            throw corrupt("reserved header flags are not zero")
        }
        let footer = bytes.count - NegPatchFormat.footerSize
        guard Array(bytes[(footer + 24)..<(footer + 32)]) == NegPatchFormat.magic else {
            throw corrupt("footer magic missing (truncated or damaged file)")
        }
        let indexOffset = bytes.loadUnaligned(fromByteOffset: footer, as: UInt64.self).littleEndian
        let indexLength = bytes.loadUnaligned(fromByteOffset: footer + 8, as: UInt64.self).littleEndian
        let indexChecksum = bytes.loadUnaligned(fromByteOffset: footer + 16, as: UInt64.self).littleEndian
        guard indexLength <= UInt64(NegPatchFormat.maxIndexLength), indexOffset >= UInt64(NegPatchFormat.headerSize),
              indexOffset <= UInt64(footer), indexOffset + indexLength == UInt64(footer)
        else {
            throw corrupt("footer offsets (index at \(indexOffset), \(indexLength) bytes) disagree with the file size \(bytes.count)")
        }
        let indexBytes = file.slice(Int(indexOffset), Int(indexLength))
        guard XXH64.hash(indexBytes) == indexChecksum else {
            throw corrupt("index checksum mismatch (damaged file)")
        }
        let json: JSONValue
        do {
            json = try StrictJSON.parse(indexBytes)
        } catch {
            throw NegPatchError(.malformed, file: path, "invalid patch index: \(error)")
        }
        let index = try PatchIndexDecoder(file: path).decode(json)
        // Parts must tile 16..<indexOffset in index order.
        var cursor = NegPatchFormat.headerSize
        for tensor in index.tensors {
            for (b, block) in tensor.blocks.enumerated() {
                for part in [block.mask, block.values].compactMap({ $0 }) {
                    guard part.offset == cursor, part.length <= Int(indexOffset) - cursor else {
                        throw NegPatchError(.corrupt, file: path, tensor: tensor.name,
                                            "block \(b): part at \(part.offset) (\(part.length) bytes) does not follow the previous part, which ends at \(cursor)")
                    }
                    cursor += part.length
                }
            }
        }
        guard cursor == Int(indexOffset) else {
            throw corrupt("\(Int(indexOffset) - cursor) bytes between the last part and the index belong to no part")
        }
        self.index = index
    }

    public func storedBytes(tensor: Int) -> (mask: Int, values: Int) {
        index.tensors[tensor].blocks.reduce((0, 0)) { sum, block in
            (sum.0 + (block.mask?.length ?? 0), sum.1 + block.values.length)
        }
    }

    private func frame(_ part: PartLocation, tensor: PatchTensor, block b: Int, kind: String) throws -> UnsafeRawBufferPointer {
        let bytes = file.slice(part.offset, part.length)
        guard XXH64.hash(bytes) == part.checksum else {
            throw NegPatchError(.corrupt, file: path, tensor: tensor.name, "block \(b): \(kind) checksum mismatch (damaged file)")
        }
        return bytes
    }

    public func block(tensor t: Int, block b: Int) throws -> SparseBlock {
        let tensor = index.tensors[t]
        let entry = tensor.blocks[b]
        let count = tensor.elementCount(ofBlock: b)
        func undecodable(_ error: Error, _ kind: String) -> NegPatchError {
            NegPatchError(.corrupt, file: path, tensor: tensor.name, "block \(b): \(kind): \(error)")
        }
        // The arrays below: the mask, its set-bit indices, the shuffled and the decoded values.
        let valueCount = entry.values.size / entry.valueType.width
        try Memory.reserve((entry.mask?.size ?? 0) + 4 * (entry.nonzeros + 64) + entry.values.size + 4 * valueCount,
                           for: "decoding block \(b) of tensor '\(tensor.name)'")
        var indices: [UInt32]?
        if let maskPart = entry.mask, case let .rice(k) = entry.maskCodec {
            let stream = try frame(maskPart, tensor: tensor, block: b, kind: "mask")
            var list = [UInt32](repeating: 0, count: entry.nonzeros)
            do {
                try list.withUnsafeMutableBufferPointer {
                    try RiceMask.decode(stream, k: k, count: entry.nonzeros, elements: count, into: $0.baseAddress ?? UnsafeMutablePointer(bitPattern: 4)!)
                }
            } catch {
                throw NegPatchError(.corrupt, file: path, tensor: tensor.name, "block \(b): mask: \(error)")
            }
            indices = list
        } else if let maskPart = entry.mask {
            let frame = try frame(maskPart, tensor: tensor, block: b, kind: "mask")
            do { try Zstd.checkFrame(frame, expectedSize: maskPart.size) } catch { throw undecodable(error, "mask") }
            var mask = [UInt8](repeating: 0, count: maskPart.size)
            do {
                try mask.withUnsafeMutableBytes { out in
                    try Zstd.decompress(frame, expectedSize: maskPart.size, into: out.baseAddress ?? UnsafeMutableRawPointer(bitPattern: 1)!)
                }
            } catch {
                throw undecodable(error, "mask")
            }
            var list = [UInt32](repeating: 0, count: entry.nonzeros + 64)
            let found: (setBits: Int, cleanPadding: Bool) = mask.withUnsafeBufferPointer { m in
                let stats = Bitmask.popcount(m.baseAddress!, count: count)
                guard stats.setBits == entry.nonzeros, stats.cleanPadding else { return stats }
                _ = list.withUnsafeMutableBufferPointer { Bitmask.setBitIndices(m.baseAddress!, count: count, into: $0.baseAddress!) }
                return stats
            }
            guard found.setBits == entry.nonzeros else {
                throw NegPatchError(.corrupt, file: path, tensor: tensor.name,
                                    "block \(b): mask has \(found.setBits) set bits, the index says \(entry.nonzeros)")
            }
            guard found.cleanPadding else {
                throw NegPatchError(.corrupt, file: path, tensor: tensor.name, "block \(b): mask padding bits are set")
            }
            list.removeLast(list.count - entry.nonzeros)
            indices = list
        }
        let valuesPart = entry.values
        let frame = try frame(valuesPart, tensor: tensor, block: b, kind: "values")
        do { try Zstd.checkFrame(frame, expectedSize: valuesPart.size) } catch { throw undecodable(error, "values") }
        var shuffled = [UInt8](repeating: 0, count: valuesPart.size)
        do {
            try shuffled.withUnsafeMutableBytes { out in
                try Zstd.decompress(frame, expectedSize: valuesPart.size, into: out.baseAddress ?? UnsafeMutableRawPointer(bitPattern: 1)!)
            }
        } catch {
            throw undecodable(error, "values")
        }
        var values = [Float](repeating: 0, count: valueCount)
        shuffled.withUnsafeBufferPointer { s in
            values.withUnsafeMutableBufferPointer { v in
                if valueCount > 0 {
                    ValueCodec.decode(s.baseAddress!, count: valueCount, as: entry.valueType, scale: entry.scale, into: v.baseAddress!)
                }
            }
        }
        let decoded = SparseBlock(count: count, indices: indices, values: values)
        if indices == nil, entry.valueType == .f32, decoded.nonzeros != entry.nonzeros {
            throw NegPatchError(.corrupt, file: path, tensor: tensor.name,
                                "block \(b): dense values hold \(decoded.nonzeros) nonzeros, the index says \(entry.nonzeros)")
        }
        return decoded
    }
}

/// The little-endian bytes of an integer.
func littleEndianBytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian) { Array($0) }
}

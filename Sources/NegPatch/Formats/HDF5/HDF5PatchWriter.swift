import CHDF5
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a patch as HDF5 (`formats/negpatch-hdf5.md`).
///
/// The HDF5 library creates the file at `AtomicOutput`'s temporary path; `finish` closes it
/// and lets `AtomicOutput` flush and rename it, so the destination never holds a partial
/// file. `prepare` only packs bits and floats (any thread); every HDF5 call happens in
/// `beginTensor`, `append`, `endTensor` and `finish`, behind `HDF5Library`'s lock.
public final class HDF5PatchWriter: PatchWriter {
    public let path: String
    private let output: AtomicOutput
    /// Deflate level, or nil for `--compression none`.
    private let deflate: Int?
    private var file: hid_t = -1
    private var tensorsGroup: hid_t = -1
    private var tensorCount = 0
    private var current: OpenTensor?
    private var names = Set<TensorName>()

    /// The tensor being written: its group, datasets and what its blocks recorded so far.
    private struct OpenTensor {
        let header: PatchTensorHeader
        let group: hid_t
        let groupPath: String
        let mask: hid_t
        var values: hid_t = -1
        var valuesGrow = false
        var maskBytes = 0
        var valueCount = 0
        var encodings: [UInt8] = []
        var nonzeros: [Int64] = []
        var totalNonzeros = 0
    }

    /// Starts writing `path` (atomically) with `compression` `gzip` (at `gzipLevel`) or
    /// `none`. Throws `.invalidArgument` for another compression or level, `.io` if the file
    /// cannot be created.
    public init(path: String, compression: String, gzipLevel: Int = HDF5PatchFormat.defaultGzipLevel) throws {
        self.path = path
        switch compression {
        case "gzip":
            guard (1...9).contains(gzipLevel) else {
                throw NegPatchError(.invalidArgument, file: path, "gzip level \(gzipLevel) is not in 1...9")
            }
            deflate = gzipLevel
        case "none":
            deflate = nil
        default:
            throw NegPatchError(.invalidArgument, file: path,
                                "unknown HDF5 compression '\(compression)' (known: \(HDF5PatchFormat.compressions.joined(separator: ", ")))")
        }
        output = try AtomicOutput(destination: path)
        let temporary = output.temporaryPath
        do {
            try HDF5Library.locked {
                let creation = try HDF5Library.check(id: H5Pcreate(chdf5_p_file_create()), "creating file properties")
                defer { H5Pclose(creation) }
                H5Pset_obj_track_times(creation, false)
                // Room for the integrity block, written after HDF5 closes the file.
                try HDF5Library.check(H5Pset_userblock(creation, hsize_t(HDF5PatchFormat.userBlock)), "reserving the integrity block")
                let access = try HDF5Library.check(id: H5Pcreate(chdf5_p_file_access()), "creating file properties")
                defer { H5Pclose(access) }
                // Closing the file closes every object in it: an aborted write leaves nothing open.
                H5Pset_fclose_degree(access, H5F_CLOSE_STRONG)
                // The 1.10 object formats index chunks without per-dataset B-trees (a v1 B-tree
                // node costs kilobytes per dataset); HDF5 1.10.0 and later read them.
                try HDF5Library.check(H5Pset_libver_bounds(access, H5F_LIBVER_V110, H5F_LIBVER_V110), "setting the file format version")
                file = try HDF5Library.check(id: H5Fcreate(temporary, chdf5_f_acc_trunc(), creation, access), "creating the HDF5 file")
                tensorsGroup = try HDF5.createGroup(file, "tensors")
            }
        } catch {
            abort()
            throw writeError(error)
        }
    }

    deinit {
        abort()
    }

    private func writeError(_ error: Error, tensor: String? = nil) -> NegPatchError {
        if let error = error as? NegPatchError { return error }
        return NegPatchError(.io, file: path, tensor: tensor, "writing HDF5: \(error)")
    }

    // MARK: Preparing blocks (any thread, no HDF5)

    public func prepare(dense: UnsafePointer<Float>, count: Int) throws -> PreparedBlock {
        // The mask, the packed values and their encoded and compressed forms.
        try Memory.reserve(9 * count, for: "encoding a block of \(count) elements")
        let (mask, packed) = Bitmask.pack(dense, count: count)
        let nonzeros = packed.count
        var encoding = BlockEncoding.sparse
        if NegPatchWriter.triesDense(nonzeros: nonzeros, count: count) {
            // The .negpatch writer's choice, so that both formats of one merge hold the same
            // blocks (and decode identically, the sign of a dense block's zeros included).
            encoding = try packed.withUnsafeBufferPointer { v in
                try NegPatchWriter.encode(dense: dense, count: count, mask: mask, packed: v.baseAddress!,
                                          nonzeros: nonzeros, level: Zstd.defaultLevel).encoding
            }
        }
        if encoding == .dense {
            return PreparedBlock(encoding: .dense, count: count, nonzeros: nonzeros, mask: Bitmask.allSet(count: count),
                                 values: Array(UnsafeRawBufferPointer(start: dense, count: 4 * count)))
        }
        let values = packed.withUnsafeBytes { Array($0.prefix(4 * nonzeros)) }
        return PreparedBlock(encoding: .sparse, count: count, nonzeros: nonzeros, mask: mask, values: values)
    }

    public func prepare(_ block: SparseBlock, encoding: BlockEncoding) throws -> PreparedBlock {
        let stored = StoredBlock(block, encoding: encoding)
        return PreparedBlock(encoding: encoding, count: block.count, nonzeros: stored.nonzeros, mask: stored.mask,
                             values: stored.values.withUnsafeBytes { Array($0) })
    }

    // MARK: Writing (one thread at a time)

    private func storage(count: Int, elementSize: Int, chunk: Int, shuffle: Bool = false) -> HDF5.Storage {
        // Every dataset with data is chunked so that the Fletcher-32 filter checksums it;
        // below a page, deflate saves less than its filter costs.
        guard count > 0 else { return HDF5.Storage(chunk: nil, deflate: nil, fletcher32: false) }
        guard count * elementSize >= HDF5PatchFormat.smallestFiltered, let deflate else {
            return HDF5.Storage(chunk: min(count, chunk), deflate: nil)
        }
        return HDF5.Storage(chunk: min(count, chunk), deflate: deflate, shuffle: shuffle)
    }

    public func beginTensor(_ header: PatchTensorHeader) throws {
        precondition(current == nil, "beginTensor before the previous tensor ended")
        guard file >= 0 else { throw NegPatchError(.io, file: path, tensor: header.name, "the HDF5 writer was aborted") }
        guard names.insert(TensorName(header.name)).inserted else {
            throw NegPatchError(.invalidArgument, file: path, tensor: header.name, "tensor written twice")
        }
        if header.name.utf8.contains(0) {
            throw NegPatchError(.invalidArgument, file: path, tensor: header.name, "the name holds U+0000, which HDF5 strings cannot store")
        }
        let index = tensorCount
        do {
            current = try HDF5Library.locked {
                let group = try HDF5.createGroup(tensorsGroup, HDF5PatchFormat.groupName(index))
                try HDF5.setString(group, "name", header.name)
                try HDF5.setString(group, "dtype", header.dtype.rawValue)
                try HDF5.setInts(group, "shape", header.shape)
                try HDF5.setInt(group, "elements", header.elements)
                try HDF5.setString(group, "value_type", "f32")
                try HDF5.setInt(group, "block_elements", header.blockElements)
                let maskCount = Bitmask.byteCount(header.elements)
                let mask = try HDF5.createDataset(group, "mask", type: chdf5_t_std_u8le(), count: maskCount,
                                                  storage: storage(count: maskCount, elementSize: 1, chunk: HDF5PatchFormat.maskChunk))
                return OpenTensor(header: header, group: group, groupPath: HDF5PatchFormat.groupPath(index), mask: mask)
            }
        } catch {
            throw writeError(error, tensor: header.name)
        }
        tensorCount += 1
    }

    /// Creates the `values` dataset at the first block: exactly sized for a one-block tensor,
    /// growable (chunked, up to the element count) otherwise.
    private func createValues(_ tensor: inout OpenTensor, firstBlockValues: Int) throws {
        let elements = tensor.header.elements
        if tensor.header.blockCount <= 1 {
            tensor.values = try HDF5.createDataset(tensor.group, "values", type: chdf5_t_ieee_f32le(), count: firstBlockValues,
                                                   storage: storage(count: firstBlockValues, elementSize: 4, chunk: HDF5PatchFormat.valuesChunk, shuffle: true))
        } else {
            var chosen = storage(count: elements, elementSize: 4, chunk: HDF5PatchFormat.valuesChunk, shuffle: true)
            if chosen.chunk == nil { chosen.chunk = min(elements, HDF5PatchFormat.valuesChunk) }
            tensor.values = try HDF5.createDataset(tensor.group, "values", type: chdf5_t_ieee_f32le(), count: 0, maximum: elements,
                                                   storage: chosen)
            tensor.valuesGrow = true
        }
    }

    public func append(_ block: PreparedBlock) throws {
        guard var tensor = current else { preconditionFailure("append outside a tensor") }
        let stored = block.values.count / 4
        do {
            try HDF5Library.locked {
                try block.mask.withUnsafeBytes { m in
                    try HDF5.write(tensor.mask, memoryType: chdf5_t_native_uint8(), offset: tensor.maskBytes, count: m.count,
                                   m.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, "\(tensor.groupPath)/mask")
                }
                if tensor.values < 0 { try createValues(&tensor, firstBlockValues: stored) }
                if tensor.valuesGrow, stored > 0 {
                    try HDF5.extend(tensor.values, to: tensor.valueCount + stored, "\(tensor.groupPath)/values")
                }
                try block.values.withUnsafeBytes { v in
                    try HDF5.write(tensor.values, memoryType: chdf5_t_native_float(), offset: tensor.valueCount, count: stored,
                                   v.baseAddress ?? UnsafeRawPointer(bitPattern: 4)!, "\(tensor.groupPath)/values")
                }
            }
        } catch {
            current = tensor
            throw writeError(error, tensor: tensor.header.name)
        }
        tensor.maskBytes += block.mask.count
        tensor.valueCount += stored
        tensor.encodings.append(block.encoding == .dense ? 1 : 0)
        tensor.nonzeros.append(Int64(block.nonzeros))
        tensor.totalNonzeros += block.nonzeros
        current = tensor
    }

    public func endTensor(agreement: [Int]) throws {
        guard var tensor = current else { preconditionFailure("endTensor outside a tensor") }
        current = nil
        let name = tensor.header.name
        guard tensor.encodings.count == tensor.header.blockCount else {
            throw NegPatchError(.invalidArgument, file: path, tensor: name,
                                "\(tensor.encodings.count) blocks written, the tensor has \(tensor.header.blockCount)")
        }
        do {
            try HDF5Library.locked {
                defer {
                    H5Dclose(tensor.mask)
                    if tensor.values >= 0 { H5Dclose(tensor.values) }
                    H5Gclose(tensor.group)
                }
                if tensor.values < 0 { try createValues(&tensor, firstBlockValues: 0) }
                let blocks = tensor.encodings.count
                let encodingSet = try HDF5.createDataset(tensor.group, "block_encoding", type: chdf5_t_std_u8le(), count: blocks,
                                                         storage: storage(count: blocks, elementSize: 1, chunk: HDF5PatchFormat.blockArrayChunk))
                defer { H5Dclose(encodingSet) }
                try tensor.encodings.withUnsafeBytes { e in
                    try HDF5.write(encodingSet, memoryType: chdf5_t_native_uint8(), offset: 0, count: blocks, e.baseAddress!,
                                   "\(tensor.groupPath)/block_encoding")
                }
                let nonzeroSet = try HDF5.createDataset(tensor.group, "block_nonzeros", type: chdf5_t_std_i64le(), count: blocks,
                                                        storage: storage(count: blocks, elementSize: 8, chunk: HDF5PatchFormat.blockArrayChunk))
                defer { H5Dclose(nonzeroSet) }
                try tensor.nonzeros.withUnsafeBytes { n in
                    try HDF5.write(nonzeroSet, memoryType: chdf5_t_native_int64(), offset: 0, count: blocks, n.baseAddress!,
                                   "\(tensor.groupPath)/block_nonzeros")
                }
                try HDF5.setInt(tensor.group, "nonzeros", tensor.totalNonzeros)
                if !agreement.isEmpty { try HDF5.setInts(tensor.group, "agreement", agreement) }
            }
        } catch {
            throw writeError(error, tensor: name)
        }
    }

    public func finish(metadata: PatchMetadata, fingerprint: [FingerprintEntry]) throws -> Int {
        precondition(current == nil, "finish inside a tensor")
        guard file >= 0 else { throw NegPatchError(.io, file: path, "the HDF5 writer was aborted") }
        let index = PatchIndex(metadata: metadata, fingerprint: fingerprint, tensors: [])
        guard case let .object(entries) = index.json(), let fingerprintJSON = entries.first(where: { $0.key == "base_fingerprint" })?.value else {
            preconditionFailure("the index JSON has a base_fingerprint")
        }
        do {
            try HDF5Library.locked {
                try HDF5.setString(file, "format", HDF5PatchFormat.formatTag)
                try HDF5.setInt(file, "version", HDF5PatchFormat.version)
                try HDF5.setString(file, "method", metadata.method)
                try HDF5.setString(file, "parameters", String(decoding: CanonicalJSON.encode(.object(metadata.parameters)), as: UTF8.self))
                try HDF5.setInt(file, "n", metadata.n)
                try HDF5.setStrings(file, "inputs", metadata.inputs)
                try HDF5.setString(file, "base", metadata.base)
                try HDF5.setDouble(file, "lambda", metadata.lambda)
                try HDF5.setString(file, "tool", metadata.tool)
                try HDF5.setUInt8(file, "lossy", metadata.lossy ? 1 : 0)
                // Written only when it is not the default, so subtracting patches keep the
                // bytes they had before directions existed.
                if metadata.direction != .subtract { try HDF5.setString(file, "direction", metadata.direction.rawValue) }
                try HDF5.setString(file, "base_fingerprint", String(decoding: CanonicalJSON.encode(fingerprintJSON), as: UTF8.self))
                try HDF5.setInt(tensorsGroup, "count", tensorCount)
                H5Gclose(tensorsGroup)
                tensorsGroup = -1
                let closed = H5Fclose(file)
                file = -1
                try HDF5Library.check(closed, "closing the HDF5 file")
            }
        } catch {
            abort()
            throw writeError(error)
        }
        let size: Int
        do {
            let written = try MappedFile(path: output.temporaryPath, isInput: false)
            size = written.size
            let block = HDF5PatchFormat.integrityBlock(
                fileSize: size, content: UnsafeRawBufferPointer(rebasing: written.bytes[HDF5PatchFormat.userBlock...]))
            try block.withUnsafeBytes { try output.write($0, at: 0) }
        } catch {
            abort()
            throw error
        }
        try output.commit()
        return size
    }

    public func abort() {
        HDF5Library.locked {
            if file >= 0 {
                H5Fclose(file)  // strong close degree: closes the tensor's group and datasets too
                file = -1
                tensorsGroup = -1
                current = nil
                _ = HDF5Library.takeErrorMessage()
            }
        }
        output.discard()
    }
}

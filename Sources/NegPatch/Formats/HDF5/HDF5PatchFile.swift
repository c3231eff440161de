import CHDF5
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A validated HDF5 patch (`formats/negpatch-hdf5.md`), open for reading.
///
/// Opening checks every attribute and dataset shape of sections 2-5 of the spec; each
/// block's mask and values are checked when it is read (section 6, item 6). HDF5 reads
/// happen behind `HDF5Library`'s lock; popcounts and unpacking happen outside it, so
/// several threads decode blocks in parallel.
public final class HDF5PatchFile: PatchSource, @unchecked Sendable {
    public let path: String
    public let formatName = HDF5PatchFormat.name
    public let index: PatchIndex
    public let fileSize: Int
    private let file: hid_t
    /// The file as mapped for its integrity check, kept open so that it counts as an input
    /// no output may replace (`OpenInputs`).
    private let mapped: MappedFile
    /// Per tensor: where each block's values start in `values` (B + 1 prefix sums).
    private let valueStarts: [[Int]]
    /// Per tensor: bytes `mask` and `values` occupy in the file.
    private let storage: [(mask: Int, values: Int)]
    /// Datasets of the tensors read most recently (guarded by the HDF5 lock): a small cache,
    /// so each keeps its chunk cache warm without holding one per tensor.
    private var openDatasets: [(tensor: Int, mask: hid_t, values: hid_t)] = []
    private static let openDatasetLimit = 4

    /// Opens `path` and validates its layout. Throws `.malformed` naming the file and the
    /// HDF5 object (and the tensor) for anything that is not a valid patch, `.io` if the
    /// file cannot be read at all.
    public init(path: String) throws {
        self.path = path
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw NegPatchError(.io, file: path, "cannot open: \(systemErrorText(errno))")
        }
        fileSize = Int(info.st_size)
        mapped = try MappedFile(path: path)
        try HDF5PatchFormat.checkIntegrity(mapped)
        let opened: hid_t
        do {
            opened = try HDF5Library.locked {
                let access = try HDF5Library.check(id: H5Pcreate(chdf5_p_file_access()), "creating file properties")
                defer { H5Pclose(access) }
                H5Pset_fclose_degree(access, H5F_CLOSE_STRONG)
                return try HDF5Library.check(id: H5Fopen(path, chdf5_f_acc_rdonly(), access), "opening the HDF5 file")
            }
        } catch {
            throw NegPatchError(.malformed, file: path, "not a readable HDF5 file: \(error)")
        }
        file = opened
        do {
            let layout = try HDF5Library.locked { try HDF5PatchFile.readLayout(file: opened, path: path) }
            index = layout.index
            valueStarts = layout.valueStarts
            storage = layout.storage
        } catch {
            HDF5Library.locked { _ = H5Fclose(opened) }
            throw error
        }
    }

    deinit {
        HDF5Library.locked {
            for open in openDatasets {
                H5Dclose(open.mask)
                H5Dclose(open.values)
            }
            H5Fclose(file)
        }
    }

    public func storedBytes(tensor: Int) -> (mask: Int, values: Int) {
        storage[tensor]
    }

    // MARK: Opening

    private struct Layout {
        var index: PatchIndex
        var valueStarts: [[Int]]
        var storage: [(mask: Int, values: Int)]
    }

    /// Reads and checks everything but the blocks' contents. Runs inside the HDF5 lock.
    private static func readLayout(file: hid_t, path: String) throws -> Layout {
        func malformed(_ object: String, _ message: String, tensor: String? = nil) -> NegPatchError {
            NegPatchError(.malformed, file: path, tensor: tensor, "\(object): \(message)")
        }
        /// Runs `body`, turning an `HDF5Failure` into an error naming `object`.
        func at<T>(_ object: String, tensor: String? = nil, _ body: () throws -> T) throws -> T {
            do {
                return try body()
            } catch let failure as HDF5Failure {
                throw malformed(object, failure.message, tensor: tensor)
            }
        }

        // Section 2: is this a NegPatch patch at all?
        guard try at("/", { try HDF5.hasAttribute(file, "format") }) else {
            throw NegPatchError(.malformed, file: path, "HDF5 file is not a NegPatch patch (the root group has no 'format' attribute)")
        }
        let format = try at("/", { try HDF5.string(file, "format") })
        guard format == HDF5PatchFormat.formatTag else {
            throw NegPatchError(.malformed, file: path,
                                "HDF5 file is not a NegPatch patch (root attribute 'format' is \(format.debugDescription), expected \"\(HDF5PatchFormat.formatTag)\")")
        }
        let version = try at("/", { try HDF5.int(file, "version") })
        guard version == HDF5PatchFormat.version else {
            throw malformed("/", "unsupported negpatch-hdf5 version \(version) (this reader knows \(HDF5PatchFormat.version))")
        }
        let (metadata, fingerprint) = try at("/") { () throws -> (PatchMetadata, [FingerprintEntry]) in
            let parametersText = try HDF5.string(file, "parameters")
            let parameters: JSONValue
            do {
                parameters = try StrictJSON.parse(Array(parametersText.utf8))
            } catch {
                throw HDF5Failure(message: "attribute 'parameters' is not valid JSON: \(error)")
            }
            let lossy = try HDF5.int(file, "lossy")
            guard lossy == 0 || lossy == 1 else { throw HDF5Failure(message: "attribute 'lossy' is \(lossy), expected 0 or 1") }
            let fingerprintText = try HDF5.string(file, "base_fingerprint")
            let fingerprintJSON: JSONValue
            do {
                fingerprintJSON = try StrictJSON.parse(Array(fingerprintText.utf8))
            } catch {
                throw HDF5Failure(message: "attribute 'base_fingerprint' is not valid JSON: \(error)")
            }
            let direction: [(key: String, value: JSONValue)] = try HDF5.hasAttribute(file, "direction")
                ? [("direction", .string(try HDF5.string(file, "direction")))] : []
            let metadataJSON = JSONValue.object([
                ("method", .string(try HDF5.string(file, "method"))),
                ("parameters", parameters),
                ("n", .int(try HDF5.int(file, "n"))),
                ("inputs", .array(try HDF5.strings(file, "inputs").map { .string($0) })),
                ("base", .string(try HDF5.string(file, "base"))),
                ("lambda", .number(String(try HDF5.double(file, "lambda")))),
                ("tool", .string(try HDF5.string(file, "tool"))),
                ("lossy", .bool(lossy == 1)),
            ] + direction)
            // The metadata and fingerprint pass the very checks a .negpatch index does.
            let decoded = try PatchIndexDecoder(file: path, subject: "invalid patch metadata (root attributes)").decode(.object([
                ("format", .string("negpatch")), ("version", .int(1)), ("metadata", metadataJSON),
                ("base_fingerprint", fingerprintJSON), ("tensors", .array([])),
            ]))
            return (decoded.metadata, decoded.fingerprint)
        }

        // Section 1 and 3: the tensor groups.
        let tensorsGroup = try at("/", { try HDF5.openGroup(file, "tensors") })
        defer { H5Gclose(tensorsGroup) }
        let count = try at("/tensors", { try HDF5.int(tensorsGroup, "count") })
        let links = try at("/tensors", { try HDF5.linkCount(tensorsGroup, "/tensors") })
        guard count >= 0, count == links else {
            throw malformed("/tensors", "attribute 'count' is \(count), but the group holds \(links) members")
        }
        var tensors: [PatchTensor] = []
        var starts: [[Int]] = []
        var storage: [(mask: Int, values: Int)] = []
        var names = Set<TensorName>()
        tensors.reserveCapacity(count)
        for i in 0..<count {
            let object = HDF5PatchFormat.groupPath(i)
            let group = try at("/tensors", { try HDF5.openGroup(tensorsGroup, HDF5PatchFormat.groupName(i)) })
            defer { H5Gclose(group) }
            let name = try at(object, { try HDF5.string(group, "name") })
            guard names.insert(TensorName(name)).inserted else { throw malformed(object, "a second tensor with this name", tensor: name) }
            let tensor = try readTensor(group, object: object, name: name, n: metadata.n, path: path)
            tensors.append(tensor.tensor)
            starts.append(tensor.valueStarts)
            storage.append(tensor.storage)
        }
        return Layout(index: PatchIndex(metadata: metadata, fingerprint: fingerprint, tensors: tensors),
                      valueStarts: starts, storage: storage)
    }

    /// Reads and checks one tensor group (spec sections 3 and 6, items 4-5).
    private static func readTensor(_ group: hid_t, object: String, name: String, n: Int, path: String) throws
        -> (tensor: PatchTensor, valueStarts: [Int], storage: (mask: Int, values: Int)) {
        func malformed(_ message: String, _ what: String = "") -> NegPatchError {
            NegPatchError(.malformed, file: path, tensor: name, "\(object)\(what): \(message)")
        }
        func at<T>(_ body: () throws -> T) throws -> T {
            do {
                return try body()
            } catch let failure as HDF5Failure {
                throw malformed(failure.message)
            }
        }
        let dtypeText = try at { try HDF5.string(group, "dtype") }
        guard let dtype = DType(rawValue: dtypeText), dtype.isFloating else {
            throw malformed("attribute 'dtype' is \(dtypeText.debugDescription), expected F32, F16, BF16 or F64")
        }
        let shape = try at { try HDF5.ints(group, "shape") }
        guard shape.allSatisfy({ $0 >= 0 }), let elements = checkedElementCount(shape),
              !elements.multipliedReportingOverflow(by: 8).overflow
        else { throw malformed("attribute 'shape' \(describeShape(shape)) is negative or overflows") }
        let elementsAttribute = try at { try HDF5.int(group, "elements") }
        guard elementsAttribute == elements else {
            throw malformed("attribute 'elements' is \(elementsAttribute), but shape \(describeShape(shape)) has \(elements) elements")
        }
        let nonzeros = try at { try HDF5.int(group, "nonzeros") }
        guard nonzeros >= 0, nonzeros <= elements else {
            throw malformed("attribute 'nonzeros' is \(nonzeros), outside 0...\(elements)")
        }
        let valueType = try at { try HDF5.string(group, "value_type") }
        guard valueType == "f32" else { throw malformed("attribute 'value_type' is \(valueType.debugDescription), expected \"f32\"") }
        let blockElements = try at { try HDF5.int(group, "block_elements") }
        guard blockElements > 0, blockElements % 64 == 0, blockElements <= PatchWorkBound.maxBlockElements else {
            throw malformed("attribute 'block_elements' is \(blockElements), expected a positive multiple of 64 up to 2^26")
        }
        var agreement: [Int] = []
        if try at({ try HDF5.hasAttribute(group, "agreement") }) {
            agreement = try at { try HDF5.ints(group, "agreement") }
            guard agreement.count == n + 1, agreement.allSatisfy({ $0 >= 0 }) else {
                throw malformed("attribute 'agreement' must hold n + 1 = \(n + 1) non-negative counts, it holds \(agreement.count)")
            }
            var sum = 0
            for value in agreement {
                let (next, overflow) = sum.addingReportingOverflow(value)
                guard !overflow else { throw malformed("attribute 'agreement' overflows") }
                sum = next
            }
            guard sum == elements else { throw malformed("attribute 'agreement' sums to \(sum), not the element count \(elements)") }
        }
        let blockCount = elements == 0 ? 0 : (elements - 1) / blockElements + 1

        // The four datasets: presence, type and size.
        func dataset(_ datasetName: String) throws -> (id: hid_t, typeClass: H5T_class_t, size: Int, signed: Bool, count: Int) {
            let id = try at { try HDF5.openDataset(group, datasetName) }
            do {
                let d = try HDF5.describeDataset(id, datasetName)
                return (id, d.typeClass, d.size, d.signed, d.count)
            } catch let failure as HDF5Failure {
                H5Dclose(id)
                throw malformed(failure.message, "/\(datasetName)")
            }
        }
        let mask = try dataset("mask")
        defer { H5Dclose(mask.id) }
        guard mask.typeClass == H5T_INTEGER, mask.size == 1, !mask.signed else {
            throw malformed("must hold uint8", "/mask")
        }
        guard mask.count == Bitmask.byteCount(elements) else {
            throw malformed("holds \(mask.count) bytes, but shape \(describeShape(shape)) needs \(Bitmask.byteCount(elements)) (one bit per element)", "/mask")
        }
        let values = try dataset("values")
        defer { H5Dclose(values.id) }
        guard values.typeClass == H5T_FLOAT, values.size == 4 else {
            throw malformed("must hold float32", "/values")
        }
        let encodingSet = try dataset("block_encoding")
        defer { H5Dclose(encodingSet.id) }
        let nonzeroSet = try dataset("block_nonzeros")
        defer { H5Dclose(nonzeroSet.id) }
        for (set, setName) in [(encodingSet, "block_encoding"), (nonzeroSet, "block_nonzeros")] {
            guard set.typeClass == H5T_INTEGER else { throw malformed("must hold integers", "/\(setName)") }
            guard set.count == blockCount else {
                throw malformed("holds \(set.count) entries, but \(elements) elements in blocks of \(blockElements) make \(blockCount) blocks", "/\(setName)")
            }
        }
        var encodings = [Int64](repeating: 0, count: blockCount)
        var blockNonzeros = [Int64](repeating: 0, count: blockCount)
        do {
            try encodings.withUnsafeMutableBytes { e in
                try HDF5.read(encodingSet.id, memoryType: chdf5_t_native_int64(), offset: 0, count: blockCount, into: e.baseAddress!, "block_encoding")
            }
            try blockNonzeros.withUnsafeMutableBytes { e in
                try HDF5.read(nonzeroSet.id, memoryType: chdf5_t_native_int64(), offset: 0, count: blockCount, into: e.baseAddress!, "block_nonzeros")
            }
        } catch let failure as HDF5Failure {
            throw NegPatchError(.corrupt, file: path, tensor: name, "\(object): \(failure.message)")
        }
        var blocks: [PatchBlock] = []
        blocks.reserveCapacity(blockCount)
        var starts = [0]
        starts.reserveCapacity(blockCount + 1)
        var total = 0
        for b in 0..<blockCount {
            let count = min(blockElements, elements - b * blockElements)
            guard encodings[b] == 0 || encodings[b] == 1 else {
                throw malformed("block \(b) has encoding \(encodings[b]), expected 0 (sparse) or 1 (dense)", "/block_encoding")
            }
            let m = Int(blockNonzeros[b])
            guard m >= 0, m <= count else {
                throw malformed("block \(b) has \(m) nonzeros, outside 0...\(count)", "/block_nonzeros")
            }
            let encoding: BlockEncoding = encodings[b] == 1 ? .dense : .sparse
            let stored = encoding == .sparse ? m : count
            // For HDF5 a part's offset is an element offset into its dataset.
            let maskPart = PartLocation(offset: b * blockElements / 8, length: Bitmask.byteCount(count), size: Bitmask.byteCount(count), checksum: 0)
            let valuesPart = PartLocation(offset: starts[b], length: 4 * stored, size: 4 * stored, checksum: 0)
            blocks.append(PatchBlock(encoding: encoding, nonzeros: m, mask: encoding == .sparse ? maskPart : nil, values: valuesPart))
            starts.append(starts[b] + stored)
            total += m
        }
        guard total == nonzeros else {
            throw malformed("blocks hold \(total) nonzeros, but attribute 'nonzeros' is \(nonzeros)", "/block_nonzeros")
        }
        guard values.count == starts[blockCount] else {
            throw malformed("holds \(values.count) values, but block_encoding and block_nonzeros call for \(starts[blockCount]) (one per set bit of 'mask')", "/values")
        }
        let tensor = PatchTensor(name: name, dtype: dtype, shape: shape, elements: elements, nonzeros: nonzeros,
                                 blockElements: blockElements, blocks: blocks, agreement: agreement)
        return (tensor, starts, (Int(H5Dget_storage_size(mask.id)), Int(H5Dget_storage_size(values.id))))
    }

    // MARK: Blocks

    /// The open `mask` and `values` datasets of tensor `t`. Call inside the HDF5 lock.
    private func datasets(_ t: Int) throws -> (mask: hid_t, values: hid_t) {
        if let i = openDatasets.firstIndex(where: { $0.tensor == t }) {
            return (openDatasets[i].mask, openDatasets[i].values)
        }
        if openDatasets.count >= Self.openDatasetLimit {
            let oldest = openDatasets.removeFirst()
            H5Dclose(oldest.mask)
            H5Dclose(oldest.values)
        }
        let group = try HDF5.openGroup(file, "tensors/\(HDF5PatchFormat.groupName(t))")
        defer { H5Gclose(group) }
        let mask = try HDF5.openDataset(group, "mask")
        let values: hid_t
        do {
            values = try HDF5.openDataset(group, "values")
        } catch {
            H5Dclose(mask)
            throw error
        }
        openDatasets.append((t, mask, values))
        return (mask, values)
    }

    public func block(tensor t: Int, block b: Int) throws -> SparseBlock {
        let tensor = index.tensors[t]
        let entry = tensor.blocks[b]
        let count = tensor.elementCount(ofBlock: b)
        let object = HDF5PatchFormat.groupPath(t)
        let stored = valueStarts[t][b + 1] - valueStarts[t][b]
        func corrupt(_ message: String) -> NegPatchError {
            NegPatchError(.corrupt, file: path, tensor: tensor.name, "\(object): block \(b): \(message)")
        }
        try Memory.reserve(Bitmask.byteCount(count) + 4 * stored + 4 * (entry.nonzeros + 64),
                           for: "decoding block \(b) of tensor '\(tensor.name)'")
        var mask = [UInt8](repeating: 0, count: Bitmask.byteCount(count))
        var values = [Float](repeating: 0, count: stored)
        do {
            try HDF5Library.locked {
                let (maskSet, valuesSet) = try datasets(t)
                try mask.withUnsafeMutableBytes { m in
                    try HDF5.read(maskSet, memoryType: chdf5_t_native_uint8(), offset: b * tensor.blockElements / 8, count: m.count,
                                  into: m.baseAddress!, "mask")
                }
                try values.withUnsafeMutableBytes { v in
                    try HDF5.read(valuesSet, memoryType: chdf5_t_native_float(), offset: valueStarts[t][b], count: stored,
                                  into: v.baseAddress ?? UnsafeMutableRawPointer(bitPattern: 4)!, "values")
                }
            }
        } catch let failure as HDF5Failure {
            throw corrupt(failure.message)
        }
        // Checks and unpacking, outside the lock.
        let (setBits, cleanPadding) = mask.withUnsafeBufferPointer { Bitmask.popcount($0.baseAddress!, count: count) }
        guard setBits == stored else {
            throw corrupt("mask has \(setBits) set bits, but the block stores \(stored) values"
                          + (entry.encoding == .dense ? " (a dense block sets every bit)" : " (block_nonzeros)"))
        }
        guard cleanPadding else { throw corrupt("mask padding bits are set") }
        if entry.encoding == .dense {
            let decoded = SparseBlock(count: count, indices: nil, values: values)
            guard decoded.nonzeros == entry.nonzeros else {
                throw corrupt("dense values hold \(decoded.nonzeros) nonzeros, block_nonzeros says \(entry.nonzeros)")
            }
            return decoded
        }
        if let zero = values.firstIndex(of: 0) {
            throw corrupt("sparse value \(zero) is zero (a sparse block stores only nonzero values)")
        }
        var indices = [UInt32](repeating: 0, count: stored + 64)
        mask.withUnsafeBufferPointer { m in
            _ = indices.withUnsafeMutableBufferPointer { Bitmask.setBitIndices(m.baseAddress!, count: count, into: $0.baseAddress!) }
        }
        indices.removeLast(64)
        return SparseBlock(count: count, indices: indices, values: values)
    }
}

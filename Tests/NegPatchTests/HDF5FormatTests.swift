import CHDF5
import Foundation
import Testing
@testable import NegPatch

/// A test tensor: name, dtype, shape and its dense task vector.
typealias HDF5TestTensor = (name: String, dtype: DType, shape: [Int], values: [Float])

private let testMetadata = PatchMetadata(method: "ties", parameters: [("density", .number("0.2"))], n: 3,
                                         inputs: ["a.safetensors", "b", "ü/c"], base: "base", lambda: 0.35)

/// Writes `tensors` through `writer` block by block, as `Merger` does.
@discardableResult
private func write(_ writer: any PatchWriter, _ tensors: [HDF5TestTensor], blockElements: Int = 64) throws -> Int {
    for tensor in tensors {
        let header = PatchTensorHeader(name: tensor.name, dtype: tensor.dtype, shape: tensor.shape,
                                       elements: tensor.values.count, blockElements: blockElements)
        try writer.beginTensor(header)
        for b in 0..<header.blockCount {
            let start = b * blockElements
            let count = min(blockElements, tensor.values.count - start)
            let block = try tensor.values.withUnsafeBufferPointer { try writer.prepare(dense: $0.baseAddress! + start, count: count) }
            try writer.append(block)
        }
        try writer.endTensor(agreement: tensor.values.isEmpty ? [0, 0, 0, 0] : [1, 0, 0, tensor.values.count - 1])
    }
    let fingerprint = tensors.map { FingerprintEntry(name: $0.name, dtype: $0.dtype, shape: $0.shape, digest: 0x0123_4567_89AB_CDEF) }
        + [FingerprintEntry(name: "ids", dtype: .I64, shape: [2, 3], digest: 7)]
    return try writer.finish(metadata: testMetadata, fingerprint: fingerprint)
}

private func hdf5Writer(_ path: String, compression: String = "gzip") throws -> any PatchWriter {
    var options = PatchWriterOptions()
    options.hdf5Compression = compression
    return try HDF5PatchFormat.writer(path: path, options: options)
}

private func randomVector(_ count: Int, density: Double, seed: UInt64) -> [Float] {
    var rng = SeededGenerator(seed: seed)
    return (0..<count).map { _ in
        Double.random(in: 0..<1, using: &rng) < density ? Float.random(in: 0.001...1, using: &rng) * (Bool.random(using: &rng) ? 1 : -1) : 0
    }
}

private func sampleTensors(density: Double, dtype: DType = .F32) -> [HDF5TestTensor] {
    [
        ("model/layers.0/w.weight", dtype, [7, 45], randomVector(315, density: density, seed: 1)),
        ("scalar", dtype, [], randomVector(1, density: density, seed: 2)),
        ("empty", dtype, [3, 0], []),
        (".", dtype, [1000], randomVector(1000, density: density, seed: 3)),
        ("/", dtype, [130], randomVector(130, density: density, seed: 4)),
    ]
}

/// Every tensor of the patch at `path`, decoded densely (blocks in parallel).
private func decodeAll(_ path: String) throws -> [[Float]] {
    let patch = try PatchFormats.open(path)
    return try patch.index.tensors.indices.map { try TaskVectorDecoder.dense(patch, tensor: $0) }
}

/// Opens `path` read-write and runs `edit` on it inside the HDF5 lock.
/// The edit is then sealed with a fresh integrity block, as a hostile writer would, so the
/// reader's structural checks (not the integrity check) must catch it.
private func editHDF5(_ path: String, _ edit: (hid_t) throws -> Void) throws {
    try HDF5Library.locked {
        let file = try HDF5Library.check(id: H5Fopen(path, chdf5_f_acc_rdwr(), chdf5_p_default()), "opening")
        defer { H5Fclose(file) }
        try edit(file)
    }
    resealIntegrity(path)
}

/// Rewrites the integrity block of `path` to match its current content.
private func resealIntegrity(_ path: String) {
    var bytes = readBytes(path)
    let block = bytes.withUnsafeBytes { raw in
        HDF5PatchFormat.integrityBlock(fileSize: raw.count, content: UnsafeRawBufferPointer(rebasing: raw[HDF5PatchFormat.userBlock...]))
    }
    bytes.replaceSubrange(0..<HDF5PatchFormat.userBlock, with: block)
    writeBytes(path, bytes)
}

/// Replaces dataset `name` in `group` by a contiguous one of `type` holding `bytes`.
private func replaceDataset(_ file: hid_t, _ name: String, type: hid_t, memoryType: hid_t, elementSize: Int, bytes: [UInt8]) throws {
    H5Ldelete(file, name, chdf5_p_default())
    let count = bytes.count / elementSize
    let set = try HDF5.createDataset(file, name, type: type, count: count, storage: HDF5.Storage(chunk: nil, deflate: nil))
    defer { H5Dclose(set) }
    try bytes.withUnsafeBytes { try HDF5.write(set, memoryType: memoryType, offset: 0, count: count, $0.baseAddress!, name) }
}

/// Reads the whole one-dimensional dataset `name` as raw bytes of `memoryType`.
private func readDataset(_ file: hid_t, _ name: String, memoryType: hid_t, elementSize: Int) throws -> [UInt8] {
    let set = try HDF5Library.check(id: H5Dopen2(file, name, chdf5_p_default()), "opening \(name)")
    defer { H5Dclose(set) }
    let count = try HDF5.describeDataset(set, name).count
    var bytes = [UInt8](repeating: 0, count: count * elementSize + 1)
    try bytes.withUnsafeMutableBytes { try HDF5.read(set, memoryType: memoryType, offset: 0, count: count, into: $0.baseAddress!, name) }
    bytes.removeLast()
    return bytes
}

@Suite struct HDF5FormatTests {
    @Test(arguments: [0.0, 0.07, 0.5, 0.9, 1.0], [DType.F32, .F16, .BF16, .F64])
    func roundTripsEveryDensityAndDtype(_ density: Double, _ dtype: DType) throws {
        let folder = TemporaryFolder()
        let path = folder.file("p.h5")
        let tensors = sampleTensors(density: density, dtype: dtype)
        let size = try write(hdf5Writer(path), tensors)
        #expect(size == readBytes(path).count)
        #expect(Array(readBytes(path).prefix(8)) == HDF5PatchFormat.integrityMagic)
        #expect(Array(readBytes(path)[512..<520]) == HDF5PatchFormat.signature)
        let patch = try PatchFormats.open(path)
        #expect(patch.formatName == "hdf5")
        #expect(patch.index.metadata == testMetadata)
        #expect(patch.index.fingerprint.count == tensors.count + 1)
        #expect(patch.index.fingerprint.last == FingerprintEntry(name: "ids", dtype: .I64, shape: [2, 3], digest: 7))
        #expect(patch.index.tensors.map(\.name) == tensors.map(\.name))
        #expect(patch.index.tensors.map(\.shape) == tensors.map(\.shape))
        #expect(patch.index.tensors.map(\.dtype) == tensors.map { _ in dtype })
        #expect(patch.index.tensors[0].agreement == [1, 0, 0, 314])
        for (tensor, got) in zip(tensors, try decodeAll(path)) {
            #expect(got.map(\.bitPattern) == tensor.values.map(\.bitPattern), "\(tensor.name)")
            #expect(patch.index.tensors.first { $0.name == tensor.name }!.nonzeros == tensor.values.filter { $0 != 0 }.count)
        }
    }

    @Test(arguments: ["gzip", "none"], [64, 128, 1 << 20])
    func blockSizesAndCompressionsRoundTrip(_ compression: String, _ blockElements: Int) throws {
        let folder = TemporaryFolder()
        let path = folder.file("p.h5")
        // Blocks of mixed density, so one tensor holds sparse and dense blocks.
        let mixed = randomVector(640, density: 0.05, seed: 9) + randomVector(640, density: 1, seed: 10) + randomVector(77, density: 0.5, seed: 11)
        let tensors: [HDF5TestTensor] = [("mixed", .F32, [mixed.count], mixed), ("tiny", .F16, [3], [0, 1.5, 0])]
        try write(hdf5Writer(path, compression: compression), tensors, blockElements: blockElements)
        let patch = try PatchFormats.open(path)
        #expect(patch.index.tensors[0].blockElements == blockElements)
        #expect(patch.index.tensors[0].blocks.count == (mixed.count - 1) / blockElements + 1)
        if blockElements == 64 { #expect(patch.index.tensors[0].blocks.contains { $0.encoding == .dense }) }
        let decoded = try decodeAll(path)
        #expect(decoded[0].map(\.bitPattern) == mixed.map(\.bitPattern))
        #expect(decoded[1] == [0, 1.5, 0])
    }

    @Test func bothWritersChooseTheSameBlocksAndConversionIsLossless() throws {
        let folder = TemporaryFolder()
        let tensors = sampleTensors(density: 0.3) + sampleTensors(density: 0.95).map { ("dense " + $0.name, $0.dtype, $0.shape, $0.values) }
            + sampleTensors(density: 0.07).map { ("rice " + $0.name, $0.dtype, $0.shape, $0.values) }
        let negpatch = folder.file("a.negpatch"), hdf5 = folder.file("a.h5")
        try write(NegPatchWriter(path: negpatch, level: Zstd.defaultLevel), tensors)
        try write(hdf5Writer(hdf5), tensors)
        let fromNegPatch = try PatchFormats.open(negpatch), fromHDF5 = try PatchFormats.open(hdf5)
        #expect(fromNegPatch.index.tensors.map { $0.blocks.map(\.encoding) } == fromHDF5.index.tensors.map { $0.blocks.map(\.encoding) })
        #expect(fromNegPatch.index.tensors.flatMap(\.blocks).contains { $0.encoding == .dense })
        #expect(fromNegPatch.index.tensors.flatMap(\.blocks).contains { $0.maskCodec != .zstd })

        // .negpatch -> HDF5 gives the file the HDF5 writer wrote; and back gives the original.
        let converted = folder.file("b.h5"), back = folder.file("b.negpatch"), again = folder.file("c.h5")
        try PatchConversion.convert(fromNegPatch, to: hdf5Writer(converted))
        #expect(readBytes(converted) == readBytes(hdf5))
        try PatchConversion.convert(PatchFormats.open(converted), to: NegPatchWriter(path: back, level: Zstd.defaultLevel))
        #expect(readBytes(back) == readBytes(negpatch))
        try PatchConversion.convert(PatchFormats.open(back), to: hdf5Writer(again))
        #expect(readBytes(again) == readBytes(hdf5))
        // Exports are identical too.
        try TaskVectorExport.write(fromNegPatch, to: folder.file("1.safetensors"))
        try TaskVectorExport.write(PatchFormats.open(converted), to: folder.file("2.safetensors"))
        #expect(readBytes(folder.file("1.safetensors")) == readBytes(folder.file("2.safetensors")))
    }

    @Test func conversionKeepsNegativeZerosOfDenseBlocks() throws {
        let folder = TemporaryFolder()
        let values: [Float] = (0..<64).map { $0 % 2 == 0 ? -0.0 : Float($0) }
        let writer = try NegPatchWriter(path: folder.file("z.negpatch"), level: 3)
        try writer.beginTensor(PatchTensorHeader(name: "z", dtype: .F32, shape: [64], elements: 64, blockElements: 64))
        try writer.append(writer.prepare(SparseBlock(count: 64, indices: nil, values: values), encoding: .dense))
        try writer.endTensor(agreement: [])
        _ = try writer.finish(metadata: testMetadata, fingerprint: [])
        try PatchConversion.convert(PatchFormats.open(folder.file("z.negpatch")), to: hdf5Writer(folder.file("z.h5")))
        #expect(try decodeAll(folder.file("z.h5"))[0].map(\.bitPattern) == values.map(\.bitPattern))
        try PatchConversion.convert(PatchFormats.open(folder.file("z.h5")), to: NegPatchWriter(path: folder.file("y.negpatch"), level: 3))
        #expect(readBytes(folder.file("y.negpatch")) == readBytes(folder.file("z.negpatch")))
    }

    @Test(arguments: [ValueType.f16, .bf16, .int8])
    func lossyPatchesConvertToTheTaskVectorTheyDecodeTo(_ valueType: ValueType) throws {
        let folder = TemporaryFolder()
        // Tiny values that int8 and f16 round to zero, and huge ones f16 cannot hold.
        var values = randomVector(700, density: 0.4, seed: 21)
        values[3] = 1e-9
        values[200] = 70000
        let tensors: [HDF5TestTensor] = [("w", .F32, [700], values), ("d", .F16, [300], randomVector(300, density: 0.95, seed: 22))]
        let lossy = folder.file("l.negpatch")
        try write(NegPatchWriter(path: lossy, level: 3, valueType: valueType), tensors)
        let expected = try decodeAll(lossy)
        try PatchConversion.convert(PatchFormats.open(lossy), to: hdf5Writer(folder.file("l.h5")))
        let converted = try PatchFormats.open(folder.file("l.h5"))
        #expect(converted.index.metadata.lossy)
        #expect(try decodeAll(folder.file("l.h5")).map { $0.map(\.bitPattern) } == expected.map { $0.map(\.bitPattern) })
        try PatchConversion.convert(converted, to: NegPatchWriter(path: folder.file("back.negpatch"), level: 3))
        #expect(try decodeAll(folder.file("back.negpatch")).map { $0.map(\.bitPattern) } == expected.map { $0.map(\.bitPattern) })
        var options = PatchWriterOptions()
        options.valueType = valueType
        let error = #expect(throws: NegPatchError.self) { try HDF5PatchFormat.writer(path: folder.file("x.h5"), options: options) }
        #expect(error?.code == .invalidArgument)
    }

    @Test func sameInputGivesTheSameBytes() throws {
        let folder = TemporaryFolder()
        for compression in ["gzip", "none"] {
            try write(hdf5Writer(folder.file("1.h5"), compression: compression), sampleTensors(density: 0.3))
            try write(hdf5Writer(folder.file("2.h5"), compression: compression), sampleTensors(density: 0.3))
            #expect(readBytes(folder.file("1.h5")) == readBytes(folder.file("2.h5")), "\(compression)")
        }
    }

    @Test func abortedWritesLeaveNothingBehind() throws {
        let folder = TemporaryFolder()
        let path = folder.file("p.h5")
        writeBytes(path, Array("previous content".utf8))
        let writer = try hdf5Writer(path)
        try writer.beginTensor(PatchTensorHeader(name: "a", dtype: .F32, shape: [10], elements: 10, blockElements: 64))
        writer.abort()
        #expect(readBytes(path) == Array("previous content".utf8))
        #expect(folder.contents == ["p.h5"])
        // A writer released without finishing also cleans up.
        do {
            let other = try hdf5Writer(folder.file("q.h5"))
            try other.beginTensor(PatchTensorHeader(name: "a", dtype: .F32, shape: [10], elements: 10, blockElements: 64))
        }
        #expect(folder.contents == ["p.h5"])
    }

    @Test func rejectsBadOptionsAndNamesHDF5CannotStore() throws {
        let folder = TemporaryFolder()
        #expect(throws: NegPatchError.self) { try hdf5Writer(folder.file("p.h5"), compression: "zstd") }
        #expect(throws: NegPatchError.self) { try HDF5PatchWriter(path: folder.file("p.h5"), compression: "gzip", gzipLevel: 10) }
        let writer = try hdf5Writer(folder.file("p.h5"))
        let error = #expect(throws: NegPatchError.self) {
            try writer.beginTensor(PatchTensorHeader(name: "a\u{0}b", dtype: .F32, shape: [1], elements: 1, blockElements: 64))
        }
        #expect(error?.description.contains("U+0000") == true)
        writer.abort()
        #expect(folder.contents.isEmpty)
    }

    // MARK: Malformed files

    /// Writes a valid two-tensor patch, applies `edit`, and returns the error opening and
    /// decoding it gives.
    private func damaged(_ edit: (hid_t) throws -> Void) throws -> (path: String, error: NegPatchError?, folder: TemporaryFolder) {
        let folder = TemporaryFolder()
        let path = folder.file("bad.h5")
        try write(hdf5Writer(path), [("first", .F32, [100], randomVector(100, density: 0.3, seed: 1)),
                                     ("layers.1/mlp.w", .BF16, [20, 10], randomVector(200, density: 0.3, seed: 2))])
        try editHDF5(path, edit)
        do {
            _ = try decodeAll(path)
            return (path, nil, folder)
        } catch let error as NegPatchError {
            return (path, error, folder)
        }
    }

    @Test func rejectsHDF5FilesThatAreNotPatches() throws {
        let folder = TemporaryFolder()
        let path = folder.file("plain.h5")
        try HDF5Library.locked {
            let file = try HDF5Library.check(id: H5Fcreate(path, chdf5_f_acc_trunc(), chdf5_p_default(), chdf5_p_default()), "creating")
            H5Fclose(file)
        }
        let error = #expect(throws: NegPatchError.self) { try PatchFormats.open(path) }
        #expect(error?.description == "\(path): HDF5 file is not a NegPatch patch (no NegPatch integrity block before the HDF5 data)")
        // An HDF5 file with a valid integrity block but no patch in it.
        try HDF5Library.locked {
            let creation = H5Pcreate(chdf5_p_file_create())
            defer { H5Pclose(creation) }
            H5Pset_userblock(creation, 512)
            let file = try HDF5Library.check(id: H5Fcreate(path, chdf5_f_acc_trunc(), creation, chdf5_p_default()), "creating")
            H5Fclose(file)
        }
        resealIntegrity(path)
        let sealed = #expect(throws: NegPatchError.self) { try PatchFormats.open(path) }
        #expect(sealed?.description == "\(path): HDF5 file is not a NegPatch patch (the root group has no 'format' attribute)")
        // A truncated patch fails its integrity block before HDF5 reads it.
        try write(hdf5Writer(folder.file("p.h5")), sampleTensors(density: 0.3))
        writeBytes(folder.file("t.h5"), Array(readBytes(folder.file("p.h5")).prefix(600)))
        let truncated = #expect(throws: NegPatchError.self) { try PatchFormats.open(folder.file("t.h5")) }
        #expect(truncated?.description == "\(folder.file("t.h5")): integrity block does not match the file (damaged or truncated file)")
    }

    @Test func rejectsAnotherFormatTagOrVersion() throws {
        let tag = try damaged { file in
            H5Adelete(file, "format")
            try HDF5.setString(file, "format", "something-else")
        }
        #expect(tag.error?.description.contains("HDF5 file is not a NegPatch patch (root attribute 'format' is \"something-else\"") == true)
        let version = try damaged { file in
            H5Adelete(file, "version")
            try HDF5.setInt(file, "version", 2)
        }
        #expect(version.error?.description == "\(version.path): /: unsupported negpatch-hdf5 version 2 (this reader knows 1)")
        let missing = try damaged { file in H5Adelete(file, "lambda") }
        #expect(missing.error?.description == "\(missing.path): /: attribute 'lambda' is missing")
    }

    @Test(arguments: ["mask", "values", "block_encoding", "block_nonzeros"])
    func rejectsAMissingDataset(_ name: String) throws {
        let result = try damaged { file in H5Ldelete(file, "tensors/000001/\(name)", chdf5_p_default()) }
        #expect(result.error?.code == .malformed)
        #expect(result.error?.description == "\(result.path): tensor 'layers.1/mlp.w': /tensors/000001: dataset '\(name)' is missing")
    }

    @Test func rejectsAMaskWhoseSizeDisagreesWithTheShape() throws {
        let result = try damaged { file in
            try replaceDataset(file, "tensors/000001/mask", type: chdf5_t_std_u8le(), memoryType: chdf5_t_native_uint8(),
                               elementSize: 1, bytes: [UInt8](repeating: 0, count: 24))
        }
        #expect(result.error?.description
            == "\(result.path): tensor 'layers.1/mlp.w': /tensors/000001/mask: holds 24 bytes, but shape [20, 10] needs 25 (one bit per element)")
    }

    @Test func rejectsAValuesCountThatDisagreesWithTheMask() throws {
        let result = try damaged { file in
            var values = try readDataset(file, "tensors/000000/values", memoryType: chdf5_t_native_float(), elementSize: 4)
            values += [0, 0, 0x80, 0x3F]  // one more value
            try replaceDataset(file, "tensors/000000/values", type: chdf5_t_ieee_f32le(), memoryType: chdf5_t_native_float(),
                               elementSize: 4, bytes: values)
        }
        #expect(result.error?.description.hasPrefix("\(result.path): tensor 'first': /tensors/000000/values: holds") == true)
        #expect(result.error?.description.contains("block_encoding and block_nonzeros call for") == true)
    }

    @Test func rejectsAMaskWhosePopcountDisagreesWithTheBlock() throws {
        let result = try damaged { file in
            var mask = try readDataset(file, "tensors/000000/mask", memoryType: chdf5_t_native_uint8(), elementSize: 1)
            mask[3] ^= 0x10
            try replaceDataset(file, "tensors/000000/mask", type: chdf5_t_std_u8le(), memoryType: chdf5_t_native_uint8(),
                               elementSize: 1, bytes: mask)
        }
        #expect(result.error?.code == .corrupt)
        #expect(result.error?.description.hasPrefix("\(result.path): tensor 'first': /tensors/000000: block 0: mask has") == true)
    }

    @Test func rejectsSetPaddingBits() throws {
        // Swap a set bit for a padding bit: the popcount stays, the padding is dirty.
        let result = try damaged { file in
            var mask = try readDataset(file, "tensors/000000/mask", memoryType: chdf5_t_native_uint8(), elementSize: 1)
            let byte = (8..<12).first { mask[$0] != 0 }!  // block 1 is bytes 8...12
            mask[byte] &= mask[byte] - 1
            mask[12] |= 0x80  // element 103 of 100
            try replaceDataset(file, "tensors/000000/mask", type: chdf5_t_std_u8le(), memoryType: chdf5_t_native_uint8(),
                               elementSize: 1, bytes: mask)
        }
        #expect(result.error?.description.hasSuffix("block 1: mask padding bits are set") == true)
    }

    @Test func rejectsBadBlockArraysAndAttributes() throws {
        let encoding = try damaged { file in
            try replaceDataset(file, "tensors/000000/block_encoding", type: chdf5_t_std_u8le(), memoryType: chdf5_t_native_uint8(),
                               elementSize: 1, bytes: [0, 2])
        }
        #expect(encoding.error?.description.hasSuffix("/tensors/000000/block_encoding: block 1 has encoding 2, expected 0 (sparse) or 1 (dense)") == true)
        let shape = try damaged { file in
            let group = H5Gopen2(file, "tensors/000001", chdf5_p_default())
            defer { H5Gclose(group) }
            H5Adelete(group, "shape")
        }
        #expect(shape.error?.description == "\(shape.path): tensor 'layers.1/mlp.w': /tensors/000001: attribute 'shape' is missing")
        let elements = try damaged { file in
            let group = H5Gopen2(file, "tensors/000001", chdf5_p_default())
            defer { H5Gclose(group) }
            H5Adelete(group, "elements")
            try HDF5.setInt(group, "elements", 201)
        }
        #expect(elements.error?.description
            == "\(elements.path): tensor 'layers.1/mlp.w': /tensors/000001: attribute 'elements' is 201, but shape [20, 10] has 200 elements")
        let count = try damaged { file in
            let group = H5Gopen2(file, "tensors", chdf5_p_default())
            defer { H5Gclose(group) }
            H5Adelete(group, "count")
            try HDF5.setInt(group, "count", 3)
        }
        #expect(count.error?.description == "\(count.path): /tensors: attribute 'count' is 3, but the group holds 2 members")
        let zero = try damaged { file in
            var values = try readDataset(file, "tensors/000000/values", memoryType: chdf5_t_native_float(), elementSize: 4)
            values.replaceSubrange(0..<4, with: [0, 0, 0, 0])
            try replaceDataset(file, "tensors/000000/values", type: chdf5_t_ieee_f32le(), memoryType: chdf5_t_native_float(),
                               elementSize: 4, bytes: values)
        }
        #expect(zero.error?.description.hasSuffix("block 0: sparse value 0 is zero (a sparse block stores only nonzero values)") == true)
    }
}

/// Every single-byte change and every truncation of a small HDF5 patch is either detected
/// (the reader throws) or harmless (the patch decodes to the same index and task vector):
/// HDF5 checksums its metadata (1.10 object formats) and NegPatch adds the Fletcher-32
/// filter to every dataset; bytes HDF5 does not read (free space, reserved fields) are the
/// harmless ones.
@Suite struct HDF5CorruptionTests {
    @Test func everyFlipAndTruncationIsDetectedOrHarmless() throws {
        let folder = TemporaryFolder()
        let path = folder.file("p.h5")
        let tensors: [HDF5TestTensor] = [
            ("a.weight", .F32, [200], randomVector(200, density: 0.3, seed: 11)),
            ("b.bias", .BF16, [70], randomVector(70, density: 0.9, seed: 12)),
        ]
        _ = try write(hdf5Writer(path, compression: "none"), tensors)
        let original = readBytes(path)
        let reference = try PatchFormats.open(path)
        let expected = try decodeAll(path)
        let damaged = folder.file("d.h5")
        var undetected: [Int] = []
        var harmless = 0
        for position in original.indices {
            var bytes = original
            bytes[position] ^= 0x5A
            writeBytes(damaged, bytes)
            guard let patch = try? PatchFormats.open(damaged),
                  let decoded = try? patch.index.tensors.indices.map({ try TaskVectorDecoder.dense(patch, tensor: $0) })
            else { continue }
            if patch.index == reference.index && decoded.map({ $0.map(\.bitPattern) }) == expected.map({ $0.map(\.bitPattern) }) {
                harmless += 1
            } else {
                undetected.append(position)
            }
        }
        #expect(undetected.isEmpty, "flips that changed the patch undetected at \(undetected.prefix(20)) (\(undetected.count) in all)")
        var truncations: [Int] = []
        for length in stride(from: 0, to: original.count, by: 1) {
            writeBytes(damaged, Array(original.prefix(length)))
            if (try? decodeAll(damaged)) != nil { truncations.append(length) }
        }
        #expect(truncations.isEmpty, "truncations not detected at \(truncations.prefix(20))")
        print("HDF5 corruption walk: \(original.count) bytes, \(original.count - harmless) flips detected, \(harmless) harmless, \(undetected.count) undetected")
    }
}

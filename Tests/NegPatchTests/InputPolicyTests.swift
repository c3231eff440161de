import Foundation
import Testing
@testable import NegPatch

/// What NegPatch accepts as input: finite values only (unless allowed), inputs that agree
/// with each other, files and tensors past 4 GiB, and patches whose sizes their shapes
/// justify.
@Suite struct InputPolicyTests {
    // MARK: Non-finite values

    /// `set` with element `index` of tensor `layers.1.w` of `file` replaced by `value`.
    private func poison(_ set: GeneratedSet, file: String, index: Int, value: Float) throws {
        let checkpoint = try SafetensorsFile(path: file)
        let info = checkpoint.tensor(named: "layers.1.w")!
        var bytes = readBytes(file)
        let position = info.fileOffset + index * set.dtype.size
        let encoded: [UInt8]
        switch set.dtype {
        case .F32: encoded = littleEndianBytes(value.bitPattern)
        case .F64: encoded = littleEndianBytes(Double(value).bitPattern)
        case .F16: encoded = littleEndianBytes(FloatConversion.floatToHalf(value))
        case .BF16: encoded = littleEndianBytes(FloatConversion.floatToBFloat16(value))
        default: fatalError("not floating")
        }
        bytes.replaceSubrange(position..<(position + encoded.count), with: encoded)
        writeBytes(file, bytes)
    }

    private func merge(_ set: GeneratedSet, allowNonFinite: Bool = false) throws -> String {
        var request = MergeRequest(base: try Checkpoint(path: set.base), models: try set.models.map { try Checkpoint(path: $0) },
                                   method: SignConsensus.negMerge)
        request.blockElements = 64
        request.allowNonFinite = allowNonFinite
        let out = set.folder.file("p.negpatch")
        _ = try Merger.run(request, writer: NegPatchWriter(path: out, level: 3))
        return out
    }

    @Test(arguments: [DType.F32, .F16, .BF16, .F64], [Float.nan, .infinity, -.infinity])
    func mergeRefusesNonFiniteInputsNamingFileTensorAndElement(_ dtype: DType, _ value: Float) throws {
        let set = GeneratedSet(n: 3, dtype: dtype, seed: 5)
        // Two bad values: the error names the first, in the second fine-tuned model.
        try poison(set, file: set.models[1], index: 250, value: value)
        try poison(set, file: set.models[2], index: 7, value: value)
        let error = #expect(throws: NegPatchError.self) { try merge(set) }
        #expect(error?.code == .invalidValue)
        #expect(error?.file == set.models[1])
        #expect(error?.tensor == "layers.1.w")
        #expect(error?.message.contains("at element 250 ") == true, "\(String(describing: error))")
        #expect(error?.message.contains("--allow-nonfinite") == true)
        #expect(!set.folder.contents.contains("p.negpatch"))
        #expect(!set.folder.contents.contains { $0.contains(".tmp-") })
        // Allowed on request.
        _ = try merge(set, allowNonFinite: true)
        #expect(set.folder.contents.contains("p.negpatch"))
    }

    @Test func mergeNamesTheBaseAndMultiDimensionalIndex() throws {
        let set = GeneratedSet(n: 2, dtype: .F32, seed: 6)
        let file = try SafetensorsFile(path: set.base)
        let info = file.tensor(named: "layers.0.w")!  // shape [13, 21]
        var bytes = readBytes(set.base)
        bytes.replaceSubrange((info.fileOffset + 4 * 44)..<(info.fileOffset + 4 * 45), with: littleEndianBytes(Float.nan.bitPattern))
        writeBytes(set.base, bytes)
        let error = #expect(throws: NegPatchError.self) { try merge(set) }
        #expect(error?.file == set.base)
        #expect(error?.message.hasPrefix("non-finite value nan at element 44 (index [2, 2])") == true, "\(String(describing: error))")
    }

    @Test func f64ValuesBeyondFloat32AreRefused() throws {
        let set = GeneratedSet(n: 2, dtype: .F64, seed: 7)
        let file = try SafetensorsFile(path: set.models[0])
        let info = file.tensor(named: "layers.1.w")!
        var bytes = readBytes(set.models[0])
        bytes.replaceSubrange((info.fileOffset + 8 * 3)..<(info.fileOffset + 8 * 4), with: littleEndianBytes((1e300 as Double).bitPattern))
        writeBytes(set.models[0], bytes)
        let error = #expect(throws: NegPatchError.self) { try merge(set) }
        #expect(error?.message.hasPrefix("value 1e+300 beyond the float32 range at element 3") == true, "\(String(describing: error))")
    }

    @Test(arguments: [DType.F32, .BF16])
    func applyRefusesNonFiniteBaseValuesUnlessAllowed(_ dtype: DType) throws {
        let set = GeneratedSet(n: 3, dtype: dtype, seed: 8)
        let patch = try merge(set)
        try poison(set, file: set.base, index: 123, value: .infinity)
        var request = ApplyRequest(base: try Checkpoint(path: set.base), patch: try PatchFormats.open(patch),
                                   outputs: [(1, set.folder.file("out.safetensors"))])
        request.ignoreBaseMismatch = true  // the base changed, on purpose
        let error = #expect(throws: NegPatchError.self) { try CheckpointPatcher.run(request) }
        #expect(error?.code == .invalidValue)
        #expect(error?.file == set.base)
        #expect(error?.tensor == "layers.1.w")
        #expect(error?.message.contains("at element 123 ") == true, "\(String(describing: error))")
        #expect(!set.folder.contents.contains("out.safetensors"))
        request.allowNonFinite = true
        try CheckpointPatcher.run(request)
        #expect(set.folder.contents.contains("out.safetensors"))
    }

    @Test func applyRefusesNonFiniteTaskVectorValues() throws {
        let folder = TemporaryFolder()
        var tau = [Float](repeating: 0, count: 100)
        tau[3] = 1
        tau[77] = .nan
        _ = try writePatch(folder.file("p.negpatch"), [("w", .F32, [10, 10], tau)])
        writeSafetensors(folder.file("base.safetensors"), [.f32("w", [10, 10], [Float](repeating: 0.5, count: 100))])
        var request = ApplyRequest(base: try Checkpoint(path: folder.file("base.safetensors")),
                                   patch: try PatchFormats.open(folder.file("p.negpatch")), outputs: [(1, folder.file("out.safetensors"))])
        request.ignoreBaseMismatch = true
        let error = #expect(throws: NegPatchError.self) { try CheckpointPatcher.run(request) }
        #expect(error?.file == folder.file("p.negpatch"))
        #expect(error?.message.hasPrefix("non-finite task-vector value nan at element 77 (index [7, 7])") == true, "\(String(describing: error))")
    }

    /// The load-time patcher follows the same policy as `apply`.
    @Test func thePatcherRefusesNonFiniteValuesUnlessAllowed() throws {
        let folder = TemporaryFolder()
        var tau = [Float](repeating: 0, count: 100)
        tau[3] = 1
        _ = try writePatch(folder.file("p.negpatch"), [("w", .F32, [10, 10], tau)])
        var base = [Float](repeating: 0.5, count: 100)
        base[42] = .infinity
        let patcher = try Patcher(patch: PatchFormats.open(folder.file("p.negpatch")))
        let error = base.withUnsafeMutableBytes { data in
            #expect(throws: NegPatchError.self) { try patcher.patch(tensor: "w", dtype: .F32, shape: [10, 10], data: data) }
        }
        #expect(error?.code == .invalidValue)
        #expect(error?.message.hasPrefix("non-finite value inf at element 42 (index [4, 2])") == true, "\(String(describing: error))")
        #expect(base[3] == 0.5, "nothing changes when the tensor is refused")
        let lenient = try Patcher(patch: PatchFormats.open(folder.file("p.negpatch")), allowNonFinite: true)
        try base.withUnsafeMutableBytes { _ = try lenient.patch(tensor: "w", dtype: .F32, shape: [10, 10], data: $0) }
        #expect(base[3] == 0.5 - 0.75)
        // A NaN in the patch's values is refused too, naming the patch.
        tau[77] = .nan
        _ = try writePatch(folder.file("nan.negpatch"), [("w", .F32, [10, 10], tau)])
        base[42] = 0.5
        let nanPatcher = try Patcher(patch: PatchFormats.open(folder.file("nan.negpatch")))
        let nanError = base.withUnsafeMutableBytes { data in
            #expect(throws: NegPatchError.self) { try nanPatcher.patch(tensor: "w", dtype: .F32, shape: [10, 10], data: data) }
        }
        #expect(nanError?.file == folder.file("nan.negpatch"))
        #expect(nanError?.message.contains("at element 77") == true)
    }

    @Test func finiteChecksAgreeWithIsFiniteForEveryDtype() {
        var rng = SeededGenerator(seed: 3)
        let specials: [Float] = [.nan, .infinity, -.infinity, .greatestFiniteMagnitude, -0.0, .leastNonzeroMagnitude, 65504, 70000]
        for dtype in [DType.F32, .F64, .F16, .BF16] {
            for trial in 0..<200 {
                let count = Int.random(in: 0...70, using: &rng)
                var values = (0..<count).map { _ in Float.random(in: -2...2, using: &rng) }
                if count > 0, trial % 2 == 0 { values[Int.random(in: 0..<count, using: &rng)] = specials.randomElement(using: &rng)! }
                let bytes = TestTensor.floating("x", dtype, [count], values).bytes
                let expected = (0..<count).first { i in
                    bytes.withUnsafeBytes { !FiniteValues.value($0.baseAddress!, dtype: dtype, at: i).isFinite }
                }
                let found = bytes.withUnsafeBytes { FiniteValues.firstNonFinite($0.baseAddress ?? UnsafeRawPointer(bitPattern: 8)!, dtype: dtype, count: count) }
                #expect(found == expected, "\(dtype) \(values)")
            }
        }
    }

    // MARK: Mismatched inputs

    @Test(arguments: ["dtype", "shape", "missing", "extra"])
    func mismatchedInputsNameBothFiles(_ kind: String) throws {
        let set = GeneratedSet(n: 2, dtype: .F32, seed: 9)
        let model = try SafetensorsFile(path: set.models[0])
        var tensors = model.tensors.map { info in
            TestTensor(name: info.name, dtype: info.dtype, shape: info.shape, bytes: Array(model.data(info)))
        }
        let i = tensors.firstIndex { $0.name == "layers.1.w" }!
        switch kind {
        case "dtype": tensors[i] = TestTensor.floating("layers.1.w", .F16, [300], [Float](repeating: 0, count: 300))
        case "shape": tensors[i] = TestTensor.f32("layers.1.w", [30, 10], [Float](repeating: 0, count: 300))
        case "missing": tensors.remove(at: i)
        default: tensors.append(.f32("surplus", [2], [1, 2]))
        }
        writeSafetensors(set.models[0], tensors)
        let error = #expect(throws: NegPatchError.self) { try merge(set) }
        #expect(error?.code == .mismatch)
        #expect(error?.description.contains(set.models[0]) == true, "\(String(describing: error))")
        #expect(error?.description.contains(set.base) == true, "\(String(describing: error))")
        #expect(error?.tensor == (kind == "extra" ? "surplus" : "layers.1.w"))
    }

    // MARK: Past 4 GiB

    /// A sparse safetensors file whose first tensor holds 4 GiB + 64 bytes: validated,
    /// located and read at 64-bit offsets without reading the data.
    @Test func filesAndTensorsPastFourGiBAreValidatedWithoutReadingThem() throws {
        let folder = TemporaryFolder()
        let path = folder.file("big.safetensors")
        let bigElements = (1 << 30) + 16
        let header = SafetensorsHeader.encode([.init(name: "big", dtype: .F32, shape: [bigElements]),
                                                .init(name: "tail", dtype: .F32, shape: [4])], metadata: [])
        let total = header.count + bigElements * 4 + 16
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
        #expect(fd >= 0)
        _ = header.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        let tail: [Float] = [1, 2, 3, 4]
        _ = tail.withUnsafeBytes { pwrite(fd, $0.baseAddress, 16, off_t(total - 16)) }
        #expect(ftruncate(fd, off_t(total)) == 0)
        close(fd)

        let file = try SafetensorsFile(path: path)
        #expect(file.file.size == total)
        let big = file.tensor(named: "big")!
        #expect(big.byteCount == bigElements * 4 && big.byteCount > 1 << 32)
        let last = file.tensor(named: "tail")!
        #expect(last.fileOffset == header.count + bigElements * 4 && last.fileOffset > 1 << 32)
        #expect(Array(file.data(last).bindMemory(to: Float.self)) == tail)
        // The merge's tile reads (pread at 64-bit offsets) see the right elements.
        let source = TensorSource(file: file.file, tensor: big)
        var tile = [Float](repeating: -1, count: 8)
        tile.withUnsafeMutableBufferPointer { source.copyRaw(bigElements - 8, 8, into: UnsafeMutableRawPointer($0.baseAddress!)) }
        #expect(tile == [Float](repeating: 0, count: 8))
        let tailSource = TensorSource(file: file.file, tensor: last)
        tile.withUnsafeMutableBufferPointer { tailSource.copyRaw(0, 4, into: UnsafeMutableRawPointer($0.baseAddress!)) }
        #expect(Array(tile.prefix(4)) == tail)
        // A header that claims one element more than the file holds is refused.
        let lying = SafetensorsHeader.encode([.init(name: "big", dtype: .F32, shape: [bigElements + 1]),
                                              .init(name: "tail", dtype: .F32, shape: [4])], metadata: [])
        writeBytes(folder.file("lying.safetensors"), lying)
        let fd2 = open(folder.file("lying.safetensors"), O_WRONLY)
        #expect(ftruncate(fd2, off_t(total)) == 0)
        close(fd2)
        let error = #expect(throws: NegPatchError.self) { try SafetensorsFile(path: folder.file("lying.safetensors")) }
        #expect(error?.message.contains("run past the end") == true, "\(String(describing: error))")
    }

    /// Outputs are written at 64-bit offsets too (apply pre-sizes and writes by offset).
    @Test func atomicOutputsWritePastFourGiB() throws {
        let folder = TemporaryFolder()
        let output = try AtomicOutput(destination: folder.file("big.bin"))
        let offset = (1 << 32) + 12345
        try output.truncate(to: offset + 4)
        let marker: [UInt8] = [1, 2, 3, 4]
        try marker.withUnsafeBytes { try output.write($0, at: offset) }
        try output.commit()
        let file = try MappedFile(path: folder.file("big.bin"))
        #expect(file.size == offset + 4)
        #expect(Array(file.slice(offset, 4)) == marker)
    }

    /// A patch index may hold offsets past 4 GiB; they decode as 64-bit integers.
    @Test func patchIndexOffsetsPastFourGiBDecode() throws {
        let folder = TemporaryFolder()
        let path = folder.file("p.negpatch")
        _ = try writePatch(path, [("w", .F32, [100], (0..<100).map { Float($0 % 3) })])
        let patch = try NegPatchFile(path: path)
        var json = patch.index.json()
        // Move every part 5 GiB further on, as in a patch of a large model.
        let shift = 5 << 30
        func shifted(_ value: JSONValue) -> JSONValue {
            switch value {
            case let .object(entries):
                return .object(entries.map { entry in
                    if entry.key == "offset", let offset = entry.value.nonNegativeInt { return (entry.key, .int(offset + shift)) }
                    return (entry.key, shifted(entry.value))
                })
            case let .array(items): return .array(items.map(shifted))
            default: return value
            }
        }
        json = shifted(json)
        let decoded = try PatchIndexDecoder(file: path).decode(json)
        #expect(decoded.tensors[0].blocks.map(\.values.offset) == patch.index.tensors[0].blocks.map { $0.values.offset + shift })
    }

    // MARK: Sizes a patch may ask for

    /// An index that asks for more memory than its shapes justify is refused when the
    /// patch is opened, before any block is decoded or any buffer allocated. The forged
    /// indexes are otherwise valid: canonical JSON with a correct checksum in the footer.
    @Test(arguments: ["mask size", "elements", "nonzeros", "block_elements", "shape"])
    func hostileSizesAreRefusedWhenThePatchIsOpened(_ field: String) throws {
        let folder = TemporaryFolder()
        let path = folder.file("p.negpatch")
        _ = try writePatch(path, [("w", .F32, [100], (0..<100).map { $0 % 7 == 0 ? Float($0) : 0 })])
        let huge = JSONValue.int(1 << 40)
        let tensor: [JSONPathItem] = [.key("tensors"), .index(0)]
        let (at, value): ([JSONPathItem], JSONValue) = switch field {
        case "mask size": (tensor + [.key("blocks"), .index(0), .key("mask"), .key("size")], huge)
        case "elements": (tensor + [.key("elements")], huge)
        case "nonzeros": (tensor + [.key("blocks"), .index(0), .key("nonzeros")], .int(99_999_999_999))
        case "block_elements": (tensor + [.key("block_elements")], .int(1 << 31))
        default: (tensor + [.key("shape")], .array([.int(1 << 32), .int(1 << 32), .int(1 << 32)]))
        }
        writeBytes(path, try rewriteIndex(path) { text in
            let json = try! StrictJSON.parse(Array(text.utf8))
            return String(decoding: CanonicalJSON.encode(json.replacing(at, with: value)), as: UTF8.self)
        })
        let error = #expect(throws: NegPatchError.self) { try NegPatchFile(path: path) }
        #expect(error?.code == .malformed, "\(String(describing: error))")
        #expect(error?.tensor == "w")
    }

    /// A zstd frame that declares more content than the index allows is refused from its
    /// header, before the output buffer is allocated.
    @Test func framesClaimingMoreThanTheIndexAreRefusedFromTheirHeader() throws {
        let big = [UInt8](repeating: 7, count: 1 << 20)
        let frame = try big.withUnsafeBytes { try Zstd.compress($0, level: 3) }
        #expect(frame.count < 1000)
        let error = #expect(throws: ZstdError.self) { try frame.withUnsafeBytes { try Zstd.checkFrame($0, expectedSize: 13) } }
        #expect(error?.description == "zstd frame holds 1048576 bytes, the index says 13")
    }
}

/// One step of a path into a JSON value.
enum JSONPathItem {
    case key(String)
    case index(Int)
}

extension JSONValue {
    /// This value with the value at `path` replaced by `new` (which must exist).
    func replacing(_ path: [JSONPathItem], with new: JSONValue) -> JSONValue {
        guard let first = path.first else { return new }
        let rest = Array(path.dropFirst())
        switch (self, first) {
        case let (.object(entries), .key(key)):
            return .object(entries.map { $0.key == key ? ($0.key, $0.value.replacing(rest, with: new)) : $0 })
        case let (.array(items), .index(i)):
            var copy = items
            copy[i] = items[i].replacing(rest, with: new)
            return .array(copy)
        default:
            preconditionFailure("no such path in \(kind)")
        }
    }
}

import Foundation
import Testing
@testable import NegPatch

@Suite struct ApplyTests {
    private func mergedSet(_ dtype: DType) throws -> (GeneratedSet, String) {
        let set = GeneratedSet(n: 3, dtype: dtype, seed: 11)
        let base = try Checkpoint(path: set.base)
        let models = try set.models.map { try Checkpoint(path: $0) }
        var request = MergeRequest(base: base, models: models, method: SignConsensus.negMerge)
        request.blockElements = 64
        request.lambda = 0.5
        let path = set.folder.file("p.negpatch")
        _ = try Merger.run(request, writer: NegPatchWriter(path: path, level: 3))
        return (set, path)
    }

    @Test(arguments: [DType.F32, .F16, .BF16, .F64])
    func applyComputesBaseMinusLambdaTau(_ dtype: DType) throws {
        let (set, patchPath) = try mergedSet(dtype)
        let patch = try PatchFormats.open(patchPath)
        let out = set.folder.file("out.safetensors")
        try CheckpointPatcher.run(ApplyRequest(base: Checkpoint(path: set.base), patch: patch, outputs: [(0.5, out)]))
        let base = try SafetensorsFile(path: set.base)
        let result = try SafetensorsFile(path: out)
        // Same header bytes, same layout.
        #expect(Array(result.file.bytes.prefix(8 + base.headerLength)) == Array(base.file.bytes.prefix(8 + base.headerLength)))
        for (t, entry) in patch.index.tensors.enumerated() {
            let tau = try TaskVectorDecoder.dense(patch, tensor: t)
            let info = base.tensor(named: entry.name)!
            let before = base.data(info), after = result.data(result.tensor(named: entry.name)!)
            for i in 0..<info.elementCount {
                switch dtype {
                case .F32:
                    let b = before.load(fromByteOffset: 4 * i, as: Float.self)
                    #expect(after.load(fromByteOffset: 4 * i, as: Float.self).bitPattern == (tau[i] == 0 ? b : b - Float(0.5) * tau[i]).bitPattern)
                case .F64:
                    let b = before.load(fromByteOffset: 8 * i, as: Double.self)
                    #expect(after.load(fromByteOffset: 8 * i, as: Double.self) == (tau[i] == 0 ? b : b - 0.5 * Double(tau[i])))
                case .F16:
                    let b = Float(Float16(bitPattern: before.load(fromByteOffset: 2 * i, as: UInt16.self)))
                    #expect(after.load(fromByteOffset: 2 * i, as: UInt16.self) == Float16(b - Float(0.5) * tau[i]).bitPattern)
                default:
                    let stored = before.load(fromByteOffset: 2 * i, as: UInt16.self)
                    let b = Float(bitPattern: UInt32(stored) << 16)
                    let expected = tau[i] == 0 ? stored : nearestBFloat16(b - Float(0.5) * tau[i])
                    #expect(after.load(fromByteOffset: 2 * i, as: UInt16.self) == expected)
                }
            }
        }
        // Untouched tensors are byte-identical.
        let ids = base.tensor(named: "position_ids")!
        #expect(Array(result.data(result.tensor(named: "position_ids")!)) == Array(base.data(ids)))
    }

    @Test(arguments: [DType.F32, .F64])
    func anAddingPatchAppliesBasePlusLambdaTauInBothFormats(_ dtype: DType) throws {
        let set = GeneratedSet(n: 3, dtype: dtype, seed: 12)
        var request = MergeRequest(base: try Checkpoint(path: set.base), models: try set.models.map { try Checkpoint(path: $0) },
                                   method: UniformMerge())
        request.blockElements = 64
        request.lambda = 0.75
        request.direction = .add
        let writers: [(String, any PatchWriter)] = [("p.negpatch", try NegPatchWriter(path: set.folder.file("p.negpatch"), level: 3)),
                                                   ("p.h5", try HDF5PatchWriter(path: set.folder.file("p.h5"), compression: "gzip"))]
        for (name, writer) in writers {
            _ = try Merger.run(request, writer: writer)
            let patch = try PatchFormats.open(set.folder.file(name))
            #expect(patch.index.metadata.direction == .add && patch.index.metadata.lambda == 0.75)
            let out = set.folder.file("out-\(name).safetensors")
            try CheckpointPatcher.run(ApplyRequest(base: Checkpoint(path: set.base), patch: patch, outputs: [(0.75, out)]))
            let base = try SafetensorsFile(path: set.base), result = try SafetensorsFile(path: out)
            // The in-memory patcher agrees with the written checkpoint.
            let patcher = try Patcher(patch: patch)
            var changed = 0
            for (t, entry) in patch.index.tensors.enumerated() {
                let tau = try TaskVectorDecoder.dense(patch, tensor: t)
                let info = base.tensor(named: entry.name)!
                let before = base.data(info), after = result.data(result.tensor(named: entry.name)!)
                var buffer = Array(before)
                try buffer.withUnsafeMutableBytes { try patcher.patch(tensor: entry.name, dtype: dtype, shape: info.shape, data: $0) }
                #expect(buffer == Array(after), "\(entry.name)")
                for i in 0..<info.elementCount {
                    if dtype == .F32 {
                        let b = before.load(fromByteOffset: 4 * i, as: Float.self)
                        #expect(after.load(fromByteOffset: 4 * i, as: Float.self).bitPattern == (tau[i] == 0 ? b : b + Float(0.75) * tau[i]).bitPattern)
                    } else {
                        let b = before.load(fromByteOffset: 8 * i, as: Double.self)
                        #expect(after.load(fromByteOffset: 8 * i, as: Double.self).bitPattern == (tau[i] == 0 ? b : b + 0.75 * Double(tau[i])).bitPattern)
                    }
                    changed += tau[i] == 0 ? 0 : 1
                }
            }
            #expect(changed > 0)
        }
    }

    @Test func directionRoundTripsThroughTheIndexAndOldIndexesSubtract() throws {
        var metadata = PatchMetadata(method: "ties", parameters: [], n: 2, inputs: ["a", "b"], base: "base", lambda: 1)
        #expect(metadata.json()["direction"] == nil)
        metadata.direction = .add
        #expect(metadata.json()["direction"] == .string("add"))
        #expect(PatchDirection.add.kernelLambda(0.5) == -0.5 && PatchDirection.subtract.kernelLambda(0.5) == 0.5)
        let index = PatchIndex(metadata: metadata, fingerprint: [], tensors: [])
        let decoded = try PatchIndexDecoder(file: "x").decode(index.json())
        #expect(decoded.metadata == metadata)
        guard case var .object(root) = index.json(), case var .object(fields) = root.first(where: { $0.key == "metadata" })!.value else {
            Issue.record("index JSON is not an object")
            return
        }
        fields.removeAll { $0.key == "direction" }
        root = root.map { $0.key == "metadata" ? ("metadata", .object(fields)) : $0 }
        #expect(try PatchIndexDecoder(file: "x").decode(.object(root)).metadata.direction == .subtract)
        fields.append(("direction", .string("sideways")))
        root = root.map { $0.key == "metadata" ? ("metadata", .object(fields)) : $0 }
        #expect(throws: NegPatchError.self) { try PatchIndexDecoder(file: "x").decode(.object(root)) }
    }

    @Test func aDifferentBaseIsRefusedAndNothingIsWritten() throws {
        let (set, patchPath) = try mergedSet(.F32)
        let out = set.folder.file("out.safetensors")
        let wrongBase = try Checkpoint(path: set.models[0])
        let request = ApplyRequest(base: wrongBase, patch: try PatchFormats.open(patchPath), outputs: [(1, out)])
        let error = #expect(throws: NegPatchError.self) { try CheckpointPatcher.run(request) }
        #expect(error?.code == .mismatch)
        #expect(error?.description.contains("base fingerprint differs") == true)
        #expect(!FileManager.default.fileExists(atPath: out))
        var forced = request
        forced.ignoreBaseMismatch = true
        try CheckpointPatcher.run(forced)
        #expect(FileManager.default.fileExists(atPath: out))
    }

    /// The base fingerprint lists every tensor of the base: the base plus one more tensor
    /// (all others byte-identical) is another checkpoint, refused before anything is written.
    @Test func aBaseWithAnExtraTensorIsRefused() throws {
        let (set, patchPath) = try mergedSet(.F32)
        let original = try SafetensorsFile(path: set.base)
        let tensors = original.tensors.map { TestTensor(name: $0.name, dtype: $0.dtype, shape: $0.shape, bytes: Array(original.data($0))) }
        let extended = set.folder.file("extended.safetensors")
        writeSafetensors(extended, tensors + [.f32("surplus", [2], [1, 2])])
        let out = set.folder.file("out.safetensors")
        let request = ApplyRequest(base: try Checkpoint(path: extended), patch: try PatchFormats.open(patchPath), outputs: [(1, out)])
        let error = #expect(throws: NegPatchError.self) { try CheckpointPatcher.run(request) }
        #expect(error?.code == .mismatch)
        #expect(error?.tensor == "surplus")
        #expect(error?.description.contains("tensor not in the patch's base fingerprint") == true)
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func sweepsEqualSeparateApplies() throws {
        let (set, patchPath) = try mergedSet(.BF16)
        let patch = try PatchFormats.open(patchPath)
        let base = try Checkpoint(path: set.base)
        let lambdas = [0.25, 1.0, 2.5]
        try CheckpointPatcher.run(ApplyRequest(base: base, patch: patch, outputs: lambdas.map { ($0, set.folder.file("sweep-\($0)")) }))
        for lambda in lambdas {
            try CheckpointPatcher.run(ApplyRequest(base: base, patch: patch, outputs: [(lambda, set.folder.file("single-\(lambda)"))]))
            #expect(readBytes(set.folder.file("sweep-\(lambda)")) == readBytes(set.folder.file("single-\(lambda)")))
        }
    }

    @Test func patcherPatchesABufferInPlace() throws {
        let (set, patchPath) = try mergedSet(.F32)
        let patcher = try Patcher(patch: PatchFormats.open(patchPath))
        #expect(patcher.lambda == 0.5)
        let base = try Checkpoint(path: set.base)
        let tensor = base.tensor(named: "layers.1.w")!
        var buffer = Array(base.data(tensor))
        let tau = try patcher.taskVector("layers.1.w")
        let changed = try buffer.withUnsafeMutableBytes {
            try patcher.patch(tensor: "layers.1.w", dtype: .F32, shape: tensor.info.shape, data: $0)
        }
        #expect(changed)
        let original = Array(base.data(tensor)).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let patched = buffer.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        for i in original.indices {
            #expect(patched[i].bitPattern == (tau[i] == 0 ? original[i] : original[i] - 0.5 * tau[i]).bitPattern)
        }
        #expect(try !patcher.patch(tensor: "position_ids", dtype: .I64, shape: [4], data: UnsafeMutableRawBufferPointer(start: nil, count: 0)))
        #expect(throws: NegPatchError.self) {
            try buffer.withUnsafeMutableBytes { try patcher.patch(tensor: "layers.1.w", dtype: .F16, shape: [300], data: $0) }
        }
    }

    /// Blocks of every dtype whose base is -0.0 everywhere, applied with lambda = -1: an
    /// element whose tau is zero (of either sign) keeps the base's -0.0 bit for bit, where
    /// `base - lambda * tau` would give +0.0. Dense and sparse blocks, through the kernels.
    @Test(arguments: [DType.F32, .F16, .BF16, .F64], [false, true])
    func zeroTauKeepsANegativeZeroBase(_ dtype: DType, _ sparse: Bool) {
        let tau: [Float] = [0, 0.5, -0.0, 0, -2, 0, 0, 0.25, 0]
        let block = sparse
            ? SparseBlock(count: tau.count, indices: tau.indices.filter { tau[$0] != 0 }.map(UInt32.init), values: tau.filter { $0 != 0 })
            : SparseBlock(count: tau.count, indices: nil, values: tau)
        let width = dtype.size
        var data = [UInt8](repeating: 0, count: tau.count * width)
        for i in tau.indices { data[i * width + width - 1] = 0x80 }  // -0.0 in every dtype, little-endian
        data.withUnsafeMutableBytes { PatchKernels.apply(block, to: $0.baseAddress!, dtype: dtype, lambda: -1) }
        for i in tau.indices {
            let element = Array(data[(i * width)..<((i + 1) * width)])
            if tau[i] == 0 {
                #expect(element == [UInt8](repeating: 0, count: width - 1) + [0x80], "element \(i) of \(dtype)")
            } else {
                // -0.0 - (-1) * tau = tau, exact in every dtype for these values.
                let expected: [UInt8]
                switch dtype {
                case .F32: expected = littleEndianBytes(tau[i].bitPattern)
                case .F64: expected = littleEndianBytes(Double(tau[i]).bitPattern)
                case .F16: expected = littleEndianBytes(Float16(tau[i]).bitPattern)
                default: expected = littleEndianBytes(UInt16(tau[i].bitPattern >> 16))
                }
                #expect(element == expected, "element \(i) of \(dtype)")
            }
        }
    }
}

/// The bfloat16 nearest to `value` (ties to the even significand), found by comparing the
/// two neighbours in float64: an independent restatement of round-to-nearest-even, not the
/// library's bit trick. `value` must be finite.
func nearestBFloat16(_ value: Float) -> UInt16 {
    let truncated = value.bitPattern & 0xFFFF_0000
    let low = Float(bitPattern: truncated), high = Float(bitPattern: truncated &+ 0x1_0000)
    let below = abs(Double(value) - Double(low)), above = abs(Double(high) - Double(value))
    let lowBits = UInt16(truncated >> 16)
    if below < above { return lowBits }
    if above < below { return lowBits &+ 1 }
    return lowBits & 1 == 0 ? lowBits : lowBits &+ 1
}

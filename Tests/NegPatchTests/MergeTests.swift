import Foundation
import Testing
@testable import NegPatch

/// A generated base and n fine-tuned checkpoints with controlled sign agreement.
struct GeneratedSet {
    let folder = TemporaryFolder()
    let n: Int
    let dtype: DType
    var base: String { folder.file("base.safetensors") }
    var models: [String] { (1...n).map { folder.file("ft_\($0).safetensors") } }

    /// Shapes cover several blocks of 64, a partial block, a scalar and an empty tensor.
    static let shapes: [(String, [Int])] = [("layers.0.w", [13, 21]), ("layers.0.b", [21]), ("layers.1.w", [300]),
                                             ("scale", []), ("empty", [0])]

    /// With `zerosBesideAgreement`, two elements in seven have one model (a different one
    /// along the tensor) with a zero delta beside n - 1 models agreeing in sign: NegMerge
    /// must drop them, a rule that only checks for disagreeing signs would keep them.
    init(n: Int, dtype: DType, seed: UInt64 = 1, zerosBesideAgreement: Bool = false) {
        self.n = n
        self.dtype = dtype
        var rng = SeededGenerator(seed: seed)
        var baseValues: [[Float]] = []
        for (_, shape) in Self.shapes {
            let count = shape.reduce(1, *)
            baseValues.append((0..<count).map { _ in Float.random(in: -1...1, using: &rng) })
        }
        let ids = TestTensor(name: "position_ids", dtype: .I64, shape: [4], bytes: [0, 1, 2, 3].flatMap { littleEndianBytes(Int64($0)) })
        writeSafetensors(base, zip(Self.shapes, baseValues).map { TestTensor.floating($0.0.0, dtype, $0.0.1, $0.1) } + [ids])
        let period = zerosBesideAgreement ? 7 : 5
        for (k, model) in models.enumerated() {
            let tensors = zip(Self.shapes, baseValues).map { entry, values in
                TestTensor.floating(entry.0, dtype, entry.1, values.enumerated().map { i, v in
                    switch i % period {
                    case 5 where (i / 7) % n == k, 6 where (i / 7) % n == k: v  // this model's delta is zero
                    case 5: v + 0.25  // the others agree: positive
                    case 6: v - 0.25  // the others agree: negative
                    case 0: v + 0.25  // every model agrees: positive
                    case 1: v - 0.25  // every model agrees: negative
                    case 2: v  // zero delta: dropped
                    default: v + Float.random(in: -0.5...0.5, using: &rng)  // random signs
                    }
                })
            }
            writeSafetensors(model, tensors + [ids])
        }
    }
}

/// The float32 task vectors of tensor `name`, one column (n values) per element.
func naiveTaskVectors(base: Checkpoint, models: [Checkpoint], name: String) -> [[Float]] {
    func floats(_ checkpoint: Checkpoint) -> [Float] {
        let tensor = checkpoint.tensor(named: name)!
        var out = [Float](repeating: 0, count: tensor.info.elementCount)
        out.withUnsafeMutableBufferPointer {
            FloatConversion.toFloat32(checkpoint.data(tensor).baseAddress!, dtype: tensor.info.dtype,
                                      start: 0, count: tensor.info.elementCount, into: $0.baseAddress!)
        }
        return out
    }
    let b = floats(base)
    let fts = models.map(floats)
    return b.indices.map { i in fts.map { $0[i] - b[i] } }
}

/// NegMerge written the plainest way, element by element, as the independent check.
func naiveNegMerge(base: Checkpoint, models: [Checkpoint], name: String) -> [Float] {
    func floats(_ checkpoint: Checkpoint) -> [Float] {
        let tensor = checkpoint.tensor(named: name)!
        var out = [Float](repeating: 0, count: tensor.info.elementCount)
        out.withUnsafeMutableBufferPointer {
            FloatConversion.toFloat32(checkpoint.data(tensor).baseAddress ?? UnsafeRawPointer(bitPattern: 4)!, dtype: tensor.info.dtype,
                                      start: 0, count: tensor.info.elementCount, into: $0.baseAddress ?? UnsafeMutablePointer(bitPattern: 4)!)
        }
        return out
    }
    let b = floats(base)
    let fts = models.map(floats)
    return b.indices.map { i in
        let taus = fts.map { $0[i] - b[i] }
        let allPositive = taus.allSatisfy { $0 > 0 }
        let allNegative = taus.allSatisfy { $0 < 0 }
        guard allPositive || allNegative else { return 0 }
        var sum: Float = 0
        for t in taus { sum += t }
        return sum / Float(taus.count)
    }
}

@Suite struct MergeTests {
    @Test(arguments: [DType.F32, .F16, .BF16, .F64], [64, 1 << 20])
    func negMergeMatchesTheNaiveDefinition(_ dtype: DType, _ blockElements: Int) throws {
        let set = GeneratedSet(n: 4, dtype: dtype, zerosBesideAgreement: true)
        let base = try Checkpoint(path: set.base)
        let models = try set.models.map { try Checkpoint(path: $0) }
        // The set has elements with a zero beside three agreeing signs (dropped) as well as
        // four agreeing signs (kept).
        let taus = naiveTaskVectors(base: base, models: models, name: "layers.1.w")
        #expect(taus.filter { column in column.filter { $0 == 0 }.count == 1 && (column.allSatisfy { $0 >= 0 } || column.allSatisfy { $0 <= 0 }) }.count >= 40)
        #expect(taus.filter { column in column.allSatisfy { $0 > 0 } || column.allSatisfy { $0 < 0 } }.count >= 40)
        var request = MergeRequest(base: base, models: models, method: SignConsensus.negMerge)
        request.blockElements = blockElements
        let out = set.folder.file("p.negpatch")
        let summary = try Merger.run(request, writer: NegPatchWriter(path: out, level: 3))
        let patch = try NegPatchFile(path: out)
        #expect(patch.index.tensors.map(\.name) == GeneratedSet.shapes.map(\.0))
        #expect(patch.index.metadata.method == "negmerge")
        #expect(patch.index.metadata.n == 4)
        #expect(patch.index.metadata.inputs == ["ft_1.safetensors", "ft_2.safetensors", "ft_3.safetensors", "ft_4.safetensors"])
        #expect(patch.index.fingerprint.count == 6)
        var nonzeros = 0
        for (t, tensor) in patch.index.tensors.enumerated() {
            let expected = naiveNegMerge(base: base, models: models, name: tensor.name)
            let got = try TaskVectorDecoder.dense(patch, tensor: t)
            #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "\(tensor.name)")
            let count = expected.filter { $0 != 0 }.count
            #expect(tensor.nonzeros == count)
            #expect(tensor.agreement.reduce(0, +) == tensor.elements)
            #expect(tensor.agreement[4] == count)
            nonzeros += count
        }
        #expect(summary.nonzeros == nonzeros)
        #expect(summary.agreement.reduce(0, +) == summary.elements)
    }

    @Test func consensusWithAllModelsIsNegMergeBitForBit() throws {
        let set = GeneratedSet(n: 5, dtype: .F32, seed: 7)
        let base = try Checkpoint(path: set.base)
        let models = try set.models.map { try Checkpoint(path: $0) }
        for (name, method) in [("a", SignConsensus.negMerge), ("b", SignConsensus.relaxed(minAgree: 5))] as [(String, any MergeMethod)] {
            var request = MergeRequest(base: base, models: models, method: method)
            request.blockElements = 128
            _ = try Merger.run(request, writer: NegPatchWriter(path: set.folder.file("\(name).negpatch"), level: 3))
        }
        let a = try NegPatchFile(path: set.folder.file("a.negpatch"))
        let b = try NegPatchFile(path: set.folder.file("b.negpatch"))
        for t in a.index.tensors.indices {
            #expect(try TaskVectorDecoder.dense(a, tensor: t) == TaskVectorDecoder.dense(b, tensor: t))
        }
        #expect(b.index.metadata.parameters.first?.value == .int(5))
    }

    @Test func relaxedConsensusKeepsMajoritiesOfAtLeastK() throws {
        let set = GeneratedSet(n: 5, dtype: .F32, seed: 3)
        let base = try Checkpoint(path: set.base)
        let models = try set.models.map { try Checkpoint(path: $0) }
        let out = set.folder.file("c.negpatch")
        _ = try Merger.run(MergeRequest(base: base, models: models, method: SignConsensus.relaxed(minAgree: 3)),
                           writer: NegPatchWriter(path: out, level: 3))
        let patch = try NegPatchFile(path: out)
        let tensor = patch.index.tensors.firstIndex { $0.name == "layers.1.w" }!
        let got = try TaskVectorDecoder.dense(patch, tensor: tensor)
        let b = try Checkpoint(path: set.base)
        func floats(_ c: Checkpoint) -> [Float] {
            Array(c.data(c.tensor(named: "layers.1.w")!).withMemoryRebound(to: Float.self) { $0 })
        }
        let bv = floats(b)
        let fts = models.map(floats)
        for i in bv.indices {
            let taus = fts.map { $0[i] - bv[i] }
            let pos = taus.filter { $0 > 0 }, neg = taus.filter { $0 < 0 }
            var expected: Float = 0
            if pos.count > neg.count && pos.count >= 3 { expected = pos.reduce(0, +) / Float(pos.count) }
            if neg.count > pos.count && neg.count >= 3 { expected = neg.reduce(0, +) / Float(neg.count) }
            #expect(got[i].bitPattern == expected.bitPattern)
        }
    }

    @Test func mismatchedInputsNameBothFilesAndTheTensor() throws {
        let set = GeneratedSet(n: 2, dtype: .F32)
        writeSafetensors(set.models[1], [.f32("layers.0.w", [21, 13], [Float](repeating: 0, count: 273))])
        let base = try Checkpoint(path: set.base)
        let models = try set.models.map { try Checkpoint(path: $0) }
        let out = set.folder.file("p.negpatch")
        let error = #expect(throws: NegPatchError.self) {
            try Merger.run(MergeRequest(base: base, models: models, method: SignConsensus.negMerge), writer: NegPatchWriter(path: out, level: 3))
        }
        #expect(error?.code == .mismatch)
        #expect(error?.tensor == "layers.0.w")
        #expect(error?.description.contains(set.models[1]) == true)
        #expect(error?.description.contains(set.base) == true)
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(!set.folder.contents.contains { $0.contains(".tmp-") })
        // The merge itself aborts the writer: its temporary file is gone while the caller
        // still holds the writer, not only once the writer is released.
        let writer = try NegPatchWriter(path: out, level: 3)
        #expect(throws: NegPatchError.self) {
            try Merger.run(MergeRequest(base: base, models: models, method: SignConsensus.negMerge), writer: writer)
        }
        #expect(!set.folder.contents.contains { $0.contains(".tmp-") }, "\(set.folder.contents)")
        withExtendedLifetime(writer) {}
    }
}

import Foundation
import Testing
@testable import NegPatch

/// Every method against a plain per-element restatement of `formats/methods.md`.
@Suite struct MergeMethodTests {
    /// Task vectors of every model for one tensor, as float32.
    private func taskVectors(_ set: GeneratedSet, _ name: String) throws -> [[Float]] {
        func floats(_ path: String) throws -> [Float] {
            let checkpoint = try Checkpoint(path: path)
            let tensor = checkpoint.tensor(named: name)!
            var out = [Float](repeating: 0, count: tensor.info.elementCount)
            out.withUnsafeMutableBufferPointer {
                FloatConversion.toFloat32(checkpoint.data(tensor).baseAddress!, dtype: tensor.info.dtype, start: 0,
                                          count: tensor.info.elementCount, into: $0.baseAddress!)
            }
            return out
        }
        let base = try floats(set.base)
        return try set.models.map { path in zip(try floats(path), base).map { $0 - $1 } }
    }

    private func merged(_ set: GeneratedSet, _ method: any MergeMethod, _ name: String) throws -> [Float] {
        let out = set.folder.file("\(method.name)-\(UUID().uuidString).negpatch")
        var request = MergeRequest(base: try Checkpoint(path: set.base), models: try set.models.map { try Checkpoint(path: $0) }, method: method)
        request.blockElements = 128
        _ = try Merger.run(request, writer: NegPatchWriter(path: out, level: 1))
        let patch = try NegPatchFile(path: out)
        return try TaskVectorDecoder.dense(patch, tensor: patch.index.tensors.firstIndex { $0.name == name }!)
    }

    private func sumInOrder(_ values: [Float]) -> Float {
        var s: Float = 0
        for v in values { s += v }
        return s
    }

    /// n = 3, 5 and 7 as well as 4: dividing by n and multiplying by 1 / n agree for n = 4
    /// (a power of two) but not for the others.
    @Test(arguments: [DType.F32, .BF16], [3, 4, 5, 7])
    func uniformTaskArithmeticAndMagMax(_ dtype: DType, _ n: Int) throws {
        let set = GeneratedSet(n: n, dtype: dtype, seed: 21)
        let name = "layers.1.w"
        let taus = try taskVectors(set, name)
        let count = taus[0].count
        let weights = Array([0.5, -1, 0, 2, 0.25, -3, 1.5].prefix(n))
        let uniform = try merged(set, UniformMerge(), name)
        let weighted = try merged(set, TaskArithmetic(weights: weights), name)
        let single = try merged(set, TaskArithmetic(weights: (0..<n).map { $0 == 2 ? 1.0 : 0.0 }), name)
        let magmax = try merged(set, MagMax(), name)
        for i in 0..<count {
            let column = taus.map { $0[i] }
            #expect(uniform[i].bitPattern == (sumInOrder(column) / Float(n) + 0).bitPattern)
            #expect(weighted[i].bitPattern == (sumInOrder(zip(column, weights.map(Float.init)).map { $0 * $1 }) + 0).bitPattern)
            #expect(single[i].bitPattern == (column[2] + 0).bitPattern)
            var best: Float = 0
            for v in column where abs(v) > abs(best) { best = v }
            #expect(magmax[i].bitPattern == (best + 0).bitPattern)
        }
    }

    @Test(arguments: [DType.F32, .BF16], [nil, 2, 3] as [Int?])
    func signConsensusKeepsTheAgreeingSignAndAveragesIt(_ dtype: DType, _ minAgree: Int?) throws {
        // n = 5 with tensors whose sizes are not multiples of the eight vector lanes, so the
        // scalar tails run too; BF16 takes the kernel's bfloat16-in-registers path.
        let set = GeneratedSet(n: 5, dtype: dtype, seed: 31)
        let method = minAgree.map { SignConsensus.relaxed(minAgree: $0) } ?? SignConsensus.negMerge
        let required = minAgree ?? 5
        for name in ["layers.0.w", "layers.1.w"] {
            let taus = try taskVectors(set, name)
            let got = try merged(set, method, name)
            for i in 0..<taus[0].count {
                let column = taus.map { $0[i] }
                let positive = column.filter { $0 > 0 }, negative = column.filter { $0 < 0 }
                var expected: Float = 0
                if positive.count > negative.count && positive.count >= required {
                    expected = sumInOrder(positive) / Float(positive.count)
                } else if negative.count > positive.count && negative.count >= required {
                    expected = sumInOrder(negative) / Float(negative.count)
                }
                #expect(got[i].bitPattern == (expected + 0).bitPattern, "\(name) element \(i)")
            }
        }
    }

    @Test(arguments: [0.2, 0.5, 1.0], [DType.F32, .BF16])
    func tiesTrimsElectsAndAveragesDisjointly(_ density: Double, _ dtype: DType) throws {
        let set = GeneratedSet(n: 3, dtype: dtype, seed: 5)
        let name = "layers.1.w"
        let taus = try taskVectors(set, name)
        let count = taus[0].count
        let keep = Int((density * Double(count)).rounded(.down))
        let thresholds = taus.map { tau in keep == 0 ? Float.infinity : tau.map(abs).sorted(by: >)[keep - 1] }
        let got = try merged(set, TiesMerging(density: density), name)
        for i in 0..<count {
            let kept = taus.indices.map { k in taus[k][i] != 0 && abs(taus[k][i]) >= thresholds[k] ? taus[k][i] : 0 }
            let elected: Float = sumInOrder(kept) >= 0 ? 1 : -1
            let agreeing = kept.filter { $0 != 0 && ($0 > 0) == (elected > 0) }
            let expected = sumInOrder(agreeing) / Float(max(agreeing.count, 1))
            #expect(got[i].bitPattern == (expected + 0).bitPattern, "element \(i)")
        }
    }

    /// Kept values that cancel exactly (a, -a, 0): the elected sign of a zero sum is +
    /// (formats/methods.md), so the result is a, not -a. 19 elements: two vector steps and
    /// a scalar tail.
    @Test func tiesElectsPlusWhereTheKeptValuesCancel() throws {
        let folder = TemporaryFolder()
        let a = (0..<19).map { Float($0 + 1) / 8 }
        let inputs: [(String, [Float])] = [("base", [Float](repeating: 0, count: 19)), ("ft_1", a), ("ft_2", a.map { -$0 }),
                                           ("ft_3", [Float](repeating: 0, count: 19))]
        for (name, values) in inputs { writeSafetensors(folder.file("\(name).safetensors"), [.f32("w", [19], values)]) }
        let out = folder.file("ties.negpatch")
        let request = MergeRequest(base: try Checkpoint(path: folder.file("base.safetensors")),
                                   models: try (1...3).map { try Checkpoint(path: folder.file("ft_\($0).safetensors")) },
                                   method: TiesMerging(density: 1))
        _ = try Merger.run(request, writer: NegPatchWriter(path: out, level: 1))
        let got = try TaskVectorDecoder.dense(NegPatchFile(path: out), tensor: 0)
        #expect(got == a)
    }

    /// p = 0.3, where 1 - p is not a power of two: dividing by it and multiplying by its
    /// reciprocal differ.
    @Test func dareIsReproducibleAndMatchesItsGenerator() throws {
        let set = GeneratedSet(n: 3, dtype: .F32, seed: 8)
        let name = "layers.1.w"
        let taus = try taskVectors(set, name)
        let a = try merged(set, Dare(drop: 0.3, seed: 42), name)
        let b = try merged(set, Dare(drop: 0.3, seed: 42), name)
        let c = try merged(set, Dare(drop: 0.3, seed: 43), name)
        #expect(a == b)
        #expect(a != c)
        let h = DareStream.mix(42 ^ XXH64.hash(name))
        let keys = (0..<3).map { DareStream.mix(h &+ UInt64($0)) }
        var dropped = 0
        for i in taus[0].indices {
            var terms: [Float] = []
            for k in 0..<3 {
                let keep = DareStream.uniform(key: keys[k], index: i) >= 0.3
                if !keep { dropped += 1 }
                terms.append(keep ? taus[k][i] / Float(1 - 0.3 as Double) : 0)
            }
            #expect(a[i].bitPattern == (sumInOrder(terms) / 3 + 0).bitPattern)
        }
        // About 30% of the 900 draws are drops.
        #expect((200...340).contains(dropped))
    }

    @Test(arguments: [0.0, 0.5])
    func dareTiesDropsLikeDareThenElectsAndAveragesDisjointly(_ drop: Double) throws {
        let set = GeneratedSet(n: 3, dtype: .F32, seed: 9)
        let name = "layers.1.w"
        let taus = try taskVectors(set, name)
        let got = try merged(set, DareTies(drop: drop, seed: 42), name)
        let h = DareStream.mix(42 ^ XXH64.hash(name))
        let keys = (0..<3).map { DareStream.mix(h &+ UInt64($0)) }
        let scale = Float(1 - drop)
        var electedNegative = 0
        for i in taus[0].indices {
            let rescaled = (0..<3).map { k in DareStream.uniform(key: keys[k], index: i) >= drop ? taus[k][i] / scale : 0 }
            let positive = sumInOrder(rescaled) >= 0
            if !positive { electedNegative += 1 }
            let agreeing = rescaled.filter { positive ? $0 > 0 : $0 < 0 }
            let expected = sumInOrder(agreeing) / Float(max(agreeing.count, 1))
            #expect(got[i].bitPattern == (expected + 0).bitPattern, "element \(i)")
        }
        // Both signs are elected somewhere, so the election is exercised.
        #expect(electedNegative > 0 && electedNegative < taus[0].count)
    }

    @Test(arguments: [0.2, 0.5, 1.0], [DType.F32, .BF16])
    func magnitudePruneTrimsThenAveragesOverAllModels(_ density: Double, _ dtype: DType) throws {
        let set = GeneratedSet(n: 3, dtype: dtype, seed: 6)
        let name = "layers.1.w"
        let taus = try taskVectors(set, name)
        let count = taus[0].count
        let keep = Int((density * Double(count)).rounded(.down))
        let thresholds = taus.map { tau in keep == 0 ? Float.infinity : tau.map(abs).sorted(by: >)[keep - 1] }
        let got = try merged(set, MagnitudePrune(density: density), name)
        for i in 0..<count {
            let kept = taus.indices.map { k in taus[k][i] != 0 && abs(taus[k][i]) >= thresholds[k] ? taus[k][i] : 0 }
            #expect(got[i].bitPattern == (sumInOrder(kept) / 3 + 0).bitPattern, "element \(i)")
        }
    }

    @Test func registryBuildsEveryMethodAndRejectsBadParameters() throws {
        for name in MergeMethods.names {
            #expect(try MergeMethods.make(name, parameters: MergeParameters(), modelCount: 3).name == name)
        }
        var parameters = MergeParameters()
        parameters.weights = [1, 2]
        #expect(throws: NegPatchError.self) { try MergeMethods.make("task-arithmetic", parameters: parameters, modelCount: 3) }
        parameters = MergeParameters()
        parameters.minAgree = 4
        #expect(throws: NegPatchError.self) { try MergeMethods.make("consensus", parameters: parameters, modelCount: 3) }
        parameters = MergeParameters()
        parameters.density = 0
        #expect(throws: NegPatchError.self) { try MergeMethods.make("ties", parameters: parameters, modelCount: 3) }
        parameters = MergeParameters()
        parameters.drop = 1
        #expect(throws: NegPatchError.self) { try MergeMethods.make("dare", parameters: parameters, modelCount: 3) }
        #expect(throws: NegPatchError.self) { try MergeMethods.make("dare-ties", parameters: parameters, modelCount: 3) }
        parameters = MergeParameters()
        parameters.density = 1.5
        #expect(throws: NegPatchError.self) { try MergeMethods.make("magnitude-prune", parameters: parameters, modelCount: 3) }
        #expect(throws: NegPatchError.self) { try MergeMethods.make("nope", parameters: MergeParameters(), modelCount: 3) }
    }

    @Test func agreementHistogramSumsToElementsForEveryMethod() throws {
        let set = GeneratedSet(n: 3, dtype: .F16, seed: 2)
        for name in MergeMethods.names {
            let method = try MergeMethods.make(name, parameters: MergeParameters(), modelCount: 3)
            let out = set.folder.file("\(name).negpatch")
            let summary = try Merger.run(MergeRequest(base: try Checkpoint(path: set.base), models: try set.models.map { try Checkpoint(path: $0) }, method: method),
                                         writer: NegPatchWriter(path: out, level: 1))
            #expect(summary.agreement.reduce(0, +) == summary.elements, "\(name)")
            if name == "negmerge" { #expect(summary.agreement[3] == summary.nonzeros) }
        }
    }
}

import Foundation
import Testing
@testable import NegPatch

/// LoRA adapter folders as merge inputs: the tile-by-tile `scaling * B @ A` against a plain
/// element-by-element restatement of `formats/methods.md`, in every layout, with tiles and
/// blocks that end mid-row; mixed merges; and the refusals.
@Suite struct LoraAdapterTests {
    /// A base with a plain weight (out 13, in 37), an (in 9, out 21) weight, an embedding
    /// (vocab 53, dim 6) and a norm; 37 and 21 are not multiples of anything the tiles use.
    private struct Fixture {
        let folder = TemporaryFolder()
        var base: String { folder.file("base.safetensors") }
        var adapter: String { folder.file("adapter") }
        var baseValues: [String: [Float]] = [:]
        static let shapes: [(String, [Int])] = [("m.q.weight", [13, 37]), ("m.c.weight", [9, 21]),
                                                ("m.emb.weight", [53, 6]), ("m.norm.weight", [6])]

        init(seed: UInt64) {
            var rng = SeededGenerator(seed: seed)
            var tensors: [TestTensor] = []
            for (name, shape) in Self.shapes {
                let values = (0..<shape.reduce(1, *)).map { _ in Float.random(in: -1...1, using: &rng) }
                baseValues[name] = values
                tensors.append(.f32(name, shape, values))
            }
            writeSafetensors(base, tensors)
        }

        /// Writes the adapter: factors named by PEFT key, and the config.
        func writeAdapter(_ tensors: [TestTensor], config: String) throws {
            try FileManager.default.createDirectory(atPath: adapter, withIntermediateDirectories: true)
            writeSafetensors("\(adapter)/adapter_model.safetensors", tensors)
            try config.write(toFile: "\(adapter)/adapter_config.json", atomically: true, encoding: .utf8)
        }
    }

    private func random(_ count: Int, _ rng: inout SeededGenerator) -> [Float] {
        (0..<count).map { _ in Float.random(in: -0.5...0.5, using: &rng) }
    }

    /// `c * s`, s the rank-ordered float32 sum of `left(row, j) * right(j, column)`.
    private func naive(rows: Int, columns: Int, rank: Int, scaling: Float,
                       _ left: (Int, Int) -> Float, _ right: (Int, Int) -> Float) -> [Float] {
        var out: [Float] = []
        for row in 0..<rows {
            for column in 0..<columns {
                var s: Float = 0
                for j in 0..<rank { s = s + left(row, j) * right(j, column) }
                out.append(scaling * s)
            }
        }
        return out
    }

    private func merged(_ base: String, _ inputs: [any MergeInput], _ method: any MergeMethod, block: Int = 64) throws -> [String: [Float]] {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("lora-\(UUID().uuidString).negpatch").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        var request = MergeRequest(base: try Checkpoint(path: base), models: inputs, method: method)
        request.blockElements = block
        _ = try Merger.run(request, writer: NegPatchWriter(path: out, level: 1))
        let patch = try NegPatchFile(path: out)
        var result: [String: [Float]] = [:]
        for (t, tensor) in patch.index.tensors.enumerated() { result[tensor.name] = try TaskVectorDecoder.dense(patch, tensor: t) }
        return result
    }

    @Test(arguments: [DType.F32, .BF16], [false, true])
    func taskVectorIsScaledLowRankProductInEveryLayout(_ dtype: DType, _ rsLora: Bool) throws {
        let fixture = Fixture(seed: 3)
        var rng = SeededGenerator(seed: 4)
        // q: A (4, 37), B (13, 4); c (fan_in_fan_out is per adapter, so a second adapter
        // below); emb: A (3, 53), B (6, 3) with rank 3 from rank_pattern and alpha 5.
        let qA = random(4 * 37, &rng), qB = random(13 * 4, &rng), eA = random(3 * 53, &rng), eB = random(6 * 3, &rng)
        try fixture.writeAdapter([
            .floating("base_model.model.m.q.lora_A.weight", dtype, [4, 37], qA),
            .floating("base_model.model.m.q.lora_B.weight", dtype, [13, 4], qB),
            .floating("base_model.model.m.emb.lora_embedding_A", dtype, [3, 53], eA),
            .floating("base_model.model.m.emb.lora_embedding_B", dtype, [6, 3], eB),
        ], config: #"{"peft_type": "LORA", "r": 4, "lora_alpha": 6, "use_rslora": \#(rsLora), "rank_pattern": {"emb": 3}, "alpha_pattern": {"m.emb": 5}, "bias": "none", "use_dora": false}"#)
        // the values as the adapter stores them
        func stored(_ values: [Float]) -> [Float] {
            dtype == .BF16 ? values.map { Float(bitPattern: UInt32(FloatConversion.floatToBFloat16($0)) << 16) } : values
        }
        let (a, b, ea, eb) = (stored(qA), stored(qB), stored(eA), stored(eB))
        let tau = try merged(fixture.base, [try LoraAdapter(path: fixture.adapter)], TaskArithmetic(weights: nil))
        let qScale = Float(rsLora ? 6 / Double(4).squareRoot() : 6.0 / 4)
        let eScale = Float(rsLora ? 5 / Double(3).squareRoot() : 5.0 / 3)
        let q = naive(rows: 13, columns: 37, rank: 4, scaling: qScale, { b[$0 * 4 + $1] }, { a[$0 * 37 + $1] })
        // embedding (vocab, dim): element (v, d) sums B[d, j] * A[j, v]
        let e = naive(rows: 53, columns: 6, rank: 3, scaling: eScale, { ea[$1 * 53 + $0] }, { eb[$1 * 3 + $0] })
        #expect(tau["m.q.weight"]!.map(\.bitPattern) == q.map { ($0 + 0).bitPattern })
        #expect(tau["m.emb.weight"]!.map(\.bitPattern) == e.map { ($0 + 0).bitPattern })
        #expect(tau["m.c.weight"]!.allSatisfy { $0 == 0 } && tau["m.norm.weight"]!.allSatisfy { $0 == 0 })
        #expect(q.contains { $0 != 0 })
    }

    @Test func fanInFanOutTransposesAndAdapterNamesAndSavedModulesAreRead() throws {
        let fixture = Fixture(seed: 5)
        var rng = SeededGenerator(seed: 6)
        // m.c.weight is (in 9, out 21): A (2, 9), B (21, 2)
        let cA = random(2 * 9, &rng), cB = random(21 * 2, &rng), norm = random(6, &rng)
        try fixture.writeAdapter([
            .f32("base_model.model.m.c.lora_A.default.weight", [2, 9], cA),
            .f32("base_model.model.m.c.lora_B.default.weight", [21, 2], cB),
            .f32("base_model.model.m.norm.modules_to_save.default.weight", [6], norm),
        ], config: #"{"peft_type": "LORA", "r": 2, "lora_alpha": 3, "fan_in_fan_out": true, "modules_to_save": ["m.norm"]}"#)
        let tau = try merged(fixture.base, [try LoraAdapter(path: fixture.adapter)], TaskArithmetic(weights: nil), block: 128)
        let c = naive(rows: 9, columns: 21, rank: 2, scaling: 1.5, { cA[$1 * 9 + $0] }, { cB[$1 * 2 + $0] })
        #expect(tau["m.c.weight"]!.map(\.bitPattern) == c.map { ($0 + 0).bitPattern })
        let baseNorm = fixture.baseValues["m.norm.weight"]!
        #expect(tau["m.norm.weight"]! == zip(norm, baseNorm).map { $0 - $1 })
    }

    @Test func mixedAdapterAndCheckpointMergeIsTheMergeOfTheirTaskVectors() throws {
        let fixture = Fixture(seed: 7)
        var rng = SeededGenerator(seed: 8)
        let qA = random(4 * 37, &rng), qB = random(13 * 4, &rng)
        try fixture.writeAdapter([
            .f32("base_model.model.m.q.lora_A.weight", [4, 37], qA),
            .f32("base_model.model.m.q.lora_B.weight", [13, 4], qB),
        ], config: #"{"peft_type": "LORA", "r": 4, "lora_alpha": 4}"#)
        let ft = fixture.folder.file("ft.safetensors")
        var ftValues: [String: [Float]] = [:]
        writeSafetensors(ft, Fixture.shapes.map { name, shape in
            let values = fixture.baseValues[name]!.map { $0 + Float.random(in: -0.1...0.1, using: &rng) }
            ftValues[name] = values
            return .f32(name, shape, values)
        })
        let inputs: [any MergeInput] = [try Checkpoint(path: ft), try LoraAdapter(path: fixture.adapter), try Checkpoint(path: ft)]
        let tau = try merged(fixture.base, inputs, SignConsensus.negMerge)
        let lora = naive(rows: 13, columns: 37, rank: 4, scaling: 1, { qB[$0 * 4 + $1] }, { qA[$0 * 37 + $1] })
        for (name, _) in Fixture.shapes {
            let t = zip(ftValues[name]!, fixture.baseValues[name]!).map { $0 - $1 }
            let l = name == "m.q.weight" ? lora : [Float](repeating: 0, count: t.count)
            let expected = t.indices.map { i -> Float in
                let column = [t[i], l[i], t[i]]
                guard column.allSatisfy({ $0 > 0 }) || column.allSatisfy({ $0 < 0 }) else { return 0 }
                return (column[0] + column[1] + column[2]) / 3
            }
            #expect(tau[name]!.map(\.bitPattern) == expected.map { ($0 + 0).bitPattern }, "\(name)")
        }
        #expect(tau["m.q.weight"]!.contains { $0 != 0 })
    }

    @Test(arguments: [
        (#"{"peft_type": "LOKR", "r": 4, "lora_alpha": 4}"#, "LOKR"),
        (#"{"peft_type": "LORA", "r": 4, "lora_alpha": 4, "use_dora": true}"#, "use_dora"),
        (#"{"peft_type": "LORA", "r": 4, "lora_alpha": 4, "bias": "lora_only"}"#, "bias"),
        (#"{"peft_type": "LORA", "r": 0, "lora_alpha": 4}"#, "'r'"),
        (#"{"peft_type": "LORA", "r": 4, "lora_alpha": 4, "r": 4}"#, "duplicate"),
        (#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4}"#, "rank 4"),
    ])
    func refusedConfigsNameTheProblem(_ config: String, _ mention: String) throws {
        let fixture = Fixture(seed: 9)
        var rng = SeededGenerator(seed: 10)
        try fixture.writeAdapter([
            .f32("base_model.model.m.q.lora_A.weight", [4, 37], random(4 * 37, &rng)),
            .f32("base_model.model.m.q.lora_B.weight", [13, 4], random(13 * 4, &rng)),
        ], config: config)
        do {
            let adapter = try LoraAdapter(path: fixture.adapter)
            try adapter.checkCompatible(base: try Checkpoint(path: fixture.base))
            Issue.record("accepted \(config)")
        } catch let error as NegPatchError {
            #expect(error.description.contains(mention), "\(error)")
            #expect(error.description.contains(fixture.adapter))
        }
    }

    @Test func inputsOpenByWhatTheFolderHolds() throws {
        let fixture = Fixture(seed: 11)
        try fixture.writeAdapter([], config: #"{"peft_type": "LORA", "r": 4, "lora_alpha": 4}"#)
        #expect(try MergeInputs.open(fixture.adapter) is LoraAdapter)
        #expect(try MergeInputs.open(fixture.base) is Checkpoint)
        #expect(!LoraAdapter.isAdapterFolder(fixture.base))
    }
}

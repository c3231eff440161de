import Foundation
import Testing
@testable import NegPatch

/// Figures computed independently from the dense task vectors, for comparison.
private struct Expected {
    var elements = 0, nonzeros = 0, positive = 0, negative = 0
    var sumOfSquares = 0.0
    var maxAbs: Float = 0
    var bins: [Int: Int] = [:]

    init(_ values: [Float]) {
        elements = values.count
        for v in values where v != 0 {
            nonzeros += 1
            if v > 0 { positive += 1 } else { negative += 1 }
            sumOfSquares += Double(v) * Double(v)
            maxAbs = max(maxAbs, abs(v))
            // frexp: |v| = m * 2^e with m in [0.5, 1), so floor(log2 |v|) = e - 1.
            bins[Int(frexp(Double(abs(v))).1) - 1, default: 0] += 1
        }
    }
}

private func check(_ values: ValueStatistics?, against expected: Expected, _ what: String) {
    guard let values else {
        Issue.record("\(what): no value statistics")
        return
    }
    #expect(values.positive == expected.positive, "\(what)")
    #expect(values.negative == expected.negative, "\(what)")
    #expect(values.nonfinite == 0, "\(what)")
    #expect(abs(values.l2Norm - expected.sumOfSquares.squareRoot()) <= 1e-12 * max(1, expected.sumOfSquares.squareRoot()), "\(what)")
    #expect(values.maxAbs == expected.maxAbs, "\(what)")
    for e in AbsValueHistogram.minExponent...AbsValueHistogram.maxExponent {
        #expect(values.histogram[e] == expected.bins[e, default: 0], "\(what): bin 2^\(e)")
    }
}

@Suite("Audit")
struct AuditTests {
    @Test("Layer grouping follows the documented rule")
    func layerRule() {
        #expect(PatchLayers.layer(of: "model.layers.12.mlp.up_proj.weight") == "model.layers.12.")
        #expect(PatchLayers.layer(of: "blocks.3.attn.qkv.weight") == "blocks.3.")
        #expect(PatchLayers.layer(of: "visual.transformer.resblocks.0.ln_1.weight") == "visual.transformer.resblocks.0.")
        #expect(PatchLayers.layer(of: "model.layers.1.mlp.experts.7.w1") == "model.layers.1.")
        #expect(PatchLayers.layer(of: "0.weight") == "0.")
        #expect(PatchLayers.layer(of: "model.embed_tokens.weight") == "model.embed_tokens.")
        #expect(PatchLayers.layer(of: "lm_head.weight") == "lm_head.")
        #expect(PatchLayers.layer(of: "logit_scale") == "logit_scale")
        // A trailing number is a tensor name, not a layer index; "h1" is not all digits.
        #expect(PatchLayers.layer(of: "model.scales.3") == "model.scales.")
        #expect(PatchLayers.layer(of: "transformer.h1.attn.weight") == "transformer.h1.attn.")
        let groups = PatchLayers.group(["a.0.x", "b.w", "a.0.y", "a.1.x"])
        #expect(groups.map(\.layer) == ["a.0.", "b.", "a.1."])
        #expect(groups.map(\.members) == [[0, 2], [1], [3]])
    }

    @Test("Index-only audit: figures equal the dense vectors', values left undecoded and said so")
    func indexOnly() throws {
        let scratch = ScratchFolder("audit")
        defer { scratch.remove() }
        let tensors = Synthetic.tensors()
        let source = try PatchFormats.open(try Synthetic.write(tensors, to: scratch.file("p.negpatch")))
        let report = PatchAudit.run(source)

        #expect(report.tensors.map(\.name) == tensors.map(\.name))
        for (t, tensor) in tensors.enumerated() {
            let audit = report.tensors[t]
            let expected = Expected(tensor.tau)
            #expect(audit.index.elements == expected.elements)
            #expect(audit.index.nonzeros == expected.nonzeros)
            #expect(audit.index.density == (expected.elements == 0 ? 0 : Double(expected.nonzeros) / Double(expected.elements)))
            let parts = source.index.tensors[t].blocks.reduce((0, 0)) { ($0.0 + ($1.mask?.length ?? 0), $0.1 + $1.values.length) }
            #expect(audit.index.maskBytes == parts.0)
            #expect(audit.index.valuesBytes == parts.1)
            if expected.elements > 0 {
                #expect(audit.index.bitsPerElement == Double(parts.0 + parts.1) * 8 / Double(expected.elements))
            }
            #expect(audit.index.agreement == tensor.agreement)
            #expect(audit.values == nil)
            #expect(audit.layer == PatchLayers.layer(of: tensor.name))
        }
        #expect(report.tensors.contains { $0.index.denseBlocks > 0 }, "the fully nonzero tensor should be stored dense")
        #expect(report.total.index.elements == tensors.reduce(0) { $0 + $1.tau.count })
        #expect(report.total.index.nonzeros == tensors.reduce(0) { $0 + Expected($1.tau).nonzeros })
        #expect(report.total.index.agreement == tensors.reduce([0, 0, 0, 0]) { sum, t in zip(sum, t.agreement).map { $0 + $1 } })
        #expect(report.patchStoredBytes + report.overheadBytes == report.fileSize)
        #expect(!report.valuesComputed)
        #expect(report.valuesNote?.contains("read only the index") == true)
        #expect(report.integrity.verdict == .notChecked)
        #expect(report.integrity.blocksChecked == 0)
        #expect(report.total.values == nil)
    }

    @Test("Value statistics equal the dense vectors', per tensor, per layer and in total")
    func values() throws {
        let scratch = ScratchFolder("audit")
        defer { scratch.remove() }
        let tensors = Synthetic.tensors(seed: 7)
        let source = try PatchFormats.open(try Synthetic.write(tensors, to: scratch.file("p.negpatch"), blockElements: 64))
        var options = PatchAuditOptions()
        options.values = true
        let report = PatchAudit.run(source, options: options)
        #expect(report.valuesComputed)
        #expect(report.valuesNote == nil)
        #expect(report.integrity.verdict == .verified)
        #expect(report.integrity.blocksChecked == report.integrity.blocksTotal)
        for (t, tensor) in tensors.enumerated() {
            check(report.tensors[t].values, against: Expected(tensor.tau), tensor.name)
        }
        // Layers, grouped here by hand.
        let expectedLayers: [(String, [String])] = [
            ("model.embed_tokens.", ["model.embed_tokens.weight"]),
            ("model.layers.0.", ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.input_layernorm.weight"]),
            ("model.layers.1.", ["model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight", "model.layers.1.input_layernorm.weight"]),
            ("model.layers.2.", ["model.layers.2.self_attn.q_proj.weight", "model.layers.2.mlp.up_proj.weight", "model.layers.2.input_layernorm.weight"]),
            ("model.norm.", ["model.norm.weight"]),
            ("model.", ["model.logit_scale", "model.empty_bias"]),
            ("lm_head.", ["lm_head.weight"]),
        ]
        #expect(report.layers.map(\.name) == expectedLayers.map(\.0))
        for (layer, (name, members)) in zip(report.layers, expectedLayers) {
            #expect(layer.members.map { report.tensors[$0].name } == members)
            let dense = tensors.filter { members.contains($0.name) }.flatMap(\.tau)
            let expected = Expected(dense)
            #expect(layer.index.elements == expected.elements, "\(name)")
            #expect(layer.index.nonzeros == expected.nonzeros, "\(name)")
            check(layer.values, against: expected, name)
        }
        let all = Expected(tensors.flatMap(\.tau))
        check(report.total.values, against: all, "total")
        #expect(report.total.values?.positiveShare == Double(all.positive) / Double(all.nonzeros))
        // The subnormal 3 * 2^-149 lies in [2^-148, 2^-147).
        #expect(report.total.values?.histogram[-148] == 1)
    }

    @Test("The subnormal bin is exact")
    func subnormalBins() {
        let values: [Float] = [Float(bitPattern: 1), Float(bitPattern: 3), Float(bitPattern: 4), .leastNormalMagnitude, 1, -1.5, 2, .greatestFiniteMagnitude]
        let stats = values.withUnsafeBufferPointer { ValueStatistics.of($0) }
        #expect(stats.histogram[-149] == 1)
        #expect(stats.histogram[-148] == 1)
        #expect(stats.histogram[-147] == 1)
        #expect(stats.histogram[-126] == 1)
        #expect(stats.histogram[0] == 2)
        #expect(stats.histogram[1] == 1)
        #expect(stats.histogram[127] == 1)
        #expect(stats.positive == 7 && stats.negative == 1)
        #expect(stats.maxAbs == .greatestFiniteMagnitude)
        let odd: [Float] = [.nan, .infinity, -.infinity, 0, -0.0, 2]
        let oddStats = odd.withUnsafeBufferPointer { ValueStatistics.of($0) }
        #expect(oddStats.nonfinite == 3 && oddStats.positive == 1 && oddStats.negative == 0)
        #expect(oddStats.sumOfSquares == 4 && oddStats.maxAbs == 2)
    }

    @Test("--tensors selects by regular expression; layers and total cover the selection")
    func filter() throws {
        let scratch = ScratchFolder("audit")
        defer { scratch.remove() }
        let tensors = Synthetic.tensors()
        let source = try PatchFormats.open(try Synthetic.write(tensors, to: scratch.file("p.negpatch")))
        var options = PatchAuditOptions()
        options.filter = try TensorFilter(#"layers\.[12]\..*proj"#)
        options.values = true
        let report = PatchAudit.run(source, options: options)
        let selected = tensors.filter { $0.name.contains("proj") && ($0.name.contains("layers.1.") || $0.name.contains("layers.2.")) }
        #expect(report.tensors.map(\.name) == selected.map(\.name))
        #expect(report.layers.map(\.name) == ["model.layers.1.", "model.layers.2."])
        #expect(report.total.index.nonzeros == Expected(selected.flatMap(\.tau)).nonzeros)
        check(report.total.values, against: Expected(selected.flatMap(\.tau)), "selection")
        #expect(report.integrity.verdict == .partial)
        #expect(report.filter == #"layers\.[12]\..*proj"#)
        #expect(throws: NegPatchError.self) { try TensorFilter("(unclosed") }
    }

    @Test("Index-only audit reads no part: a damaged part goes unnoticed until values are asked for")
    func indexOnlyReadsNoPart() throws {
        let scratch = ScratchFolder("audit")
        defer { scratch.remove() }
        let tensors = Synthetic.tensors()
        let path = try Synthetic.write(tensors, to: scratch.file("p.negpatch"))
        let clean = try PatchFormats.open(path)
        let target = clean.index.tensors[2].blocks[0].values
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[target.offset + target.length / 2] ^= 0x10
        try bytes.write(to: URL(fileURLWithPath: path))

        let source = try PatchFormats.open(path)
        let quick = PatchAudit.run(source)
        #expect(quick.integrity.verdict == .notChecked)
        #expect(quick.total.index.nonzeros == PatchAudit.run(clean).total.index.nonzeros)

        var options = PatchAuditOptions()
        options.values = true
        let full = PatchAudit.run(source, options: options)
        #expect(full.integrity.verdict == .damaged)
        #expect(full.integrity.problems.count == 1)
        #expect(full.integrity.problems.first?.contains(tensors[2].name) == true)
        #expect(full.tensors[2].values == nil)
        #expect(full.tensors[1].values != nil)
        #expect(full.total.values == nil)
        #expect(!full.valuesComputed)
    }

    @Test("JSON: stable field names, numbers as numbers, null for what was not computed")
    func json() throws {
        let scratch = ScratchFolder("audit")
        defer { scratch.remove() }
        let tensors = Synthetic.tensors()
        let source = try PatchFormats.open(try Synthetic.write(tensors, to: scratch.file("p.negpatch")))
        var options = PatchAuditOptions()
        options.values = true
        let report = PatchAudit.run(source, options: options)
        let parsed = try StrictJSON.parse(CanonicalJSON.encode(report.json()))
        #expect(parsed["schema"]?.string == "negpatch-audit")
        #expect(parsed["schema_version"]?.nonNegativeInt == 1)
        #expect(parsed["metadata"]?["n"]?.nonNegativeInt == 3)
        #expect(parsed["metadata"]?["lambda"]?.double == 0.75)
        #expect(parsed["metadata"]?["lossy"] == .bool(false))
        #expect(parsed["integrity"]?["verdict"]?.string == "verified")
        #expect(parsed["values_computed"] == .bool(true))
        let total = try #require(parsed["total"])
        #expect(total["nonzeros"]?.nonNegativeInt == report.total.index.nonzeros)
        #expect(total["density"]?.double == report.total.index.density)
        #expect(total["bits_per_element"]?.double == report.total.index.bitsPerElement)
        #expect(total["values"]?["l2_norm"]?.double == report.total.values?.l2Norm)
        #expect(total["values"]?["max_abs"]?.double == Double(report.total.values!.maxAbs))
        let histogram = try #require(total["values"]?["abs_histogram"])
        let low = try #require(report.total.values?.histogram.occupied)
        guard case let .array(counts)? = histogram["counts"] else {
            Issue.record("counts is not an array")
            return
        }
        #expect(counts.count == low.count)
        #expect(histogram["min_exponent"] == .int(low.lowerBound))
        guard case let .array(tensorItems)? = parsed["tensors"], case let .array(layerItems)? = parsed["layers"] else {
            Issue.record("tensors or layers missing")
            return
        }
        #expect(tensorItems.count == tensors.count)
        #expect(layerItems.count == report.layers.count)
        #expect(tensorItems[0]["layer"]?.string == "model.embed_tokens.")
        #expect(tensorItems[0]["shape"] == .array([.int(40), .int(16)]))

        let quick = try StrictJSON.parse(CanonicalJSON.encode(PatchAudit.run(source).json()))
        #expect(quick["total"]?["values"] == .null)
        #expect(quick["integrity"]?["verdict"]?.string == "not-checked")
        #expect(quick["not_computed"] == .array(PatchAuditReport.valueStatisticNames.map { .string($0) }))
    }
}

@Suite("Audit edge cases")
struct AuditEdgeTests {
    @Test("A patch without tensors: empty figures, every chart drawn without bars, verify and diff still work")
    func emptyPatch() throws {
        let scratch = ScratchFolder("audit")
        defer { scratch.remove() }
        let path = try Synthetic.write([], to: scratch.file("empty.negpatch"))
        let source = try PatchFormats.open(path)
        var options = PatchAuditOptions()
        options.values = true
        let report = PatchAudit.run(source, options: options)
        #expect(report.tensors.isEmpty && report.layers.isEmpty)
        #expect(report.total.index.elements == 0 && report.total.index.density == 0 && report.total.index.bitsPerElement == 0)
        #expect(report.integrity.verdict == .verified)
        #expect(report.total.values == ValueStatistics())
        let html = AuditHTML.render(report)
        for id in ["chart-density", "chart-signs", "chart-histogram", "chart-size"] {
            #expect(html.contains("<svg id=\"\(id)\""), "\(id)")
        }
        #expect(!html.contains("<rect class=\"bar"))
        _ = try StrictJSON.parse(CanonicalJSON.encode(report.json()))
        #expect(PatchVerifier.verify(patch: path).intact)
        let diff = try PatchDiff.compare(source, source)
        #expect(diff.total.jaccard == nil && diff.total.correlation == nil)
    }
}

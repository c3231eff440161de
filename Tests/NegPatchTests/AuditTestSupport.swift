import Foundation
@testable import NegPatch

/// The suite's deterministic generator, with the audit tests' shorthands.
typealias SplitMix = SeededGenerator

extension SeededGenerator {
    init(_ seed: UInt64) { self.init(seed: seed) }
    /// Uniform in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}

/// One tensor of a synthetic patch: its name, shape and dense task vector.
struct SyntheticTensor {
    var name: String
    var shape: [Int]
    var tau: [Float]
    var agreement: [Int] = []
}

/// A folder under the system's temporary directory, removed by `remove()`.
struct ScratchFolder {
    let path: String
    init(_ label: String) {
        path = NSTemporaryDirectory() + "negpatch-\(label)-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func file(_ name: String) -> String { "\(path)/\(name)" }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

enum Synthetic {
    /// A task vector of `count` elements: `density` of them nonzero with random signs and
    /// magnitudes spread over several orders of magnitude, with a positive bias `bias`.
    static func tau(_ count: Int, density: Double, bias: Double = 0.5, seed: UInt64) -> [Float] {
        var rng = SplitMix(seed)
        return (0..<count).map { _ in
            guard rng.unit() < density else { return 0 }
            let magnitude = Float(pow(10, -6 + 5 * rng.unit()))
            return rng.unit() < bias ? magnitude : -magnitude
        }
    }

    /// Tensors over three layers and a few layer-less modules, with the awkward cases:
    /// a scalar, an empty tensor, an all-zero tensor, a fully dense tensor (stored dense),
    /// a subnormal and a negative zero (not a nonzero).
    static func tensors(n: Int = 3, seed: UInt64 = 1) -> [SyntheticTensor] {
        var tensors: [SyntheticTensor] = [
            SyntheticTensor(name: "model.embed_tokens.weight", shape: [40, 16], tau: tau(640, density: 0.3, seed: seed)),
        ]
        for layer in 0..<3 {
            let p = "model.layers.\(layer)."
            tensors.append(SyntheticTensor(name: p + "self_attn.q_proj.weight", shape: [16, 16],
                                           tau: tau(256, density: 0.1 + 0.2 * Double(layer), bias: 0.3 + 0.2 * Double(layer), seed: seed + 10 + UInt64(layer))))
            tensors.append(SyntheticTensor(name: p + "mlp.up_proj.weight", shape: [24, 16],
                                           tau: tau(384, density: 0.25, seed: seed + 20 + UInt64(layer))))
            tensors.append(SyntheticTensor(name: p + "input_layernorm.weight", shape: [16],
                                           tau: tau(16, density: 0.5, seed: seed + 30 + UInt64(layer))))
        }
        var dense = tau(200, density: 1.0, seed: seed + 40)
        dense[7] = Float(bitPattern: 3)  // a subnormal
        dense[8] = -0.0  // not a nonzero
        tensors.append(SyntheticTensor(name: "model.norm.weight", shape: [200], tau: dense))
        tensors.append(SyntheticTensor(name: "model.logit_scale", shape: [], tau: [0.25]))
        tensors.append(SyntheticTensor(name: "model.empty_bias", shape: [0], tau: []))
        tensors.append(SyntheticTensor(name: "lm_head.weight", shape: [40, 16], tau: [Float](repeating: 0, count: 640)))
        // Agreement counts that sum to the element count (their values are arbitrary here).
        for i in tensors.indices {
            var counts = [Int](repeating: 0, count: n + 1)
            for (j, v) in tensors[i].tau.enumerated() { counts[v != 0 ? n : (j % n)] += 1 }
            tensors[i].agreement = counts
        }
        return tensors
    }

    /// A fingerprint with one entry per tensor (F32) plus an integer tensor.
    static func fingerprint(_ tensors: [SyntheticTensor]) -> [FingerprintEntry] {
        [FingerprintEntry(name: "model.position_ids", dtype: .I64, shape: [1, 8], digest: 42)]
            + tensors.enumerated().map { i, t in FingerprintEntry(name: t.name, dtype: .F32, shape: t.shape, digest: UInt64(1000 + i)) }
    }

    static func metadata(n: Int = 3, method: String = "negmerge") -> PatchMetadata {
        PatchMetadata(method: method, parameters: [], n: n, inputs: (1...n).map { "ft_\($0).safetensors" },
                      base: "base.safetensors", lambda: 0.75)
    }

    /// Writes `tensors` as a `.negpatch` with `blockElements` per block and returns its path.
    @discardableResult
    static func write(_ tensors: [SyntheticTensor], to path: String, blockElements: Int = 128,
                      metadata: PatchMetadata = Synthetic.metadata(), fingerprint: [FingerprintEntry]? = nil) throws -> String {
        let writer = try NegPatchWriter(path: path, level: 3)
        for tensor in tensors {
            let header = PatchTensorHeader(name: tensor.name, dtype: .F32, shape: tensor.shape, elements: tensor.tau.count,
                                           blockElements: blockElements)
            try writer.beginTensor(header)
            for b in 0..<header.blockCount {
                let start = b * blockElements
                let count = min(blockElements, tensor.tau.count - start)
                let block = try tensor.tau.withUnsafeBufferPointer { try writer.prepare(dense: $0.baseAddress! + start, count: count) }
                try writer.append(block)
            }
            try writer.endTensor(agreement: tensor.agreement)
        }
        _ = try writer.finish(metadata: metadata, fingerprint: fingerprint ?? Synthetic.fingerprint(tensors))
        return path
    }

    /// Writes a float32 safetensors file holding `tensors` (name, shape, values) in order.
    static func writeSafetensors(_ tensors: [(name: String, shape: [Int], values: [Float])], to path: String) throws {
        var entries: [String] = []
        var offset = 0
        for t in tensors {
            let bytes = t.values.count * 4
            entries.append("\"\(t.name)\":{\"dtype\":\"F32\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}")
            offset += bytes
        }
        var header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        var data = Data()
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: header)
        for t in tensors { t.values.withUnsafeBytes { data.append(contentsOf: $0) } }
        try data.write(to: URL(fileURLWithPath: path))
    }
}

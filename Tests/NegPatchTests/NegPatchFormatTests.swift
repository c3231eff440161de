import Foundation
import Testing
@testable import NegPatch

/// Writes `tensors` (name, shape, dense tau) directly through a `NegPatchWriter`.
func writePatch(_ path: String, _ tensors: [(String, DType, [Int], [Float])], blockElements: Int = 64) throws -> Int {
    let writer = try NegPatchWriter(path: path, level: 3)
    for (name, dtype, shape, values) in tensors {
        let header = PatchTensorHeader(name: name, dtype: dtype, shape: shape, elements: values.count, blockElements: blockElements)
        try writer.beginTensor(header)
        for b in 0..<header.blockCount {
            let start = b * blockElements
            let count = min(blockElements, values.count - start)
            let block = try values.withUnsafeBufferPointer { try writer.prepare(dense: $0.baseAddress! + start, count: count) }
            try writer.append(block)
        }
        try writer.endTensor(agreement: [])
    }
    let metadata = PatchMetadata(method: "negmerge", parameters: [], n: 3, inputs: ["a", "b", "c"], base: "base", lambda: 0.75)
    let fingerprint = tensors.map { FingerprintEntry(name: $0.0, dtype: $0.1, shape: $0.2, digest: 42) }
    return try writer.finish(metadata: metadata, fingerprint: fingerprint)
}

private func vector(_ count: Int, density: Double, seed: UInt64) -> [Float] {
    var rng = SeededGenerator(seed: seed)
    return (0..<count).map { _ in Double.random(in: 0..<1, using: &rng) < density ? Float.random(in: 0.001...1, using: &rng) * (Bool.random(using: &rng) ? 1 : -1) : 0 }
}

/// Opens a patch and decodes every block; throws on the first problem.
func decodeEverything(_ path: String) throws -> [[Float]] {
    let patch = try NegPatchFile(path: path)
    return try patch.index.tensors.indices.map { try TaskVectorDecoder.dense(patch, tensor: $0) }
}

@Suite struct NegPatchFormatTests {
    @Test(arguments: [0.0, 0.07, 0.5, 0.9, 1.0], [DType.F32, .F16, .BF16, .F64])
    func roundTripsEveryDensityAndDtype(_ density: Double, _ dtype: DType) throws {
        let folder = TemporaryFolder()
        let tensors: [(String, DType, [Int], [Float])] = [
            ("w/with.dots and/slashes", dtype, [7, 45], vector(315, density: density, seed: 1)),
            ("scalar", dtype, [], vector(1, density: density, seed: 2)),
            ("empty", dtype, [3, 0], []),
            ("big", dtype, [1000], vector(1000, density: density, seed: 3)),
        ]
        let path = folder.file("p.negpatch")
        let size = try writePatch(path, tensors)
        #expect(size == readBytes(path).count)
        let patch = try NegPatchFile(path: path)
        #expect(patch.index.metadata.lambda == 0.75)
        #expect(patch.index.tensors.map(\.name) == tensors.map(\.0))
        #expect(patch.index.tensors.map(\.shape) == tensors.map(\.2))
        let decoded = try decodeEverything(path)
        for (tensor, got) in zip(tensors, decoded) {
            #expect(got.map(\.bitPattern) == tensor.3.map(\.bitPattern), "\(tensor.0)")
        }
        // Dense storage is chosen only where it is smaller, and only for dense-ish blocks.
        let encodings = patch.index.tensors.flatMap { $0.blocks.map(\.encoding) }
        if density < 0.25 { #expect(!encodings.contains(.dense)) }
    }

    @Test func sameInputGivesTheSameBytes() throws {
        let folder = TemporaryFolder()
        let tensors: [(String, DType, [Int], [Float])] = [("a", .F32, [200], vector(200, density: 0.3, seed: 5))]
        _ = try writePatch(folder.file("1.negpatch"), tensors)
        _ = try writePatch(folder.file("2.negpatch"), tensors)
        #expect(readBytes(folder.file("1.negpatch")) == readBytes(folder.file("2.negpatch")))
    }

    /// Every single-byte change and every truncation of a small patch is detected.
    @Test func everyFlippedByteAndTruncationIsDetected() throws {
        let folder = TemporaryFolder()
        let path = folder.file("p.negpatch")
        _ = try writePatch(path, [("a", .F32, [100], vector(100, density: 0.3, seed: 8)), ("b", .BF16, [70], vector(70, density: 0.6, seed: 9))])
        let original = readBytes(path)
        // A flip inside a part must be reported as that part's checksum mismatch: the XXH64
        // is checked before zstd (or the Rice decoder) reads a byte of it.
        var partAt: [Int: String] = [:]
        for tensor in try NegPatchFile(path: path).index.tensors {
            for (b, block) in tensor.blocks.enumerated() {
                for (kind, part) in [("mask", block.mask), ("values", block.values)] {
                    guard let part else { continue }
                    for position in part.offset..<(part.offset + part.length) {
                        partAt[position] = "tensor '\(tensor.name)': block \(b): \(kind) checksum mismatch (damaged file)"
                    }
                }
            }
        }
        #expect(partAt.count > 300)  // 418 of the file's bytes are in parts
        let damaged = folder.file("d.negpatch")
        var undetected: [Int] = [], misreported: [Int] = []
        for position in original.indices {
            var bytes = original
            bytes[position] ^= 0x5A
            writeBytes(damaged, bytes)
            do {
                _ = try decodeEverything(damaged)
                undetected.append(position)
            } catch {
                let text = (error as? NegPatchError)?.description ?? "\(error)"
                if let expected = partAt[position], !text.hasSuffix(expected) { misreported.append(position) }
            }
        }
        #expect(undetected.isEmpty, "flips not detected at \(undetected)")
        #expect(misreported.isEmpty, "flips inside parts not reported as checksum mismatches at \(misreported)")
        var truncations: [Int] = []
        for length in 0..<original.count {
            writeBytes(damaged, Array(original.prefix(length)))
            if (try? decodeEverything(damaged)) != nil { truncations.append(length) }
        }
        #expect(truncations.isEmpty, "truncations not detected at \(truncations)")
    }

    @Test func errorsNameTheFileAndTensor() throws {
        let folder = TemporaryFolder()
        let path = folder.file("p.negpatch")
        _ = try writePatch(path, [("layer.7.w", .F32, [100], vector(100, density: 0.3, seed: 8))])
        var bytes = readBytes(path)
        bytes[20] ^= 1  // inside the first part
        writeBytes(path, bytes)
        let patch = try NegPatchFile(path: path)
        let error = #expect(throws: NegPatchError.self) { try patch.block(tensor: 0, block: 0) }
        #expect(error?.code == .corrupt)
        #expect(error?.description == "\(path): tensor 'layer.7.w': block 0: mask checksum mismatch (damaged file)")
    }

    @Test func rejectsFilesThatAreNotPatches() throws {
        let folder = TemporaryFolder()
        let path = folder.file("x.negpatch")
        writeBytes(path, Array("hello, this is not a patch at all, no".utf8))
        let error = #expect(throws: NegPatchError.self) { try PatchFormats.open(path) }
        #expect(error?.description.contains("not a NegPatch patch") == true)
    }
}

@Suite struct LossyValueTests {
    @Test(arguments: [ValueType.f16, .bf16, .int8])
    func lossyValuesDecodeWithinTheRecordedError(_ type: ValueType) throws {
        let folder = TemporaryFolder()
        var rng = SeededGenerator(seed: 4)
        let values: [Float] = (0..<500).map { i in i % 3 == 0 ? 0 : Float.random(in: -0.01...0.01, using: &rng) }
        let path = folder.file("p.negpatch")
        let writer = try NegPatchWriter(path: path, level: 3, valueType: type)
        let header = PatchTensorHeader(name: "w", dtype: .F32, shape: [500], elements: 500, blockElements: 128)
        try writer.beginTensor(header)
        for b in 0..<header.blockCount {
            let count = min(128, 500 - b * 128)
            try writer.append(values.withUnsafeBufferPointer { try writer.prepare(dense: $0.baseAddress! + b * 128, count: count) })
        }
        try writer.endTensor(agreement: [])
        _ = try writer.finish(metadata: PatchMetadata(method: "negmerge", parameters: [], n: 1, inputs: ["a"], base: "b", lambda: 1),
                              fingerprint: [])
        let patch = try NegPatchFile(path: path)
        #expect(patch.index.metadata.lossy)
        let tensor = patch.index.tensors[0]
        #expect(tensor.valueType == type)
        let decoded = try TaskVectorDecoder.dense(patch, tensor: 0)
        let worst = zip(decoded, values).map { abs($0 - $1) }.max()!
        #expect(Double(worst) == tensor.maxAbsError)
        #expect(worst > 0)
        #expect(worst <= (type == .int8 ? 0.01 / 127 : 0.01 / 256))
    }

    @Test func f16FallsBackToF32WhereValuesOverflow() throws {
        var values: [Float] = [1e6, -3, 0, 2]
        let encoded = values.withUnsafeMutableBufferPointer { ValueCodec.encode($0.baseAddress!, count: 4, as: .f16) }
        #expect(encoded == nil)
        let folder = TemporaryFolder()
        let path = folder.file("p.negpatch")
        let writer = try NegPatchWriter(path: path, level: 3, valueType: .f16)
        try writer.beginTensor(PatchTensorHeader(name: "w", dtype: .F32, shape: [4], elements: 4, blockElements: 64))
        try writer.append(values.withUnsafeBufferPointer { try writer.prepare(dense: $0.baseAddress!, count: 4) })
        try writer.endTensor(agreement: [])
        _ = try writer.finish(metadata: PatchMetadata(method: "negmerge", parameters: [], n: 1, inputs: ["a"], base: "b", lambda: 1),
                              fingerprint: [])
        let patch = try NegPatchFile(path: path)
        #expect(patch.index.tensors[0].blocks[0].valueType == .f32)
        #expect(try TaskVectorDecoder.dense(patch, tensor: 0) == values)
        #expect(patch.index.metadata.lossy == false)
    }
}

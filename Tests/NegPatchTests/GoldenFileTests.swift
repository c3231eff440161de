import Foundation
import Testing
@testable import NegPatch

/// The golden files in `formats/golden/` pin the `.negpatch` bytes: the patch must decode
/// to the task vector the NumPy reference computed (`tools/make_golden.py`), and merging the
/// same inputs must reproduce the patch byte for byte.
@Suite struct GoldenFileTests {
    let folder = "\(repositoryRoot)/formats/golden"

    @Test func goldenPatchDecodesToTheReferenceTaskVector() throws {
        let patch = try PatchFormats.open("\(folder)/golden.negpatch")
        let reference = try SafetensorsFile(path: "\(folder)/golden.tau.safetensors")
        #expect(patch.index.metadata.method == "negmerge")
        #expect(patch.index.metadata.n == 3)
        #expect(patch.index.metadata.lambda == 0.8)
        #expect(patch.index.tensors.map(\.name) == reference.tensors.map(\.name))
        #expect(patch.index.tensors.contains { $0.blocks.count > 1 })
        for (t, entry) in patch.index.tensors.enumerated() {
            let decoded = try TaskVectorDecoder.dense(patch, tensor: t)
            let info = reference.tensor(named: entry.name)!
            #expect(info.shape == entry.shape)
            let expected = Array(reference.data(info).withMemoryRebound(to: UInt32.self) { $0 })
            #expect(decoded.map(\.bitPattern) == expected, "\(entry.name)")
        }
        let base = try Checkpoint(path: "\(folder)/base.safetensors")
        try BaseFingerprint.verify(base, matches: patch.index.fingerprint, patch: "golden.negpatch")
    }

    @Test func mergingTheGoldenInputsReproducesThePatchBytes() throws {
        let temp = TemporaryFolder()
        let base = try Checkpoint(path: "\(folder)/base.safetensors")
        let models = try (1...3).map { try Checkpoint(path: "\(folder)/ft_\($0).safetensors") }
        var request = MergeRequest(base: base, models: models, method: SignConsensus.negMerge)
        request.blockElements = 64
        request.lambda = 0.8
        let out = temp.file("golden.negpatch")
        _ = try Merger.run(request, writer: NegPatchWriter(path: out, level: Zstd.defaultLevel))
        #expect(readBytes(out) == readBytes("\(folder)/golden.negpatch"))
    }
}

import Foundation
import Testing
@testable import NegPatch

@Suite("Verify")
struct PatchVerifierTests {
    @Test("An intact patch passes every check, and says what each covered")
    func intact() throws {
        let scratch = ScratchFolder("verify")
        defer { scratch.remove() }
        let path = try Synthetic.write(Synthetic.tensors(), to: scratch.file("p.negpatch"))
        let report = PatchVerifier.verify(patch: path)
        #expect(report.intact)
        #expect(report.problems.isEmpty)
        #expect(report.checks.map(\.name) == ["file and index", "tensors", "parts"])
        #expect(report.checks.allSatisfy { $0.passed == true })
        #expect(report.checks[2].detail.contains("xxh64"))
        #expect(report.format == "negpatch")
    }

    @Test("Every flipped byte of the file is caught: header, every part, the index and the footer")
    func everyFlippedByte() throws {
        let scratch = ScratchFolder("verify")
        defer { scratch.remove() }
        let tensors = Array(Synthetic.tensors().prefix(3)) + [Synthetic.tensors()[10]]
        let path = try Synthetic.write(tensors, to: scratch.file("p.negpatch"), blockElements: 256)
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        let index = try PatchFormats.open(path).index
        #expect(index.tensors.contains { $0.blocks.contains { $0.encoding == .dense } })
        #expect(index.tensors.contains { $0.blocks.contains { $0.encoding == .sparse } })
        let damaged = scratch.file("damaged.negpatch")
        var missed: [Int] = []
        for offset in 0..<original.count {
            var bytes = original
            bytes[offset] ^= 0x01
            try bytes.write(to: URL(fileURLWithPath: damaged))
            let report = PatchVerifier.verify(patch: damaged)
            if report.intact || report.problems.isEmpty { missed.append(offset) }
        }
        #expect(missed.isEmpty, "flips at \(missed.prefix(10)) went unnoticed")
        #expect(original.count > 500)
    }

    @Test("A damaged part is named by tensor and block; the other checks still report")
    func damagedPart() throws {
        let scratch = ScratchFolder("verify")
        defer { scratch.remove() }
        let tensors = Synthetic.tensors()
        let path = try Synthetic.write(tensors, to: scratch.file("p.negpatch"), blockElements: 64)
        let part = try PatchFormats.open(path).index.tensors[1].blocks[2].mask!
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[part.offset + 1] ^= 0x80
        try bytes.write(to: URL(fileURLWithPath: path))
        let report = PatchVerifier.verify(patch: path)
        #expect(!report.intact)
        #expect(report.checks.first { $0.name == "parts" }?.passed == false)
        #expect(report.checks.first { $0.name == "file and index" }?.passed == true)
        #expect(report.problems.count == 1)
        #expect(report.problems[0].contains(tensors[1].name) && report.problems[0].contains("block 2"))
    }

    @Test("A file that cannot be opened fails the first check and skips the rest")
    func unreadable() throws {
        let scratch = ScratchFolder("verify")
        defer { scratch.remove() }
        let report = PatchVerifier.verify(patch: scratch.file("missing.negpatch"), base: scratch.file("base.safetensors"))
        #expect(!report.intact)
        #expect(report.checks.map(\.passed) == [false, nil, nil])
    }

    @Test("With a base: its fingerprint must match; another checkpoint is reported tensor by tensor")
    func base() throws {
        let scratch = ScratchFolder("verify")
        defer { scratch.remove() }
        let tensors = Array(Synthetic.tensors().prefix(4))
        let baseTensors = tensors.map { (name: $0.name, shape: $0.shape, values: Synthetic.tau($0.tau.count, density: 1, seed: 99)) }
        let basePath = scratch.file("base.safetensors")
        try Synthetic.writeSafetensors(baseTensors, to: basePath)
        let fingerprint = try BaseFingerprint.compute(try Checkpoint(path: basePath))
        let path = try Synthetic.write(tensors, to: scratch.file("p.negpatch"), fingerprint: fingerprint)

        let good = PatchVerifier.verify(patch: path, base: basePath)
        #expect(good.intact)
        #expect(good.checks.last?.name == "base")

        var other = baseTensors
        other[2].values[5] += 1
        let otherPath = scratch.file("other.safetensors")
        try Synthetic.writeSafetensors(other, to: otherPath)
        let bad = PatchVerifier.verify(patch: path, base: otherPath)
        #expect(!bad.intact)
        #expect(bad.checks.filter { $0.passed == false }.map(\.name) == ["base"])
        #expect(bad.problems.count == 1)
        #expect(bad.problems[0].contains(tensors[2].name) && bad.problems[0].contains("content differs"))

        let fewer = Array(baseTensors.prefix(3))
        try Synthetic.writeSafetensors(fewer, to: otherPath)
        let missing = PatchVerifier.verify(patch: path, base: otherPath)
        #expect(missing.problems.contains { $0.contains(tensors[3].name) && $0.contains("missing") })
    }

    @Test("Patched tensors must agree with the base fingerprint")
    func tensorsAgainstFingerprint() throws {
        let scratch = ScratchFolder("verify")
        defer { scratch.remove() }
        let tensors = Array(Synthetic.tensors().prefix(3))
        var fingerprint = Synthetic.fingerprint(tensors)
        fingerprint[2] = FingerprintEntry(name: fingerprint[2].name, dtype: .F32, shape: [999], digest: 1)
        fingerprint.append(FingerprintEntry(name: "unpatched.weight", dtype: .BF16, shape: [4], digest: 2))
        let path = try Synthetic.write(tensors, to: scratch.file("p.negpatch"), fingerprint: fingerprint)
        let report = PatchVerifier.verify(patch: path)
        #expect(report.checks.first { $0.name == "tensors" }?.passed == false)
        #expect(report.problems.count == 2)
    }
}

import Foundation
import Testing
@testable import NegPatch

/// Pearson's r computed the textbook way, two passes in Double.
private func pearson(_ pairs: [(Float, Float)]) -> Double? {
    guard pairs.count >= 2 else { return nil }
    let n = Double(pairs.count)
    let ma = pairs.reduce(0.0) { $0 + Double($1.0) } / n, mb = pairs.reduce(0.0) { $0 + Double($1.1) } / n
    var sab = 0.0, saa = 0.0, sbb = 0.0
    for (a, b) in pairs {
        sab += (Double(a) - ma) * (Double(b) - mb)
        saa += (Double(a) - ma) * (Double(a) - ma)
        sbb += (Double(b) - mb) * (Double(b) - mb)
    }
    guard saa > 0, sbb > 0 else { return nil }
    return sab / (saa * sbb).squareRoot()
}

@Suite("Diff")
struct PatchDiffTests {
    @Test("A patch compared with itself: overlap 1, signs agree, correlation exactly 1")
    func itself() throws {
        let scratch = ScratchFolder("diff")
        defer { scratch.remove() }
        let tensors = Synthetic.tensors()
        let path = try Synthetic.write(tensors, to: scratch.file("p.negpatch"), blockElements: 64)
        let report = try PatchDiff.compare(try PatchFormats.open(path), try PatchFormats.open(path))
        #expect(report.sameBase)
        #expect(report.onlyInA.isEmpty && report.onlyInB.isEmpty)
        #expect(report.total.jaccard == 1)
        #expect(report.total.signAgreement == 1)
        #expect(report.total.correlation == 1)
        for (tensor, synthetic) in zip(report.tensors, tensors) {
            let nonzeros = synthetic.tau.filter { $0 != 0 }.count
            #expect(tensor.figures.common == nonzeros)
            #expect(tensor.figures.jaccard == (nonzeros == 0 ? nil : 1), "\(tensor.name)")
            if nonzeros >= 2 { #expect(tensor.figures.correlation == 1, "\(tensor.name)") }
        }
    }

    @Test("Two small patches give the hand-computed figures")
    func byHand() throws {
        let scratch = ScratchFolder("diff")
        defer { scratch.remove() }
        // Elements:        0    1    2    3    4    5    6    7
        let a: [Float] = [1, -2, 0, 3, 0, 5, -1, 0]
        let b: [Float] = [2, -1, 4, -3, 0, 0, -2, 0]
        // nonzero A = 5 {0,1,3,5,6}, B = 5 {0,1,2,3,6}, common = 4 {0,1,3,6}, union = 6.
        // same sign at 0, 1, 6 (3 of 4). Common pairs: (1,2) (-2,-1) (3,-3) (-1,-2).
        let pathA = try Synthetic.write([SyntheticTensor(name: "w", shape: [8], tau: a)], to: scratch.file("a.negpatch"))
        let pathB = try Synthetic.write([SyntheticTensor(name: "w", shape: [8], tau: b)], to: scratch.file("b.negpatch"))
        let report = try PatchDiff.compare(try PatchFormats.open(pathA), try PatchFormats.open(pathB))
        let f = report.total
        #expect(f.nonzerosA == 5 && f.nonzerosB == 5 && f.common == 4 && f.union == 6)
        #expect(f.jaccard == 4.0 / 6.0)
        #expect(f.sameSign == 3)
        #expect(f.signAgreement == 0.75)
        // Means 0.25 and -1; deviations a: .75 -2.25 2.75 -1.25, b: 3 0 -2 -1;
        // sum ab = 2.25 + 0 - 5.5 + 1.25 = -2; sum aa = 14.75; sum bb = 14.
        let r = try #require(f.correlation)
        #expect(abs(r - (-2 / (14.75 * 14).squareRoot())) < 1e-15)
    }

    @Test("Different block sizes, many blocks: figures equal a direct computation")
    func blockSizes() throws {
        let scratch = ScratchFolder("diff")
        defer { scratch.remove() }
        let count = 1000
        let a = Synthetic.tau(count, density: 0.4, seed: 5)
        var b = Synthetic.tau(count, density: 0.4, seed: 6)
        for i in stride(from: 0, to: count, by: 3) where a[i] != 0 { b[i] = a[i] * 0.5 + 1e-4 }
        let pathA = try Synthetic.write([SyntheticTensor(name: "w", shape: [count], tau: a)], to: scratch.file("a.negpatch"), blockElements: 64)
        let pathB = try Synthetic.write([SyntheticTensor(name: "w", shape: [count], tau: b)], to: scratch.file("b.negpatch"), blockElements: 192)
        let forward = try PatchDiff.compare(try PatchFormats.open(pathA), try PatchFormats.open(pathB))
        let backward = try PatchDiff.compare(try PatchFormats.open(pathB), try PatchFormats.open(pathA))
        let common = (0..<count).filter { a[$0] != 0 && b[$0] != 0 }
        let union = (0..<count).filter { a[$0] != 0 || b[$0] != 0 }
        let same = common.filter { a[$0].sign == b[$0].sign }
        for f in [forward.total, backward.total] {
            #expect(f.common == common.count)
            #expect(f.union == union.count)
            #expect(f.sameSign == same.count)
        }
        let expected = try #require(pearson(common.map { (a[$0], b[$0]) }))
        #expect(abs(forward.total.correlation! - expected) < 1e-12)
        #expect(abs(backward.total.correlation! - expected) < 1e-12)
        #expect(forward.total.nonzerosA == backward.total.nonzerosB)
    }

    @Test("Merged moments equal the moments of the whole")
    func momentsMerge() {
        var rng = SplitMix(3)
        let pairs = (0..<500).map { _ in (Float(rng.unit() - 0.3), Float(rng.unit() * 2)) }
        var merged = DiffFigures()
        var start = 0
        for size in [1, 2, 7, 90, 200, 200] {
            let chunk = pairs[start..<min(pairs.count, start + size)]
            let xs = chunk.map(\.0), ys = chunk.map(\.1)
            merged.add(xs.withUnsafeBufferPointer { x in ys.withUnsafeBufferPointer { y in DiffFigures.of(x.baseAddress!, y.baseAddress!, count: chunk.count) } })
            start += size
        }
        #expect(merged.elements == 500)
        #expect(abs(merged.correlation! - pearson(pairs)!) < 1e-12)
    }

    @Test("Patches of different bases are refused unless asked; shapes must agree")
    func bases() throws {
        let scratch = ScratchFolder("diff")
        defer { scratch.remove() }
        let tensors = Array(Synthetic.tensors().prefix(3))
        let pathA = try Synthetic.write(tensors, to: scratch.file("a.negpatch"))
        var fingerprint = Synthetic.fingerprint(tensors)
        fingerprint[1] = FingerprintEntry(name: fingerprint[1].name, dtype: .F32, shape: fingerprint[1].shape, digest: 7)
        let pathB = try Synthetic.write(tensors, to: scratch.file("b.negpatch"), fingerprint: fingerprint)
        let a = try PatchFormats.open(pathA), b = try PatchFormats.open(pathB)
        #expect(throws: NegPatchError.self) { try PatchDiff.compare(a, b) }
        let report = try PatchDiff.compare(a, b, ignoreBaseMismatch: true)
        #expect(!report.sameBase)
        #expect(report.total.jaccard == 1)

        var reshaped = tensors
        reshaped[0].shape = [16, 40]
        let pathC = try Synthetic.write(reshaped, to: scratch.file("c.negpatch"), fingerprint: Synthetic.fingerprint(tensors))
        #expect(throws: NegPatchError.self) { try PatchDiff.compare(a, try PatchFormats.open(pathC)) }
    }
}

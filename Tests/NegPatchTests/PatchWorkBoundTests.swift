import Foundation
import Testing
@testable import NegPatch

/// What a patch may ask a reader to do before anything is decoded (`PatchWorkBound`).
@Suite struct PatchWorkBoundTests {
    /// Every other element nonzero: a zstd-coded mask (Rice codes are for sparse blocks).
    private func halfDense(_ count: Int) -> [Float] {
        (0..<count).map { $0 % 2 == 0 ? Float($0 % 97 + 1) : 0 }
    }

    @Test func blocksOfMoreThan2To26ElementsAreRefused() throws {
        let folder = TemporaryFolder()
        let path = folder.file("p.negpatch")
        _ = try writePatch(path, [("w", .F32, [64], halfDense(64))])
        for blockElements in [(1 << 26) + 64, 1 << 30] {
            let edited = try rewriteIndex(path) { $0.replacingOccurrences(of: "\"block_elements\":64", with: "\"block_elements\":\(blockElements)") }
            writeBytes(folder.file("big.negpatch"), edited)
            let error = #expect(throws: NegPatchError.self) { try PatchFormats.open(folder.file("big.negpatch")) }
            #expect(error?.message.contains("up to 2^26") == true)
        }
        let edited = try rewriteIndex(path) { $0.replacingOccurrences(of: "\"block_elements\":64", with: "\"block_elements\":\(1 << 26)") }
        writeBytes(folder.file("edge.negpatch"), edited)
        #expect(throws: Never.self) { try PatchFormats.open(folder.file("edge.negpatch")) }
    }

    @Test func aZstdPartMayNotExpandMoreThanZstdCan() throws {
        let folder = TemporaryFolder()
        let path = folder.file("p.negpatch")
        let count = 1 << 20
        _ = try writePatch(path, [("w", .F32, [count], halfDense(count))], blockElements: count)
        let index = try PatchFormats.open(path).index
        let mask = try #require(index.tensors[0].blocks[0].mask)
        #expect(mask.size == count / 8 && mask.size <= PatchWorkBound.maxZstdExpansion(mask.length))
        // 131,072 mask bytes cannot come out of a 3-byte frame (at most 98,304).
        let edited = try rewriteIndex(path) { $0.replacingOccurrences(of: "\"mask\":{\"length\":\(mask.length),", with: "\"mask\":{\"length\":3,") }
        writeBytes(folder.file("bomb.negpatch"), edited)
        let error = #expect(throws: NegPatchError.self) { try PatchFormats.open(folder.file("bomb.negpatch")) }
        #expect(error?.message.contains("cannot hold 131072 bytes") == true)
    }

    @Test func declaredElementsAreBoundedByTheFileUnlessToldMore() throws {
        #expect(PatchWorkBound.defaultMaxElements(fileSize: 0) == 1 << 28)
        #expect(PatchWorkBound.defaultMaxElements(fileSize: 1 << 20) == 1 << 30)
        #expect(PatchWorkBound.defaultMaxElements(fileSize: Int.max) == Int.max)
        #expect(PatchWorkBound.maxZstdExpansion(4) == 131_072)
        let folder = TemporaryFolder()
        let path = folder.file("p.negpatch")
        _ = try writePatch(path, [("w", .F32, [640], halfDense(640))])
        let source = try PatchFormats.open(path)
        try PatchWorkBound.check(source)
        try PatchWorkBound.check(source, maxElements: 640)
        let error = #expect(throws: NegPatchError.self) { try PatchWorkBound.check(source, maxElements: 639) }
        #expect(error?.message == "declares 640 elements, more than --max-elements 639; nothing was decoded")
    }
}

@Suite struct ParallelTests {
    @Test(arguments: [0, 1, 2, 3, 1000])
    func mapReturnsEveryResultInOrder(_ count: Int) throws {
        let results = try Parallel.map(count) { $0 * $0 }
        #expect(results == (0..<count).map { $0 * $0 })
    }

    @Test func theFirstErrorInIndexOrderIsRethrownAfterEveryIteration() {
        let ran = UnsafeMutableBufferPointer<Bool>.allocate(capacity: 100)
        ran.initialize(repeating: false)
        defer { ran.deallocate() }
        let error = #expect(throws: NegPatchError.self) {
            _ = try Parallel.map(100) { i -> Int in
                ran[i] = true
                if i % 10 == 7 { throw NegPatchError(.corrupt, file: "\(i)", "failed") }
                return i
            }
        }
        #expect(error?.file == "7")
        #expect(ran.allSatisfy { $0 })
    }
}

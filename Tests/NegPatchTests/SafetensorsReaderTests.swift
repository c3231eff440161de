import Foundation
import Testing
@testable import NegPatch

/// A safetensors file built from a header text and a data section, for malformed cases.
private func rawFile(_ folder: TemporaryFolder, header: String, data: Int, declaredLength: UInt64? = nil) -> String {
    let json = Array(header.utf8)
    var bytes = littleEndianBytes(declaredLength ?? UInt64(json.count)) + json
    bytes += [UInt8](repeating: 0, count: data)
    let path = folder.file("bad-\(UUID().uuidString).safetensors")
    writeBytes(path, bytes)
    return path
}

@Suite struct SafetensorsReaderTests {
    @Test func readsAValidFileInDataOrder() throws {
        let folder = TemporaryFolder()
        let path = folder.file("ok.safetensors")
        writeSafetensors(path, [
            .f32("b", [2, 3], [1, 2, 3, 4, 5, 6]),
            TestTensor(name: "ids", dtype: .I64, shape: [2], bytes: [UInt8](repeating: 7, count: 16)),
            .f32("scalar", [], [9]),
            .f32("empty", [0], []),
        ], metadata: [("format", "pt")])
        let file = try SafetensorsFile(path: path)
        #expect(file.tensors.map(\.name) == ["b", "ids", "scalar", "empty"])
        #expect(file.tensors[0].shape == [2, 3])
        #expect(file.tensors[0].elementCount == 6)
        #expect(file.tensors[1].byteCount == 16)
        #expect(file.tensors[2].elementCount == 1)
        #expect(file.tensors[3].byteCount == 0)
        #expect(file.metadata.map(\.key) == ["format"])
        let values = file.data(file.tensors[0]).withMemoryRebound(to: Float.self) { Array($0) }
        #expect(values == [1, 2, 3, 4, 5, 6])
    }

    static let malformed: [(String, String, Int, UInt64?)] = [
        ("invalid JSON", #"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]"#, 4, nil),
        ("duplicate key 'a'", #"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#, 8, nil),
        ("duplicate key 'dtype'", #"{"a": {"dtype": "F32", "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#, 4, nil),
        ("overlap", #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#, 8, nil),
        ("gap of 4 bytes", #"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}"#, 12, nil),
        ("run backwards", #"{"a": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}}"#, 4, nil),
        ("past the end", #"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"#, 8, nil),
        ("needs 8", #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}"#, 4, nil),
        ("overflows", #"{"a": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 4]}}"#, 4, nil),
        ("unsupported dtype 'F128'", #"{"a": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}"#, 16, nil),
        ("data section holds 8 bytes", #"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#, 8, nil),
        ("not a non-negative integer", #"{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#, 4, nil),
        ("expected a string", #"{"__metadata__": {"k": 1}}"#, 0, nil),
        ("expected an object", #"[1, 2]"#, 0, nil),
        ("exceeds the limit", #"{}"#, 0, 100_000_001),
        ("runs past the end", #"{}"#, 0, 4096),
    ]

    @Test(arguments: malformed)
    func rejectsMalformedHeaders(_ expected: String, _ header: String, _ data: Int, _ declared: UInt64?) throws {
        let folder = TemporaryFolder()
        let path = rawFile(folder, header: header, data: data, declaredLength: declared)
        let error = #expect(throws: NegPatchError.self) { try SafetensorsFile(path: path) }
        #expect(error?.code == .malformed)
        #expect(error?.description.contains(path) == true)
        #expect(error?.description.contains(expected) == true, "\(error?.description ?? "") lacks '\(expected)'")
    }

    @Test func namesTheTensorInShapeErrors() throws {
        let folder = TemporaryFolder()
        let path = rawFile(folder, header: #"{"layer.0.w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 4]}}"#, data: 4)
        let error = #expect(throws: NegPatchError.self) { try SafetensorsFile(path: path) }
        #expect(error?.tensor == "layer.0.w")
    }

    @Test(arguments: [0, 3, 7])
    func rejectsFilesShorterThanTheLengthField(_ size: Int) {
        let folder = TemporaryFolder()
        let path = folder.file("short.safetensors")
        writeBytes(path, [UInt8](repeating: 1, count: size))
        let error = #expect(throws: NegPatchError.self) { try SafetensorsFile(path: path) }
        #expect(error?.description.contains("shorter than the 8-byte header length") == true)
    }

    @Test func rejectsInvalidUTF8() {
        let folder = TemporaryFolder()
        let json: [UInt8] = Array(#"{"a\#u{FF}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}"#.utf8).map { $0 == 0xC3 ? 0xFF : $0 }
        let path = folder.file("utf8.safetensors")
        writeBytes(path, littleEndianBytes(UInt64(json.count)) + json)
        let error = #expect(throws: NegPatchError.self) { try SafetensorsFile(path: path) }
        #expect(error?.description.contains("UTF-8") == true)
    }

    @Test func shardedCheckpointsFollowTheWeightMap() throws {
        let folder = TemporaryFolder()
        writeSafetensors(folder.file("model-00001-of-00002.safetensors"), [.f32("a", [2], [1, 2])])
        writeSafetensors(folder.file("model-00002-of-00002.safetensors"), [.f32("b", [1], [3])])
        let index = #"{"metadata": {"total_size": 12}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#
        writeBytes(folder.file("model.safetensors.index.json"), Array(index.utf8))
        let checkpoint = try Checkpoint(path: folder.path)
        #expect(checkpoint.layout == .sharded)
        #expect(checkpoint.tensors.map(\.info.name) == ["a", "b"])
        #expect(checkpoint.tensors.map(\.shard) == [0, 1])

        let wrong = #"{"weight_map": {"a": "model-00002-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#
        writeBytes(folder.file("model.safetensors.index.json"), Array(wrong.utf8))
        #expect(throws: NegPatchError.self) { try Checkpoint(path: folder.path) }

        let escape = #"{"weight_map": {"a": "../model-00001-of-00002.safetensors"}}"#
        writeBytes(folder.file("model.safetensors.index.json"), Array(escape.utf8))
        let error = #expect(throws: NegPatchError.self) { try Checkpoint(path: folder.path) }
        #expect(error?.description.contains("not a plain file name") == true)
    }
}

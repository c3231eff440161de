import Foundation
@testable import NegPatch

/// A fresh temporary folder, removed when the value is released.
final class TemporaryFolder {
    let path: String

    init() {
        path = NSTemporaryDirectory() + "negpatch-tests-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String) -> String { "\(path)/\(name)" }

    /// Names of the files in the folder, sorted.
    var contents: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }
}

/// A tensor to write in a test checkpoint.
struct TestTensor {
    var name: String
    var dtype: DType
    var shape: [Int]
    var bytes: [UInt8]

    static func f32(_ name: String, _ shape: [Int], _ values: [Float]) -> TestTensor {
        TestTensor(name: name, dtype: .F32, shape: shape, bytes: values.withUnsafeBytes { Array($0) })
    }

    /// Float values stored in `dtype` (rounded to nearest even for F16 and BF16).
    static func floating(_ name: String, _ dtype: DType, _ shape: [Int], _ values: [Float]) -> TestTensor {
        let bytes: [UInt8]
        switch dtype {
        case .F32: bytes = values.withUnsafeBytes { Array($0) }
        case .F64: bytes = values.map(Double.init).withUnsafeBytes { Array($0) }
        case .F16: bytes = values.map { FloatConversion.floatToHalf($0) }.withUnsafeBytes { Array($0) }
        case .BF16: bytes = values.map { FloatConversion.floatToBFloat16($0) }.withUnsafeBytes { Array($0) }
        default: fatalError("not floating")
        }
        return TestTensor(name: name, dtype: dtype, shape: shape, bytes: bytes)
    }
}

/// Writes a safetensors file with the tensors in the given order.
func writeSafetensors(_ path: String, _ tensors: [TestTensor], metadata: [(key: String, value: String)] = []) {
    let header = SafetensorsHeader.encode(tensors.map { .init(name: $0.name, dtype: $0.dtype, shape: $0.shape) }, metadata: metadata)
    var data = Data(header)
    for tensor in tensors { data.append(contentsOf: tensor.bytes) }
    _ = FileManager.default.createFile(atPath: path, contents: data)
}

/// Writes raw bytes to `path`.
func writeBytes(_ path: String, _ bytes: [UInt8]) {
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
}

/// Reads a whole file.
func readBytes(_ path: String) -> [UInt8] {
    Array(FileManager.default.contents(atPath: path) ?? Data())
}

/// A small deterministic generator (SplitMix64) so tests do not depend on the platform RNG.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The repository root (for golden files in `formats/`).
let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// The patch at `path` with its index text changed by `edit` and the footer fixed up, so
/// that it is again a valid `.negpatch` (as a forger would make it).
func rewriteIndex(_ path: String, _ edit: (String) -> String) throws -> [UInt8] {
    let bytes = readBytes(path)
    let footer = bytes.count - 32
    let offset = Int(bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: footer, as: UInt64.self) })
    let index = String(decoding: bytes[offset..<footer], as: UTF8.self)
    let edited = Array(edit(index).utf8)
    var out = Array(bytes[0..<offset]) + edited
    out += littleEndianBytes(UInt64(offset)) + littleEndianBytes(UInt64(edited.count)) + littleEndianBytes(XXH64.hash(edited))
    out += Array("NEGPATCH".utf8)
    return out
}

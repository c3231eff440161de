// Fuzz target: the validating safetensors reader (Checkpoints/SafetensorsFile.swift) and
// everything downstream code does with the tensors it accepts: hashing each tensor's bytes
// (the base fingerprint) and converting floating tensors to float32 (the merge's tiles).
// Built by tools/fuzz/build.sh together with the library's sources.

import NegPatch

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafetensors(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let path = FuzzInput.path(holding: UnsafeRawBufferPointer(start: data, count: size))
    guard let file = try? SafetensorsFile(path: path) else { return 0 }
    var scratch = [Float](repeating: 0, count: 4096)
    var digest: UInt64 = 0
    for tensor in file.tensors {
        let bytes = file.data(tensor)
        // A validated tensor must lie inside the file and hold exactly its shape's bytes.
        precondition(bytes.count == tensor.byteCount && tensor.fileOffset + tensor.byteCount <= file.file.size)
        precondition(tensor.byteCount == tensor.elementCount * tensor.dtype.size)
        digest ^= XXH64.hash(bytes)
        if tensor.dtype.isFloating, let base = bytes.baseAddress {
            let count = min(tensor.elementCount, scratch.count)
            scratch.withUnsafeMutableBufferPointer { out in
                FloatConversion.toFloat32(base, dtype: tensor.dtype, start: tensor.elementCount - count, count: count,
                                          into: out.baseAddress!)
            }
        }
        _ = file.tensor(named: tensor.name)
    }
    _ = digest
    return 0
}

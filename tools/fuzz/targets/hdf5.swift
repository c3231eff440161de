// Fuzz target: the HDF5 patch reader (Formats/HDF5/HDF5PatchFile.swift) and its block
// decoder. libhdf5 parses the container; the reader must turn whatever libhdf5 accepts or
// rejects into a validated index or a clean error, and never trust a dataset's shape.
// Built by tools/fuzz/build.sh only when the HDF5 format is part of the library.

import NegPatch

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHDF5(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let path = FuzzInput.path(holding: UnsafeRawBufferPointer(start: data, count: size))
    guard let patch = try? HDF5PatchFile(path: path) else { return 0 }
    for (t, tensor) in patch.index.tensors.enumerated() {
        for b in tensor.blocks.indices {
            guard let block = try? patch.block(tensor: t, block: b) else { continue }
            let count = tensor.elementCount(ofBlock: b)
            precondition(block.count == count)
            if let indices = block.indices {
                precondition(indices.count == block.values.count)
                precondition(indices.allSatisfy { Int($0) < count })
            } else {
                precondition(block.values.count == count)
            }
        }
        _ = patch.storedBytes(tensor: t)
    }
    return 0
}

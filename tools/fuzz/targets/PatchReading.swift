// Shared by the negpatch, hdf5 and hdf5-sealed fuzz targets: decode every block of an open
// patch, as `apply` and `export` do, and check what the readers promise.

import NegPatch

/// Decodes every block of `patch` (nothing when it did not open) and checks that block
/// counts, element counts, nonzero counts and stored sizes agree.
func decodeEverything(_ patch: (any PatchSource)?) {
    guard let patch else { return }
    for (t, tensor) in patch.index.tensors.enumerated() {
        for b in tensor.blocks.indices {
            guard let block = try? patch.block(tensor: t, block: b) else { continue }
            let count = tensor.elementCount(ofBlock: b)
            precondition(block.count == count)
            if let indices = block.indices {
                precondition(indices.count == block.values.count && indices.count == tensor.blocks[b].nonzeros)
                precondition(indices.allSatisfy { Int($0) < count })
                precondition(zip(indices, indices.dropFirst()).allSatisfy { $0 < $1 })
            } else {
                precondition(block.values.count == count)
            }
            var dense = [Float](repeating: 0, count: count)
            dense.withUnsafeMutableBufferPointer { if count > 0 { block.expand(into: $0.baseAddress!) } }
        }
        _ = patch.storedBytes(tensor: t)
    }
}

// Shared by the hdf5 and hdf5-sealed fuzz targets: open an HDF5 patch and decode every block.

import NegPatch

func readEverything(_ path: String) {
    guard let patch = try? HDF5PatchFile(path: path) else { return }
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
}

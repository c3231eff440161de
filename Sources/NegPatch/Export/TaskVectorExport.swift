/// Writes a patch's task vector as a dense float32 safetensors file, so that it can be
/// inspected with any PyTorch or NumPy tool.
public enum TaskVectorExport {
    /// Writes every patched tensor of `patch` (names and shapes as in the base, dtype F32)
    /// to `path` atomically, with the patch's metadata under `__metadata__`. Returns the
    /// file size.
    @discardableResult
    public static func write(_ patch: any PatchSource, to path: String, progress: ProgressHandler? = nil) throws -> Int {
        if sameFile(patch.path, path) {
            throw NegPatchError(.invalidArgument, file: path, "output would overwrite the patch")
        }
        let index = patch.index
        let meta = index.metadata
        let metadata: [(key: String, value: String)] = [
            ("format", "pt"),
            ("negpatch.method", meta.method),
            ("negpatch.parameters", String(decoding: CanonicalJSON.encode(.object(meta.parameters)), as: UTF8.self)),
            ("negpatch.n", String(meta.n)),
            ("negpatch.inputs", String(decoding: CanonicalJSON.encode(.array(meta.inputs.map { .string($0) })), as: UTF8.self)),
            ("negpatch.base", meta.base),
            ("negpatch.lambda", String(decoding: CanonicalJSON.encode(.double(meta.lambda)), as: UTF8.self)),
            ("negpatch.tool", meta.tool),
        ] + (meta.direction == .subtract ? [] : [("negpatch.direction", meta.direction.rawValue)])
        let entries = index.tensors.map { SafetensorsHeader.Entry(name: $0.name, dtype: .F32, shape: $0.shape) }
        let output = try AtomicOutput(destination: path)
        try output.write(SafetensorsHeader.encode(entries, metadata: metadata))
        // Block by block, so memory stays at one block whatever the tensor's size.
        var done = 0
        var buffer = [Float]()
        for (t, tensor) in index.tensors.enumerated() {
            for b in tensor.blocks.indices {
                let block = try patch.block(tensor: t, block: b)
                buffer.removeAll(keepingCapacity: true)
                buffer.append(contentsOf: repeatElement(0, count: block.count))
                buffer.withUnsafeMutableBufferPointer { block.expand(into: $0.baseAddress!) }
                try buffer.withUnsafeBytes { try output.write($0) }
                done += block.count
                progress?(done, index.elements)
            }
        }
        let size = output.bytesWritten
        try output.commit()
        return size
    }
}

/// Re-encodes a patch in another format (or the same format with other options), block by
/// block and losslessly.
///
/// The output keeps every tensor (order, name, dtype, shape, `block_elements`), every
/// block's encoding and nonzero count, the agreement histograms, the metadata (including
/// `tool`, the original writer) and the base fingerprint. So a conversion there and back
/// gives the same bytes as the original when the same compression settings are used, and
/// every conversion decodes to the bit-identical task vector.
///
/// Values are written as the output writer stores them (float32 unless it was made with a
/// lossy value type): a lossy `.negpatch` converts to the task vector it decodes to, with
/// `metadata.lossy` kept, so the task vector survives exactly but not the narrow encoding.
public enum PatchConversion {
    /// Reads every block of `source` and writes it through `writer`, which it finishes;
    /// returns the output's size in bytes. Blocks are decoded and prepared on `threads`
    /// threads and stored in order on the calling thread. On any error the writer is aborted
    /// and the destination untouched. Throws `.invalidArgument` when the output is the input.
    @discardableResult
    public static func convert(_ source: any PatchSource, to writer: any PatchWriter, threads: Int = ProcessorCount.active,
                               progress: ProgressHandler? = nil) throws -> Int {
        do {
            if sameFile(source.path, writer.path) {
                throw NegPatchError(.invalidArgument, file: writer.path, "output would overwrite the patch being converted")
            }
            return try run(source, writer: writer, threads: threads, progress: progress)
        } catch {
            writer.abort()
            throw error
        }
    }

    private struct Item {
        let tensor: Int
        let block: Int
    }

    private static func run(_ source: any PatchSource, writer: any PatchWriter, threads: Int, progress: ProgressHandler?) throws -> Int {
        let index = source.index
        var items: [Item] = []
        for (t, tensor) in index.tensors.enumerated() {
            for b in tensor.blocks.indices { items.append(Item(tensor: t, block: b)) }
        }
        var nextTensor = 0  // the next tensor to begin in the writer
        func begin(upTo t: Int) throws {
            while nextTensor <= t {
                let tensor = index.tensors[nextTensor]
                try writer.beginTensor(PatchTensorHeader(name: tensor.name, dtype: tensor.dtype, shape: tensor.shape,
                                                         elements: tensor.elements, blockElements: tensor.blockElements))
                if tensor.blocks.isEmpty { try writer.endTensor(agreement: tensor.agreement) }
                nextTensor += 1
            }
        }
        let window = max(4, threads * 3)
        var done = 0
        var start = 0
        while start < items.count {
            let slice = Array(items[start..<min(items.count, start + window)])
            let prepared = try Parallel.map(slice.count) { j -> PreparedBlock in
                let item = slice[j]
                let tensor = index.tensors[item.tensor]
                let entry = tensor.blocks[item.block]
                let decoded = try source.block(tensor: item.tensor, block: item.block)
                let block = try writer.prepare(decoded, encoding: entry.encoding)
                // A lossy value type may round a value to zero; float32 blocks keep their count.
                guard block.nonzeros == entry.nonzeros || entry.valueType != .f32 else {
                    throw NegPatchError(.corrupt, file: source.path, tensor: tensor.name,
                                        "block \(item.block) decodes to \(block.nonzeros) nonzeros, the patch says \(entry.nonzeros)")
                }
                return block
            }
            for (j, item) in slice.enumerated() {
                try begin(upTo: item.tensor)
                try writer.append(prepared[j])
                let tensor = index.tensors[item.tensor]
                if item.block == tensor.blocks.count - 1 { try writer.endTensor(agreement: tensor.agreement) }
                done += prepared[j].count
            }
            progress?(done, index.elements)
            start += slice.count
        }
        if !index.tensors.isEmpty { try begin(upTo: index.tensors.count - 1) }
        return try writer.finish(metadata: index.metadata, fingerprint: index.fingerprint)
    }
}

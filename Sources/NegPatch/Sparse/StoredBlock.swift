/// A decoded block put back into the form a patch stores for a given encoding: the bitmask
/// of the elements that have a stored value and those values, in element order.
///
/// `sparse`: the mask has a bit exactly where the value is nonzero and `values` holds the
/// nonzero values. `dense`: every element's bit is set and `values` holds all `count` values
/// (zeros included, with their sign). Either way the number of set bits equals
/// `values.count` and the padding bits of the last mask byte are zero.
struct StoredBlock {
    /// The bitmask of stored elements, LSB-first, `Bitmask.byteCount(count)` bytes.
    let mask: [UInt8]
    /// The stored values.
    let values: [Float]
    /// The number of nonzero values.
    let nonzeros: Int

    /// Re-expresses `block` in `encoding`. A block that already comes in that shape (a sparse
    /// block with indices and nonzero values, a dense one without indices) is taken as it
    /// is, bit for bit; otherwise it is expanded and packed again.
    init(_ block: SparseBlock, encoding: BlockEncoding) {
        let count = block.count
        switch (encoding, block.indices) {
        case let (.sparse, indices?) where !block.values.contains(0):
            mask = Bitmask.mask(count: count, indices: indices)
            values = block.values
            nonzeros = block.values.count
        case (.dense, nil):
            mask = Bitmask.allSet(count: count)
            values = block.values
            nonzeros = block.nonzeros
        case (.dense, _?):
            var dense = [Float](repeating: 0, count: count)
            dense.withUnsafeMutableBufferPointer { if count > 0 { block.expand(into: $0.baseAddress!) } }
            mask = Bitmask.allSet(count: count)
            values = dense
            nonzeros = block.values.count
        case (.sparse, _):
            // A dense block, or a sparse one whose values decoded to zeros (a lossy value type
            // can round a small value to zero): pack the dense values afresh.
            var dense = [Float](repeating: 0, count: count)
            dense.withUnsafeMutableBufferPointer { if count > 0 { block.expand(into: $0.baseAddress!) } }
            (mask, values) = count == 0 ? ([], []) : dense.withUnsafeBufferPointer { Bitmask.pack($0.baseAddress!, count: count) }
            nonzeros = values.count
        }
    }
}

extension Bitmask {
    /// The mask of `count` elements with exactly the bits `indices` set (ascending offsets
    /// below `count`).
    static func mask(count: Int, indices: [UInt32]) -> [UInt8] {
        var mask = [UInt8](repeating: 0, count: byteCount(count))
        mask.withUnsafeMutableBufferPointer { m in
            for index in indices {
                let i = Int(index)
                m[i >> 3] |= 1 << UInt8(i & 7)
            }
        }
        return mask
    }

    /// The mask of `count` elements with every bit set (padding bits clear).
    static func allSet(count: Int) -> [UInt8] {
        var mask = [UInt8](repeating: 0xFF, count: byteCount(count))
        if count % 8 != 0 { mask[mask.count - 1] = UInt8(0xFF) >> UInt8(8 - count % 8) }
        return mask
    }
}

/// The sparse encoding of a block of a task vector: a bitmask of nonzero elements (bit `i % 8`
/// of byte `i / 8`, least significant first, as `numpy.packbits(..., bitorder="little")`)
/// and the nonzero values in ascending element order.
public enum Bitmask {
    /// Bytes needed for the mask of `count` elements.
    @inline(__always)
    public static func byteCount(_ count: Int) -> Int { (count + 7) / 8 }

    /// Packs `count` dense values: writes the mask (`byteCount(count)` bytes) and the nonzero
    /// values, and returns how many values were written. `values` must have room for
    /// `count + 8` floats (the loop writes one slot past the last kept value, branch-free).
    /// A zero of either sign is not stored; NaN is stored.
    public static func pack(_ dense: UnsafePointer<Float>, count: Int,
                            mask: UnsafeMutablePointer<UInt8>, values: UnsafeMutablePointer<Float>) -> Int {
        var kept = 0
        var i = 0
        let fullBytes = count / 8
        for byteIndex in 0..<fullBytes {
            var byte: UInt8 = 0
            for bit in 0..<8 {
                let v = dense[i + bit]
                let keep: UInt8 = v != 0 ? 1 : 0
                values[kept] = v
                kept &+= Int(keep)
                byte |= keep << UInt8(bit)
            }
            mask[byteIndex] = byte
            i += 8
        }
        if i < count {
            var byte: UInt8 = 0
            for bit in 0..<(count - i) {
                let v = dense[i + bit]
                let keep: UInt8 = v != 0 ? 1 : 0
                values[kept] = v
                kept &+= Int(keep)
                byte |= keep << UInt8(bit)
            }
            mask[fullBytes] = byte
        }
        return kept
    }

    /// Packs `count` dense values into a mask and an array of exactly the nonzero values
    /// (counted first, so a sparse block allocates only what it keeps).
    public static func pack(_ dense: UnsafePointer<Float>, count: Int) -> (mask: [UInt8], values: [Float]) {
        let nonzeros = nonzeroCount(dense, count: count)
        var mask = [UInt8](repeating: 0, count: byteCount(count))
        // One slot more than kept: the packing loop stores past the last kept value.
        let values = [Float](unsafeUninitializedCapacity: nonzeros + 1) { buffer, initialized in
            initialized = mask.withUnsafeMutableBufferPointer { m in
                pack(dense, count: count, mask: m.baseAddress!, values: buffer.baseAddress!)
            }
        }
        return (mask, values)
    }

    /// The number of nonzero values (zeros of either sign excluded; NaN counted) among
    /// `count` dense values.
    public static func nonzeroCount(_ dense: UnsafePointer<Float>, count: Int) -> Int {
        var total = 0
        var start = 0
        // Int32 lanes, folded into the total every 2^24 elements, long before they could
        // overflow.
        while start < count {
            let end = min(count, start + (1 << 24))
            var lanes = SIMD8<Int32>.zero
            var i = start
            while i + 8 <= end {
                let v = UnsafeRawPointer(dense + i).loadUnaligned(as: SIMD8<Float>.self)
                lanes &+= SIMD8<Int32>.zero.replacing(with: 1, where: v .!= SIMD8<Float>.zero)
                i += 8
            }
            total += Int(lanes.wrappedSum())
            while i < end {
                if dense[i] != 0 { total += 1 }
                i += 1
            }
            start = end
        }
        return total
    }

    /// The number of set bits in a mask of `count` elements, and whether its padding bits
    /// (beyond `count` in the last byte) are all zero.
    public static func popcount(_ mask: UnsafePointer<UInt8>, count: Int) -> (setBits: Int, cleanPadding: Bool) {
        let bytes = byteCount(count)
        var total = 0
        var i = 0
        let raw = UnsafeRawPointer(mask)
        while i + 8 <= bytes {
            total &+= raw.loadUnaligned(fromByteOffset: i, as: UInt64.self).nonzeroBitCount
            i += 8
        }
        while i < bytes {
            total &+= mask[i].nonzeroBitCount
            i += 1
        }
        var clean = true
        if count % 8 != 0 {
            clean = mask[bytes - 1] >> UInt8(count % 8) == 0
        }
        return (total, clean)
    }

    /// Writes the element offsets of the set bits of a mask of `count` elements to
    /// `indices` in ascending order and returns how many there are. Scans 64-bit words and
    /// peels set bits with a trailing-zero count.
    public static func setBitIndices(_ mask: UnsafePointer<UInt8>, count: Int,
                                     into indices: UnsafeMutablePointer<UInt32>) -> Int {
        let bytes = byteCount(count)
        let raw = UnsafeRawPointer(mask)
        var written = 0
        var byteOffset = 0
        while byteOffset + 8 <= bytes {
            var word = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: byteOffset, as: UInt64.self))
            let base = UInt32(truncatingIfNeeded: byteOffset * 8)
            while word != 0 {
                indices[written] = base &+ UInt32(truncatingIfNeeded: word.trailingZeroBitCount)
                written &+= 1
                word &= word &- 1
            }
            byteOffset += 8
        }
        while byteOffset < bytes {
            var byte = mask[byteOffset]
            let base = UInt32(truncatingIfNeeded: byteOffset * 8)
            while byte != 0 {
                indices[written] = base &+ UInt32(truncatingIfNeeded: byte.trailingZeroBitCount)
                written &+= 1
                byte &= byte &- 1
            }
            byteOffset += 1
        }
        return written
    }

    /// The offsets of the set bits of every byte value and their count, for the
    /// table-driven decoder.
    static let byteTable: (offsets: [UInt8], counts: [UInt8]) = {
        var offsets = [UInt8](repeating: 0, count: 256 * 8)
        var counts = [UInt8](repeating: 0, count: 256)
        for value in 0..<256 {
            var n = 0
            for bit in 0..<8 where value & (1 << bit) != 0 {
                offsets[value * 8 + n] = UInt8(bit)
                n += 1
            }
            counts[value] = UInt8(n)
        }
        return (offsets, counts)
    }()

    /// The same as `setBitIndices`, driven by a 256-entry table from a mask byte to its
    /// set-bit offsets (kept for comparison in the decoder benchmark).
    public static func setBitIndicesByTable(_ mask: UnsafePointer<UInt8>, count: Int,
                                            into indices: UnsafeMutablePointer<UInt32>) -> Int {
        let bytes = byteCount(count)
        var written = 0
        byteTable.offsets.withUnsafeBufferPointer { offsets in
            byteTable.counts.withUnsafeBufferPointer { counts in
                for byteIndex in 0..<bytes {
                    let value = Int(mask[byteIndex])
                    if value == 0 { continue }
                    let base = UInt32(truncatingIfNeeded: byteIndex * 8)
                    let entry = value * 8
                    // Write all eight slots, advance by the real count: no inner branch.
                    for j in 0..<8 {
                        indices[written + j] = base &+ UInt32(offsets[entry + j])
                    }
                    written &+= Int(counts[value])
                }
            }
        }
        return written
    }
}

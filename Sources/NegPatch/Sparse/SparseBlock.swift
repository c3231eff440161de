/// A decoded block of a patched tensor: which elements are nonzero and their values.
///
/// For a sparse block `indices` lists the nonzero elements' offsets within the block in
/// ascending order and `values` their values; a dense block has `indices == nil` and one
/// value per element.
public struct SparseBlock: Sendable {
    /// Elements in the block.
    public let count: Int
    /// Offsets of the nonzero elements within the block, or nil for a dense block.
    public let indices: [UInt32]?
    /// The nonzero values (sparse) or every value (dense).
    public let values: [Float]

    /// Creates a block; `indices` and `values` must agree as described above.
    public init(count: Int, indices: [UInt32]?, values: [Float]) {
        self.count = count
        self.indices = indices
        self.values = values
    }

    /// The number of nonzero values.
    public var nonzeros: Int {
        indices != nil ? values.count : values.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
    }

    /// Writes the block's dense values into `destination` (`count` floats).
    public func expand(into destination: UnsafeMutablePointer<Float>) {
        values.withUnsafeBufferPointer { v in
            guard let indices else {
                destination.update(from: v.baseAddress!, count: count)
                return
            }
            destination.initialize(repeating: 0, count: count)
            indices.withUnsafeBufferPointer { idx in
                for j in 0..<idx.count {
                    destination[Int(idx[j])] = v[j]
                }
            }
        }
    }
}

/// Byte-plane shuffling of float32 arrays: all first bytes, then all second bytes, and so
/// on. Neighbouring values share exponent bytes, so the shuffled form compresses better.
public enum ByteShuffle {
    /// Shuffles `count` little-endian float32 values into `destination` (`4 * count` bytes).
    public static func shuffle(_ values: UnsafePointer<Float>, count: Int, into destination: UnsafeMutablePointer<UInt8>) {
        let words = UnsafeRawPointer(values).assumingMemoryBound(to: UInt32.self)
        let p0 = destination, p1 = destination + count, p2 = destination + 2 * count, p3 = destination + 3 * count
        for i in 0..<count {
            let w = UInt32(littleEndian: words[i])
            p0[i] = UInt8(truncatingIfNeeded: w)
            p1[i] = UInt8(truncatingIfNeeded: w >> 8)
            p2[i] = UInt8(truncatingIfNeeded: w >> 16)
            p3[i] = UInt8(truncatingIfNeeded: w >> 24)
        }
    }

    /// Reverses `shuffle`: `4 * count` shuffled bytes back into `count` float32 values.
    public static func unshuffle(_ bytes: UnsafePointer<UInt8>, count: Int, into values: UnsafeMutablePointer<Float>) {
        let words = UnsafeMutableRawPointer(values).assumingMemoryBound(to: UInt32.self)
        let p0 = bytes, p1 = bytes + count, p2 = bytes + 2 * count, p3 = bytes + 3 * count
        for i in 0..<count {
            let w = UInt32(p0[i]) | UInt32(p1[i]) << 8 | UInt32(p2[i]) << 16 | UInt32(p3[i]) << 24
            words[i] = UInt32(littleEndian: w)
        }
    }
}

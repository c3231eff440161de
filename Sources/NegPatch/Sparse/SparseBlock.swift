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

/// Byte-plane shuffling of little-endian arrays of `width`-byte values: all first bytes,
/// then all second bytes, and so on. Neighbouring values share exponent bytes, so the
/// shuffled form compresses better.
public enum ByteShuffle {
    /// Shuffles `count` values of `width` bytes into `destination` (`width * count` bytes).
    public static func shuffle(_ values: UnsafeRawPointer, width: Int, count: Int, into destination: UnsafeMutablePointer<UInt8>) {
        let source = values.assumingMemoryBound(to: UInt8.self)
        for plane in 0..<width {
            let out = destination + plane * count
            for i in 0..<count { out[i] = source[i * width + plane] }
        }
    }

    /// Reverses `shuffle`: `width * count` shuffled bytes back into `count` values.
    public static func unshuffle(_ bytes: UnsafePointer<UInt8>, width: Int, count: Int, into values: UnsafeMutableRawPointer) {
        let out = values.assumingMemoryBound(to: UInt8.self)
        for plane in 0..<width {
            let source = bytes + plane * count
            for i in 0..<count { out[i * width + plane] = source[i] }
        }
    }

    /// Shuffles `count` float32 values (four planes).
    public static func shuffle(_ values: UnsafePointer<Float>, count: Int, into destination: UnsafeMutablePointer<UInt8>) {
        shuffle(UnsafeRawPointer(values), width: 4, count: count, into: destination)
    }

    /// Unshuffles `count` float32 values (four planes).
    public static func unshuffle(_ bytes: UnsafePointer<UInt8>, count: Int, into values: UnsafeMutablePointer<Float>) {
        unshuffle(bytes, width: 4, count: count, into: UnsafeMutableRawPointer(values))
    }
}

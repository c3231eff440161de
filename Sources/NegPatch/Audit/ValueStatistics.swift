/// Counts of nonzero |values| by binary order of magnitude: bin `e` counts values with
/// `2^e <= |v| < 2^(e+1)`, for every exponent a float32 can have (`-149 ... 127`).
///
/// The bins are exact (read from the float's bits), so any reader can reproduce them, e.g.
/// NumPy's `frexp(|v|)[1] - 1`.
public struct AbsValueHistogram: Sendable, Equatable {
    /// The smallest binary exponent (the smallest subnormal float32 is `2^-149`).
    public static let minExponent = -149
    /// The largest binary exponent of a finite float32.
    public static let maxExponent = 127
    /// Counts indexed by `exponent - minExponent`.
    public private(set) var counts: [Int]

    /// An empty histogram.
    public init() {
        counts = [Int](repeating: 0, count: Self.maxExponent - Self.minExponent + 1)
    }

    /// The count of values with `2^exponent <= |v| < 2^(exponent+1)`.
    public subscript(exponent: Int) -> Int {
        counts[exponent - Self.minExponent]
    }

    /// The lowest and highest exponents with a nonzero count, or nil when empty.
    public var occupied: ClosedRange<Int>? {
        guard let low = counts.firstIndex(where: { $0 != 0 }), let high = counts.lastIndex(where: { $0 != 0 }) else {
            return nil
        }
        return (low + Self.minExponent)...(high + Self.minExponent)
    }

    /// The total count.
    public var total: Int { counts.reduce(0, +) }

    /// Adds `other`'s counts.
    public mutating func add(_ other: AbsValueHistogram) {
        for i in counts.indices { counts[i] += other.counts[i] }
    }

    mutating func increment(bin: Int) {
        counts[bin] += 1
    }
}

/// Statistics of a task vector's nonzero values; computing them needs every value decoded.
///
/// `positive + negative + nonfinite` is the number of nonzero values seen. NaN and
/// infinities are counted in `nonfinite` only and left out of the norm, the maximum and the
/// histogram.
public struct ValueStatistics: Sendable, Equatable {
    /// Values `> 0` (finite).
    public var positive = 0
    /// Values `< 0` (finite).
    public var negative = 0
    /// NaN or infinite values.
    public var nonfinite = 0
    /// Sum of squares of the finite values, accumulated in Double.
    public var sumOfSquares = 0.0
    /// The largest |value| among the finite values (0 when there are none).
    public var maxAbs: Float = 0
    /// |values| by binary order of magnitude.
    public var histogram = AbsValueHistogram()

    /// Empty statistics.
    public init() {}

    /// The L2 norm of the finite values: `sqrt(sum v^2)`.
    public var l2Norm: Double { sumOfSquares.squareRoot() }

    /// Nonzero values seen.
    public var nonzeros: Int { positive + negative + nonfinite }

    /// Share of the nonzero values that are positive (0 when there are none).
    public var positiveShare: Double { nonzeros == 0 ? 0 : Double(positive) / Double(nonzeros) }

    /// Share of the nonzero values that are negative (0 when there are none).
    public var negativeShare: Double { nonzeros == 0 ? 0 : Double(negative) / Double(nonzeros) }

    /// Adds the statistics of disjoint values.
    public mutating func add(_ other: ValueStatistics) {
        positive += other.positive
        negative += other.negative
        nonfinite += other.nonfinite
        sumOfSquares += other.sumOfSquares
        maxAbs = max(maxAbs, other.maxAbs)
        histogram.add(other.histogram)
    }

    /// The statistics of `values` (zeros are skipped, as they are not part of the mask).
    public static func of(_ values: UnsafeBufferPointer<Float>) -> ValueStatistics {
        var stats = ValueStatistics()
        var positive = 0, negative = 0, nonfinite = 0
        var sum = 0.0
        var maxBits: UInt32 = 0
        var histogram = AbsValueHistogram()
        for v in values {
            let bits = v.bitPattern
            let magnitude = bits & 0x7FFF_FFFF
            if magnitude == 0 { continue }
            let exponentField = Int(magnitude >> 23)
            if exponentField == 0xFF {
                nonfinite += 1
                continue
            }
            if bits >> 31 == 0 { positive += 1 } else { negative += 1 }
            let d = Double(v)
            sum += d * d
            // For finite floats, ordering by magnitude bits is ordering by |value|.
            maxBits = max(maxBits, magnitude)
            let exponent: Int
            if exponentField > 0 {
                exponent = exponentField - 127
            } else {
                exponent = (31 - magnitude.leadingZeroBitCount) - 149
            }
            histogram.increment(bin: exponent - AbsValueHistogram.minExponent)
        }
        stats.positive = positive
        stats.negative = negative
        stats.nonfinite = nonfinite
        stats.sumOfSquares = sum
        stats.maxAbs = Float(bitPattern: maxBits)
        stats.histogram = histogram
        return stats
    }
}

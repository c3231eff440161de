/// Conversions between the floating dtypes and float32, by buffer.
///
/// Loops are written over raw pointers with branch-free bit manipulation so they vectorise;
/// upcasts are exact, downcasts round to nearest, ties to even, and keep NaN a NaN.
public enum FloatConversion {
    /// Converts `count` elements of `dtype` starting at element `start` of `source` into
    /// float32 at `destination`. F64 is rounded to nearest float32.
    public static func toFloat32(_ source: UnsafeRawPointer, dtype: DType, start: Int, count: Int,
                                 into destination: UnsafeMutablePointer<Float>) {
        switch dtype {
        case .F32:
            UnsafeMutableRawPointer(destination).copyMemory(from: source + start * 4, byteCount: count * 4)
        case .BF16:
            let bits = source.assumingMemoryBound(to: UInt16.self) + start
            for i in 0..<count {
                destination[i] = Float(bitPattern: UInt32(bits[i]) << 16)
            }
        case .F16:
            let bits = source.assumingMemoryBound(to: UInt16.self) + start
            for i in 0..<count {
                destination[i] = halfToFloat(bits[i])
            }
        case .F64:
            let values = source.assumingMemoryBound(to: Double.self) + start
            for i in 0..<count {
                destination[i] = Float(values[i])
            }
        default:
            preconditionFailure("\(dtype) is not a floating dtype")
        }
    }

    /// The float32 value of IEEE binary16 bits, exactly.
    @inline(__always)
    public static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let magnitude = UInt32(h & 0x7FFF)
        // Normal and subnormal halves: shift into a float32 with exponent bias 15 and scale
        // by 2^112 to rebias (exact, as the result is representable).
        let scaled = Float(bitPattern: magnitude << 13) * Float(bitPattern: 0x7780_0000)
        // Infinity and NaN keep an all-ones exponent.
        let special = Float(bitPattern: (magnitude << 13) | 0x7F80_0000)
        let value = magnitude >= 0x7C00 ? special : scaled
        return Float(bitPattern: value.bitPattern | sign)
    }

    /// bfloat16 bits nearest to `value` (ties to even); NaN stays a quiet NaN.
    @inline(__always)
    public static func floatToBFloat16(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN {
            return UInt16(truncatingIfNeeded: (bits >> 16) | 0x0040)
        }
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }

    /// binary16 bits nearest to `value` (ties to even, overflow to infinity).
    @inline(__always)
    public static func floatToHalf(_ value: Float) -> UInt16 {
        Float16(value).bitPattern
    }
}

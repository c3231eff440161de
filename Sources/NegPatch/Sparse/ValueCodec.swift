/// How the values of a block are stored: float32 (lossless, the default) or, on request, a
/// lossy narrower type.
public enum ValueType: String, Sendable, CaseIterable {
    /// IEEE binary32, exact.
    case f32
    /// IEEE binary16, round to nearest even (lossy).
    case f16
    /// bfloat16, round to nearest even (lossy).
    case bf16
    /// Signed 8-bit integers times a per-block float32 scale (lossy).
    case int8

    /// Bytes per stored value.
    public var width: Int {
        switch self {
        case .f32: 4
        case .f16, .bf16: 2
        case .int8: 1
        }
    }

    /// Whether values lose precision.
    public var isLossy: Bool { self != .f32 }
}

/// Encodes and decodes stored values. Multi-byte values are byte-plane shuffled (all
/// first bytes, then all second bytes, ...), which zstd compresses better.
public enum ValueCodec {
    /// The stored form of `count` values.
    public struct Encoded {
        /// The bytes, shuffled by byte plane.
        public var bytes: [UInt8]
        /// The int8 scale (nil for other types).
        public var scale: Float?
        /// The largest |value - decoded value|.
        public var maxAbsError: Float
    }

    /// Encodes `count` values as `type`, or returns nil when `type` cannot hold them
    /// (a finite value that would overflow binary16, or a non-finite value for int8).
    public static func encode(_ values: UnsafePointer<Float>, count: Int, as type: ValueType) -> Encoded? {
        var bytes = [UInt8](repeating: 0, count: count * type.width)
        var scale: Float?
        var maxError: Float = 0
        bytes.withUnsafeMutableBufferPointer { out in
            guard let out = out.baseAddress else { return }
            switch type {
            case .f32:
                ByteShuffle.shuffle(UnsafeRawPointer(values), width: 4, count: count, into: out)
            case .f16, .bf16:
                let narrow = UnsafeMutablePointer<UInt16>.allocate(capacity: count)
                defer { narrow.deallocate() }
                for i in 0..<count {
                    let v = values[i]
                    let bits = type == .f16 ? FloatConversion.floatToHalf(v) : FloatConversion.floatToBFloat16(v)
                    narrow[i] = bits
                    let back = type == .f16 ? FloatConversion.halfToFloat(bits) : Float(bitPattern: UInt32(bits) << 16)
                    if v.isFinite && !back.isFinite { maxError = .infinity }
                    let error = abs(back - v)
                    if error > maxError { maxError = error }
                }
                ByteShuffle.shuffle(UnsafeRawPointer(narrow), width: 2, count: count, into: out)
            case .int8:
                var largest: Float = 0
                for i in 0..<count { largest = max(largest, abs(values[i])) }
                guard largest.isFinite else { maxError = .infinity; return }
                let s = largest / 127
                scale = s
                for i in 0..<count {
                    let q = s == 0 ? 0 : min(max((values[i] / s).rounded(.toNearestOrEven), -127), 127)
                    out[i] = UInt8(bitPattern: Int8(q))
                    let error = abs(q * s - values[i])
                    if error > maxError { maxError = error }
                }
            }
        }
        guard maxError.isFinite || type == .f32 else { return nil }
        return Encoded(bytes: bytes, scale: scale, maxAbsError: maxError)
    }

    /// Decodes `count` stored values of `type` into float32.
    public static func decode(_ bytes: UnsafePointer<UInt8>, count: Int, as type: ValueType, scale: Float?,
                              into values: UnsafeMutablePointer<Float>) {
        switch type {
        case .f32:
            ByteShuffle.unshuffle(bytes, width: 4, count: count, into: UnsafeMutableRawPointer(values))
        case .f16, .bf16:
            let narrow = UnsafeMutablePointer<UInt16>.allocate(capacity: max(count, 1))
            defer { narrow.deallocate() }
            ByteShuffle.unshuffle(bytes, width: 2, count: count, into: UnsafeMutableRawPointer(narrow))
            for i in 0..<count {
                values[i] = type == .f16 ? FloatConversion.halfToFloat(narrow[i]) : Float(bitPattern: UInt32(narrow[i]) << 16)
            }
        case .int8:
            let s = scale ?? 0
            for i in 0..<count {
                values[i] = Float(Int8(bitPattern: bytes[i])) * s
            }
        }
    }
}

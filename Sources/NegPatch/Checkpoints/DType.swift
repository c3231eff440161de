/// A safetensors element type: every dtype the safetensors reference implementation
/// (0.8) accepts, so any file it reads, NegPatch reads.
///
/// `F32`, `F16`, `BF16` and `F64` are floating: they carry task vectors. Every other
/// dtype (integers, booleans, complex, FP8, FP6, FP4) passes through merges and patches
/// untouched.
public enum DType: String, Sendable, CaseIterable, Codable {
    case F64, F32, F16, BF16
    case I64, I32, I16, I8
    case U64, U32, U16, U8
    case BOOL
    case F8_E4M3, F8_E5M2, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ
    case C64
    case F6_E2M3, F6_E3M2, F4

    /// Bits per element.
    public var bits: Int {
        switch self {
        case .F64, .I64, .U64, .C64: 64
        case .F32, .I32, .U32: 32
        case .F16, .BF16, .I16, .U16: 16
        case .I8, .U8, .BOOL, .F8_E4M3, .F8_E5M2, .F8_E8M0, .F8_E4M3FNUZ, .F8_E5M2FNUZ: 8
        case .F6_E2M3, .F6_E3M2: 6
        case .F4: 4
        }
    }

    /// Bytes per element of a whole-byte dtype (every floating one); 0 for the sub-byte
    /// dtypes, whose sizes come from `byteCount(elements:)`.
    public var size: Int { bits % 8 == 0 ? bits / 8 : 0 }

    /// The bytes `elements` elements take, or nil when that overflows or, for a sub-byte
    /// dtype, does not end on a byte boundary (the reference implementation refuses those).
    public func byteCount(elements: Int) -> Int? {
        let (total, overflow) = elements.multipliedReportingOverflow(by: bits)
        guard !overflow, total % 8 == 0 else { return nil }
        return total / 8
    }

    /// Whether tensors of this dtype take part in task vectors.
    public var isFloating: Bool {
        switch self {
        case .F64, .F32, .F16, .BF16: true
        default: false
        }
    }
}

/// The product of `shape` (1 for a scalar), or nil if it overflows `Int` or a dimension is
/// negative.
public func checkedElementCount(_ shape: [Int]) -> Int? {
    var count = 1
    for dim in shape {
        guard dim >= 0 else { return nil }
        let (product, overflow) = count.multipliedReportingOverflow(by: dim)
        guard !overflow else { return nil }
        count = product
    }
    return count
}

/// A shape as it is written in messages: `[4, 8]`, `[]` for a scalar.
func describeShape(_ shape: [Int]) -> String {
    "[" + shape.map(String.init).joined(separator: ", ") + "]"
}

/// A safetensors element type.
///
/// `F32`, `F16`, `BF16` and `F64` are floating: they carry task vectors. Every other
/// dtype (integers, booleans, FP8) passes through merges and patches untouched.
public enum DType: String, Sendable, CaseIterable, Codable {
    case F64, F32, F16, BF16
    case I64, I32, I16, I8
    case U64, U32, U16, U8
    case BOOL
    case F8_E4M3, F8_E5M2

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .F64, .I64, .U64: 8
        case .F32, .I32, .U32: 4
        case .F16, .BF16, .I16, .U16: 2
        case .I8, .U8, .BOOL, .F8_E4M3, .F8_E5M2: 1
        }
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
func checkedElementCount(_ shape: [Int]) -> Int? {
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

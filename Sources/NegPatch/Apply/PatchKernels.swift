/// The element-wise update `theta = base - lambda * tau`, applied in place to a block of
/// base data in its own dtype.
///
/// float32 arithmetic with two roundings (`lambda * tau`, then the subtraction; never a
/// fused multiply-add), rounded to the base dtype with round-to-nearest-even; F64 tensors
/// are computed in float64. Elements whose `tau` is zero are left bit-identical.
public enum PatchKernels {
    /// Applies `block` to `count` elements of `dtype` at `data`.
    public static func apply(_ block: SparseBlock, to data: UnsafeMutableRawPointer, dtype: DType, lambda: Double) {
        let lambda32 = Float(lambda)
        block.values.withUnsafeBufferPointer { values in
            let v = values.baseAddress!
            if let indices = block.indices {
                indices.withUnsafeBufferPointer { idx in
                    applySparse(idx.baseAddress!, v, idx.count, data, dtype, lambda32, lambda)
                }
            } else {
                applyDense(v, block.count, data, dtype, lambda32, lambda)
            }
        }
    }

    private static func applySparse(_ idx: UnsafePointer<UInt32>, _ v: UnsafePointer<Float>, _ m: Int,
                                    _ data: UnsafeMutableRawPointer, _ dtype: DType, _ l: Float, _ l64: Double) {
        switch dtype {
        case .F32:
            let p = data.assumingMemoryBound(to: Float.self)
            for j in 0..<m {
                let i = Int(idx[j])
                p[i] = p[i] - l * v[j]
            }
        case .BF16:
            let p = data.assumingMemoryBound(to: UInt16.self)
            for j in 0..<m {
                let i = Int(idx[j])
                p[i] = FloatConversion.floatToBFloat16(Float(bitPattern: UInt32(p[i]) << 16) - l * v[j])
            }
        case .F16:
            let p = data.assumingMemoryBound(to: UInt16.self)
            for j in 0..<m {
                let i = Int(idx[j])
                p[i] = FloatConversion.floatToHalf(FloatConversion.halfToFloat(p[i]) - l * v[j])
            }
        case .F64:
            let p = data.assumingMemoryBound(to: Double.self)
            for j in 0..<m {
                let i = Int(idx[j])
                p[i] = p[i] - l64 * Double(v[j])
            }
        default:
            preconditionFailure("\(dtype) is not patched")
        }
    }

    private static func applyDense(_ v: UnsafePointer<Float>, _ count: Int,
                                   _ data: UnsafeMutableRawPointer, _ dtype: DType, _ l: Float, _ l64: Double) {
        switch dtype {
        case .F32:
            let p = data.assumingMemoryBound(to: Float.self)
            for i in 0..<count where v[i] != 0 {
                p[i] = p[i] - l * v[i]
            }
        case .BF16:
            let p = data.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count where v[i] != 0 {
                p[i] = FloatConversion.floatToBFloat16(Float(bitPattern: UInt32(p[i]) << 16) - l * v[i])
            }
        case .F16:
            let p = data.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count where v[i] != 0 {
                p[i] = FloatConversion.floatToHalf(FloatConversion.halfToFloat(p[i]) - l * v[i])
            }
        case .F64:
            let p = data.assumingMemoryBound(to: Double.self)
            for i in 0..<count where v[i] != 0 {
                p[i] = p[i] - l64 * Double(v[i])
            }
        default:
            preconditionFailure("\(dtype) is not patched")
        }
    }
}

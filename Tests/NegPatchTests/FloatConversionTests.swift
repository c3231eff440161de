import Testing
@testable import NegPatch

@Suite struct FloatConversionTests {
    @Test func halfToFloatIsExactForEveryBitPattern() {
        for bits in 0...UInt16.max {
            let expected = Float(Float16(bitPattern: bits))
            let got = FloatConversion.halfToFloat(bits)
            if expected.isNaN {
                #expect(got.isNaN)
            } else if got.bitPattern != expected.bitPattern {
                Issue.record("half \(bits): got \(got), expected \(expected)")
                return
            }
        }
    }

    @Test(arguments: [
        (UInt32(0x3F80_8000), UInt16(0x3F80)),  // halfway, even below: round down
        (0x3F81_8000, 0x3F82),  // halfway, odd below: round up
        (0x3F80_8001, 0x3F81),  // above halfway
        (0x3F80_7FFF, 0x3F80),  // below halfway
        (0x7F7F_FFFF, 0x7F80),  // max float rounds to infinity
        (0x8000_0000, 0x8000),  // negative zero
        (0x0000_0001, 0x0000),  // tiny subnormal rounds to zero
    ])
    func bfloat16RoundsToNearestEven(_ input: UInt32, _ expected: UInt16) {
        #expect(FloatConversion.floatToBFloat16(Float(bitPattern: input)) == expected)
    }

    @Test func bfloat16KeepsNaNQuiet() {
        let signalling = Float(bitPattern: 0x7F80_0001)
        let rounded = FloatConversion.floatToBFloat16(signalling)
        #expect(Float(bitPattern: UInt32(rounded) << 16).isNaN)
    }

    @Test func bufferConversionMatchesElementConversion() {
        let values: [Float] = [0, -0.0, 1, -2.5, 65504, 1e-8, .infinity, 3.14159]
        for dtype in [DType.F16, .BF16, .F64, .F32] {
            let tensor = TestTensor.floating("x", dtype, [values.count], values)
            var out = [Float](repeating: 7, count: values.count)
            tensor.bytes.withUnsafeBytes { raw in
                out.withUnsafeMutableBufferPointer {
                    FloatConversion.toFloat32(raw.baseAddress!, dtype: dtype, start: 0, count: values.count, into: $0.baseAddress!)
                }
            }
            let expected: [Float] = switch dtype {
            case .F16: values.map { Float(Float16($0)) }
            case .BF16: values.map { Float(bitPattern: UInt32(FloatConversion.floatToBFloat16($0)) << 16) }
            default: values
            }
            #expect(out.map(\.bitPattern) == expected.map(\.bitPattern), "\(dtype)")
        }
    }
}

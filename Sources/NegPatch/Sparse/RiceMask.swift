/// The bitmask of a block coded as Rice codes of the gaps between set bits.
///
/// For masks whose bits are close to independent (what sign consensus produces), a Rice
/// code of the run lengths comes within about 1% of the mask's entropy, where a byte-wise
/// compressor stays 15-25% above it. Layout (`formats/negpatch-v1.md`, section 4): for each
/// set bit in ascending order, the number `g` of clear bits before it (since the previous
/// set bit or the block start) is written as `g >> k` one-bits, a zero-bit, then the low
/// `k` bits of `g`, least significant first; bits fill bytes from the least significant
/// bit; the last byte is padded with zero-bits.
public enum RiceMask {
    /// The largest parameter a stream may declare.
    public static let maxParameter = 30

    /// The best parameter for the gaps of `indices` (ascending set-bit offsets) and the
    /// stream's size in bytes with it.
    public static func bestParameter(_ indices: UnsafePointer<UInt32>, count: Int) -> (k: Int, bytes: Int) {
        // total bits(k) = count * (k + 1) + sum(g >> k). Once every gap is below 2^k the sum
        // is zero and larger parameters only add bits, so the search stops there.
        var best = (k: 0, bytes: Int.max)
        for k in 0...maxParameter {
            let sum = shiftedGapSum(indices, count: count, k: k)
            let bytes = (count * (k + 1) + sum + 7) / 8
            if bytes < best.bytes { best = (k, bytes) }
            if sum == 0 { break }
        }
        return best
    }

    /// sum(g >> k) over the gaps of `indices`, eight gaps at a time. The gaps of a block add
    /// up to less than its element count, below 2^32, so 32-bit lanes cannot overflow.
    private static func shiftedGapSum(_ indices: UnsafePointer<UInt32>, count: Int, k: Int) -> Int {
        guard count > 0 else { return 0 }
        var total = Int(indices[0] >> UInt32(k))
        var lanes = SIMD8<UInt32>.zero
        let shift = SIMD8<UInt32>(repeating: UInt32(k))
        var j = 1
        while j + 8 <= count {
            let current = UnsafeRawPointer(indices + j).loadUnaligned(as: SIMD8<UInt32>.self)
            let previous = UnsafeRawPointer(indices + j - 1).loadUnaligned(as: SIMD8<UInt32>.self)
            lanes &+= (current &- previous &- 1) &>> shift
            j += 8
        }
        for lane in 0..<8 { total += Int(lanes[lane]) }
        while j < count {
            total += Int((indices[j] - indices[j - 1] - 1) >> UInt32(k))
            j += 1
        }
        return total
    }

    /// Encodes the gaps of `indices` with parameter `k`.
    public static func encode(_ indices: UnsafePointer<UInt32>, count: Int, k: Int) -> [UInt8] {
        let bytes = (count * (k + 1) + shiftedGapSum(indices, count: count, k: k) + 7) / 8
        return [UInt8](unsafeUninitializedCapacity: bytes) { out, initialized in
            let start = UnsafeMutableRawPointer(out.baseAddress!)
            var written = 0
            var buffer: UInt64 = 0
            var filled = 0
            @inline(__always) func put(_ value: UInt64, _ bits: Int) {
                // filled < 32 and bits <= 32, so the buffer never overflows; whole 32-bit
                // words go out as soon as they are complete.
                buffer |= value << UInt64(filled)
                filled += bits
                if filled >= 32 {
                    start.storeBytes(of: UInt32(truncatingIfNeeded: buffer).littleEndian, toByteOffset: written, as: UInt32.self)
                    written += 4
                    buffer >>= 32
                    filled -= 32
                }
            }
            var previous: Int64 = -1
            let low = (UInt64(1) << UInt64(k)) - 1
            for j in 0..<count {
                let position = Int64(indices[j])
                let gap = UInt64(position - previous - 1)
                previous = position
                var q = gap >> UInt64(k)
                while q >= 32 {
                    put(0xFFFF_FFFF, 32)
                    q -= 32
                }
                put((UInt64(1) << q) - 1, Int(q) + 1)  // q ones, then a zero
                if k > 0 { put(gap & low, k) }
            }
            while filled > 0 {
                start.storeBytes(of: UInt8(truncatingIfNeeded: buffer), toByteOffset: written, as: UInt8.self)
                written += 1
                buffer >>= 8
                filled -= 8
            }
            initialized = written
        }
    }

    /// Why a stream could not be decoded.
    public struct DecodeError: Error, CustomStringConvertible {
        /// What is wrong.
        public let description: String
    }

    /// Decodes exactly `count` set-bit offsets of a block of `elements` from `stream` into
    /// `indices`. Throws when the stream ends early, a position reaches `elements`, or bits
    /// remain after the last code beyond the final byte's zero padding.
    public static func decode(_ stream: UnsafeRawBufferPointer, k: Int, count: Int, elements: Int,
                              into indices: UnsafeMutablePointer<UInt32>) throws {
        guard k >= 0, k <= maxParameter else { throw DecodeError(description: "Rice parameter \(k) out of range") }
        let bytes = stream.count
        var bitPosition = 0
        let totalBits = bytes * 8
        // Reads up to 57 bits at `bitPosition` without consuming them.
        @inline(__always) func peek() -> UInt64 {
            let byte = bitPosition >> 3
            var word: UInt64 = 0
            if byte + 8 <= bytes {
                word = UInt64(littleEndian: stream.loadUnaligned(fromByteOffset: byte, as: UInt64.self))
            } else {
                for i in 0..<(bytes - byte) where byte + i < bytes {
                    word |= UInt64(stream[byte + i]) << UInt64(8 * i)
                }
            }
            return word >> UInt64(bitPosition & 7)
        }
        var position: Int = -1
        let low = (UInt64(1) << UInt64(k)) - 1
        for j in 0..<count {
            var q = 0
            while true {
                guard bitPosition < totalBits else { throw DecodeError(description: "Rice mask stream ends early") }
                let ones = (~peek()).trailingZeroBitCount
                if ones < 56 {
                    q += ones
                    bitPosition += ones + 1
                    break
                }
                q += 56
                bitPosition += 56
            }
            guard bitPosition + k <= totalBits else { throw DecodeError(description: "Rice mask stream ends early") }
            let remainder = k == 0 ? 0 : Int(peek() & low)
            bitPosition += k
            let gap = q << k | remainder
            guard gap < elements, position + 1 + gap < elements else {
                throw DecodeError(description: "Rice mask sets a bit past the block's \(elements) elements")
            }
            position += 1 + gap
            indices[j] = UInt32(truncatingIfNeeded: position)
        }
        guard (bitPosition + 7) / 8 == bytes, bitPosition == totalBits || peek() == 0 else {
            throw DecodeError(description: "Rice mask stream has bytes or bits after its last code")
        }
    }
}

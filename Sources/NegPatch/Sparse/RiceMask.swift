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
        // total bits(k) = count * (k + 1) + sum(g >> k); gaps are summarised once per k.
        var best = (k: 0, bytes: Int.max)
        var previous: Int64 = -1
        var sums = [Int](repeating: 0, count: maxParameter + 1)
        for j in 0..<count {
            let position = Int64(indices[j])
            let gap = Int(position - previous - 1)
            previous = position
            for k in 0...maxParameter {
                let q = gap >> k
                if q == 0 { break }
                sums[k] &+= q
            }
        }
        for k in 0...maxParameter {
            let bits = count * (k + 1) + sums[k]
            let bytes = (bits + 7) / 8
            if bytes < best.bytes { best = (k, bytes) }
        }
        return best
    }

    /// Encodes the gaps of `indices` with parameter `k`.
    public static func encode(_ indices: UnsafePointer<UInt32>, count: Int, k: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count * (k + 2) / 8 + 8)
        var buffer: UInt64 = 0
        var filled = 0
        @inline(__always) func put(_ value: UInt64, _ bits: Int) {
            // bits <= 32, so the buffer (< 8 pending bits after a flush) never overflows.
            buffer |= value << UInt64(filled)
            filled += bits
            while filled >= 8 {
                out.append(UInt8(truncatingIfNeeded: buffer))
                buffer >>= 8
                filled -= 8
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
        if filled > 0 { out.append(UInt8(truncatingIfNeeded: buffer)) }
        return out
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

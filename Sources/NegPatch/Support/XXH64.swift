/// XXH64, the 64-bit xxHash of Yann Collet: the checksum of every `.negpatch` part and
/// the per-tensor digest of a base fingerprint.
///
/// It detects accidental change (corruption, a different base); it is not a defence
/// against a deliberate forgery.
public enum XXH64 {
    private static let p1: UInt64 = 0x9E37_79B1_85EB_CA87
    private static let p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    private static let p3: UInt64 = 0x1656_67B1_9E37_79F9
    private static let p4: UInt64 = 0x85EB_CA77_C2B2_AE63
    private static let p5: UInt64 = 0x27D4_EB2F_1656_67C5

    @inline(__always)
    private static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }

    @inline(__always)
    private static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* p2, 31) &* p1
    }

    @inline(__always)
    private static func mergeRound(_ acc: UInt64, _ value: UInt64) -> UInt64 {
        (acc ^ round(0, value)) &* p1 &+ p4
    }

    /// The XXH64 of `bytes` with `seed`.
    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        var hasher = Hasher(seed: seed)
        hasher.update(bytes)
        return hasher.finalize()
    }

    /// A running XXH64 over bytes given in pieces; equals the one-shot hash of their
    /// concatenation.
    public struct Hasher {
        private var v1, v2, v3, v4: UInt64
        private let seed: UInt64
        private var total = 0
        private var pending: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        private var pendingCount = 0

        /// A hasher with `seed`.
        public init(seed: UInt64 = 0) {
            self.seed = seed
            v1 = seed &+ p1 &+ p2
            v2 = seed &+ p2
            v3 = seed
            v4 = seed &- p1
        }

        /// Adds `bytes`.
        public mutating func update(_ bytes: UnsafeRawBufferPointer) {
            guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
            total += bytes.count
            var offset = 0
            if pendingCount > 0 {
                let take = min(32 - pendingCount, bytes.count)
                withUnsafeMutableBytes(of: &pending) { buffer in
                    buffer.baseAddress!.advanced(by: pendingCount).copyMemory(from: base, byteCount: take)
                }
                pendingCount += take
                offset = take
                guard pendingCount == 32 else { return }
                withUnsafeBytes(of: pending) { stripe($0.baseAddress!, 0) }
                pendingCount = 0
            }
            while offset + 32 <= bytes.count {
                stripe(base, offset)
                offset += 32
            }
            if offset < bytes.count {
                withUnsafeMutableBytes(of: &pending) { buffer in
                    buffer.baseAddress!.copyMemory(from: base + offset, byteCount: bytes.count - offset)
                }
                pendingCount = bytes.count - offset
            }
        }

        @inline(__always)
        private mutating func stripe(_ base: UnsafeRawPointer, _ offset: Int) {
            v1 = round(v1, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self)))
            v2 = round(v2, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)))
            v3 = round(v3, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset + 16, as: UInt64.self)))
            v4 = round(v4, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset + 24, as: UInt64.self)))
        }

        /// The hash of everything added.
        public func finalize() -> UInt64 {
            var h: UInt64
            if total >= 32 {
                h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
                h = mergeRound(h, v1)
                h = mergeRound(h, v2)
                h = mergeRound(h, v3)
                h = mergeRound(h, v4)
            } else {
                h = seed &+ p5
            }
            h = h &+ UInt64(total)
            return withUnsafeBytes(of: pending) { tail($0.baseAddress!, count: pendingCount, h) }
        }
    }

    /// The last `count` (< 32) bytes folded into `h`, then the final mix.
    @inline(__always)
    private static func tail(_ base: UnsafeRawPointer, count: Int, _ start: UInt64) -> UInt64 {
        var h = start
        var offset = 0
        while offset + 8 <= count {
            let k = round(0, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self)))
            h = rotl(h ^ k, 27) &* p1 &+ p4
            offset += 8
        }
        if offset + 4 <= count {
            let k = UInt64(UInt32(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            h = rotl(h ^ (k &* p1), 23) &* p2 &+ p3
            offset += 4
        }
        while offset < count {
            let k = UInt64(base.load(fromByteOffset: offset, as: UInt8.self))
            h = rotl(h ^ (k &* p5), 11) &* p1
            offset += 1
        }
        return finish(h)
    }

    /// The XXH64 of an array of bytes.
    public static func hash(_ bytes: [UInt8], seed: UInt64 = 0) -> UInt64 {
        bytes.withUnsafeBytes { hash($0, seed: seed) }
    }

    /// The XXH64 of a string's UTF-8 bytes.
    public static func hash(_ string: String, seed: UInt64 = 0) -> UInt64 {
        hash(Array(string.utf8), seed: seed)
    }

    @inline(__always)
    private static func finish(_ value: UInt64) -> UInt64 {
        var h = value
        h ^= h >> 33
        h = h &* p2
        h ^= h >> 29
        h = h &* p3
        h ^= h >> 32
        return h
    }

    /// A digest as 16 lowercase hexadecimal digits, as the formats store it.
    public static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// Parses 16 hexadecimal digits; nil if `text` is not exactly that.
    public static func parseHex(_ text: String) -> UInt64? {
        guard text.utf8.count == 16, text.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else {
            return nil
        }
        return UInt64(text, radix: 16)
    }
}

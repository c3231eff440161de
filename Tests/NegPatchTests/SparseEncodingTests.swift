import Foundation
import Testing
@testable import NegPatch

/// Random dense vectors with a given share of nonzeros.
private func randomVector(_ count: Int, density: Double, seed: UInt64) -> [Float] {
    var rng = SeededGenerator(seed: seed)
    return (0..<count).map { _ in
        Double.random(in: 0..<1, using: &rng) < density ? Float.random(in: -1...1, using: &rng) * 1e-3 + (Bool.random(using: &rng) ? 1e-6 : -1e-6) : 0
    }
}

@Suite struct SparseEncodingTests {
    static let cases: [(Int, Double)] = [
        (0, 0.5), (1, 1), (1, 0), (7, 0.5), (8, 1), (63, 0.3), (64, 0), (65, 1), (1000, 0.07), (4097, 0.5), (10_000, 0.9),
    ]

    @Test(arguments: cases)
    func packThenUnpackGivesTheInput(_ count: Int, _ density: Double) {
        let dense = randomVector(count, density: density, seed: UInt64(count) * 31 + UInt64(density * 100))
        var mask = [UInt8](repeating: 0xEE, count: Bitmask.byteCount(count))
        var values = [Float](repeating: 0, count: count + 8)
        let kept = dense.withUnsafeBufferPointer { d in
            mask.withUnsafeMutableBufferPointer { m in
                values.withUnsafeMutableBufferPointer { v in
                    Bitmask.pack(d.baseAddress ?? UnsafePointer(bitPattern: 4)!, count: count,
                                 mask: m.baseAddress ?? UnsafeMutablePointer(bitPattern: 4)!, values: v.baseAddress!)
                }
            }
        }
        let expectedIndices = dense.indices.filter { dense[$0] != 0 }.map(UInt32.init)
        #expect(kept == expectedIndices.count)
        // LSB-first: element i is bit i % 8 of byte i / 8.
        for i in 0..<count {
            let bit = (mask[i / 8] >> UInt8(i % 8)) & 1
            #expect((bit == 1) == (dense[i] != 0))
        }
        guard count > 0 else { return }
        let stats = mask.withUnsafeBufferPointer { Bitmask.popcount($0.baseAddress!, count: count) }
        #expect(stats.setBits == kept)
        #expect(stats.cleanPadding)
        for decoder in [Bitmask.setBitIndices, Bitmask.setBitIndicesByTable] {
            var indices = [UInt32](repeating: 0, count: kept + 8)
            let found = mask.withUnsafeBufferPointer { m in
                indices.withUnsafeMutableBufferPointer { decoder(m.baseAddress!, count, $0.baseAddress!) }
            }
            #expect(found == kept)
            #expect(Array(indices.prefix(found)) == expectedIndices)
        }
        let block = SparseBlock(count: count, indices: expectedIndices, values: Array(values.prefix(kept)))
        var expanded = [Float](repeating: 5, count: count)
        expanded.withUnsafeMutableBufferPointer { block.expand(into: $0.baseAddress!) }
        #expect(expanded.map(\.bitPattern) == dense.map { $0 == 0 ? 0 : $0.bitPattern })
    }

    /// Every padding bit position of every partial last byte: a mask of `8 * 2 + r`
    /// elements with all of them set is clean, and setting any one bit `p` in `r..<8` of
    /// the last byte makes it dirty (and only then).
    @Test(arguments: 1...7)
    func detectsEachSetPaddingBit(_ r: Int) {
        let count = 16 + r
        let full: [UInt8] = [0xFF, 0xFF, UInt8((1 << r) - 1)]
        let clean = full.withUnsafeBufferPointer { Bitmask.popcount($0.baseAddress!, count: count) }
        #expect(clean.setBits == count && clean.cleanPadding)
        for p in r..<8 {
            var mask = full
            mask[2] |= UInt8(1 << p)
            let stats = mask.withUnsafeBufferPointer { Bitmask.popcount($0.baseAddress!, count: count) }
            #expect(stats.setBits == count + 1)
            #expect(stats.cleanPadding == false, "padding bit \(p) of a \(count)-element mask")
        }
        // A whole last byte has no padding.
        let whole = [UInt8](repeating: 0xFF, count: 3)
        #expect(whole.withUnsafeBufferPointer { Bitmask.popcount($0.baseAddress!, count: 24) }.cleanPadding)
    }

    /// int8 rounds `v / scale` half to even (negpatch-v1.md section 4): ties are common when
    /// the values come from bfloat16 inputs, e.g. multiples of 1/128 over a scale of 1/64.
    @Test func int8RoundsTiesToEven() throws {
        let halves: [Float] = [127, 2.5, 0.5, -1.5, 1.5, -2.5, -0.5, 3.5, 126.5, -126.5, -127]
        let values = halves.map { $0 / 64 }
        let encoded = try #require(values.withUnsafeBufferPointer { ValueCodec.encode($0.baseAddress!, count: $0.count, as: .int8) })
        #expect(encoded.scale == Float(1) / 64)
        let stored = encoded.bytes.map { Int8(bitPattern: $0) }
        #expect(stored == [127, 2, 0, -2, 2, -2, 0, 4, 126, -126, -127])
        #expect(encoded.maxAbsError == Float(0.5) / 64)
        var decoded = [Float](repeating: 0, count: values.count)
        encoded.bytes.withUnsafeBufferPointer { b in
            decoded.withUnsafeMutableBufferPointer { ValueCodec.decode(b.baseAddress!, count: values.count, as: .int8, scale: encoded.scale, into: $0.baseAddress!) }
        }
        #expect(decoded == stored.map { Float($0) / 64 })
    }

    @Test(arguments: [0, 1, 5, 1000])
    func byteShuffleRoundTrips(_ count: Int) {
        let values = randomVector(count, density: 1, seed: 9)
        var shuffled = [UInt8](repeating: 0, count: 4 * count + 1)
        var back = [Float](repeating: 0, count: count + 1)
        values.withUnsafeBufferPointer { v in
            shuffled.withUnsafeMutableBufferPointer { ByteShuffle.shuffle(v.baseAddress ?? UnsafePointer(bitPattern: 4)!, count: count, into: $0.baseAddress!) }
        }
        shuffled.withUnsafeBufferPointer { s in
            back.withUnsafeMutableBufferPointer { ByteShuffle.unshuffle(s.baseAddress!, count: count, into: $0.baseAddress!) }
        }
        #expect(Array(back.prefix(count)).map(\.bitPattern) == values.map(\.bitPattern))
        if count > 0 {
            // Plane 3 holds the most significant byte of each value.
            #expect(shuffled[3 * count] == UInt8(values[0].bitPattern >> 24))
        }
    }
}

@Suite struct RiceMaskTests {
    @Test(arguments: [(1000, 0.001), (1000, 0.07), (4097, 0.2), (70, 1.0), (1 << 16, 0.01)])
    func roundTripsAndBeatsTheRawMask(_ count: Int, _ density: Double) throws {
        var rng = SeededGenerator(seed: UInt64(count))
        let indices = (0..<count).filter { _ in Double.random(in: 0..<1, using: &rng) < density }.map(UInt32.init)
        guard !indices.isEmpty else { return }
        let (k, bytes) = indices.withUnsafeBufferPointer { RiceMask.bestParameter($0.baseAddress!, count: $0.count) }
        let stream = indices.withUnsafeBufferPointer { RiceMask.encode($0.baseAddress!, count: $0.count, k: k) }
        #expect(stream.count == bytes)
        var decoded = [UInt32](repeating: 0, count: indices.count)
        try stream.withUnsafeBytes { s in
            try decoded.withUnsafeMutableBufferPointer {
                try RiceMask.decode(s, k: k, count: indices.count, elements: count, into: $0.baseAddress!)
            }
        }
        #expect(decoded == indices)
        if density <= 0.07 {
            // Within 5% of the entropy of the mask (plus a byte of padding).
            let p = Double(indices.count) / Double(count)
            let entropy = -(p * log2(p) + (1 - p) * log2(1 - p)) * Double(count) / 8
            #expect(Double(stream.count) <= entropy * 1.05 + 1, "\(stream.count) bytes vs entropy \(entropy)")
        }
    }

    /// Gaps around multiples of the 32-bit words the encoder writes (at k = 0, quotients of
    /// 32 one-bits starting 31 bits into a word, then 31, 33, 64 and 65), streams whose last
    /// code ends exactly on a byte (two codes: 31 + 33 bits), and a last set bit on the
    /// block's last element, at several k.
    @Test(arguments: [0, 1, 3])
    func longQuotientsAndStreamEndsRoundTrip(_ k: Int) throws {
        var indices: [UInt32] = []
        var position = -1
        for gap in [30, 32, 32, 32, 31, 32, 33, 64, 65, 0, 7, 0, 96, 127, 128] {
            position += gap + 1
            indices.append(UInt32(position))
        }
        let elements = position + 1  // the last set bit is the block's last element
        for count in [1, 2, 3, 4, 5, 6, 7, 8, indices.count] {
            let prefix = Array(indices.prefix(count))
            let stream = prefix.withUnsafeBufferPointer { RiceMask.encode($0.baseAddress!, count: count, k: k) }
            // Independently: each code is g >> k ones, a zero and k bits.
            var bits = 0, previous = -1
            for p in prefix { bits += ((Int(p) - previous - 1) >> k) + 1 + k; previous = Int(p) }
            #expect(stream.count == (bits + 7) / 8)
            var decoded = [UInt32](repeating: 0, count: count)
            try stream.withUnsafeBytes { s in
                try decoded.withUnsafeMutableBufferPointer {
                    try RiceMask.decode(s, k: k, count: count, elements: Int(prefix.last!) + 1, into: $0.baseAddress!)
                }
            }
            #expect(decoded == prefix, "k = \(k), \(count) codes")
        }
        #expect(elements == Int(indices.last!) + 1)
    }

    @Test func rejectsStreamsThatOverrunTheBlockOrCarryExtraBits() {
        let indices: [UInt32] = [3, 10]
        let stream = indices.withUnsafeBufferPointer { RiceMask.encode($0.baseAddress!, count: 2, k: 2) }
        var out = [UInt32](repeating: 0, count: 3)
        func decode(_ bytes: [UInt8], count: Int, elements: Int) -> Bool {
            (try? bytes.withUnsafeBytes { s in
                try out.withUnsafeMutableBufferPointer { try RiceMask.decode(s, k: 2, count: count, elements: elements, into: $0.baseAddress!) }
            }) != nil
        }
        #expect(decode(stream, count: 2, elements: 11))
        #expect(!decode(stream, count: 2, elements: 10))  // position 10 is outside
        #expect(!decode(stream, count: 3, elements: 11))  // ends early
        #expect(!decode(stream + [0], count: 2, elements: 11))  // a trailing byte
        #expect(!decode([0xFF, 0xFF, 0xFF], count: 1, elements: 1 << 20))  // unterminated
    }
}

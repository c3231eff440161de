// Fuzz target: the `.negpatch` reader (Formats/NegPatchFormat.swift, PatchIndex.swift) and
// decoder (every block: zstd frames, mask popcount and padding, value decoding).
//
// Each input runs twice: as given, which exercises the header, footer and checksum checks;
// then with its checksums repaired (the index XXH64 in the footer and every part's XXH64
// in the index recomputed from the mutated bytes). Without the repair, nearly every mutation
// stops at a checksum and the index decoder, the part tiling checks and the block decoder,
// which a hostile author (who can compute XXH64) reaches with ease, would go unexplored.

import NegPatch

#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNegPatch(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let original = UnsafeRawBufferPointer(start: data, count: size)
    decodeEverything(try? NegPatchFile(path: FuzzInput.path(holding: original)))
    var repaired = Array(original)
    if repairChecksums(&repaired) {
        repaired.withUnsafeBytes { decodeEverything(try? NegPatchFile(path: FuzzInput.path(holding: $0))) }
    }
    return 0
}

/// Recomputes the part checksums written in the index and the index checksum in the
/// footer. Returns false when the bytes do not have the shape of a patch's footer.
private func repairChecksums(_ bytes: inout [UInt8]) -> Bool {
    guard bytes.count >= 48 else { return false }
    let footer = bytes.count - 32
    func u64(_ at: Int) -> UInt64 {
        bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt64.self).littleEndian }
    }
    let indexOffset = u64(footer), indexLength = u64(footer + 8)
    guard indexOffset >= 16, indexOffset <= UInt64(footer), indexLength == UInt64(footer) - indexOffset else { return false }
    let start = Int(indexOffset), end = footer
    if let json = try? StrictJSON.parse(Array(bytes[start..<end])) {
        // Parts with a checksum, in document order, each with the hash of its byte range.
        var hashes: [UInt64?] = []
        func walk(_ value: JSONValue) {
            switch value {
            case let .object(entries):
                for entry in entries {
                    if entry.key == "xxh64" {
                        var hash: UInt64?
                        if let offset = value["offset"]?.nonNegativeInt, let length = value["length"]?.nonNegativeInt,
                           offset <= bytes.count, length <= bytes.count - offset {
                            hash = bytes.withUnsafeBytes { XXH64.hash(UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + length)])) }
                        }
                        hashes.append(hash)
                    }
                    walk(entry.value)
                }
            case let .array(items):
                items.forEach(walk)
            default:
                break
            }
        }
        walk(json)
        // The same keys in the text, in the same order, each followed by a 16-character string.
        let key = Array("\"xxh64\"".utf8)
        var sites: [Int?] = []
        var i = start
        while i + key.count <= end {
            if bytes[i] == key[0], Array(bytes[i..<(i + key.count)]) == key {
                var j = i + key.count
                while j < end, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[j]) { j += 1 }
                if j < end, bytes[j] == UInt8(ascii: ":") {
                    j += 1
                    while j < end, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[j]) { j += 1 }
                    let isValue = j + 18 <= end && bytes[j] == UInt8(ascii: "\"") && bytes[j + 17] == UInt8(ascii: "\"")
                    sites.append(isValue ? j + 1 : nil)
                    i = j
                    continue
                }
            }
            i += 1
        }
        if sites.count == hashes.count {
            for (site, hash) in zip(sites, hashes) {
                guard let site, let hash else { continue }
                let hex = Array(XXH64.hex(hash).utf8)
                for k in 0..<16 { bytes[site + k] = hex[k] }
            }
        }
    }
    let checksum = bytes.withUnsafeBytes { XXH64.hash(UnsafeRawBufferPointer(rebasing: $0[start..<end])) }
    withUnsafeBytes(of: checksum.littleEndian) { raw in
        for k in 0..<8 { bytes[footer + 16 + k] = raw[k] }
    }
    return true
}

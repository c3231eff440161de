// Fuzz target: libhdf5 and the HDF5 patch reader behind the integrity block. Each input's
// integrity block is recomputed (size and XXH64, as any author of a hostile file can), so
// mutations reach libhdf5's parser. libhdf5 1.10 is not hardened against malformed files:
// this target finds crashes and endless loops inside it (formats/SECURITY.md, "Out of
// scope"), which NegPatch cannot fix, only keep away from (signatures checked before any
// reader runs; `.negpatch` for untrusted sources). Not run by CI; run it to look for
// crashes in NegPatch's own code on files libhdf5 accepts.

import NegPatch

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSealedHDF5(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var bytes = Array(UnsafeRawBufferPointer(start: data, count: size))
    let userBlock = 512
    if bytes.count > userBlock, Array(bytes[0..<8]) == Array("NPATCHH5".utf8) {
        let digest = bytes.withUnsafeBytes { XXH64.hash(UnsafeRawBufferPointer(rebasing: $0[userBlock...])) }
        withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { for k in 0..<8 { bytes[16 + k] = $0[k] } }
        withUnsafeBytes(of: digest.littleEndian) { for k in 0..<8 { bytes[24 + k] = $0[k] } }
    }
    bytes.withUnsafeBytes { decodeEverything(try? HDF5PatchFile(path: FuzzInput.path(holding: $0))) }
    return 0
}

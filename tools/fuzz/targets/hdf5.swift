// Fuzz target: the HDF5 patch reader (Formats/HDF5/HDF5PatchFile.swift) and its block
// decoder, on files as they arrive: the integrity block (an XXH64 of every byte after it)
// must stop every damaged file before libhdf5 parses it, and the reader must turn whatever
// libhdf5 accepts or rejects into a validated index or a clean error. This is the target
// CI runs. `hdf5-sealed` (hdf5-sealed.swift) reseals each input so libhdf5 parses it.
// Built by tools/fuzz/build.sh only when the HDF5 format is part of the library.

import NegPatch

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHDF5(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    decodeEverything(try? HDF5PatchFile(path: FuzzInput.path(holding: UnsafeRawBufferPointer(start: data, count: size))))
    return 0
}

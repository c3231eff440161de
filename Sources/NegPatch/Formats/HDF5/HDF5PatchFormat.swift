/// NegPatch patches as HDF5 files (`formats/negpatch-hdf5.md`): the `.negpatch` content
/// in a layout stock h5py opens, using only the filters every HDF5 build has.
public enum HDF5PatchFormat: PatchFormat {
    public static let name = "hdf5"
    public static let extensions = ["h5", "hdf5"]

    /// The HDF5 signature; NegPatch's files have it at offset 512, after the integrity block.
    static let signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]
    /// The magic that starts the integrity block (the HDF5 user block).
    static let integrityMagic: [UInt8] = Array("NPATCHH5".utf8)
    /// Bytes of the integrity block; the HDF5 file proper starts here.
    static let userBlock = 512
    /// The root attribute `format`.
    static let formatTag = "negpatch-hdf5"
    /// The root attribute `version` this code reads and writes.
    static let version = 1
    /// Deflate level used when none is given.
    public static let defaultGzipLevel = 4
    /// The compressions `--compression` accepts.
    public static let compressions = ["gzip", "none"]
    /// Chunk lengths in elements (section 4 of the spec).
    static let maskChunk = 1 << 18
    static let valuesChunk = 1 << 16
    static let blockArrayChunk = 1 << 16
    /// Datasets with fewer bytes than this are stored contiguous and unfiltered.
    static let smallestFiltered = 4096

    /// NegPatch's HDF5 patches, and any other HDF5 file (which `open` then refuses with a
    /// clear message rather than "unrecognised").
    public static func recognises(_ prefix: [UInt8]) -> Bool {
        prefix.count >= 8 && (Array(prefix[0..<8]) == integrityMagic || Array(prefix[0..<8]) == signature)
    }

    /// The integrity block of a file whose HDF5 part is `content` (the bytes from offset 512):
    /// magic, version 1, reserved 0, the file's size and the XXH64 of `content`, then zeros.
    static func integrityBlock(fileSize: Int, content: UnsafeRawBufferPointer) -> [UInt8] {
        var block = integrityMagic
        block += littleEndianBytes(UInt32(1)) + littleEndianBytes(UInt32(0))
        block += littleEndianBytes(UInt64(fileSize)) + littleEndianBytes(XXH64.hash(content))
        return block + [UInt8](repeating: 0, count: userBlock - block.count)
    }

    /// Checks the integrity block of `file` before any HDF5 code reads it, so a damaged or
    /// truncated file never reaches the HDF5 library's parser.
    static func checkIntegrity(_ file: MappedFile) throws {
        let bytes = file.bytes
        guard bytes.count >= 8 else { throw NegPatchError(.corrupt, file: file.path, "file is too short for an HDF5 patch") }
        if Array(bytes[0..<8]) == signature {
            throw NegPatchError(.malformed, file: file.path,
                                "HDF5 file is not a NegPatch patch (no NegPatch integrity block before the HDF5 data)")
        }
        guard bytes.count > userBlock else {
            throw NegPatchError(.corrupt, file: file.path, "file is \(bytes.count) bytes, too short for an HDF5 patch (truncated?)")
        }
        let content = UnsafeRawBufferPointer(rebasing: bytes[userBlock...])
        guard Array(bytes[0..<userBlock]) == integrityBlock(fileSize: bytes.count, content: content) else {
            throw NegPatchError(.corrupt, file: file.path, "integrity block does not match the file (damaged or truncated file)")
        }
    }

    public static func open(path: String) throws -> any PatchSource {
        try HDF5PatchFile(path: path)
    }

    public static func writer(path: String, options: PatchWriterOptions) throws -> any PatchWriter {
        guard options.valueType == .f32 else {
            throw NegPatchError(.invalidArgument, file: path,
                                "HDF5 patches store float32 values; \(options.valueType.rawValue) values need the .negpatch format")
        }
        return try HDF5PatchWriter(path: path, compression: options.hdf5Compression, gzipLevel: options.gzipLevel)
    }

    /// The name of tensor `i`'s group inside `/tensors`: `i` in decimal, at least 6 digits.
    static func groupName(_ i: Int) -> String {
        let digits = String(i)
        return String(repeating: "0", count: max(0, 6 - digits.count)) + digits
    }

    /// The full path of tensor `i`'s group, for messages.
    static func groupPath(_ i: Int) -> String {
        "/tensors/\(groupName(i))"
    }
}

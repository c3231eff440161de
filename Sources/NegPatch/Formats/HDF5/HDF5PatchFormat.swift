/// NegPatch patches as HDF5 files (`formats/negpatch-hdf5.md`): the `.negpatch` content
/// in a layout stock h5py opens, using only the filters every HDF5 build has.
public enum HDF5PatchFormat: PatchFormat {
    public static let name = "hdf5"
    public static let extensions = ["h5", "hdf5"]

    /// The HDF5 signature, expected at offset 0.
    static let signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]
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

    public static func recognises(_ prefix: [UInt8]) -> Bool {
        prefix.count >= 8 && Array(prefix[0..<8]) == signature
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

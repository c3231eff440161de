/// A block ready to be stored, produced (in parallel) by `PatchWriter.prepare` and stored
/// (in order) by `PatchWriter.append`.
public struct PreparedBlock: Sendable {
    /// How the block is stored.
    public var encoding: BlockEncoding
    /// Elements in the block.
    public var count: Int
    /// Nonzero values in the block.
    public var nonzeros: Int
    /// The stored mask bytes (empty for a dense block), in the format's own form.
    public var mask: [UInt8]
    /// The stored values bytes, in the format's own form.
    public var values: [UInt8]
    /// Checksums of the stored bytes, where the format keeps them.
    public var maskChecksum: UInt64 = 0
    /// Checksum of the stored values bytes.
    public var valuesChecksum: UInt64 = 0
    /// How the values are stored.
    public var valueType: ValueType = .f32
    /// The int8 scale.
    public var scale: Float?
    /// The largest |value - stored value| in the block (0 for f32).
    public var maxAbsError: Float = 0
    /// How `mask` is stored.
    public var maskCodec: MaskCodec = .zstd
}

/// What a writer needs to know about a tensor before its blocks arrive.
public struct PatchTensorHeader: Sendable {
    /// Tensor name.
    public var name: String
    /// The base tensor's dtype.
    public var dtype: DType
    /// Its shape.
    public var shape: [Int]
    /// Number of elements.
    public var elements: Int
    /// Elements per block.
    public var blockElements: Int

    /// Number of blocks.
    public var blockCount: Int { elements == 0 ? 0 : (elements - 1) / blockElements + 1 }
}

/// Writes a patch in one format. Tensors arrive in order, each as `beginTensor`, its blocks
/// in order, `endTensor`; `finish` writes the metadata and commits the file atomically.
/// Until then the destination is untouched; `abort` (or deinitialisation) discards the
/// partial output.
public protocol PatchWriter: AnyObject {
    /// The destination path.
    var path: String { get }
    /// Encodes `count` dense task-vector values into a stored block. Called concurrently
    /// from several threads; must not touch shared state.
    func prepare(dense: UnsafePointer<Float>, count: Int) throws -> PreparedBlock
    /// Encodes a decoded block with the given encoding, exactly as the writer would have
    /// stored it (used by conversion, which keeps every block's encoding). Called
    /// concurrently from several threads; must not touch shared state.
    func prepare(_ block: SparseBlock, encoding: BlockEncoding) throws -> PreparedBlock
    /// Starts a tensor.
    func beginTensor(_ header: PatchTensorHeader) throws
    /// Stores the next block of the current tensor.
    func append(_ block: PreparedBlock) throws
    /// Ends the current tensor, recording its sign statistics (may be empty).
    func endTensor(agreement: [Int]) throws
    /// Writes the metadata and base fingerprint, commits, and returns the file size.
    func finish(metadata: PatchMetadata, fingerprint: [FingerprintEntry]) throws -> Int
    /// Discards the partial output.
    func abort()
}

/// A patch opened for reading, in any format.
public protocol PatchSource: AnyObject, Sendable {
    /// The file's path.
    var path: String { get }
    /// The format's name (`negpatch`, `hdf5`).
    var formatName: String { get }
    /// The validated index.
    var index: PatchIndex { get }
    /// The file's size in bytes.
    var fileSize: Int { get }
    /// Decodes block `block` of tensor `tensor` (indices into `index.tensors`), verifying
    /// its checksums. Safe to call from several threads.
    func block(tensor: Int, block: Int) throws -> SparseBlock
    /// Stored bytes of a tensor's parts: (mask bytes, values bytes).
    func storedBytes(tensor: Int) -> (mask: Int, values: Int)
}

/// A patch file format: how to recognise, read and write it.
public protocol PatchFormat: Sendable {
    /// Short name used by `--format`.
    static var name: String { get }
    /// File extensions that select this format for outputs, without the dot.
    static var extensions: [String] { get }
    /// Whether a file starting with `prefix` (at least its first 16 bytes) is in this format.
    static func recognises(_ prefix: [UInt8]) -> Bool
    /// Opens and validates a patch.
    static func open(path: String) throws -> any PatchSource
    /// Creates a writer for `path`.
    static func writer(path: String, options: PatchWriterOptions) throws -> any PatchWriter
}

/// Options for writers.
public struct PatchWriterOptions: Sendable {
    /// zstd level of `.negpatch` parts.
    public var zstdLevel: Int32 = Zstd.defaultLevel
    /// How values are stored; anything but f32 is lossy.
    public var valueType: ValueType = .f32
    /// HDF5 compression: `gzip` or `none`.
    public var hdf5Compression: String = "gzip"
    /// Deflate level (1-9) of HDF5 datasets with `gzip` compression.
    public var gzipLevel: Int = HDF5PatchFormat.defaultGzipLevel

    /// Default options.
    public init() {}
}

/// The known patch formats, looked up by name, file extension or content.
public enum PatchFormats {
    /// Every registered format. A new format is one new type and one line here.
    public static let all: [any PatchFormat.Type] = [NegPatchFormat.self, HDF5PatchFormat.self]

    /// The format called `name`.
    public static func named(_ name: String) -> (any PatchFormat.Type)? {
        all.first { $0.name == name }
    }

    /// The format an output path's extension selects (`.negpatch` when none matches).
    public static func forOutput(_ path: String) -> any PatchFormat.Type {
        let lower = path.lowercased()
        return all.first { format in format.extensions.contains { lower.hasSuffix(".\($0)") } } ?? NegPatchFormat.self
    }

    /// Whether `bytes` start like a safetensors file: a header length that fits, then `{`.
    static func looksLikeSafetensors(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count >= 10 else { return false }
        let length = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        return length >= 2 && length <= UInt64(bytes.count - 8) && bytes[8] == UInt8(ascii: "{")
    }

    /// Opens the patch at `path`, recognising its format by content.
    public static func open(_ path: String) throws -> any PatchSource {
        let file = try MappedFile(path: path)
        let prefix = Array(file.bytes.prefix(16))
        guard let format = all.first(where: { $0.recognises(prefix) }) else {
            if looksLikeSafetensors(file.bytes) {
                throw NegPatchError(.malformed, file: path, "not a NegPatch patch: it is a safetensors checkpoint; are --base and --patch swapped?")
            }
            throw NegPatchError(.malformed, file: path, "not a NegPatch patch (unrecognised signature)")
        }
        return try format.open(path: path)
    }
}

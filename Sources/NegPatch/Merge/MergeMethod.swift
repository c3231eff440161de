/// A floating tensor's data in one checkpoint, readable as float32 by range.
public struct TensorSource: @unchecked Sendable {
    /// The raw data (row-major, little-endian).
    public let pointer: UnsafeRawPointer
    /// Its dtype (floating).
    public let dtype: DType
    /// The file holding the data, for positioned reads, and the data's offset in it.
    let file: MappedFile?
    let fileOffset: Int
    /// Set to nonzero by any load that meets a non-finite float32 value, when not nil.
    /// Loads run on many threads and only ever store 1; the merger reads it after they end.
    let nonFinite: UnsafeMutablePointer<UInt8>?

    /// Creates a source over `pointer`.
    public init(pointer: UnsafeRawPointer, dtype: DType) {
        self.pointer = pointer
        self.dtype = dtype
        file = nil
        fileOffset = 0
        nonFinite = nil
    }

    /// Creates a source over a tensor of a mapped file; loads flag non-finite values in
    /// `nonFinite` when it is given.
    init(file: MappedFile, tensor: TensorInfo, nonFinite: UnsafeMutablePointer<UInt8>? = nil) {
        pointer = file.bytes.baseAddress.map { $0 + tensor.fileOffset } ?? UnsafeRawPointer(bitPattern: 8)!
        dtype = tensor.dtype
        self.file = file
        fileOffset = tensor.fileOffset
        self.nonFinite = nonFinite
    }

    /// Flags the source when any of `count` float32 values loaded from it is not finite.
    @inline(__always)
    func checkFinite(_ values: UnsafePointer<Float>, count: Int) {
        if let nonFinite, !FiniteValues.allFinite(values, count: count) { nonFinite.pointee = 1 }
    }

    /// Flags the source when any of `count` values as stored (its own dtype) is not finite.
    @inline(__always)
    func checkFinite(stored data: UnsafeRawPointer, count: Int) {
        if let nonFinite, !FiniteValues.allFinite(data, dtype: dtype, count: count) { nonFinite.pointee = 1 }
    }

    /// Copies the raw bytes of elements `start ..< start + count` into `destination`, by
    /// `pread` when the file is known (no page mapping, friendlier to the cache when many
    /// models stream at once), else from memory.
    @inline(__always)
    func copyRaw(_ start: Int, _ count: Int, into destination: UnsafeMutableRawPointer) {
        let bytes = count * dtype.size
        if let file, file.read(fileOffset + start * dtype.size, bytes, into: destination) { return }
        destination.copyMemory(from: pointer + start * dtype.size, byteCount: bytes)
    }

    /// Converts elements `start ..< start + count` to float32 into `destination`.
    @inline(__always)
    public func load(_ start: Int, _ count: Int, into destination: UnsafeMutablePointer<Float>) {
        FloatConversion.toFloat32(pointer, dtype: dtype, start: start, count: count, into: destination)
        checkFinite(destination, count: count)
    }
}

/// One floating tensor to merge: the base and the n task vectors of it.
public struct MergeTensor: @unchecked Sendable {
    /// The tensor's name.
    public let name: String
    /// Number of elements.
    public let elements: Int
    /// The base tensor.
    public let base: TensorSource
    /// The task vectors, in merge order.
    public let models: [any TaskVectorSource]
}

/// Computes the merged task vector of one tensor, range by range.
///
/// `merge` is called concurrently for disjoint ranges; it writes `tau` for elements
/// `start ..< start + count` into `out` and adds, for each element, one count to
/// `agreement[m]` where m is the number of task vectors agreeing with the majority sign.
public protocol MergeKernel: Sendable {
    /// Merges one range.
    func merge(start: Int, count: Int, into out: UnsafeMutablePointer<Float>, agreement: UnsafeMutablePointer<Int>)
}

/// A merge method: its name, parameters, and a kernel per tensor.
public protocol MergeMethod: Sendable {
    /// The name `--method` selects and patches record.
    var name: String { get }
    /// Its parameters, as recorded in the patch.
    var parameters: [(key: String, value: JSONValue)] { get }
    /// Checks the method can merge `n` models (e.g. a weight per model).
    func validate(modelCount n: Int) throws
    /// Prepares the kernel for one tensor (may scan the whole tensor, e.g. TIES' thresholds).
    func kernel(for tensor: MergeTensor) throws -> any MergeKernel
}

extension MergeMethod {
    public func validate(modelCount n: Int) throws {}
}

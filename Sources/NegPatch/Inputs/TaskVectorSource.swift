/// A source of task-vector tiles for one floating tensor of the base: whatever a merge
/// input is (a fine-tuned checkpoint, a LoRA adapter), the merge kernels see only this.
///
/// `load` gives `tau` in float32 for any range of elements (row-major over `shape`).
/// A source whose task vector is exactly `float32(stored) - float32(base)` for a stored
/// tensor of the base's dtype also offers that tensor as `stored`: the kernels then read it
/// as stored (bfloat16 widened in their own registers) and subtract the base tile
/// themselves, which is today's fast path and gives the same `tau` bit for bit.
public protocol TaskVectorSource: Sendable {
    /// The base tensor's name.
    var name: String { get }
    /// The base tensor's shape.
    var shape: [Int] { get }
    /// The base tensor's dtype (floating).
    var dtype: DType { get }
    /// The stored fine-tuned tensor, when `tau = float32(stored) - float32(base)`; nil for
    /// sources that compute their task vector otherwise.
    var stored: TensorSource? { get }
    /// Writes `tau` of elements `start ..< start + count` into `destination` as float32.
    /// `base` holds the base's elements of that range in float32. Raises the source's
    /// non-finite flag (if it has one) when an input value, or the result, is not finite.
    func load(_ start: Int, _ count: Int, base: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>)
}

/// The task vector of a stored fine-tuned tensor: `float32(ft) - float32(base)`.
public struct StoredTaskVector: TaskVectorSource {
    public let name: String
    public let shape: [Int]
    public var dtype: DType { ft.dtype }
    /// The fine-tuned tensor.
    public let ft: TensorSource

    /// The task vector of `ft` for the base tensor `name` of `shape`.
    public init(name: String, shape: [Int], ft: TensorSource) {
        self.name = name
        self.shape = shape
        self.ft = ft
    }

    public var stored: TensorSource? { ft }

    public func load(_ start: Int, _ count: Int, base: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>) {
        ft.load(start, count, into: destination)
        for i in 0..<count { destination[i] = destination[i] - base[i] }
    }
}

/// The task vector of a tensor an input leaves untouched: zero everywhere.
public struct ZeroTaskVector: TaskVectorSource {
    public let name: String
    public let shape: [Int]
    public let dtype: DType
    public var stored: TensorSource? { nil }

    /// A zero task vector for the base tensor `name`.
    public init(name: String, shape: [Int], dtype: DType) {
        self.name = name
        self.shape = shape
        self.dtype = dtype
    }

    public func load(_ start: Int, _ count: Int, base: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>) {
        destination.initialize(repeating: 0, count: count)
    }
}

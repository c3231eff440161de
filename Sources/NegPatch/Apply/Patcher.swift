/// Applies a patch to tensors as a program loads them, without writing a file.
///
/// ```swift
/// let patcher = try Patcher(patch: PatchFormats.open("forget.negpatch"))
/// try patcher.patch(tensor: "model.layers.0.mlp.up_proj.weight", dtype: .BF16, shape: [11008, 4096], data: buffer)
/// ```
///
/// Each tensor is decoded block by block (blocks in parallel) and updated in place as
/// `theta = base - lambda * tau`, or `theta = base + lambda * tau` for a patch whose
/// direction is `add` (see `PatchKernels`, `PatchDirection`). The patcher does not check the base
/// fingerprint, since it sees one tensor at a time: call `BaseFingerprint.verify` on the
/// checkpoint first when it is available.
public final class Patcher: Sendable {
    /// The patch being applied.
    public let patch: any PatchSource
    /// The lambda used (the patch's recommendation unless overridden).
    public let lambda: Double
    /// The lambda the kernels subtract with: `lambda`, negated for an adding patch.
    private let kernelLambda: Double
    private let tensorIndex: [TensorName: Int]

    /// Whether NaN or infinity in a patched tensor or in the patch's values is accepted;
    /// when not, `patch(tensor:...)` throws `.invalidValue` naming the tensor and element.
    public let allowNonFinite: Bool

    /// Creates a patcher for `patch` with `lambda` (default: the patch's recommended one).
    /// Throws `.invalidArgument` for a lambda that is not finite in float32.
    public init(patch: any PatchSource, lambda: Double? = nil, allowNonFinite: Bool = false) throws {
        self.allowNonFinite = allowNonFinite
        self.patch = patch
        let value = lambda ?? patch.index.metadata.lambda
        // Lambda multiplies tau in float32 for F32, F16 and BF16 tensors.
        guard value.isFinite, Float(value).isFinite else {
            throw NegPatchError(.invalidArgument, file: patch.path, "lambda must be a finite number within float32's range, got \(value)")
        }
        self.lambda = value
        kernelLambda = patch.index.metadata.direction.kernelLambda(value)
        tensorIndex = Dictionary(uniqueKeysWithValues: patch.index.tensors.enumerated().map { (TensorName($0.element.name), $0.offset) })
    }

    /// The names of the tensors the patch changes, in patch order.
    public var tensorNames: [String] { patch.index.tensors.map(\.name) }

    /// Whether the patch has an entry for `name`.
    public func covers(_ name: String) -> Bool { tensorIndex[TensorName(name)] != nil }

    /// Patches the raw bytes of tensor `name` in place. Returns false (and changes nothing)
    /// when the patch has no entry for it. Throws `.mismatch` if dtype, shape or byte count
    /// differ from the patch's, `.invalidValue` for NaN or infinity in the tensor (before
    /// changing it) or in the patch (unless `allowNonFinite`), and `.corrupt` if a block
    /// fails its checks; on a throw, the blocks already applied stay applied.
    @discardableResult
    public func patch(tensor name: String, dtype: DType, shape: [Int], data: UnsafeMutableRawBufferPointer) throws -> Bool {
        guard let t = tensorIndex[TensorName(name)] else { return false }
        let entry = patch.index.tensors[t]
        guard entry.dtype == dtype, entry.shape == shape, data.count == entry.elements * dtype.size else {
            throw NegPatchError(.mismatch, file: patch.path, tensor: name,
                                "patch expects \(entry.dtype) \(describeShape(entry.shape)), got \(dtype) \(describeShape(shape)) (\(data.count) bytes)")
        }
        guard let start = data.baseAddress else { return true }
        // The tensor is checked whole before anything changes; each block's values as it
        // is decoded.
        if !allowNonFinite, let bad = FiniteValues.firstNonFinite(start, dtype: dtype, count: entry.elements) {
            throw NegPatchError(.invalidValue, file: nil, tensor: name,
                                "non-finite value \(FiniteValues.value(start, dtype: dtype, at: bad)) at "
                                + "\(FiniteValues.describe(element: bad, shape: shape)) of the tensor being patched")
        }
        try Parallel.forEach(entry.blocks.count) { b in
            let block = try patch.block(tensor: t, block: b)
            if !allowNonFinite, let j = block.values.firstIndex(where: { !$0.isFinite }) {
                let element = b * entry.blockElements + (block.indices.map { Int($0[j]) } ?? j)
                throw NegPatchError(.invalidValue, file: patch.path, tensor: name,
                                    "non-finite task-vector value \(block.values[j]) at \(FiniteValues.describe(element: element, shape: shape))")
            }
            let blockData = start + b * entry.blockElements * dtype.size
            PatchKernels.apply(block, to: blockData, dtype: dtype, lambda: kernelLambda)
            if !allowNonFinite, let bad = FiniteValues.firstNonFinite(blockData, dtype: dtype, count: block.count) {
                throw NegPatchError(.invalidValue, file: patch.path, tensor: name,
                                    "the patched value at \(FiniteValues.describe(element: b * entry.blockElements + bad, shape: shape)) with lambda \(lambda) "
                                    + "is \(FiniteValues.value(blockData, dtype: dtype, at: bad)): beyond the range of \(dtype)")
            }
        }
        return true
    }

    /// Decodes tensor `name` into its dense float32 task vector (`elements` floats).
    public func taskVector(_ name: String) throws -> [Float] {
        guard let t = tensorIndex[TensorName(name)] else {
            throw NegPatchError(.invalidArgument, file: patch.path, tensor: name, "not in the patch")
        }
        return try TaskVectorDecoder.dense(patch, tensor: t)
    }
}

/// Decodes whole tensors of a patch to dense float32.
public enum TaskVectorDecoder {
    /// The dense task vector of tensor `t` of `patch`, blocks decoded in parallel.
    public static func dense(_ patch: any PatchSource, tensor t: Int) throws -> [Float] {
        let entry = patch.index.tensors[t]
        try Memory.reserve(4 * entry.elements, for: "the dense task vector of tensor '\(entry.name)'")
        var dense = [Float](repeating: 0, count: entry.elements)
        try dense.withUnsafeMutableBufferPointer { out in
            try decode(patch, tensor: t, into: out)
        }
        return dense
    }

    /// Decodes the task vector of tensor `t` of `patch` into `out`, which must hold exactly
    /// its element count (precondition), blocks decoded in parallel; every element is written.
    public static func decode(_ patch: any PatchSource, tensor t: Int, into out: UnsafeMutableBufferPointer<Float>) throws {
        let entry = patch.index.tensors[t]
        precondition(out.count == entry.elements, "buffer of \(out.count) floats for \(entry.elements) elements")
        try Parallel.forEach(entry.blocks.count) { b in
            let block = try patch.block(tensor: t, block: b)
            block.expand(into: out.baseAddress! + b * entry.blockElements)
        }
    }
}

/// A fine-tuned checkpoint as a merge input: its task vector is `ft - base`, tensor by
/// tensor, and the kernels read it as stored.
extension Checkpoint: MergeInput {
    public func checkCompatible(base: Checkpoint) throws {
        for tensor in base.tensors {
            let name = tensor.info.name
            guard let other = self.tensor(named: name) else {
                throw NegPatchError(.mismatch, file: path, tensor: name, "missing, but present in \(base.file(of: tensor))")
            }
            guard other.info.dtype == tensor.info.dtype else {
                throw NegPatchError(.mismatch, file: file(of: other), tensor: name,
                                    "dtype \(other.info.dtype) differs from \(tensor.info.dtype) in \(base.file(of: tensor))")
            }
            guard other.info.shape == tensor.info.shape else {
                throw NegPatchError(.mismatch, file: file(of: other), tensor: name,
                                    "shape \(describeShape(other.info.shape)) differs from \(describeShape(tensor.info.shape)) in \(base.file(of: tensor))")
            }
        }
        if tensors.count != base.tensors.count,
           let extra = tensors.first(where: { base.tensor(named: $0.info.name) == nil }) {
            throw NegPatchError(.mismatch, file: file(of: extra), tensor: extra.info.name, "not present in the base \(base.path)")
        }
    }

    public func taskVector(of tensor: CheckpointTensor, base: Checkpoint, nonFinite: UnsafeMutablePointer<UInt8>?) -> any TaskVectorSource {
        let other = self.tensor(named: tensor.info.name)!
        return StoredTaskVector(name: tensor.info.name, shape: tensor.info.shape,
                                ft: TensorSource(file: shards[other.shard].file, tensor: other.info, nonFinite: nonFinite))
    }

    public func firstNonFinite(tensor name: String) -> NegPatchError? {
        self.tensor(named: name).flatMap { firstNonFinite(in: $0) }
    }

    /// The error for the first value of `entry` that is not finite once converted to
    /// float32 (an F64 value beyond float32's range is as unusable as an infinity).
    func firstNonFinite(in entry: CheckpointTensor) -> NegPatchError? {
        let data = self.data(entry)
        guard let start = data.baseAddress else { return nil }
        let dtype = entry.info.dtype
        var chunk = [Float](repeating: 0, count: 4096)
        var offset = 0
        while offset < entry.info.elementCount {
            let count = min(chunk.count, entry.info.elementCount - offset)
            let bad: Int? = chunk.withUnsafeMutableBufferPointer { buffer in
                FloatConversion.toFloat32(start, dtype: dtype, start: offset, count: count, into: buffer.baseAddress!)
                return FiniteValues.allFinite(buffer.baseAddress!, count: count) ? nil : buffer.prefix(count).firstIndex { !$0.isFinite }
            }
            if let bad {
                let raw = FiniteValues.value(start, dtype: dtype, at: offset + bad)
                let what = raw.isFinite ? "value \(raw) beyond the float32 range" : "non-finite value \(raw)"
                return NegPatchError(.invalidValue, file: file(of: entry), tensor: entry.info.name,
                                     "\(what) at \(FiniteValues.describe(element: offset + bad, shape: entry.info.shape)) (use --allow-nonfinite to merge anyway)")
            }
            offset += count
        }
        return nil
    }
}

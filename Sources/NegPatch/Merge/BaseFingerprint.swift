/// The identity of a base checkpoint by content: the XXH64 of every tensor's raw bytes.
///
/// A patch records its base's fingerprint; applying it to any other checkpoint (another
/// model, another revision, a fine-tuned copy) is caught before anything is written.
public enum BaseFingerprint {
    /// Fingerprints every tensor of `checkpoint`, hashing tensors in parallel. Throws
    /// `.resources` when not even one hashing buffer can be allocated.
    public static func compute(_ checkpoint: Checkpoint) throws -> [FingerprintEntry] {
        let tensors = checkpoint.tensors
        // Hashed through pread in pieces that stay in the cache: copying from the page cache
        // is cheaper than faulting every page of the base into this process's mapping.
        let piece = 1 << 18
        let buffers = Pool.buffers(of: UInt8.self, capacity: piece)
        let digests = try Parallel.map(tensors.count) { i -> UInt64 in
            let tensor = tensors[i]
            let file = checkpoint.shards[tensor.shard].file
            return try buffers.withResource { buffer in
                var hasher = XXH64.Hasher()
                var done = 0
                while done < tensor.info.byteCount {
                    let count = min(piece, tensor.info.byteCount - done)
                    guard file.read(tensor.info.fileOffset + done, count, into: buffer) else {
                        return XXH64.hash(checkpoint.data(tensor))
                    }
                    hasher.update(UnsafeRawBufferPointer(start: buffer, count: count))
                    done += count
                }
                return hasher.finalize()
            }
        }
        return zip(tensors, digests).map { tensor, digest in
            FingerprintEntry(name: tensor.info.name, dtype: tensor.info.dtype, shape: tensor.info.shape, digest: digest)
        }
    }

    /// Checks that `checkpoint` is the base `expected` describes: the same tensor names,
    /// dtypes, shapes and digests. Throws `.mismatch` naming the first tensor that differs.
    public static func verify(_ checkpoint: Checkpoint, matches expected: [FingerprintEntry], patch: String) throws {
        func mismatch(_ tensor: String?, _ message: String) -> NegPatchError {
            NegPatchError(.mismatch, file: checkpoint.path, tensor: tensor,
                          "\(message): this is not the base the patch \(patch) was made for (use --ignore-base-mismatch to apply anyway)")
        }
        try checkStructure(checkpoint, matches: expected, patch: patch, all: true)
        let actual = try compute(checkpoint)
        let byName = Dictionary(uniqueKeysWithValues: actual.map { (TensorName($0.name), $0.digest) })
        for entry in expected where byName[TensorName(entry.name)] != entry.digest {
            throw mismatch(entry.name, "base fingerprint differs (content xxh64 \(XXH64.hex(byName[TensorName(entry.name)] ?? 0)), patch expects \(XXH64.hex(entry.digest)))")
        }
    }

    /// Checks names, dtypes and shapes only. With `all`, the checkpoint must hold exactly
    /// the listed tensors; otherwise only the listed tensors must be present and alike.
    public static func checkStructure(_ checkpoint: Checkpoint, matches expected: [FingerprintEntry], patch: String, all: Bool) throws {
        // --ignore-base-mismatch overrides a difference of content only: a patch cannot be
        // applied across names, dtypes or shapes, so these errors do not suggest it.
        func mismatch(_ tensor: String?, _ message: String) -> NegPatchError {
            NegPatchError(.mismatch, file: checkpoint.path, tensor: tensor,
                          "\(message): this is not the base the patch \(patch) was made for")
        }
        for entry in expected {
            guard let tensor = checkpoint.tensor(named: entry.name) else {
                throw mismatch(entry.name, "tensor missing from the base")
            }
            guard tensor.info.dtype == entry.dtype else {
                throw mismatch(entry.name, "the dtypes differ: the base holds \(tensor.info.dtype), the patch was made for \(entry.dtype) "
                               + "(a converted copy of the base?)")
            }
            guard tensor.info.shape == entry.shape else {
                throw mismatch(entry.name, "base has \(tensor.info.dtype) \(describeShape(tensor.info.shape)), patch expects \(entry.dtype) \(describeShape(entry.shape))")
            }
        }
        if all && checkpoint.tensors.count != expected.count {
            let listed = Set(expected.map { TensorName($0.name) })
            let extra = checkpoint.tensors.first { !listed.contains(TensorName($0.info.name)) }
            throw mismatch(extra?.info.name, "tensor not in the patch's base fingerprint")
        }
    }
}

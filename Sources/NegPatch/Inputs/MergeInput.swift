/// One fine-tuned model given to a merge: anything that yields a task vector for every
/// floating tensor of the base (a fine-tuned `Checkpoint`, a `LoraAdapter`).
///
/// Adding an input kind is one type conforming to this protocol, opened by `MergeInputs`.
public protocol MergeInput: AnyObject, Sendable {
    /// The path the user gave (its last component is recorded in the patch).
    var path: String { get }
    /// Checks that the input fits `base` (names, shapes, dtypes). Throws `NegPatchError`
    /// naming the input's file and the tensor or key that does not fit.
    func checkCompatible(base: Checkpoint) throws
    /// The task-vector source of the base's floating tensor `tensor`. Loads raise
    /// `nonFinite` (when given) on a non-finite value. Called after `checkCompatible`.
    func taskVector(of tensor: CheckpointTensor, base: Checkpoint, nonFinite: UnsafeMutablePointer<UInt8>?) -> any TaskVectorSource
    /// The error naming the first non-finite input value behind the base tensor `name`,
    /// or nil when every value this input reads for it is finite.
    func firstNonFinite(tensor name: String) -> NegPatchError?
}

/// Opens merge inputs by what the path holds.
public enum MergeInputs {
    /// A PEFT LoRA adapter folder (it holds `adapter_config.json`) or, otherwise, a
    /// safetensors checkpoint (a file, or a folder with `model.safetensors` or a sharded
    /// index).
    public static func open(_ path: String) throws -> any MergeInput {
        if LoraAdapter.isAdapterFolder(path) { return try LoraAdapter(path: path) }
        return try Checkpoint(path: path)
    }
}

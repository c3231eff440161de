import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import NegPatch

/// Checks that catch an output named for the wrong kind of file before anything is read:
/// a patch written as `x.safetensors`, or a checkpoint written over a patch.
enum OutputNames {
    /// Endings of files that hold checkpoints or their parts, never a patch.
    static let checkpointEndings = [".safetensors", ".pt", ".pth", ".ckpt", ".json", ".gguf"]
    /// Endings of NegPatch's own files, never a checkpoint.
    static let patchEndings = [".negpatch", ".h5", ".hdf5", ".sig", ".pub", ".key"]

    /// Refuses a patch output named like a checkpoint (so a slip of the arguments cannot
    /// turn `base.safetensors` into a patch).
    static func checkPatch(_ path: String) throws {
        let lower = path.lowercased()
        if let ending = checkpointEndings.first(where: { lower.hasSuffix($0) }) {
            throw ValidationError("'\(path)' ends in \(ending), a checkpoint's ending: a patch is written as .negpatch or .h5")
        }
    }

    /// Refuses a checkpoint output named like a patch, a key or a signature.
    static func checkCheckpoint(_ path: String) throws {
        let lower = path.lowercased()
        if let ending = patchEndings.first(where: { lower.hasSuffix($0) }) {
            throw ValidationError("'\(path)' ends in \(ending), a NegPatch file's ending: a checkpoint is written as .safetensors or a folder")
        }
    }
}

/// Checks of a merge's input list that need no file to be parsed.
enum InputList {
    /// Refuses a fine-tuned checkpoint given twice, or the base given as a fine-tuned one
    /// (by device and inode, so other spellings of one file count too): either would weigh
    /// one model twice, or add a zero task vector, without a word.
    static func checkDistinct(base: String, models: [String]) throws {
        var seen: [(identity: (UInt64, UInt64), position: Int)] = []
        if let id = identity(base) { seen.append((id, 0)) }
        for (k, model) in models.enumerated() {
            guard let id = identity(model) else { continue }
            if let previous = seen.first(where: { $0.identity == id }) {
                throw ValidationError(previous.position == 0
                    ? "'\(model)' is the base checkpoint: its task vector would be zero"
                    : "'\(model)' is given twice (fine-tuned checkpoints \(previous.position) and \(k + 1)): each model would count twice")
            }
            seen.append((id, k + 1))
        }
    }

    private static func identity(_ path: String) -> (UInt64, UInt64)? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }
}

import CNegPatchABI
import NegPatch

#if canImport(Glibc)
import Glibc
#endif

/// What a `negpatch_patch *` points to: an open patch plus the C strings and shapes the
/// accessors hand out, made once so they live as long as the handle.
final class ABIPatch {
    let source: any PatchSource
    let path: UnsafeMutablePointer<CChar>
    let format: UnsafeMutablePointer<CChar>
    let names: [UnsafeMutablePointer<CChar>]
    let dtypes: [UnsafeMutablePointer<CChar>]
    let shapes: [UnsafeMutableBufferPointer<Int64>]
    let tensorIndex: [TensorName: Int]
    private let lock = Mutex()
    // The last patcher made, reused while lambda and flags stay the same: a patcher builds a
    // name table, which per call would cost O(tensors) for every tensor of a model.
    private var patcher: (lambda: Double, allowNonFinite: Bool, patcher: Patcher)?

    init(source: any PatchSource) {
        self.source = source
        path = strdup(source.path)
        format = strdup(source.formatName)
        let tensors = source.index.tensors
        names = tensors.map { strdup($0.name) }
        dtypes = tensors.map { strdup($0.dtype.rawValue) }
        shapes = tensors.map { tensor in
            let buffer = UnsafeMutableBufferPointer<Int64>.allocate(capacity: max(tensor.shape.count, 1))
            for (d, extent) in tensor.shape.enumerated() { buffer[d] = Int64(extent) }
            return buffer
        }
        tensorIndex = Dictionary(tensors.enumerated().map { (TensorName($0.element.name), $0.offset) }, uniquingKeysWith: { a, _ in a })
    }

    deinit {
        free(path)
        free(format)
        names.forEach { free($0) }
        dtypes.forEach { free($0) }
        shapes.forEach { $0.deallocate() }
    }

    /// A patcher for `lambda`, shared by calls with the same lambda and flags.
    func patcher(lambda: Double, allowNonFinite: Bool) throws -> Patcher {
        try lock.withLock {
            if let cached = patcher, cached.lambda.bitPattern == lambda.bitPattern, cached.allowNonFinite == allowNonFinite {
                return cached.patcher
            }
            let made = try Patcher(patch: source, lambda: lambda, allowNonFinite: allowNonFinite)
            patcher = (lambda, allowNonFinite, made)
            return made
        }
    }
}

/// A pthread mutex: the ABI target imports neither Foundation nor Synchronization.
final class Mutex: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// What a merge is asked to do.
public struct MergeRequest {
    /// The pretrained checkpoint.
    public var base: Checkpoint
    /// The fine-tuned models (checkpoints, LoRA adapters), in merge order.
    public var models: [any MergeInput]
    /// The merge method.
    public var method: any MergeMethod
    /// The recommended lambda recorded in the patch.
    public var lambda: Double = 1.0
    /// Whether applying the patch subtracts tau (the default) or adds it.
    public var direction = PatchDirection.subtract
    /// Elements per stored block (a multiple of 64).
    public var blockElements: Int = 1 << 20
    /// Worker threads.
    public var threads: Int = ProcessorCount.active
    /// Merge inputs holding NaN or infinity (or F64 values beyond float32's range) instead
    /// of refusing them.
    public var allowNonFinite = false

    /// Creates a request with default lambda, block size and threads.
    public init(base: Checkpoint, models: [any MergeInput], method: any MergeMethod) {
        self.base = base
        self.models = models
        self.method = method
    }
}

/// The outcome of a merge, for the summary line.
public struct MergeSummary: Sendable {
    /// Floating tensors in the patch.
    public var tensors: Int
    /// Their total elements.
    public var elements: Int
    /// Nonzero elements of the merged task vector.
    public var nonzeros: Int
    /// The patch file's size.
    public var patchBytes: Int
    /// Sign-agreement histogram over all tensors (n + 1 counts).
    public var agreement: [Int]
    /// Share of nonzero elements.
    public var density: Double { elements == 0 ? 0 : Double(nonzeros) / Double(elements) }
}

/// Reports progress as (elements done, elements in total).
public typealias ProgressHandler = (_ done: Int, _ total: Int) -> Void

/// Number of processors available to this process.
public enum ProcessorCount {
    /// Online processors (at least 1).
    public static var active: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
}

/// Streams a merge tensor by tensor and block by block: at any time it holds only the
/// blocks in flight (a few per thread), never n models, so memory does not grow with n.
public enum Merger {
    /// Checks that every input fits the base: a fine-tuned checkpoint has exactly the
    /// base's tensors with the same dtypes and shapes; an adapter targets base tensors of
    /// matching shapes. Throws `.mismatch` naming both files and the first tensor that
    /// differs.
    public static func checkCompatible(base: Checkpoint, models: [any MergeInput]) throws {
        for model in models { try model.checkCompatible(base: base) }
    }

    /// Runs `request`, writing the patch through `writer`, and returns the summary.
    /// On any error the writer is aborted, so no output is left behind.
    public static func run(_ request: MergeRequest, writer: any PatchWriter, progress: ProgressHandler? = nil) throws -> MergeSummary {
        do {
            return try runUnchecked(request, writer: writer, progress: progress)
        } catch {
            writer.abort()
            throw error
        }
    }

    /// The error for the first non-finite input value of `tensor`: the base first, then the
    /// models in order, each scanned from its first element.
    private static func firstNonFinite(_ tensor: CheckpointTensor, request: MergeRequest) -> NegPatchError {
        let name = tensor.info.name
        if let error = request.base.firstNonFinite(in: tensor) { return error }
        for model in request.models {
            if let error = model.firstNonFinite(tensor: name) { return error }
        }
        return NegPatchError(.invalidValue, file: request.base.path, tensor: name, "non-finite value in an input (use --allow-nonfinite to merge anyway)")
    }

    private struct WorkItem {
        let tensor: Int
        let block: Int
        let start: Int
        let count: Int
    }

    private static func runUnchecked(_ request: MergeRequest, writer: any PatchWriter, progress: ProgressHandler?) throws -> MergeSummary {
        let n = request.models.count
        guard n >= 1 else { throw NegPatchError(.invalidArgument, file: nil, "at least one fine-tuned checkpoint is needed") }
        guard request.blockElements > 0, request.blockElements % 64 == 0, request.blockElements <= PatchWorkBound.maxBlockElements else {
            throw NegPatchError(.invalidArgument, file: nil, "block size must be a positive multiple of 64 up to 2^26")
        }
        try request.method.validate(modelCount: n)
        try checkCompatible(base: request.base, models: request.models)
        let fingerprint = try BaseFingerprint.compute(request.base)

        let floating = request.base.tensors.filter { $0.info.dtype.isFloating }
        let headers = floating.map { tensor in
            PatchTensorHeader(name: tensor.info.name, dtype: tensor.info.dtype, shape: tensor.info.shape,
                              elements: tensor.info.elementCount, blockElements: request.blockElements)
        }
        // One flag per tensor, raised by any tile load that meets a non-finite value; the
        // exact place is looked up only then (`firstNonFinite`).
        let nonFinite = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(floating.count, 1))
        nonFinite.initialize(repeating: 0)
        defer { nonFinite.deallocate() }
        let sources: [MergeTensor] = floating.enumerated().map { t, tensor in
            let name = tensor.info.name
            let flag = request.allowNonFinite ? nil : nonFinite.baseAddress! + t
            return MergeTensor(
                name: name, elements: tensor.info.elementCount,
                base: TensorSource(file: request.base.shards[tensor.shard].file, tensor: tensor.info, nonFinite: flag),
                models: request.models.map { $0.taskVector(of: tensor, base: request.base, nonFinite: flag) })
        }
        var items: [WorkItem] = []
        for (t, header) in headers.enumerated() {
            for b in 0..<header.blockCount {
                let start = b * header.blockElements
                items.append(WorkItem(tensor: t, block: b, start: start, count: min(header.blockElements, header.elements - start)))
            }
        }
        let totalElements = headers.reduce(0) { $0 + $1.elements }
        var kernels: [(any MergeKernel)?] = Array(repeating: nil, count: headers.count)
        var agreement = [[Int]](repeating: [Int](repeating: 0, count: n + 1), count: headers.count)
        var nextTensor = 0  // next tensor to open in the writer
        var nonzeros = 0
        var done = 0

        // Opens (and closes, when they have no blocks) tensors up to `t`.
        func advance(to t: Int) throws {
            while nextTensor <= t {
                try writer.beginTensor(headers[nextTensor])
                if headers[nextTensor].blockCount == 0 {
                    try writer.endTensor(agreement: agreement[nextTensor])
                }
                nextTensor += 1
            }
        }

        // Blocks in flight: enough to keep every thread busy, few enough that memory holds
        // only a couple of finished blocks per thread.
        let window = max(4, request.threads * 2)
        let denseBlocks = Pool.buffers(of: Float.self, capacity: request.blockElements)
        var windowStart = 0
        while windowStart < items.count {
            let slice = Array(items[windowStart..<min(items.count, windowStart + window)])
            for item in slice where kernels[item.tensor] == nil {
                kernels[item.tensor] = try request.method.kernel(for: sources[item.tensor])
            }
            var histograms = [Int](repeating: 0, count: slice.count * (n + 1))
            let activeKernels = kernels
            let blocks = try histograms.withUnsafeMutableBufferPointer { histograms in
                try Parallel.map(slice.count) { j -> PreparedBlock in
                    let item = slice[j]
                    return try denseBlocks.withResource { dense in
                        activeKernels[item.tensor]!.merge(start: item.start, count: item.count, into: dense,
                                                          agreement: histograms.baseAddress! + j * (n + 1))
                        // Finite inputs can still sum past float32's range (uniform, weighted
                        // sums): a patch never holds an infinity. Non-finite inputs are
                        // reported as such below.
                        if !request.allowNonFinite, nonFinite[item.tensor] == 0, !FiniteValues.allFinite(dense, count: item.count) {
                            let bad = UnsafeBufferPointer(start: dense, count: item.count).firstIndex { !$0.isFinite }!
                            let tensor = floating[item.tensor].info
                            throw NegPatchError(.invalidValue, file: nil, tensor: tensor.name,
                                                "the merged value at \(FiniteValues.describe(element: item.start + bad, shape: tensor.shape)) is \(dense[bad]): "
                                                + "the \(request.method.name) result overflows float32")
                        }
                        return try writer.prepare(dense: dense, count: item.count)
                    }
                }
            }
            for item in slice where nonFinite[item.tensor] != 0 {
                throw firstNonFinite(floating[item.tensor], request: request)
            }
            for (j, item) in slice.enumerated() {
                let block = blocks[j]
                try advance(to: item.tensor)
                try writer.append(block)
                nonzeros += block.nonzeros
                for m in 0...n { agreement[item.tensor][m] += histograms[j * (n + 1) + m] }
                if item.block == headers[item.tensor].blockCount - 1 {
                    try writer.endTensor(agreement: agreement[item.tensor])
                    kernels[item.tensor] = nil
                }
                done += item.count
            }
            progress?(done, totalElements)
            windowStart += slice.count
        }
        if !headers.isEmpty { try advance(to: headers.count - 1) }

        let metadata = PatchMetadata(
            method: request.method.name, parameters: request.method.parameters, n: n,
            inputs: request.models.map { lastPathComponent($0.path) }, base: lastPathComponent(request.base.path),
            lambda: request.lambda, direction: request.direction)
        let bytes = try writer.finish(metadata: metadata, fingerprint: fingerprint)
        var total = [Int](repeating: 0, count: n + 1)
        for histogram in agreement { for m in 0...n { total[m] += histogram[m] } }
        return MergeSummary(tensors: headers.count, elements: totalElements, nonzeros: nonzeros, patchBytes: bytes, agreement: total)
    }
}

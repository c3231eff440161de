/// Uniform merging: the float32 mean of the n task vectors (sum in model order, / n).
public struct UniformMerge: MergeMethod {
    public let name = "uniform"
    public var parameters: [(key: String, value: JSONValue)] { [] }

    /// Creates the method.
    public init() {}

    public func kernel(for tensor: MergeTensor) throws -> any MergeKernel {
        WeightedSumKernel(base: tensor.base, models: tensor.models, weights: nil, divisor: Float(tensor.models.count))
    }
}

/// Task arithmetic: the weighted sum of the task vectors, `sum_k float32(w_k) * t_k` in
/// model order. Weights `0,...,1,...,0` select one model's task vector.
public struct TaskArithmetic: MergeMethod {
    public let name = "task-arithmetic"
    /// One weight per model, or nil for all 1.
    public let weights: [Double]?

    /// Creates the method with `weights` (nil: all 1).
    public init(weights: [Double]?) { self.weights = weights }

    public var parameters: [(key: String, value: JSONValue)] {
        weights.map { [("weights", .array($0.map { .double($0) }))] } ?? []
    }

    public func validate(modelCount n: Int) throws {
        guard let weights else { return }
        guard weights.count == n else {
            throw NegPatchError(.invalidArgument, file: nil, "--weights lists \(weights.count) weights for \(n) checkpoints")
        }
        // The weights multiply in float32: one beyond its range would be infinite there.
        guard weights.allSatisfy({ $0.isFinite && Float($0).isFinite }) else {
            throw NegPatchError(.invalidArgument, file: nil, "--weights must be finite numbers within float32's range (|w| < 3.4e38)")
        }
    }

    public func kernel(for tensor: MergeTensor) throws -> any MergeKernel {
        WeightedSumKernel(base: tensor.base, models: tensor.models, weights: weights.map { $0.map(Float.init) }, divisor: nil)
    }
}

/// Sum in model order of (optionally weighted) task vectors, optionally divided.
struct WeightedSumKernel: MergeKernel {
    let base: TensorSource
    let models: [any TaskVectorSource]
    let weights: [Float]?
    let divisor: Float?

    func merge(start: Int, count: Int, into out: UnsafeMutablePointer<Float>, agreement: UnsafeMutablePointer<Int>) {
        var tile = MergeTile(base: base, models: models)
        defer { tile.deallocate() }
        forEachTile(count: count, tile: tile.capacity) { offset, c in
            tile.begin(start: start + offset, count: c)
            let sum = out + offset
            sum.initialize(repeating: 0, count: c)
            for k in models.indices {
                tile.loadTask(k, count: c)
                let t = tile.task
                if let weights {
                    let w = weights[k]
                    for i in 0..<c { sum[i] += w * t[i] }
                } else {
                    for i in 0..<c { sum[i] += t[i] }
                }
            }
            if let divisor {
                for i in 0..<c { sum[i] = sum[i] / divisor }
            }
            tile.recordAgreement(count: c, into: agreement)
        }
    }
}

/// MagMax: per element, the task-vector value of largest magnitude, sign kept; on equal
/// magnitudes the first model in order wins.
public struct MagMax: MergeMethod {
    public let name = "magmax"
    public var parameters: [(key: String, value: JSONValue)] { [] }

    /// Creates the method.
    public init() {}

    public func kernel(for tensor: MergeTensor) throws -> any MergeKernel {
        MagMaxKernel(base: tensor.base, models: tensor.models)
    }
}

struct MagMaxKernel: MergeKernel {
    let base: TensorSource
    let models: [any TaskVectorSource]

    func merge(start: Int, count: Int, into out: UnsafeMutablePointer<Float>, agreement: UnsafeMutablePointer<Int>) {
        var tile = MergeTile(base: base, models: models)
        defer { tile.deallocate() }
        forEachTile(count: count, tile: tile.capacity) { offset, c in
            tile.begin(start: start + offset, count: c)
            let best = out + offset
            best.initialize(repeating: 0, count: c)
            for k in models.indices {
                tile.loadTask(k, count: c)
                let t = tile.task
                for i in 0..<c {
                    best[i] = abs(t[i]) > abs(best[i]) ? t[i] : best[i]
                }
            }
            tile.recordAgreement(count: c, into: agreement)
        }
    }
}

/// DARE (drop and rescale): each task-vector element is dropped with probability `drop`,
/// survivors are divided by `1 - drop`, and the rescaled vectors are averaged uniformly.
///
/// The random draws come from a counter-based generator keyed by the seed, the tensor name,
/// the model index and the element index (`formats/methods.md`), so a seed reproduces the
/// same patch whatever the threading or block size.
public struct Dare: MergeMethod {
    public let name = "dare"
    /// Drop probability, in [0, 1).
    public let drop: Double
    /// The random seed.
    public let seed: UInt64

    /// Creates the method.
    public init(drop: Double, seed: UInt64) {
        self.drop = drop
        self.seed = seed
    }

    public var parameters: [(key: String, value: JSONValue)] {
        [("drop", .double(drop)), ("seed", .number(String(seed)))]
    }

    public func validate(modelCount n: Int) throws {
        guard drop >= 0, drop < 1 else {
            throw NegPatchError(.invalidArgument, file: nil, "--drop must be in [0, 1), got \(drop)")
        }
    }

    public func kernel(for tensor: MergeTensor) throws -> any MergeKernel {
        DareKernel(base: tensor.base, models: tensor.models, drop: drop, scale: Float(1 - drop), modelKeys: modelKeys(for: tensor))
    }

    /// The key of each model's draws for `tensor` (seed, tensor name, model index): the one
    /// derivation `dare` and `dare-ties` share, so that one seed drops the same elements.
    func modelKeys(for tensor: MergeTensor) -> [UInt64] {
        let h = DareStream.mix(seed ^ XXH64.hash(tensor.name))
        return (0..<tensor.models.count).map { DareStream.mix(h &+ UInt64($0)) }
    }
}

/// The counter-based generator of DARE's draws.
enum DareStream {
    /// SplitMix64's finaliser.
    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The uniform draw in [0, 1) for element `index` of the model keyed `key`.
    @inline(__always)
    static func uniform(key: UInt64, index: Int) -> Double {
        Double(mix(key &+ (UInt64(index) &+ 1) &* 0x9E37_79B9_7F4A_7C15) >> 11) * 0x1p-53
    }
}

struct DareKernel: MergeKernel {
    let base: TensorSource
    let models: [any TaskVectorSource]
    let drop: Double
    let scale: Float
    let modelKeys: [UInt64]

    func merge(start: Int, count: Int, into out: UnsafeMutablePointer<Float>, agreement: UnsafeMutablePointer<Int>) {
        var tile = MergeTile(base: base, models: models)
        defer { tile.deallocate() }
        let n = Float(models.count)
        forEachTile(count: count, tile: tile.capacity) { offset, c in
            tile.begin(start: start + offset, count: c)
            let sum = out + offset
            sum.initialize(repeating: 0, count: c)
            for k in models.indices {
                tile.loadTask(k, count: c)
                let t = tile.task
                let key = modelKeys[k]
                let first = start + offset
                for i in 0..<c {
                    let keep = DareStream.uniform(key: key, index: first + i) >= drop
                    sum[i] += keep ? t[i] / scale : 0
                }
            }
            for i in 0..<c { sum[i] = sum[i] / n }
            tile.recordAgreement(count: c, into: agreement)
        }
    }
}

/// DARE-TIES: DARE's drop and rescale on every task vector, then TIES' sign election and
/// disjoint mean over the rescaled values (mergekit's `dare_ties`, with DARE's
/// probabilistic drop in place of TIES' magnitude trim).
///
/// The drops are DARE's draws exactly (`formats/methods.md`): `dare` and `dare-ties` with
/// the same seed drop the same elements.
public struct DareTies: MergeMethod {
    public let name = "dare-ties"
    /// Drop probability, in [0, 1).
    public let drop: Double
    /// The random seed.
    public let seed: UInt64

    /// Creates the method.
    public init(drop: Double, seed: UInt64) {
        self.drop = drop
        self.seed = seed
    }

    /// DARE with the same parameters: its parameters, checks and draws are this method's.
    private var dare: Dare { Dare(drop: drop, seed: seed) }

    public var parameters: [(key: String, value: JSONValue)] { dare.parameters }

    public func validate(modelCount n: Int) throws {
        try dare.validate(modelCount: n)
    }

    public func kernel(for tensor: MergeTensor) throws -> any MergeKernel {
        DareTiesKernel(base: tensor.base, models: tensor.models, drop: drop, scale: Float(1 - drop),
                       modelKeys: dare.modelKeys(for: tensor))
    }
}

struct DareTiesKernel: MergeKernel {
    let base: TensorSource
    let models: [any TaskVectorSource]
    let drop: Double
    let scale: Float
    let modelKeys: [UInt64]

    func merge(start: Int, count: Int, into out: UnsafeMutablePointer<Float>, agreement: UnsafeMutablePointer<Int>) {
        let inputs = TileInputs(base: base, models: models)
        defer { inputs.deallocate() }
        let n = models.count
        // The rescaled value of model k at element i, or 0 where the draw drops it.
        @inline(__always) func rescaled(_ b: UnsafePointer<Float>, _ fts: UnsafePointer<UnsafePointer<Float>>, _ k: Int, _ i: Int, _ index: Int) -> Float {
            DareStream.uniform(key: modelKeys[k], index: index) >= drop ? (fts[k][i] - b[i]) / scale : 0
        }
        forEachTile(count: count, tile: inputs.capacity) { offset, c in
            let (b, fts) = inputs.load(start: start + offset, count: c)
            let o = out + offset
            for i in 0..<c {
                let index = start + offset + i
                var total: Float = 0, pos = 0, neg = 0
                for k in 0..<n {
                    let x = fts[k][i] - b[i]
                    pos += x > 0 ? 1 : 0
                    neg += x < 0 ? 1 : 0
                    total += rescaled(b, fts, k, i, index)
                }
                var sum: Float = 0, agreeing = 0
                for k in 0..<n {
                    let v = rescaled(b, fts, k, i, index)
                    let agrees = total >= 0 ? v > 0 : v < 0
                    sum += agrees ? v : 0
                    agreeing += agrees ? 1 : 0
                }
                o[i] = sum / Float(max(agreeing, 1))
                agreement[max(pos, neg)] &+= 1
            }
        }
    }
}

/// Magnitude prune: each task vector keeps its `density` share of largest magnitudes per
/// tensor (TIES' trim, ties at the threshold all kept), and the pruned vectors are averaged
/// over all n models, with no sign election.
public struct MagnitudePrune: MergeMethod {
    public let name = "magnitude-prune"
    /// Share of each task vector kept, in (0, 1].
    public let density: Double

    /// Creates the method.
    public init(density: Double) { self.density = density }

    public var parameters: [(key: String, value: JSONValue)] { [("density", .double(density))] }

    public func validate(modelCount n: Int) throws {
        try TiesMerging(density: density).validate(modelCount: n)
    }

    public func kernel(for tensor: MergeTensor) throws -> any MergeKernel {
        let keep = Int((density * Double(tensor.elements)).rounded(.down))
        let thresholds = keep == 0
            ? [Float](repeating: .infinity, count: tensor.models.count)
            : try TiesMerging.thresholds(base: tensor.base, models: tensor.models, elements: tensor.elements, rank: keep)
        return MagnitudePruneKernel(base: tensor.base, models: tensor.models, thresholds: thresholds)
    }
}

struct MagnitudePruneKernel: MergeKernel {
    let base: TensorSource
    let models: [any TaskVectorSource]
    let thresholds: [Float]

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
                let threshold = thresholds[k]
                for i in 0..<c {
                    sum[i] += t[i] != 0 && abs(t[i]) >= threshold ? t[i] : 0
                }
            }
            for i in 0..<c { sum[i] = sum[i] / n }
            tile.recordAgreement(count: c, into: agreement)
        }
    }
}

/// TIES-Merging (Yadav et al., 2023) with mergekit's per-tensor trim: each task vector keeps
/// its `density` share of largest magnitudes, a sign is elected per element from the sum of
/// the kept values (zero counts as +), and the kept values agreeing with it are averaged.
///
/// The threshold of each model is found by an exact two-pass radix select on the float bits
/// of |t|, so memory stays independent of the tensor's size and of n.
public struct TiesMerging: MergeMethod {
    public let name = "ties"
    /// Share of each task vector kept, in (0, 1].
    public let density: Double

    /// Creates the method.
    public init(density: Double) { self.density = density }

    public var parameters: [(key: String, value: JSONValue)] { [("density", .double(density))] }

    public func validate(modelCount n: Int) throws {
        guard density > 0, density <= 1 else {
            throw NegPatchError(.invalidArgument, file: nil, "--density must be in (0, 1], got \(density)")
        }
    }

    public func kernel(for tensor: MergeTensor) throws -> any MergeKernel {
        let keep = Int((density * Double(tensor.elements)).rounded(.down))
        let thresholds = try tensor.models.map { model in
            keep == 0 ? Float.infinity : try Self.threshold(base: tensor.base, model: model, elements: tensor.elements, rank: keep)
        }
        return TiesKernel(base: tensor.base, models: tensor.models, thresholds: thresholds)
    }

    /// The `rank`-th largest |ft - base| over the tensor (1-based, duplicates counted).
    static func threshold(base: TensorSource, model: TensorSource, elements: Int, rank: Int) throws -> Float {
        // |x| of a float orders like its bit pattern with the sign cleared, so select on the
        // high 16 bits first, then on the low 16 bits within the chosen bucket.
        let high = try magnitudeHistogram(base: base, model: model, elements: elements, bucket: nil)
        let (highBucket, above) = select(high, rank: rank)
        let low = try magnitudeHistogram(base: base, model: model, elements: elements, bucket: highBucket)
        let (lowBucket, _) = select(low, rank: rank - above)
        return Float(bitPattern: UInt32(highBucket) << 16 | UInt32(lowBucket))
    }

    /// The bucket holding the `rank`-th largest entry, and how many entries lie above it.
    private static func select(_ histogram: [Int], rank: Int) -> (bucket: Int, above: Int) {
        var above = 0
        for bucket in stride(from: histogram.count - 1, through: 0, by: -1) {
            if above + histogram[bucket] >= rank { return (bucket, above) }
            above += histogram[bucket]
        }
        return (0, above)
    }

    /// Counts of the high 16 bits of |x| (bucket nil), or of the low 16 bits of the elements
    /// whose high bits equal `bucket`. Chunks are counted in parallel.
    private static func magnitudeHistogram(base: TensorSource, model: TensorSource, elements: Int, bucket: Int?) throws -> [Int] {
        let chunk = 1 << 20
        let chunks = (elements + chunk - 1) / chunk
        let partial = try Parallel.map(chunks) { c -> [Int] in
            var counts = [Int](repeating: 0, count: 1 << 16)
            let inputs = TileInputs(base: base, models: [model])
            defer { inputs.deallocate() }
            let start = c * chunk
            counts.withUnsafeMutableBufferPointer { counts in
                forEachTile(count: min(chunk, elements - start), tile: inputs.capacity) { offset, length in
                    let (b, fts) = inputs.load(start: start + offset, count: length)
                    let ft = fts[0]
                    if let bucket {
                        for i in 0..<length {
                            let bits = (ft[i] - b[i]).bitPattern & 0x7FFF_FFFF
                            if Int(bits >> 16) == bucket { counts[Int(bits & 0xFFFF)] &+= 1 }
                        }
                    } else {
                        for i in 0..<length {
                            counts[Int((ft[i] - b[i]).bitPattern >> 16 & 0x7FFF)] &+= 1
                        }
                    }
                }
            }
            return counts
        }
        var total = [Int](repeating: 0, count: 1 << 16)
        for counts in partial {
            for i in 0..<total.count { total[i] &+= counts[i] }
        }
        return total
    }
}

struct TiesKernel: MergeKernel {
    let base: TensorSource
    let models: [TensorSource]
    let thresholds: [Float]

    func merge(start: Int, count: Int, into out: UnsafeMutablePointer<Float>, agreement: UnsafeMutablePointer<Int>) {
        let n = models.count
        // Accumulator 0: the elected-sign sum; 1..n: each model's kept values.
        var tile = MergeTile(base: base, models: models, extraArrays: n + 1)
        defer { tile.deallocate() }
        forEachTile(count: count, tile: tile.capacity) { offset, c in
            tile.begin(start: start + offset, count: c)
            let total = tile.accumulator(0)
            total.initialize(repeating: 0, count: c)
            for k in models.indices {
                tile.loadTask(k, count: c)
                let t = tile.task, kept = tile.accumulator(k + 1), threshold = thresholds[k]
                for i in 0..<c {
                    let x = t[i]
                    let v = x != 0 && abs(x) >= threshold ? x : 0
                    kept[i] = v
                    total[i] += v
                }
            }
            let o = out + offset
            let count = tile.task  // reused: agreeing count
            o.initialize(repeating: 0, count: c)
            count.initialize(repeating: 0, count: c)
            for k in 0..<n {
                let kept = tile.accumulator(k + 1)
                for i in 0..<c {
                    let v = kept[i]
                    let agrees = total[i] >= 0 ? v > 0 : v < 0
                    o[i] += agrees ? v : 0
                    count[i] += agrees ? 1 : 0
                }
            }
            for i in 0..<c {
                o[i] = o[i] / max(count[i], 1)
            }
            tile.recordAgreement(count: c, into: agreement)
        }
    }
}

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
        let thresholds = keep == 0
            ? [Float](repeating: .infinity, count: tensor.models.count)
            : try Self.thresholds(base: tensor.base, models: tensor.models, elements: tensor.elements, rank: keep)
        return TiesKernel(base: tensor.base, models: tensor.models, thresholds: thresholds)
    }

    /// Models whose histograms are counted in one pass over the tensor: at most this many
    /// histograms per thread, so memory stays flat in n.
    static let modelsPerPass = 8

    /// For every model, the `rank`-th largest |ft - base| over the tensor (1-based,
    /// duplicates counted).
    ///
    /// |x| of a float orders like its bit pattern with the sign cleared, so the select runs
    /// on the high 16 bits first, then on the low 16 bits within the chosen bucket: two
    /// passes over the tensor, each reading the base once for up to `modelsPerPass` models.
    static func thresholds(base: TensorSource, models: [any TaskVectorSource], elements: Int, rank: Int) throws -> [Float] {
        var thresholds: [Float] = []
        for first in stride(from: 0, to: models.count, by: modelsPerPass) {
            let group = Array(models[first..<min(models.count, first + modelsPerPass)])
            let high = try magnitudeHistograms(base: base, models: group, elements: elements, within: nil)
            let picks = group.indices.map { k in select(high[k * highBuckets ..< (k + 1) * highBuckets], rank: rank) }
            let low = try magnitudeHistograms(base: base, models: group, elements: elements, within: picks.map(\.bucket))
            for (k, pick) in picks.enumerated() {
                let (lowBucket, _) = select(low[k * lowBuckets ..< (k + 1) * lowBuckets], rank: rank - pick.above)
                thresholds.append(Float(bitPattern: UInt32(pick.bucket) << 16 | UInt32(lowBucket)))
            }
        }
        return thresholds
    }

    /// Buckets of the high pass (the 15 magnitude bits above the low 16) and of the low pass.
    private static let highBuckets = 1 << 15, lowBuckets = 1 << 16

    /// The bucket holding the `rank`-th largest entry, and how many entries lie above it.
    private static func select(_ histogram: ArraySlice<Int>, rank: Int) -> (bucket: Int, above: Int) {
        var above = 0
        for (bucket, count) in histogram.enumerated().reversed() {
            if above + count >= rank { return (bucket, above) }
            above += count
        }
        return (0, above)
    }

    /// Per model, one after the other, counts of the high 16 bits of |x| (`within` nil,
    /// `highBuckets` each), or of the low 16 bits of the elements whose high bits equal
    /// `within[k]` (`lowBuckets` each). The tensor is split into one range per thread, each
    /// counted into 32-bit counters.
    private static func magnitudeHistograms(base: TensorSource, models: [any TaskVectorSource], elements: Int,
                                            within: [Int]?) throws -> [Int] {
        let buckets = within == nil ? highBuckets : lowBuckets
        // Ranges of at most 2^31 elements, so no 32-bit counter can overflow.
        let ranges = elements < 1 << 16 ? 1 : max(ProcessorCount.active, (elements + (1 << 31) - 1) >> 31)
        let rangeSize = (elements + ranges - 1) / ranges
        let partial = try Parallel.map(ranges) { r -> [UInt32] in
            let start = r * rangeSize
            let count = max(0, min(rangeSize, elements - start))
            var counts = [UInt32](repeating: 0, count: models.count * buckets)
            let inputs = TileInputs(base: base, models: models)
            defer { inputs.deallocate() }
            counts.withUnsafeMutableBufferPointer { counts in
                forEachTile(count: count, tile: inputs.capacity) { offset, length in
                    let (b, fts) = inputs.load(start: start + offset, count: length)
                    for k in models.indices {
                        let histogram = counts.baseAddress! + k * buckets
                        if let within {
                            countLow(b, fts[k], length, bucket: UInt32(within[k]), into: histogram)
                        } else {
                            countHigh(b, fts[k], length, into: histogram)
                        }
                    }
                }
            }
            return counts
        }
        var totals = [Int](repeating: 0, count: models.count * buckets)
        totals.withUnsafeMutableBufferPointer { totals in
            for counts in partial {
                counts.withUnsafeBufferPointer { counts in
                    for j in counts.indices { totals[j] &+= Int(counts[j]) }
                }
            }
        }
        return totals
    }

    @inline(__always)
    private static func countHigh(_ b: UnsafePointer<Float>, _ ft: UnsafePointer<Float>, _ count: Int,
                                  into histogram: UnsafeMutablePointer<UInt32>) {
        // Buckets of eight elements at a time in vector registers, then eight increments.
        var i = 0
        while i + 8 <= count {
            let x = UnsafeRawPointer(ft + i).loadUnaligned(as: SIMD8<Float>.self)
                - UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            let buckets = unsafeBitCast(x, to: SIMD8<UInt32>.self) &>> 16 & 0x7FFF
            histogram[Int(buckets[0])] &+= 1
            histogram[Int(buckets[1])] &+= 1
            histogram[Int(buckets[2])] &+= 1
            histogram[Int(buckets[3])] &+= 1
            histogram[Int(buckets[4])] &+= 1
            histogram[Int(buckets[5])] &+= 1
            histogram[Int(buckets[6])] &+= 1
            histogram[Int(buckets[7])] &+= 1
            i += 8
        }
        while i < count {
            histogram[Int((ft[i] - b[i]).bitPattern >> 16 & 0x7FFF)] &+= 1
            i += 1
        }
    }

    @inline(__always)
    private static func countLow(_ b: UnsafePointer<Float>, _ ft: UnsafePointer<Float>, _ count: Int, bucket: UInt32,
                                 into histogram: UnsafeMutablePointer<UInt32>) {
        @inline(__always) func countOne(_ i: Int) {
            let bits = (ft[i] - b[i]).bitPattern & 0x7FFF_FFFF
            if bits >> 16 == bucket { histogram[Int(bits & 0xFFFF)] &+= 1 }
        }
        // Few elements fall in the chosen bucket: eight are tested at once, and only a
        // group holding one is counted element by element.
        let wanted = SIMD8<UInt32>(repeating: bucket)
        var i = 0
        while i + 8 <= count {
            let x = UnsafeRawPointer(ft + i).loadUnaligned(as: SIMD8<Float>.self)
                - UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            if any(unsafeBitCast(x, to: SIMD8<UInt32>.self) &>> 16 & 0x7FFF .== wanted) {
                for j in i..<(i + 8) { countOne(j) }
            }
            i += 8
        }
        while i < count {
            countOne(i)
            i += 1
        }
    }
}

struct TiesKernel: MergeKernel {
    let base: TensorSource
    let models: [any TaskVectorSource]
    let thresholds: [Float]

    private typealias Lanes = SIMD8<Float>
    private typealias Counts = LaneHistograms.Counts

    func merge(start: Int, count: Int, into out: UnsafeMutablePointer<Float>, agreement: UnsafeMutablePointer<Int>) {
        withLaneTiles(base: base, models: models, agreement: agreement) { inputs, histogram in
            thresholds.withUnsafeBufferPointer { thresholds in
                forEachTile(count: count, tile: inputs.capacity) { offset, c in
                    let (b, fts) = inputs.load(start: start + offset, count: c)
                    let vectorised = c - c % LaneHistograms.lanes
                    lanes(b, fts, thresholds.baseAddress!, out + offset, vectorised, histogram)
                    scalarTail(b, fts, thresholds.baseAddress!, out + offset, from: vectorised, to: c, agreement)
                }
            }
        }
    }

    /// Eight elements at a time with every accumulator in registers: one sweep over the
    /// models elects the sign from the kept values, a second (from the same cached tiles)
    /// sums the kept values that agree with it.
    @inline(__always)
    private func lanes(_ b: UnsafePointer<Float>, _ fts: UnsafePointer<UnsafePointer<Float>>, _ thresholds: UnsafePointer<Float>,
                       _ o: UnsafeMutablePointer<Float>, _ count: Int, _ histogram: LaneHistograms) {
        let n = models.count
        let zero = Lanes.zero
        @inline(__always) func kept(_ k: Int, _ baseLanes: Lanes, _ i: Int) -> Lanes {
            let x = UnsafeRawPointer(fts[k] + i).loadUnaligned(as: Lanes.self) - baseLanes
            let magnitude = unsafeBitCast(unsafeBitCast(x, to: SIMD8<UInt32>.self) & 0x7FFF_FFFF, to: Lanes.self)
            return zero.replacing(with: x, where: (x .!= zero) .& (magnitude .>= Lanes(repeating: thresholds[k])))
        }
        var i = 0
        while i < count {
            let baseLanes = UnsafeRawPointer(b + i).loadUnaligned(as: Lanes.self)
            var total = zero, pos = Counts.zero, neg = Counts.zero
            for k in 0..<n {
                let x = UnsafeRawPointer(fts[k] + i).loadUnaligned(as: Lanes.self) - baseLanes
                pos &+= Counts.zero.replacing(with: 1, where: x .> zero)
                neg &+= Counts.zero.replacing(with: 1, where: x .< zero)
                total += kept(k, baseLanes, i)
            }
            let positive = total .>= zero
            var sum = zero, agreeing = Counts.zero
            for k in 0..<n {
                let v = kept(k, baseLanes, i)
                let agrees = (positive .& (v .> zero)) .| (.!positive .& (v .< zero))
                sum += zero.replacing(with: v, where: agrees)
                agreeing &+= Counts.zero.replacing(with: 1, where: agrees)
            }
            var divisor = LaneHistograms.float(agreeing)
            divisor.replace(with: 1, where: divisor .< 1)
            UnsafeMutableRawPointer(o + i).storeBytes(of: sum / divisor, as: Lanes.self)
            histogram.record(pos.replacing(with: neg, where: neg .> pos))
            i += LaneHistograms.lanes
        }
    }

    private func scalarTail(_ b: UnsafePointer<Float>, _ fts: UnsafePointer<UnsafePointer<Float>>, _ thresholds: UnsafePointer<Float>,
                            _ o: UnsafeMutablePointer<Float>, from first: Int, to end: Int, _ agreement: UnsafeMutablePointer<Int>) {
        for i in first..<end {
            var total: Float = 0, pos = 0, neg = 0
            for k in 0..<models.count {
                let x = fts[k][i] - b[i]
                pos += x > 0 ? 1 : 0
                neg += x < 0 ? 1 : 0
                total += x != 0 && abs(x) >= thresholds[k] ? x : 0
            }
            var sum: Float = 0, agreeing = 0
            for k in 0..<models.count {
                let x = fts[k][i] - b[i]
                let v = x != 0 && abs(x) >= thresholds[k] ? x : 0
                let agrees = total >= 0 ? v > 0 : v < 0
                sum += agrees ? v : 0
                agreeing += agrees ? 1 : 0
            }
            o[i] = sum / Float(max(agreeing, 1))
            agreement[max(pos, neg)] &+= 1
        }
    }
}

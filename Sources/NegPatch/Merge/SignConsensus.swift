/// Sign-consensus merging: NegMerge, and its relaxed form.
///
/// NegMerge keeps an element only when all n task vectors are nonzero with the same sign,
/// and stores their float32 mean (sum in model order, divided by n). The relaxed form
/// (`consensus`) keeps it when at least `minAgree` share the majority sign, averaging those.
/// With `minAgree == n` both are identical, bit for bit.
public struct SignConsensus: MergeMethod {
    /// `negmerge` or `consensus`.
    public let name: String
    /// How many task vectors must share the majority sign; nil means all n (NegMerge).
    public let minAgree: Int?

    /// NegMerge: every task vector must agree.
    public static let negMerge = SignConsensus(name: "negmerge", minAgree: nil)

    /// Relaxed consensus with at least `minAgree` agreeing task vectors.
    public static func relaxed(minAgree: Int) -> SignConsensus {
        SignConsensus(name: "consensus", minAgree: minAgree)
    }

    public var parameters: [(key: String, value: JSONValue)] {
        minAgree.map { [("min_agree", .int($0))] } ?? []
    }

    public func validate(modelCount n: Int) throws {
        if let minAgree, minAgree < 1 || minAgree > n {
            throw NegPatchError(.invalidArgument, file: nil, "--min-agree must be between 1 and n = \(n), got \(minAgree)")
        }
    }

    public func kernel(for tensor: MergeTensor) throws -> any MergeKernel {
        SignConsensusKernel(base: tensor.base, models: tensor.models, minAgree: minAgree ?? tensor.models.count)
    }
}

struct SignConsensusKernel: MergeKernel {
    let base: TensorSource
    let models: [any TaskVectorSource]
    let minAgree: Int

    /// Elements per step of the vector loops.
    private static let lanes = LaneHistograms.lanes
    private typealias Lanes = SIMD8<Float>
    private typealias Counts = LaneHistograms.Counts

    func merge(start: Int, count: Int, into out: UnsafeMutablePointer<Float>, agreement: UnsafeMutablePointer<Int>) {
        withLaneTiles(base: base, models: models, agreement: agreement) { inputs, histogram in
            forEachTile(count: count, tile: inputs.capacity) { offset, c in
                if inputs.readsStoredBFloat16 {
                    let (b, fts) = inputs.loadStored(start: start + offset, count: c)
                    tile(BFloat16Tile.self, b, fts, out + offset, c, histogram, agreement)
                } else {
                    let (b, fts) = inputs.load(start: start + offset, count: c)
                    fts.withMemoryRebound(to: UnsafeRawPointer.self, capacity: models.count) { fts in
                        tile(Float32Tile.self, UnsafeRawPointer(b), fts, out + offset, c, histogram, agreement)
                    }
                }
            }
        }
    }

    @inline(__always)
    private func tile<E: TileElement>(_: E.Type, _ b: UnsafeRawPointer, _ fts: UnsafePointer<UnsafeRawPointer>,
                                      _ o: UnsafeMutablePointer<Float>, _ c: Int, _ histogram: LaneHistograms,
                                      _ agreement: UnsafeMutablePointer<Int>) {
        let vectorised = c - c % Self.lanes
        if minAgree == models.count {
            unanimous(E.self, b, fts, o, vectorised, histogram)
        } else {
            relaxed(E.self, b, fts, o, vectorised, histogram)
        }
        scalarTail(E.self, b, fts, o, from: vectorised, to: c, agreement)
    }

    /// NegMerge proper: one running sum suffices, since a kept element has every task vector
    /// of one sign. Eight elements at a time, every accumulator in registers while the n
    /// models stream through; each input is read once.
    @inline(__always)
    private func unanimous<E: TileElement>(_: E.Type, _ b: UnsafeRawPointer, _ fts: UnsafePointer<UnsafeRawPointer>, _ o: UnsafeMutablePointer<Float>,
                           _ count: Int, _ histogram: LaneHistograms) {
        let n = models.count
        let zero = Lanes.zero, all = Counts(repeating: Int32(n)), divisor = Lanes(repeating: Float(n))
        var i = 0
        while i < count {
            let baseLanes = E.lanes(b, i)
            var sum = zero, pos = Counts.zero, neg = Counts.zero
            for k in 0..<n {
                let x = E.lanes(fts[k], i) - baseLanes
                sum += x
                pos &+= Counts.zero.replacing(with: 1, where: x .> zero)
                neg &+= Counts.zero.replacing(with: 1, where: x .< zero)
            }
            let keep = (pos .== all) .| (neg .== all)
            UnsafeMutableRawPointer(o + i).storeBytes(of: zero.replacing(with: sum / divisor, where: keep), as: Lanes.self)
            histogram.record(pos.replacing(with: neg, where: neg .> pos))
            i += Self.lanes
        }
    }

    /// Relaxed consensus: the sums of positive and of negative values are kept apart.
    @inline(__always)
    private func relaxed<E: TileElement>(_: E.Type, _ b: UnsafeRawPointer, _ fts: UnsafePointer<UnsafeRawPointer>, _ o: UnsafeMutablePointer<Float>,
                         _ count: Int, _ histogram: LaneHistograms) {
        let n = models.count
        let zero = Lanes.zero, required = Counts(repeating: Int32(minAgree))
        var i = 0
        while i < count {
            let baseLanes = E.lanes(b, i)
            var sumPos = zero, sumNeg = zero, pos = Counts.zero, neg = Counts.zero
            for k in 0..<n {
                let x = E.lanes(fts[k], i) - baseLanes
                let isPos = x .> zero, isNeg = x .< zero
                // Adding +0 leaves a sum unchanged, so each is exactly the model-order sum of
                // the values of its sign.
                sumPos += zero.replacing(with: x, where: isPos)
                sumNeg += zero.replacing(with: x, where: isNeg)
                pos &+= Counts.zero.replacing(with: 1, where: isPos)
                neg &+= Counts.zero.replacing(with: 1, where: isNeg)
            }
            let keepPos = (pos .> neg) .& (pos .>= required)
            let keepNeg = (neg .> pos) .& (neg .>= required)
            let result = zero.replacing(with: sumPos / LaneHistograms.float(pos), where: keepPos).replacing(with: sumNeg / LaneHistograms.float(neg), where: keepNeg)
            UnsafeMutableRawPointer(o + i).storeBytes(of: result, as: Lanes.self)
            histogram.record(pos.replacing(with: neg, where: neg .> pos))
            i += Self.lanes
        }
    }

    private func scalarTail<E: TileElement>(_: E.Type, _ b: UnsafeRawPointer, _ fts: UnsafePointer<UnsafeRawPointer>, _ o: UnsafeMutablePointer<Float>,
                                            from first: Int, to end: Int, _ agreement: UnsafeMutablePointer<Int>) {
        for i in first..<end {
            var sumPos: Float = 0, sumNeg: Float = 0, pos: Float = 0, neg: Float = 0
            for k in 0..<models.count {
                let x = E.scalar(fts[k], i) - E.scalar(b, i)
                sumPos += x > 0 ? x : 0
                sumNeg += x < 0 ? x : 0
                pos += x > 0 ? 1 : 0
                neg += x < 0 ? 1 : 0
            }
            let keepPos = pos > neg && pos >= Float(minAgree)
            let keepNeg = neg > pos && neg >= Float(minAgree)
            o[i] = keepPos ? sumPos / pos : (keepNeg ? sumNeg / neg : 0)
            agreement[Int(max(pos, neg))] &+= 1
        }
    }
}

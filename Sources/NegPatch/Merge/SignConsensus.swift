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
    let models: [TensorSource]
    let minAgree: Int

    func merge(start: Int, count: Int, into out: UnsafeMutablePointer<Float>, agreement: UnsafeMutablePointer<Int>) {
        let tile = mergeTile
        // One allocation for the six per-tile arrays.
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: tile * 6)
        defer { scratch.deallocate() }
        let base32 = scratch, t = scratch + tile
        let sumPos = scratch + 2 * tile, sumNeg = scratch + 3 * tile
        let pos = scratch + 4 * tile, neg = scratch + 5 * tile
        let required = Float(minAgree)
        var tileStart = 0
        while tileStart < count {
            let c = min(tile, count - tileStart)
            base.load(start + tileStart, c, into: base32)
            sumPos.initialize(repeating: 0, count: c)
            sumNeg.initialize(repeating: 0, count: c)
            pos.initialize(repeating: 0, count: c)
            neg.initialize(repeating: 0, count: c)
            for model in models {
                model.load(start + tileStart, c, into: t)
                for i in 0..<c {
                    let x = t[i] - base32[i]
                    let isPos = x > 0
                    let isNeg = x < 0
                    // Adding +0 leaves a sum unchanged, so each sum is exactly the model-order
                    // sum of the values of its sign.
                    sumPos[i] += isPos ? x : 0
                    sumNeg[i] += isNeg ? x : 0
                    pos[i] += isPos ? 1 : 0
                    neg[i] += isNeg ? 1 : 0
                }
            }
            let o = out + tileStart
            for i in 0..<c {
                let p = pos[i], q = neg[i]
                let keepPos = p > q && p >= required
                let keepNeg = q > p && q >= required
                o[i] = keepPos ? sumPos[i] / p : (keepNeg ? sumNeg[i] / q : 0)
                agreement[Int(max(p, q))] &+= 1
            }
            tileStart += c
        }
    }
}

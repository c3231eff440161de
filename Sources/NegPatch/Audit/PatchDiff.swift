/// Running co-moments of paired values, merged exactly as Chan et al.'s parallel
/// algorithm does, so blocks can be summarised independently and combined in any order.
public struct PairMoments: Sendable, Equatable {
    /// Pairs seen.
    public var count = 0
    /// Mean of the first values.
    public var meanA = 0.0
    /// Mean of the second values.
    public var meanB = 0.0
    /// Sum of squared deviations of the first values.
    public var m2A = 0.0
    /// Sum of squared deviations of the second values.
    public var m2B = 0.0
    /// Sum of products of the deviations.
    public var coMoment = 0.0

    /// No pairs.
    public init() {}

    /// Pearson's correlation, or nil with fewer than two pairs or a constant side.
    public var correlation: Double? {
        guard count >= 2, m2A > 0, m2B > 0 else { return nil }
        // sqrt(x * x) == x exactly, so identical sides give exactly 1.
        return min(1, max(-1, coMoment / (m2A * m2B).squareRoot()))
    }

    /// Adds the moments of other, disjoint pairs.
    public mutating func add(_ other: PairMoments) {
        guard other.count > 0 else { return }
        guard count > 0 else {
            self = other
            return
        }
        let n1 = Double(count), n2 = Double(other.count), n = n1 + n2
        let deltaA = other.meanA - meanA, deltaB = other.meanB - meanB
        let weight = n1 * n2 / n
        m2A += other.m2A + deltaA * deltaA * weight
        m2B += other.m2B + deltaB * deltaB * weight
        coMoment += other.coMoment + deltaA * deltaB * weight
        meanA += deltaA * n2 / n
        meanB += deltaB * n2 / n
        count += other.count
    }
}

/// How two task vectors compare over a set of elements.
public struct DiffFigures: Sendable, Equatable {
    /// Elements compared.
    public var elements = 0
    /// Nonzero elements of the first patch.
    public var nonzerosA = 0
    /// Nonzero elements of the second patch.
    public var nonzerosB = 0
    /// Elements nonzero in both.
    public var common = 0
    /// Common elements whose values have the same sign.
    public var sameSign = 0
    /// Moments of the common elements' values (pairs where both are finite).
    public var moments = PairMoments()

    /// No elements.
    public init() {}

    /// Elements nonzero in either patch.
    public var union: Int { nonzerosA + nonzerosB - common }

    /// Jaccard overlap of the masks, `common / union`; nil when neither patch has a nonzero.
    public var jaccard: Double? { union == 0 ? nil : Double(common) / Double(union) }

    /// Share of the common elements with equal signs; nil when there are none.
    public var signAgreement: Double? { common == 0 ? nil : Double(sameSign) / Double(common) }

    /// Pearson correlation of the common elements' values; nil with fewer than two of them
    /// or when one side is constant.
    public var correlation: Double? { moments.correlation }

    /// Adds the figures of other, disjoint elements.
    public mutating func add(_ other: DiffFigures) {
        elements += other.elements
        nonzerosA += other.nonzerosA
        nonzerosB += other.nonzerosB
        common += other.common
        sameSign += other.sameSign
        moments.add(other.moments)
    }

    /// Compares `count` dense values of the two task vectors.
    public static func of(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> DiffFigures {
        var figures = DiffFigures()
        figures.elements = count
        var nonzerosA = 0, nonzerosB = 0, common = 0, sameSign = 0, pairs = 0
        var sumA = 0.0, sumB = 0.0
        for i in 0..<count {
            let x = a[i], y = b[i]
            let inA = x != 0, inB = y != 0
            if inA { nonzerosA += 1 }
            if inB { nonzerosB += 1 }
            if inA && inB {
                common += 1
                if x.sign == y.sign { sameSign += 1 }
                if x.isFinite && y.isFinite {
                    pairs += 1
                    sumA += Double(x)
                    sumB += Double(y)
                }
            }
        }
        figures.nonzerosA = nonzerosA
        figures.nonzerosB = nonzerosB
        figures.common = common
        figures.sameSign = sameSign
        guard pairs > 0 else { return figures }
        // Second pass over the same pairs: deviations from the block's means.
        let meanA = sumA / Double(pairs), meanB = sumB / Double(pairs)
        var m2A = 0.0, m2B = 0.0, co = 0.0
        for i in 0..<count {
            let x = a[i], y = b[i]
            guard x != 0, y != 0, x.isFinite, y.isFinite else { continue }
            let dA = Double(x) - meanA, dB = Double(y) - meanB
            m2A += dA * dA
            m2B += dB * dB
            co += dA * dB
        }
        figures.moments = PairMoments(count: pairs, meanA: meanA, meanB: meanB, m2A: m2A, m2B: m2B, coMoment: co)
        return figures
    }
}

extension PairMoments {
    init(count: Int, meanA: Double, meanB: Double, m2A: Double, m2B: Double, coMoment: Double) {
        self.count = count
        self.meanA = meanA
        self.meanB = meanB
        self.m2A = m2A
        self.m2B = m2B
        self.coMoment = coMoment
    }
}

/// How one tensor compares.
public struct TensorDiff: Sendable, Equatable {
    /// Tensor name.
    public var name: String
    /// Its shape.
    public var shape: [Int]
    /// The figures.
    public var figures: DiffFigures
}

/// The comparison of two patches of the same base.
public struct PatchDiffReport: Sendable, Equatable {
    /// The first patch's path.
    public var pathA: String
    /// The second patch's path.
    public var pathB: String
    /// Their metadata.
    public var metadataA: PatchMetadata
    /// The second patch's metadata.
    public var metadataB: PatchMetadata
    /// Whether the base fingerprints are equal (as sets of entries).
    public var sameBase: Bool
    /// Tensors in both patches (in the first patch's order), selected by the filter.
    public var tensors: [TensorDiff]
    /// Selected tensors of the first patch that the second lacks.
    public var onlyInA: [String]
    /// Selected tensors of the second patch that the first lacks.
    public var onlyInB: [String]
    /// All compared tensors together.
    public var total: DiffFigures
}

/// Compares the task vectors of two patches element by element: Jaccard overlap of the
/// masks, sign agreement and correlation of the values where both are nonzero.
///
/// Every block of both patches is decoded (which checks their checksums); blocks are
/// compared in parallel, a few at a time, and the two patches may use different block
/// sizes.
public enum PatchDiff {
    /// Compares `a` with `b`. Throws `.mismatch` when their base fingerprints differ (unless
    /// `ignoreBaseMismatch`) or a tensor's shape differs, and any error of decoding a block.
    public static func compare(_ a: any PatchSource, _ b: any PatchSource, filter: TensorFilter? = nil,
                               ignoreBaseMismatch: Bool = false, progress: ProgressHandler? = nil) throws -> PatchDiffReport {
        let ia = a.index, ib = b.index
        let differences = PatchVerifier.fingerprintMismatches(ib.fingerprint, expected: ia.fingerprint)
        if !differences.isEmpty && !ignoreBaseMismatch {
            throw NegPatchError(.mismatch, file: b.path,
                                "made for another base than \(a.path): the base fingerprints differ in \(differences.count) "
                                + "tensor\(differences.count == 1 ? "" : "s"), first '\(differences[0].tensor)' "
                                + "(use --ignore-base-mismatch to compare anyway)")
        }
        let selectedA = ia.tensors.indices.filter { filter?.matches(ia.tensors[$0].name) ?? true }
        let positionInB = Dictionary(ib.tensors.enumerated().map { (TensorName($1.name), $0) }, uniquingKeysWith: { first, _ in first })
        var pairs: [(a: Int, b: Int)] = []
        var onlyInA: [String] = []
        for t in selectedA {
            let tensor = ia.tensors[t]
            guard let u = positionInB[TensorName(tensor.name)] else {
                onlyInA.append(tensor.name)
                continue
            }
            guard ib.tensors[u].shape == tensor.shape else {
                throw NegPatchError(.mismatch, file: b.path, tensor: tensor.name,
                                    "shape \(describeShape(ib.tensors[u].shape)) differs from \(describeShape(tensor.shape)) in \(a.path)")
            }
            pairs.append((t, u))
        }
        let namesA = Set(ia.tensors.map { TensorName($0.name) })
        let onlyInB = ib.tensors.map(\.name).filter { !namesA.contains(TensorName($0)) && (filter?.matches($0) ?? true) }

        var items: [(pair: Int, block: Int, elements: Int)] = []
        for (p, pair) in pairs.enumerated() {
            let tensor = ia.tensors[pair.a]
            for block in tensor.blocks.indices { items.append((p, block, tensor.elementCount(ofBlock: block))) }
        }
        let total = items.reduce(0) { $0 + $1.elements }
        var figures = [DiffFigures](repeating: DiffFigures(), count: pairs.count)
        var done = 0
        var start = 0
        while start < items.count {
            let slice = Array(items[start..<min(items.count, start + PatchAudit.window)])
            let results = try Parallel.map(slice.count) { j -> DiffFigures in
                let item = slice[j]
                return try compareBlock(a, b, pair: pairs[item.pair], block: item.block)
            }
            for (j, result) in results.enumerated() {
                figures[slice[j].pair].add(result)
                done += slice[j].elements
            }
            progress?(done, total)
            start += slice.count
        }
        // Tensors without blocks (no elements) still appear, with empty figures.
        let tensors = pairs.enumerated().map { p, pair in
            TensorDiff(name: ia.tensors[pair.a].name, shape: ia.tensors[pair.a].shape, figures: figures[p])
        }
        var sum = DiffFigures()
        for tensor in tensors { sum.add(tensor.figures) }
        return PatchDiffReport(pathA: a.path, pathB: b.path, metadataA: ia.metadata, metadataB: ib.metadata,
                               sameBase: differences.isEmpty, tensors: tensors, onlyInA: onlyInA, onlyInB: onlyInB, total: sum)
    }

    /// Compares block `block` of the first patch's tensor with the same elements of the
    /// second patch (one or more of its blocks).
    private static func compareBlock(_ a: any PatchSource, _ b: any PatchSource, pair: (a: Int, b: Int), block: Int) throws -> DiffFigures {
        let tensorA = a.index.tensors[pair.a], tensorB = b.index.tensors[pair.b]
        let count = tensorA.elementCount(ofBlock: block)
        let start = block * tensorA.blockElements
        let denseA = try Memory.allocate(Float.self, count: count, for: "comparing block \(block) of tensor '\(tensorA.name)'")
        defer { Memory.free(denseA) }
        let denseB = try Memory.allocate(Float.self, count: count, for: "comparing block \(block) of tensor '\(tensorA.name)'")
        defer { Memory.free(denseB) }
        try a.block(tensor: pair.a, block: block).expand(into: denseA)
        var cursor = start
        while cursor < start + count {
            let blockB = cursor / tensorB.blockElements
            let startB = blockB * tensorB.blockElements
            let countB = tensorB.elementCount(ofBlock: blockB)
            let decoded = try b.block(tensor: pair.b, block: blockB)
            let end = min(start + count, startB + countB)
            if startB == cursor && countB == end - cursor {
                decoded.expand(into: denseB + (cursor - start))
            } else {
                let scratch = try Memory.allocate(Float.self, count: countB, for: "comparing tensor '\(tensorB.name)'")
                defer { Memory.free(scratch) }
                decoded.expand(into: scratch)
                (denseB + (cursor - start)).update(from: scratch + (cursor - startB), count: end - cursor)
            }
            cursor = end
        }
        return DiffFigures.of(denseA, denseB, count: count)
    }
}

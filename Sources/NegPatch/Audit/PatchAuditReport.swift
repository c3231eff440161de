/// Figures of a set of tensors that the patch's index alone gives (no part is read).
public struct IndexFigures: Sendable, Equatable {
    /// Tensors counted.
    public var tensors = 0
    /// Their elements.
    public var elements = 0
    /// Their nonzero elements.
    public var nonzeros = 0
    /// Stored blocks.
    public var blocks = 0
    /// Blocks stored dense (every value, no mask).
    public var denseBlocks = 0
    /// Bytes on disk of the mask parts.
    public var maskBytes = 0
    /// Bytes on disk of the values parts.
    public var valuesBytes = 0
    /// Sign-agreement counts (entry m: elements where m task vectors share the majority
    /// sign), or nil when some tensor does not record them.
    public var agreement: [Int]?

    /// Empty figures.
    public init() {}

    /// Bytes on disk of the parts: mask plus values.
    public var storedBytes: Int { maskBytes + valuesBytes }

    /// Share of nonzero elements (0 for no elements).
    public var density: Double { elements == 0 ? 0 : Double(nonzeros) / Double(elements) }

    /// Bits on disk per element: `storedBytes * 8 / elements` (0 for no elements).
    public var bitsPerElement: Double { elements == 0 ? 0 : Double(storedBytes) * 8 / Double(elements) }

    /// Adds the figures of other tensors. The agreement counts are summed when both sides
    /// have them with the same length, and become nil otherwise.
    public mutating func add(_ other: IndexFigures) {
        let wasEmpty = tensors == 0
        tensors += other.tensors
        elements += other.elements
        nonzeros += other.nonzeros
        blocks += other.blocks
        denseBlocks += other.denseBlocks
        maskBytes += other.maskBytes
        valuesBytes += other.valuesBytes
        if wasEmpty {
            agreement = other.agreement
        } else if let mine = agreement, let theirs = other.agreement, mine.count == theirs.count {
            agreement = zip(mine, theirs).map { $0 + $1 }
        } else {
            agreement = nil
        }
    }
}

/// What audit found about one tensor.
public struct TensorAudit: Sendable, Equatable {
    /// Tensor name.
    public var name: String
    /// Its layer (`PatchLayers`).
    public var layer: String
    /// The base tensor's dtype.
    public var dtype: DType
    /// Its shape.
    public var shape: [Int]
    /// Index figures (`tensors == 1`).
    public var index: IndexFigures
    /// Value statistics, or nil when they were not computed (or a block could not be read).
    public var values: ValueStatistics?
}

/// What audit found about a group of tensors: a layer or the whole selection.
public struct GroupAudit: Sendable, Equatable {
    /// The layer's name (`total` for the whole selection).
    public var name: String
    /// Positions of its tensors in `PatchAuditReport.tensors`.
    public var members: [Int]
    /// Summed index figures.
    public var index: IndexFigures
    /// Summed value statistics, or nil unless every member has them.
    public var values: ValueStatistics?
}

/// Which stored bytes an audit or verification checked, and what it found.
public struct IntegrityStatus: Sendable, Equatable {
    /// The overall verdict.
    public enum Verdict: String, Sendable {
        /// Every block of the patch was read and every checksum matched.
        case verified
        /// Only some blocks were read (a `--tensors` selection); those matched.
        case partial
        /// Only the index was read and checked; the parts were not.
        case notChecked = "not-checked"
        /// Some block failed its checks.
        case damaged
    }

    /// Blocks in the patch.
    public var blocksTotal: Int
    /// Blocks read and checked.
    public var blocksChecked: Int
    /// Stored parts in the patch (masks and values).
    public var partsTotal: Int
    /// Parts read and checked.
    public var partsChecked: Int
    /// One message per block that failed, naming the tensor and block.
    public var problems: [String]

    /// The verdict these counts give.
    public var verdict: Verdict {
        if !problems.isEmpty { return .damaged }
        if blocksChecked == 0 && blocksTotal > 0 { return .notChecked }
        return blocksChecked == blocksTotal ? .verified : .partial
    }
}

/// The result of auditing a patch: per tensor, per layer and in total, with the metadata
/// and an honest account of what was read.
public struct PatchAuditReport: Sendable, Equatable {
    /// The patch's path.
    public var path: String
    /// Its format (`negpatch`, `hdf5`).
    public var format: String
    /// Its size on disk.
    public var fileSize: Int
    /// How it was made.
    public var metadata: PatchMetadata
    /// Tensors in the base fingerprint.
    public var fingerprintTensors: Int
    /// Tensors in the patch (before any selection).
    public var patchTensors: Int
    /// Bytes of all parts of the patch (before any selection).
    public var patchStoredBytes: Int
    /// The `--tensors` expression, if any.
    public var filter: String?
    /// The selected tensors, in patch order.
    public var tensors: [TensorAudit]
    /// Their layers, in order of first appearance.
    public var layers: [GroupAudit]
    /// All selected tensors together.
    public var total: GroupAudit
    /// Whether value statistics were computed.
    public var valuesComputed: Bool
    /// Why value statistics are missing, when they are.
    public var valuesNote: String?
    /// What was checked. The index checksum and structure are always verified (a patch
    /// that fails them cannot be opened).
    public var integrity: IntegrityStatus

    /// Bytes of the file that are not parts: header, index and footer.
    public var overheadBytes: Int { fileSize - patchStoredBytes }

    /// The names of the statistics that need decoded values.
    public static let valueStatisticNames = ["share positive", "share negative", "L2 norm", "max |value|", "|value| histogram"]
}

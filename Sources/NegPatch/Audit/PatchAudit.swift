/// What an audit reads and computes.
public struct PatchAuditOptions: Sendable {
    /// Decode every block of the selected tensors to compute value statistics (sign shares,
    /// L2 norm, max |value|, |value| histogram). Decoding also checks every checksum of the
    /// blocks read. Without it, audit reads only the index.
    public var values = false
    /// Audit only the tensors whose names this selects.
    public var filter: TensorFilter?

    /// Index-only audit of every tensor.
    public init() {}
}

/// Audits a patch in any format: per tensor, per layer (`PatchLayers`) and in total.
///
/// By default only the index is read, which gives elements, nonzeros, density, bytes on
/// disk, bits per element and the sign-agreement counts; the parts stay unread (for a
/// memory-mapped `.negpatch`, their pages are never touched), so auditing a patch of a
/// 7B-parameter model costs the time to parse its index. With `values`, every block of the
/// selected tensors is decoded, in parallel, block by block, holding a few blocks at a time.
public enum PatchAudit {
    /// Blocks decoded between progress reports.
    static let window = 64

    /// Audits `source`. Never throws for damaged blocks: each one is recorded in
    /// `integrity.problems`, and the value statistics of its tensor (and of the groups
    /// holding it) are left out.
    public static func run(_ source: any PatchSource, options: PatchAuditOptions = PatchAuditOptions(),
                           progress: ProgressHandler? = nil) -> PatchAuditReport {
        let index = source.index
        let selected = index.tensors.indices.filter { options.filter?.matches(index.tensors[$0].name) ?? true }
        var tensors = selected.map { t in
            let tensor = index.tensors[t]
            let bytes = source.storedBytes(tensor: t)
            var figures = IndexFigures()
            figures.tensors = 1
            figures.elements = tensor.elements
            figures.nonzeros = tensor.nonzeros
            figures.blocks = tensor.blocks.count
            figures.denseBlocks = tensor.blocks.reduce(0) { $0 + ($1.encoding == .dense ? 1 : 0) }
            figures.maskBytes = bytes.mask
            figures.valuesBytes = bytes.values
            figures.agreement = tensor.agreement.isEmpty ? nil : tensor.agreement
            return TensorAudit(name: tensor.name, layer: PatchLayers.layer(of: tensor.name), dtype: tensor.dtype,
                               shape: tensor.shape, index: figures, values: nil)
        }

        let partsOf = { (tensor: PatchTensor) in tensor.blocks.reduce(0) { $0 + ($1.mask == nil ? 1 : 2) } }
        var integrity = IntegrityStatus(
            blocksTotal: index.tensors.reduce(0) { $0 + $1.blocks.count }, blocksChecked: 0,
            partsTotal: index.tensors.reduce(0) { $0 + partsOf($1) }, partsChecked: 0, problems: [])
        var valuesNote: String?
        if options.values {
            let outcome = decodeValues(source, selected: selected, progress: progress)
            for (position, stats) in outcome.statistics.enumerated() { tensors[position].values = stats }
            integrity.blocksChecked = selected.reduce(0) { $0 + index.tensors[$1].blocks.count }
            integrity.partsChecked = selected.reduce(0) { $0 + partsOf(index.tensors[$1]) }
            integrity.problems = outcome.problems
            let missing = outcome.statistics.filter { $0 == nil }.count
            if missing > 0 {
                valuesNote = "not computed for \(missing) tensor\(missing == 1 ? "" : "s") (and their layers and the total): a block failed its checks"
            }
        } else {
            let blocks = selected.reduce(0) { $0 + index.tensors[$1].blocks.count }
            let bytes = tensors.reduce(0) { $0 + $1.index.storedBytes }
            valuesNote = "not computed: they need every value decoded (\(blocks) blocks, \(bytes) bytes of parts), "
                + "and this audit read only the index"
        }

        let layers = PatchLayers.group(tensors.map(\.name)).map { group in
            aggregate(name: group.layer, members: group.members, tensors: tensors)
        }
        let total = aggregate(name: "total", members: Array(tensors.indices), tensors: tensors)
        let allBytes = index.tensors.indices.reduce(0) { sum, t in
            let bytes = source.storedBytes(tensor: t)
            return sum + bytes.mask + bytes.values
        }
        return PatchAuditReport(
            path: source.path, format: source.formatName, fileSize: source.fileSize, metadata: index.metadata,
            fingerprintTensors: index.fingerprint.count, patchTensors: index.tensors.count, patchStoredBytes: allBytes,
            filter: options.filter?.pattern, tensors: tensors, layers: layers, total: total,
            valuesComputed: options.values && valuesNote == nil, valuesNote: valuesNote, integrity: integrity)
    }

    private static func aggregate(name: String, members: [Int], tensors: [TensorAudit]) -> GroupAudit {
        var figures = IndexFigures()
        var values: ValueStatistics? = ValueStatistics()
        for m in members {
            figures.add(tensors[m].index)
            if let stats = tensors[m].values { values?.add(stats) } else { values = nil }
        }
        return GroupAudit(name: name, members: members, index: figures, values: values)
    }

    private struct Item {
        let position: Int
        let tensor: Int
        let block: Int
        let elements: Int
    }

    /// Decodes every block of the selected tensors; per selected tensor its statistics, or
    /// nil when a block failed.
    private static func decodeValues(_ source: any PatchSource, selected: [Int], progress: ProgressHandler?)
        -> (statistics: [ValueStatistics?], problems: [String]) {
        let index = source.index
        var items: [Item] = []
        for (position, t) in selected.enumerated() {
            let tensor = index.tensors[t]
            for b in tensor.blocks.indices {
                items.append(Item(position: position, tensor: t, block: b, elements: tensor.elementCount(ofBlock: b)))
            }
        }
        let totalElements = items.reduce(0) { $0 + $1.elements }
        var statistics: [ValueStatistics?] = Array(repeating: ValueStatistics(), count: selected.count)
        var problems: [String] = []
        var done = 0
        var start = 0
        while start < items.count {
            let slice = Array(items[start..<min(items.count, start + window)])
            // Parallel.map rethrows only when the body throws; this body never does.
            let results = (try? Parallel.map(slice.count) { j -> Result<ValueStatistics, Error> in
                Result {
                    let block = try source.block(tensor: slice[j].tensor, block: slice[j].block)
                    return block.values.withUnsafeBufferPointer { ValueStatistics.of($0) }
                }
            }) ?? []
            for (j, result) in results.enumerated() {
                let item = slice[j]
                switch result {
                case let .success(stats):
                    statistics[item.position]?.add(stats)
                case let .failure(error):
                    statistics[item.position] = nil
                    problems.append(describe(error, tensor: index.tensors[item.tensor].name, block: item.block))
                }
                done += item.elements
            }
            progress?(done, totalElements)
            start += slice.count
        }
        return (statistics, problems)
    }

    /// A one-line message for a block that failed, naming the tensor and block when the
    /// error does not already.
    static func describe(_ error: Error, tensor: String, block: Int) -> String {
        if let error = error as? NegPatchError {
            // Report models keep names as they are (JSON escapes what it must); the text
            // and HTML renderers escape them for display.
            return error.tensor == nil ? error.located(tensor: tensor).plainDescription + " (block \(block))" : error.plainDescription
        }
        return "tensor '\(tensor)': block \(block): \(error)"
    }
}

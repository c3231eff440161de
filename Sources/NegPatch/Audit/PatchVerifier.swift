/// The outcome of `PatchVerifier.verify`: each check with what it covered.
public struct VerifyReport: Sendable {
    /// One check.
    public struct Check: Sendable {
        /// Short name: `file and index`, `tensors`, `parts`, `base`.
        public var name: String
        /// true (passed), false (failed) or nil (not run, because an earlier check failed).
        public var passed: Bool?
        /// What was checked, or what failed.
        public var detail: String
    }

    /// The patch's path.
    public var path: String
    /// Its format, when it could be opened.
    public var format: String?
    /// Its size, when it could be opened.
    public var fileSize: Int?
    /// How the patch applies its task vector, once its index has been read.
    public var direction: PatchDirection?
    /// The checks, in the order they ran.
    public var checks: [Check] = []
    /// Every problem found, one line each, naming the file, tensor and block.
    public var problems: [String] = []
    /// Set when a check could not run for want of memory (an address-space limit): the
    /// report then says nothing about the patch, and this error is what to show.
    public var resourceError: NegPatchError?

    /// Whether every check ran and passed.
    public var intact: Bool { checks.allSatisfy { $0.passed == true } }
}

/// Checks a patch end to end: its structure and index, every stored checksum (by decoding
/// every block), and, given a base checkpoint, the base fingerprint.
///
/// For a `.negpatch` this covers every item of `formats/negpatch-v1.md` section 6, so any
/// flipped byte anywhere in the file is reported.
public enum PatchVerifier {
    /// Runs every check on the patch at `path` and, when `base` is given, compares the base
    /// fingerprint with that checkpoint. Never throws: failures are in the report.
    public static func verify(patch path: String, base: String? = nil, progress: ProgressHandler? = nil) -> VerifyReport {
        let source: any PatchSource
        do {
            source = try PatchFormats.open(path)
        } catch {
            var report = VerifyReport(path: path)
            report.resourceError = resourceError(error)
            report.checks.append(.init(name: "file and index", passed: false, detail: "\(error)"))
            report.problems.append("\(error)")
            report.checks.append(.init(name: "parts", passed: nil, detail: "not run: the patch could not be opened"))
            if base != nil {
                report.checks.append(.init(name: "base", passed: nil, detail: "not run: the patch could not be opened"))
            }
            return report
        }
        return verify(source, base: base, progress: progress)
    }

    /// Runs every check on the opened patch `source` (whose file and index checks have
    /// passed) and, when `base` is given, compares the base fingerprint with that checkpoint.
    /// Never throws: failures are in the report.
    public static func verify(_ source: any PatchSource, base: String? = nil, progress: ProgressHandler? = nil) -> VerifyReport {
        let path = source.path
        var report = VerifyReport(path: path)
        report.format = source.formatName
        report.fileSize = source.fileSize
        let index = source.index
        report.direction = index.metadata.direction
        let isNegPatch = source.formatName == NegPatchFormat.name
        report.checks.append(.init(
            name: "file and index", passed: true,
            detail: isNegPatch
                ? "header, footer, index checksum (xxh64), index structure, parts tiling the file"
                : "the \(source.formatName) reader's checks of the file and its index"))

        let consistency = tensorsAgreeWithFingerprint(index)
        report.checks.append(.init(
            name: "tensors", passed: consistency.isEmpty,
            detail: consistency.isEmpty
                ? "\(index.tensors.count) patched tensors match the \(index.fingerprint.count)-tensor base fingerprint (names, dtypes, shapes)"
                : "\(consistency.count) disagreement\(consistency.count == 1 ? "" : "s") between the tensors and the base fingerprint"))
        report.problems += consistency.map { "\(path): \($0)" }

        let (damaged, partsResourceError) = checkParts(source, progress: progress)
        report.resourceError = partsResourceError
        let blocks = index.tensors.reduce(0) { $0 + $1.blocks.count }
        let parts = index.tensors.reduce(0) { sum, t in sum + t.blocks.reduce(0) { $0 + ($1.mask == nil ? 1 : 2) } }
        let how = isNegPatch
            ? "\(parts) parts in \(blocks) blocks: xxh64 of the stored bytes, zstd sizes and content checksums, mask popcounts and padding"
            : "\(blocks) blocks decoded by the \(source.formatName) reader, which verifies the checksums it stores"
        report.checks.append(.init(
            name: "parts", passed: damaged.isEmpty,
            detail: damaged.isEmpty ? how : "\(damaged.count) of \(blocks) blocks damaged"))
        report.problems += damaged

        if let base {
            let differences: [String]
            do {
                let checkpoint = try Checkpoint(path: base)
                differences = fingerprintDifferences(try BaseFingerprint.compute(checkpoint), expected: index.fingerprint)
                    .map { "\(base): \($0)" }
            } catch {
                differences = ["\(error)"]
                report.resourceError = report.resourceError ?? resourceError(error)
            }
            report.checks.append(.init(
                name: "base", passed: differences.isEmpty,
                detail: differences.isEmpty
                    ? "\(lastPathComponent(base)) is the patch's base: \(index.fingerprint.count) tensors by name, dtype, shape and xxh64 of their bytes"
                    : "\(lastPathComponent(base)) is not the base the patch was made for (\(differences.count) difference\(differences.count == 1 ? "" : "s"))"))
            report.problems += differences
        }
        return report
    }

    /// `error` when it is a want of memory rather than a fault of the patch or base.
    private static func resourceError(_ error: Error) -> NegPatchError? {
        (error as? NegPatchError).flatMap { $0.code == .resources ? $0 : nil }
    }

    /// Decodes every block in parallel and returns one message per damaged block, and the
    /// first want of memory met, which is not damage.
    static func checkParts(_ source: any PatchSource, progress: ProgressHandler?) -> ([String], NegPatchError?) {
        let index = source.index
        var items: [(tensor: Int, block: Int, elements: Int)] = []
        for (t, tensor) in index.tensors.enumerated() {
            for b in tensor.blocks.indices { items.append((t, b, tensor.elementCount(ofBlock: b))) }
        }
        let total = items.reduce(0) { $0 + $1.elements }
        var problems: [String] = []
        var shortage: NegPatchError?
        var done = 0
        var start = 0
        while start < items.count {
            let slice = Array(items[start..<min(items.count, start + PatchAudit.window)])
            let failures = (try? Parallel.map(slice.count) { j -> (String?, NegPatchError?) in
                do {
                    _ = try source.block(tensor: slice[j].tensor, block: slice[j].block)
                    return (nil, nil)
                } catch {
                    if let shortage = resourceError(error) { return (nil, shortage) }
                    return (PatchAudit.describe(error, tensor: index.tensors[slice[j].tensor].name, block: slice[j].block), nil)
                }
            }) ?? []
            problems += failures.compactMap { $0.0 }
            shortage = shortage ?? failures.lazy.compactMap { $0.1 }.first
            done += slice.reduce(0) { $0 + $1.elements }
            progress?(done, total)
            start += slice.count
        }
        return (problems, shortage)
    }

    /// Disagreements between the patched tensors and the base fingerprint: each patched
    /// tensor must be a floating tensor of the fingerprint with the same dtype and shape,
    /// and each floating tensor of the fingerprint must be patched.
    static func tensorsAgreeWithFingerprint(_ index: PatchIndex) -> [String] {
        let byName = Dictionary(index.fingerprint.map { (TensorName($0.name), $0) }, uniquingKeysWith: { first, _ in first })
        var problems: [String] = []
        for tensor in index.tensors {
            guard let entry = byName[TensorName(tensor.name)] else {
                problems.append("tensor '\(tensor.name)': patched but not in the base fingerprint")
                continue
            }
            if entry.dtype != tensor.dtype || entry.shape != tensor.shape {
                problems.append("tensor '\(tensor.name)': patched as \(tensor.dtype) \(describeShape(tensor.shape)), "
                                + "the base fingerprint says \(entry.dtype) \(describeShape(entry.shape))")
            }
        }
        let patched = Set(index.tensors.map { TensorName($0.name) })
        for entry in index.fingerprint where entry.dtype.isFloating && !patched.contains(TensorName(entry.name)) {
            problems.append("tensor '\(entry.name)': floating tensor of the base fingerprint has no entry in the patch")
        }
        return problems
    }

    /// Every difference between a checkpoint's fingerprint and the one a patch expects:
    /// missing and extra tensors, dtypes and shapes, digests. Empty when they match (in any
    /// order).
    public static func fingerprintDifferences(_ actual: [FingerprintEntry], expected: [FingerprintEntry]) -> [String] {
        fingerprintMismatches(actual, expected: expected).map { "tensor '\($0.tensor)': \($0.problem)" }
    }

    /// The differences of `fingerprintDifferences`, each with the tensor's name apart.
    static func fingerprintMismatches(_ actual: [FingerprintEntry], expected: [FingerprintEntry]) -> [(tensor: String, problem: String)] {
        let have = Dictionary(actual.map { (TensorName($0.name), $0) }, uniquingKeysWith: { first, _ in first })
        let want = Set(expected.map { TensorName($0.name) })
        var differences: [(tensor: String, problem: String)] = []
        for entry in expected {
            guard let found = have[TensorName(entry.name)] else {
                differences.append((entry.name, "missing from the base"))
                continue
            }
            if found.dtype != entry.dtype || found.shape != entry.shape {
                differences.append((entry.name, "base has \(found.dtype) \(describeShape(found.shape)), "
                                    + "the patch expects \(entry.dtype) \(describeShape(entry.shape))"))
            } else if found.digest != entry.digest {
                differences.append((entry.name, "content differs (xxh64 \(XXH64.hex(found.digest)), "
                                    + "the patch expects \(XXH64.hex(entry.digest)))"))
            }
        }
        for entry in actual where !want.contains(TensorName(entry.name)) {
            differences.append((entry.name, "in the base but not in the patch's base fingerprint"))
        }
        return differences
    }
}

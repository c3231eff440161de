import ArgumentParser
import NegPatch

struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two patches of the same base, tensor by tensor.",
        discussion: """
            For each tensor and in total: the Jaccard overlap of the masks (elements nonzero in \
            both / in either), the share of the common elements whose values have the same \
            sign, and the Pearson correlation of the common values. A figure with nothing to \
            measure (no nonzero element, fewer than two common ones) prints as '-' (null in \
            JSON). Both patches are decoded in full, which also verifies their checksums.

            Exit status: 0 when compared, 1 when a patch cannot be read or is damaged, or the \
            patches belong to different bases (without --ignore-base-mismatch), 2 on a usage error.
            """
    )

    @Argument(help: ArgumentHelp("The first patch.", valueName: "patch-a"))
    var first: String

    @Argument(help: ArgumentHelp("The second patch.", valueName: "patch-b"))
    var second: String

    @Option(help: ArgumentHelp("Only tensors whose name matches this regular expression.", valueName: "regex"))
    var tensors: String?

    @Flag(name: .customLong("ignore-base-mismatch"), help: "Compare even if the base fingerprints differ (tensors matched by name).")
    var ignoreBaseMismatch = false

    @Flag(help: "Print the comparison as JSON (formats/audit-json.md).")
    var json = false

    @OptionGroup var bound: WorkBoundOptions

    @Flag(name: .shortAndLong, help: "No progress bar.")
    var quiet = false

    func validate() throws {
        if let tensors {
            do { _ = try TensorFilter(tensors) } catch let error as NegPatchError { throw ValidationError(error.message) }
        }
    }

    func run() throws {
        let a = try PatchFormats.open(first)
        let b = try PatchFormats.open(second)
        try bound.check(a)
        try bound.check(b)
        let bar = ProgressBar("diff", quiet: quiet)
        let report = try PatchDiff.compare(a, b, filter: try tensors.map(TensorFilter.init),
                                           ignoreBaseMismatch: ignoreBaseMismatch, progress: bar.update)
        bar.finish()
        if json {
            Swift.print(String(decoding: CanonicalJSON.encode(report.json()), as: UTF8.self))  // JSON escapes what it must
            return
        }
        func describe(_ m: PatchMetadata) -> String {
            let parameters = m.parameters.map { "\($0.key)=\(String(decoding: CanonicalJSON.encode($0.value), as: UTF8.self))" }
            return "\(m.method)\(parameters.isEmpty ? "" : " " + parameters.joined(separator: " ")), n=\(m.n), lambda \(m.lambda), \(m.direction.rawValue)s tau"
        }
        print("A  \(first): \(describe(report.metadataA))")
        print("B  \(second): \(describe(report.metadataB))")
        print(report.sameBase ? "same base (fingerprints equal)" : "DIFFERENT bases: tensors compared by name (--ignore-base-mismatch)")
        if report.metadataA.direction != report.metadataB.direction {
            print("OPPOSITE directions: A \(report.metadataA.direction.formula), B \(report.metadataB.direction.formula); the figures compare tau as stored")
        }
        print("")
        var table = TextTable(["TENSOR", "nonzeros A", "nonzeros B", "common", "jaccard", "same sign", "corr."])
        func row(_ name: String, _ f: DiffFigures) -> [String] {
            [name, Terminal.count(f.nonzerosA), Terminal.count(f.nonzerosB), Terminal.count(f.common),
             f.jaccard.map { String(format: "%.4f", $0) } ?? "-", f.signAgreement.map { Terminal.percent($0) } ?? "-",
             f.correlation.map { String(format: "%.4f", $0) } ?? "-"]
        }
        for tensor in report.tensors { table.add(row(tensor.name, tensor.figures)) }
        table.rule()
        table.add(row("total", report.total))
        for line in table.render() { print(line) }
        if !report.onlyInA.isEmpty { print("only in A: " + report.onlyInA.joined(separator: ", ")) }
        if !report.onlyInB.isEmpty { print("only in B: " + report.onlyInB.joined(separator: ", ")) }
        print("jaccard = common / (nonzero in A or B); same sign: share of common elements; corr.: Pearson r of common values")
    }
}

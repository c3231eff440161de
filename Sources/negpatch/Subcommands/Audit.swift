import ArgumentParser
import Foundation
import NegPatch

struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what a patch changes: density, signs, sizes and integrity, per tensor and layer.",
        discussion: """
            By default audit reads only the patch's index: elements, nonzeros, density, bytes on \
            disk, bits per element and sign agreement, with the index checksum verified and the \
            parts left unread (their checksums are reported as not checked). --values decodes \
            every block of the selected tensors to add the value statistics (share positive and \
            negative, L2 norm, max |value|, |value| histogram), which also verifies every \
            checksum it reads; --html implies --values.

            Layers: a tensor belongs to the name up to and including its first all-digit \
            component (model.layers.12.), or else to its module (model.embed_tokens.).

            Exit status: 0 when the report was made, 1 when the patch cannot be read or a block \
            read for --values is damaged (the report still lists it), 2 on a usage error.
            """
    )

    @Argument(help: ArgumentHelp("The patch (.negpatch or .h5).", valueName: "patch"))
    var patch: String

    @Option(help: ArgumentHelp("Only tensors whose name matches this regular expression (anywhere in the name).", valueName: "regex"))
    var tensors: String?

    @Flag(help: "Decode the values: sign shares, L2 norm, max |value|, |value| histogram, and every checksum read.")
    var values = false

    @Flag(help: "Print the report as JSON (schema: formats/audit-json.md) instead of tables.")
    var json = false

    @Option(help: ArgumentHelp("Also write a self-contained HTML report with charts (implies --values).", valueName: "report.html"))
    var html: String?

    @OptionGroup var bound: WorkBoundOptions

    @Flag(name: .shortAndLong, help: "No progress bar.")
    var quiet = false

    func validate() throws {
        if let tensors {
            do { _ = try TensorFilter(tensors) } catch let error as NegPatchError { throw ValidationError(error.message) }
        }
    }

    func run() throws {
        let source = try PatchFormats.open(patch)
        if let html, sameFile(html, patch) {
            throw NegPatchError(.invalidArgument, file: html, "the HTML report would overwrite the patch")
        }
        var options = PatchAuditOptions()
        options.values = values || html != nil
        if options.values { try bound.check(source) }
        options.filter = try tensors.map(TensorFilter.init)
        let bar = ProgressBar("audit", quiet: quiet || !options.values)
        let report = PatchAudit.run(source, options: options, progress: bar.update)
        bar.finish()
        if json {
            Swift.print(String(decoding: CanonicalJSON.encode(report.json()), as: UTF8.self))  // JSON escapes what it must
        } else {
            AuditText.print(report)
        }
        if let html {
            let bytes = try AuditHTML.write(report, to: html)
            let line = "wrote \(html) (\(Terminal.bytes(bytes)))"
            if json { FileHandle.standardError.write(Data((DisplayText.escaped(line) + "\n").utf8)) } else { print(line) }
        }
        if report.integrity.verdict == .damaged { throw ExitCode(1) }
    }
}

/// The audit report as text tables, 100 columns wide.
enum AuditText {
    static func print(_ report: PatchAuditReport) {
        for line in lines(report) { Swift.print(line) }
    }

    static func lines(_ report: PatchAuditReport) -> [String] {
        var out: [String] = []
        let m = report.metadata
        out.append("\(DisplayText.escaped(lastPathComponent(report.path))): \(report.format) patch, \(Terminal.bytes(report.fileSize)) on disk "
                   + "(parts \(Terminal.bytes(report.patchStoredBytes)), index and framing \(Terminal.bytes(report.overheadBytes)))")
        let parameters = m.parameters.isEmpty ? "no parameters"
            : m.parameters.map { "\($0.key)=\(String(decoding: CanonicalJSON.encode($0.value), as: UTF8.self))" }.joined(separator: ", ")
        out.append(field("method", "\(m.method) (\(parameters))"))
        let inputs = "\(m.n) fine-tuned checkpoint\(m.n == 1 ? "" : "s"): "
        out.append(field("n", inputs + list(m.inputs, room: TextTable.width - 13 - inputs.count)))
        out.append(field("base", "\(m.base), fingerprint of \(report.fingerprintTensors) tensors (xxh64)"))
        out.append(field("lambda", "\(m.lambda) (recommended; \(m.direction.formula))"))
        out.append(field("values", m.lossy ? "LOSSY: some values are stored with less than float32 precision" : "lossless float32"))
        out.append(field("tool", m.tool))
        out.append(field("integrity", integrityLine(report.integrity, format: report.format)))
        for problem in report.integrity.problems.prefix(20) {
            out += TextTable.wrap("! " + DisplayText.escaped(problem), first: 13, indent: 15).enumerated().map { $0.offset == 0 ? String(repeating: " ", count: 13) + $0.element : $0.element }
        }
        if report.integrity.problems.count > 20 { out.append("             ! … and \(report.integrity.problems.count - 20) more") }
        if let filter = report.filter {
            out.append(field("selection", "\(report.tensors.count) of \(report.patchTensors) tensors match --tensors '\(filter)'; "
                             + "layers and total cover these only"))
        }
        out.append("")

        var tensors = TextTable(["TENSORS", "shape", "elements", "nonzeros", "density", "on disk", "bits/el"])
        for layer in report.layers {
            tensors.heading(layer.name)
            for i in layer.members {
                let t = report.tensors[i]
                tensors.add(["  " + shortName(t.name, layer: layer.name), t.shape.isEmpty ? "scalar" : t.shape.map(String.init).joined(separator: "x"),
                             Terminal.count(t.index.elements), Terminal.count(t.index.nonzeros), Terminal.percent(t.index.density),
                             Terminal.bytes(t.index.storedBytes), bits(t.index.bitsPerElement)])
            }
        }
        out += tensors.render()
        out.append("")

        var layers = TextTable(["LAYERS", "tensors", "elements", "nonzeros", "density", "mask", "values", "bits/el"])
        for group in report.layers + [report.total] {
            if group.name == "total" { layers.rule() }
            layers.add([group.name, String(group.index.tensors), Terminal.count(group.index.elements), Terminal.count(group.index.nonzeros),
                        Terminal.percent(group.index.density), Terminal.bytes(group.index.maskBytes), Terminal.bytes(group.index.valuesBytes),
                        bits(group.index.bitsPerElement)])
        }
        out += layers.render()
        out.append("")

        if report.valuesComputed || report.tensors.contains(where: { $0.values != nil }) {
            let nonfinite = report.tensors.contains { ($0.values?.nonfinite ?? 0) > 0 }
            var headers = ["VALUES", "positive", "negative", "L2 norm", "max |v|"]
            if nonfinite { headers.append("NaN/inf") }
            var table = TextTable(headers)
            func row(_ name: String, _ v: ValueStatistics?) -> [String] {
                guard let v else { return [name, "-", "-", "-", "-"] }
                let shares = v.nonzeros == 0 ? ["-", "-"] : [Terminal.percent(v.positiveShare), Terminal.percent(v.negativeShare)]
                var cells = [name] + shares + [String(format: "%.4g", v.l2Norm), String(format: "%.4g", Double(v.maxAbs))]
                if nonfinite { cells.append(Terminal.count(v.nonfinite)) }
                return cells
            }
            for layer in report.layers {
                table.heading(layer.name)
                for i in layer.members {
                    table.add(row("  " + shortName(report.tensors[i].name, layer: layer.name), report.tensors[i].values))
                }
            }
            table.rule()
            for group in report.layers { table.add(row(group.name, group.values)) }
            table.rule()
            table.add(row("total", report.total.values))
            out += table.render()
            out.append("  positive and negative are shares of the nonzero values; L2 norm and max |v| of the task vector tau")
            if let histogram = report.total.values?.histogram { out += histogramLines(histogram) }
        }
        if let note = report.valuesNote {
            let text: String
            if report.integrity.blocksChecked == 0 {
                let blocks = report.tensors.reduce(0) { $0 + $1.index.blocks }
                text = "value statistics (sign shares, L2 norm, max |value|, |value| histogram) not computed: they need "
                    + "every value decoded (\(blocks) blocks, \(Terminal.bytes(report.total.index.storedBytes)) compressed) "
                    + "and this audit read only the index. Add --values (or --html) to decode them."
            } else {
                text = "value statistics \(note)."
            }
            out += TextTable.wrap(text, first: 0, indent: 0)
        }
        if let agreement = report.total.index.agreement, agreement.count > 1 {
            out.append("")
            out += agreementLines(agreement, elements: report.total.index.elements)
        }
        return out
    }

    /// `  name       value`, the value wrapped to the table width under itself.
    private static func field(_ name: String, _ value: String) -> String {
        let prefix = "  " + Terminal.padRight(name, 10) + " "
        return prefix + TextTable.wrap(DisplayText.escaped(value), first: prefix.count, indent: prefix.count).joined(separator: "\n")
    }

    private static func bits(_ value: Double) -> String {
        String(format: "%.3f", value)
    }

    /// The name within its layer (the layer's prefix removed).
    private static func shortName(_ name: String, layer: String) -> String {
        name.hasPrefix(layer) && name.count > layer.count ? String(name.dropFirst(layer.count)) : name
    }

    /// As many items as fit in `room` characters, then `… (+k more)`.
    private static func list(_ items: [String], room: Int) -> String {
        var shown: [String] = []
        var used = 0
        for (i, item) in items.enumerated() {
            let rest = items.count - i - 1
            let tail = rest > 0 ? ", … (+\(rest) more)".count : 0
            if used + item.count + 2 + tail > room && !shown.isEmpty {
                return shown.joined(separator: ", ") + ", … (+\(items.count - i) more)"
            }
            shown.append(item)
            used += item.count + 2
        }
        return shown.joined(separator: ", ")
    }

    static func integrityLine(_ integrity: IntegrityStatus, format: String) -> String {
        let parts = "\(integrity.partsTotal) parts in \(integrity.blocksTotal) blocks"
        // Only .negpatch checksums its index; other formats' metadata is validated on open.
        let index = format == NegPatchFormat.name ? "index checksum verified" : "metadata validated"
        switch integrity.verdict {
        case .verified:
            return "every checksum verified: the index and \(parts)"
        case .partial:
            return "index verified; \(integrity.partsChecked) of \(parts) verified (the selection), the rest not checked"
        case .notChecked:
            return "\(index); \(parts) not checked (audit read only the index: use --values or negpatch verify)"
        case .damaged:
            return "DAMAGED: \(integrity.problems.count) of \(integrity.blocksChecked) blocks read failed their checks"
        }
    }

    /// A text histogram of |values| by binary order of magnitude.
    private static func histogramLines(_ histogram: AbsValueHistogram) -> [String] {
        guard let range = histogram.occupied else { return [] }
        let total = Double(histogram.total)
        let peak = range.map { histogram[$0] }.max() ?? 1
        var out = ["", "|VALUE| HISTOGRAM (bins of a factor of 2)        values     share"]
        for e in range {
            let count = histogram[e]
            let low = String(format: "%.2e", pow(2.0, Double(e))), high = String(format: "%.2e", pow(2.0, Double(e + 1)))
            let bar = String(repeating: "#", count: Int((Double(count) / Double(peak) * 40).rounded(.up)))
            out.append(Terminal.padRight("  [\(low), \(high))", 28) + Terminal.pad(Terminal.count(count), 14)
                       + Terminal.pad(Terminal.percent(Double(count) / total), 10) + "  " + bar)
        }
        return out
    }

    private static func agreementLines(_ agreement: [Int], elements: Int) -> [String] {
        let n = agreement.count - 1
        var out = ["SIGN AGREEMENT (from the index: elements where m of \(n) task vectors share the majority sign)",
                   "   m        elements     share   at least m agree"]
        var atLeast = agreement.reduce(0, +) - agreement[0]
        for m in 0...n {
            let share = elements == 0 ? 0 : Double(agreement[m]) / Double(elements)
            let kept = m == 0 ? "" : Terminal.percent(elements == 0 ? 0 : Double(atLeast) / Double(elements))
            let line = Terminal.pad(String(m), 4) + Terminal.pad(Terminal.count(agreement[m]), 16)
                + Terminal.pad(Terminal.percent(share), 10) + (kept.isEmpty ? "" : Terminal.pad(kept, 19))
            out.append(line)
            if m > 0 { atLeast -= agreement[m] }
        }
        return out
    }
}

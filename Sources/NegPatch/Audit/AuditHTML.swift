/// The audit report as one self-contained HTML page: no scripts, no external resources, the
/// charts drawn as inline SVG.
///
/// Charts, each an `<svg>` with a stable `id`, every data bar a `<rect>` whose class list
/// starts with `bar`:
/// - `chart-density`: density per layer, one bar per layer;
/// - `chart-signs`: sign balance per layer, a `bar pos` and a `bar neg` per layer (shares
///   of the layer's nonzero values);
/// - `chart-histogram`: |values| by binary order of magnitude (log scale), one bar per bin
///   from the lowest to the highest occupied bin;
/// - `chart-size`: bytes on disk per layer, a `bar mask` and a `bar values` per layer;
/// - `chart-agreement` (when the patch records sign agreement): one bar per m = 0 ... n.
public enum AuditHTML {
    /// Writes the page for `report` to `path` (atomically) and returns its size in bytes.
    @discardableResult
    public static func write(_ report: PatchAuditReport, to path: String) throws -> Int {
        let bytes = Array(render(report).utf8)
        let output = try AtomicOutput(destination: path)
        try output.write(bytes)
        try output.commit()
        return bytes.count
    }

    /// The page's HTML.
    public static func render(_ report: PatchAuditReport) -> String {
        var page = HTMLPage()
        let name = lastPathComponent(report.path)
        page.add("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">")
        page.add("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        page.add("<title>NegPatch audit: \(escape(name))</title>\n<style>\(style)</style>\n</head>\n<body>\n<main>")
        header(report, into: &page)
        cards(report, into: &page)

        page.add("<div class=\"grid2\">")
        chartSection(id: "chart-density", title: "Density per layer",
                     subtitle: "Share of the layer's elements that the patch changes (nonzero in tau).",
                     svg: densityChart(report), into: &page)
        chartSection(id: "chart-signs", title: "Sign balance per layer",
                     subtitle: report.valuesComputed
                        ? "Share of the layer's nonzero values that are <key pos>positive and <key neg>negative; the dashed line marks 50%."
                        : "Not computed: \(report.valuesNote ?? "values were not decoded").",
                     svg: signChart(report), into: &page)
        page.add("</div>")
        chartSection(id: "chart-histogram", title: "Magnitude of the changes",
                     subtitle: report.valuesComputed
                        ? "Histogram of |value| over all nonzero values, log scale: each bar is a factor of 2; height is the share of values."
                        : "Not computed: \(report.valuesNote ?? "values were not decoded").",
                     svg: histogramChart(report), into: &page)
        chartSection(id: "chart-size", title: "Size on disk",
                     subtitle: "Compressed bytes per layer: the <key mask>mask (which elements change) and the <key values>values (by how much).",
                     svg: sizeChart(report), into: &page)
        if let agreement = report.total.index.agreement, agreement.count > 1 {
            chartSection(id: "chart-agreement", title: "Sign agreement of the task vectors",
                         subtitle: "Share of elements where exactly m of the \(agreement.count - 1) task vectors share the majority sign (from the index); the highlighted bar, all of them, is what NegMerge keeps.",
                         svg: agreementChart(agreement, elements: report.total.index.elements), into: &page)
        }
        metadataTable(report, into: &page)
        layerTable(report, into: &page)
        tensorTable(report, into: &page)
        page.add("<footer>Written by \(escape(NegPatchVersion.tool)) from \(escape(name)). Self-contained: no scripts, no network.</footer>")
        page.add("</main>\n</body>\n</html>")
        return page.text
    }

    // MARK: - Page parts

    private static func header(_ report: PatchAuditReport, into page: inout HTMLPage) {
        let integrity = report.integrity
        let (badgeClass, badgeText): (String, String)
        switch integrity.verdict {
        case .verified: (badgeClass, badgeText) = ("ok", "Intact: every checksum verified")
        case .partial: (badgeClass, badgeText) = ("warn", "Selected tensors verified; the rest not checked")
        case .notChecked: (badgeClass, badgeText) = ("warn", "Parts not checked (index only)")
        case .damaged: (badgeClass, badgeText) = ("bad", "Damaged: \(integrity.problems.count) block\(integrity.problems.count == 1 ? "" : "s") failed")
        }
        let m = report.metadata
        page.add("<header><h1>\(escape(lastPathComponent(report.path)))</h1>")
        page.add("<p class=\"sub\">\(escape(m.method)) patch of \(escape(m.base)), merged from \(m.n) fine-tuned checkpoint\(m.n == 1 ? "" : "s"); "
                 + "\(escape(report.format)) format, \(ReportNumbers.bytes(report.fileSize)). "
                 + "<span class=\"badge \(badgeClass)\">\(escape(badgeText))</span>"
                 + (m.lossy ? " <span class=\"badge warn\">Lossy values</span>" : "") + "</p>")
        if let filter = report.filter {
            page.add("<p class=\"note\">Selection: \(report.tensors.count) of \(report.patchTensors) tensors match <code>\(escape(filter))</code>; "
                     + "every figure below covers these only.</p>")
        }
        if !integrity.problems.isEmpty {
            page.add("<ul class=\"problems\">" + integrity.problems.prefix(50).map { "<li>\(escape($0))</li>" }.joined() + "</ul>")
        }
        page.add("</header>")
    }

    private static func cards(_ report: PatchAuditReport, into page: inout HTMLPage) {
        let total = report.total.index
        let dense = total.elements * 4
        let ratio = report.fileSize > 0 ? Double(dense) / Double(report.fileSize) : 0
        var items: [(String, String, String)] = [
            ("Density", ReportNumbers.percent(total.density), "\(ReportNumbers.count(total.nonzeros)) of \(ReportNumbers.count(total.elements)) elements"),
            ("Size on disk", ReportNumbers.bytes(report.fileSize), ReportNumbers.fixed(ratio, 1) + "x smaller than dense float32"),
            ("Bits per element", ReportNumbers.fixed(total.bitsPerElement, 3), "parts only; a dense float32 costs 32"),
            ("Lambda", ReportNumbers.significant(report.metadata.lambda, 6), "recommended: " + report.metadata.direction.formula),
        ]
        if let values = report.total.values {
            items.append(("Positive / negative", ReportNumbers.fixed(values.positiveShare * 100, 1) + " / " + ReportNumbers.fixed(values.negativeShare * 100, 1),
                          "% of the nonzero values"))
            items.append(("L2 norm of tau", ReportNumbers.significant(values.l2Norm), "max |value| " + ReportNumbers.significant(Double(values.maxAbs))))
        }
        page.add("<div class=\"cards\">" + items.map { key, value, note in
            "<div class=\"card\"><div class=\"k\">\(escape(key))</div><div class=\"v\">\(escape(value))</div><div class=\"n\">\(escape(note))</div></div>"
        }.joined() + "</div>")
    }

    private static func chartSection(id: String, title: String, subtitle: String, svg: String, into page: inout HTMLPage) {
        page.add("<section class=\"chart\" aria-labelledby=\"\(id)-title\"><h2 id=\"\(id)-title\">\(escape(title))</h2>"
                 + "<p class=\"sub\">\(keys(escape(subtitle)))</p>\(svg)</section>")
    }

    private static func metadataTable(_ report: PatchAuditReport, into page: inout HTMLPage) {
        let m = report.metadata
        let parameters = m.parameters.isEmpty ? "none"
            : m.parameters.map { "\($0.key) = \(String(decoding: CanonicalJSON.encode($0.value), as: UTF8.self))" }.joined(separator: ", ")
        let integrity = report.integrity
        let checked: String
        switch integrity.verdict {
        case .verified: checked = "index checksum and all \(integrity.partsTotal) parts (\(integrity.blocksTotal) blocks) verified"
        case .partial: checked = "index checksum and \(integrity.partsChecked) of \(integrity.partsTotal) parts verified (the selection)"
        case .notChecked: checked = report.format == NegPatchFormat.name ? "index checksum verified; parts not read" : "metadata validated; parts not read"
        case .damaged: checked = "\(integrity.problems.count) of \(integrity.blocksChecked) blocks read failed their checks"
        }
        let rows: [(String, String)] = [
            ("Method", m.method), ("Parameters", parameters), ("n", String(m.n)),
            ("Inputs", m.inputs.joined(separator: ", ")), ("Base", m.base),
            ("Base fingerprint", "\(report.fingerprintTensors) tensors, xxh64 of their bytes"),
            ("Lambda", ReportNumbers.significant(m.lambda, 6)),
            ("Direction", "\(m.direction.rawValue): \(m.direction.formula)"),
            ("Values", m.lossy ? "lossy: some values stored with less than float32 precision" : "lossless float32"),
            ("Tool", m.tool), ("Format", report.format),
            ("File", "\(ReportNumbers.count(report.fileSize)) bytes: parts \(ReportNumbers.count(report.patchStoredBytes)), index and framing \(ReportNumbers.count(report.overheadBytes))"),
            ("Integrity", checked),
        ]
        page.add("<section class=\"table\"><h2>Metadata</h2><table class=\"meta\">"
                 + rows.map { "<tr><th>\(escape($0.0))</th><td>\(escape($0.1))</td></tr>" }.joined() + "</table></section>")
    }

    private static func layerTable(_ report: PatchAuditReport, into page: inout HTMLPage) {
        var html = "<section class=\"table\"><h2>Layers</h2><table><thead><tr><th>Layer</th><th>Tensors</th><th>Elements</th>"
            + "<th>Nonzeros</th><th>Density</th><th>Positive</th><th>Negative</th><th>L2 norm</th><th>Max |v|</th>"
            + "<th>Mask</th><th>Values</th><th>Bits/el</th></tr></thead><tbody>"
        for group in report.layers + [report.total] {
            html += "<tr\(group.name == "total" ? " class=\"total\"" : "")>" + groupCells(group) + "</tr>"
        }
        page.add(html + "</tbody></table></section>")
    }

    private static func groupCells(_ group: GroupAudit) -> String {
        let f = group.index
        var cells = [group.name, String(f.tensors), ReportNumbers.count(f.elements), ReportNumbers.count(f.nonzeros), ReportNumbers.percent(f.density)]
        cells += valueCells(group.values)
        cells += [ReportNumbers.bytes(f.maskBytes), ReportNumbers.bytes(f.valuesBytes), ReportNumbers.fixed(f.bitsPerElement, 3)]
        return cells.map { "<td>\(escape($0))</td>" }.joined()
    }

    private static func valueCells(_ values: ValueStatistics?) -> [String] {
        guard let values else { return ["–", "–", "–", "–"] }
        guard values.nonzeros > 0 else { return ["–", "–", "0", "0"] }
        return [ReportNumbers.percent(values.positiveShare, 1), ReportNumbers.percent(values.negativeShare, 1),
                ReportNumbers.significant(values.l2Norm), ReportNumbers.significant(Double(values.maxAbs))]
    }

    private static func tensorTable(_ report: PatchAuditReport, into page: inout HTMLPage) {
        var html = "<section class=\"table\"><details><summary><h2>Tensors (\(report.tensors.count))</h2></summary>"
            + "<table><thead><tr><th>Tensor</th><th>Shape</th><th>Elements</th><th>Nonzeros</th><th>Density</th>"
            + "<th>Positive</th><th>Negative</th><th>L2 norm</th><th>Max |v|</th><th>On disk</th><th>Bits/el</th></tr></thead><tbody>"
        for t in report.tensors {
            var cells = [t.name, t.shape.isEmpty ? "scalar" : t.shape.map(String.init).joined(separator: "×"),
                         ReportNumbers.count(t.index.elements), ReportNumbers.count(t.index.nonzeros), ReportNumbers.percent(t.index.density)]
            cells += valueCells(t.values)
            cells += [ReportNumbers.bytes(t.index.storedBytes), ReportNumbers.fixed(t.index.bitsPerElement, 3)]
            html += "<tr>" + cells.map { "<td>\(escape($0))</td>" }.joined() + "</tr>"
        }
        page.add(html + "</tbody></table></details></section>")
    }

    // MARK: - Charts

    /// Geometry of a horizontal bar chart with one row per layer.
    private struct Rows {
        let labels: [String]
        let width: Double
        let labelWidth: Double
        let rowHeight = 22.0
        let top = 8.0
        let bottom = 28.0
        var plotLeft: Double { labelWidth + 8 }
        var plotRight: Double { width - 64 }
        var plotWidth: Double { plotRight - plotLeft }
        var height: Double { top + Double(labels.count) * rowHeight + bottom }

        init(labels: [String], width: Double) {
            self.labels = labels
            self.width = width
            let longest = labels.map { min($0.count, 26) }.max() ?? 4
            labelWidth = max(60, Double(longest) * 7.2)
        }

        func y(_ row: Int) -> Double { top + Double(row) * rowHeight }
    }

    private static func rowLabels(_ rows: Rows, into svg: inout String) {
        for (i, label) in rows.labels.enumerated() {
            let shown = elide(label, 26)
            svg += "<text class=\"label\" x=\"\(n(rows.labelWidth))\" y=\"\(n(rows.y(i) + rows.rowHeight / 2 + 4))\" text-anchor=\"end\">"
                + "<title>\(escape(label))</title>\(escape(shown))</text>"
        }
    }

    private static func xAxis(_ rows: Rows, max: Double, step: Double, format: (Double) -> String, into svg: inout String) {
        let bottom = rows.y(rows.labels.count)
        var tick = 0.0
        while tick <= max * 1.000_001 {
            let x = rows.plotLeft + tick / max * rows.plotWidth
            svg += "<line class=\"grid\" x1=\"\(n(x))\" x2=\"\(n(x))\" y1=\"\(n(rows.top - 2))\" y2=\"\(n(bottom))\"/>"
                + "<text class=\"tick\" x=\"\(n(x))\" y=\"\(n(bottom + 16))\" text-anchor=\"middle\">\(escape(format(tick)))</text>"
            tick += step
        }
    }

    private static func svgOpen(_ id: String, width: Double, height: Double, label: String) -> String {
        "<svg id=\"\(id)\" class=\"chart\" viewBox=\"0 0 \(n(width)) \(n(height))\" width=\"100%\" role=\"img\" aria-label=\"\(escape(label))\">"
    }

    private static func densityChart(_ report: PatchAuditReport) -> String {
        let layers = report.layers
        let rows = Rows(labels: layers.map(\.name), width: 560)
        let axis = ReportNumbers.axis(max(layers.map(\.index.density).max() ?? 0, 1e-9))
        var svg = svgOpen("chart-density", width: rows.width, height: rows.height, label: "Density per layer")
        xAxis(rows, max: axis.max, step: axis.step, format: { ReportNumbers.significant($0 * 100, 3) + "%" }, into: &svg)
        rowLabels(rows, into: &svg)
        for (i, layer) in layers.enumerated() {
            let density = layer.index.density
            let w = density / axis.max * rows.plotWidth
            let y = rows.y(i) + 4
            svg += "<rect class=\"bar\" x=\"\(n(rows.plotLeft))\" y=\"\(n(y))\" width=\"\(n(w))\" height=\"\(n(rows.rowHeight - 8))\">"
                + "<title>\(escape(layer.name)): \(ReportNumbers.percent(density)) (\(ReportNumbers.count(layer.index.nonzeros)) of \(ReportNumbers.count(layer.index.elements)))</title></rect>"
                + "<text class=\"value\" x=\"\(n(rows.plotLeft + w + 4))\" y=\"\(n(y + (rows.rowHeight - 8) / 2))\">\(ReportNumbers.percent(density))</text>"
        }
        return svg + "</svg>"
    }

    private static func signChart(_ report: PatchAuditReport) -> String {
        let layers = report.layers
        let rows = Rows(labels: layers.map(\.name), width: 560)
        var svg = svgOpen("chart-signs", width: rows.width, height: rows.height, label: "Sign balance per layer")
        guard report.valuesComputed else {
            return svg + "<text class=\"empty\" x=\"\(n(rows.width / 2))\" y=\"\(n(rows.height / 2))\" text-anchor=\"middle\">not computed</text></svg>"
        }
        xAxis(rows, max: 1, step: 0.25, format: { ReportNumbers.fixed($0 * 100, 0) + "%" }, into: &svg)
        rowLabels(rows, into: &svg)
        let h = rows.rowHeight - 8
        for (i, layer) in layers.enumerated() {
            let values = layer.values ?? ValueStatistics()
            let y = rows.y(i) + 4
            let wp = values.positiveShare * rows.plotWidth, wn = values.negativeShare * rows.plotWidth
            svg += "<rect class=\"bar pos\" x=\"\(n(rows.plotLeft))\" y=\"\(n(y))\" width=\"\(n(wp))\" height=\"\(n(h))\">"
                + "<title>\(escape(layer.name)): \(ReportNumbers.percent(values.positiveShare)) positive</title></rect>"
                + "<rect class=\"bar neg\" x=\"\(n(rows.plotLeft + wp))\" y=\"\(n(y))\" width=\"\(n(wn))\" height=\"\(n(h))\">"
                + "<title>\(escape(layer.name)): \(ReportNumbers.percent(values.negativeShare)) negative</title></rect>"
            if values.nonzeros == 0 {
                svg += "<text class=\"value\" x=\"\(n(rows.plotLeft + 4))\" y=\"\(n(y + h / 2))\">no nonzero values</text>"
            }
            if wp >= 44 {
                svg += "<text class=\"inbar\" x=\"\(n(rows.plotLeft + 4))\" y=\"\(n(y + h - 3))\">\(ReportNumbers.percent(values.positiveShare, 1))</text>"
            }
            if wn >= 44 {
                svg += "<text class=\"inbar\" x=\"\(n(rows.plotRight - 4))\" y=\"\(n(y + h - 3))\" text-anchor=\"end\">\(ReportNumbers.percent(values.negativeShare, 1))</text>"
            }
        }
        let mid = rows.plotLeft + rows.plotWidth / 2
        svg += "<line class=\"mid\" x1=\"\(n(mid))\" x2=\"\(n(mid))\" y1=\"\(n(rows.top - 4))\" y2=\"\(n(rows.y(layers.count) + 2))\"/>"
        return svg + "</svg>"
    }

    private static func histogramChart(_ report: PatchAuditReport) -> String {
        let width = 1120.0, height = 300.0
        let left = 56.0, right = 16.0, top = 14.0, bottom = 44.0
        var svg = svgOpen("chart-histogram", width: width, height: height, label: "Histogram of absolute values, log scale")
        guard report.valuesComputed, let histogram = report.total.values?.histogram, let range = histogram.occupied else {
            let text = report.valuesComputed ? "no nonzero values" : "not computed"
            return svg + "<text class=\"empty\" x=\"\(n(width / 2))\" y=\"\(n(height / 2))\" text-anchor=\"middle\">\(text)</text></svg>"
        }
        let total = Double(histogram.total)
        let shares = range.map { Double(histogram[$0]) / total }
        let axis = ReportNumbers.axis(shares.max() ?? 1)
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        let slot = plotWidth / Double(shares.count)
        var tick = 0.0
        while tick <= axis.max * 1.000_001 {
            let y = top + plotHeight - tick / axis.max * plotHeight
            svg += "<line class=\"grid\" x1=\"\(n(left))\" x2=\"\(n(width - right))\" y1=\"\(n(y))\" y2=\"\(n(y))\"/>"
                + "<text class=\"tick\" x=\"\(n(left - 6))\" y=\"\(n(y + 4))\" text-anchor=\"end\">\(ReportNumbers.significant(tick * 100, 3))%</text>"
            tick += axis.step
        }
        for (i, e) in range.enumerated() {
            let share = shares[i]
            let h = share / axis.max * plotHeight
            let x = left + Double(i) * slot
            svg += "<rect class=\"bar\" x=\"\(n(x + 1))\" y=\"\(n(top + plotHeight - h))\" width=\"\(n(max(1, slot - 2)))\" height=\"\(n(h))\">"
                + "<title>[\(ReportNumbers.significant(pow2(e), 3)), \(ReportNumbers.significant(pow2(e + 1), 3))): "
                + "\(ReportNumbers.count(histogram[e])) values (\(ReportNumbers.percent(share)))</title></rect>"
        }
        // Ticks at powers of ten, placed by their position on the log2 axis.
        let low = Double(range.lowerBound), high = Double(range.upperBound + 1)
        let firstDecade = Int((low * 0.301_029_995_663_981_2).rounded(.up))
        let lastDecade = Int((high * 0.301_029_995_663_981_2).rounded(.down))
        if firstDecade <= lastDecade {
            for decade in firstDecade...lastDecade {
                let position = Double(decade) / 0.301_029_995_663_981_2
                let x = left + (position - low) * slot
                svg += "<line class=\"axis\" x1=\"\(n(x))\" x2=\"\(n(x))\" y1=\"\(n(top + plotHeight))\" y2=\"\(n(top + plotHeight + 5))\"/>"
                    + "<text class=\"tick\" x=\"\(n(x))\" y=\"\(n(top + plotHeight + 18))\" text-anchor=\"middle\">1e\(decade)</text>"
            }
        }
        svg += "<line class=\"axis\" x1=\"\(n(left))\" x2=\"\(n(width - right))\" y1=\"\(n(top + plotHeight))\" y2=\"\(n(top + plotHeight))\"/>"
            + "<text class=\"axis-title\" x=\"\(n(left + plotWidth / 2))\" y=\"\(n(height - 6))\" text-anchor=\"middle\">|value| (log scale)</text>"
        return svg + "</svg>"
    }

    private static func sizeChart(_ report: PatchAuditReport) -> String {
        let layers = report.layers
        var rows = Rows(labels: layers.map(\.name), width: 1120)
        let summaryHeight = 58.0
        let largest = Double(layers.map(\.index.storedBytes).max() ?? 0)
        let axis = ReportNumbers.axis(max(largest, 1))
        rows = Rows(labels: rows.labels, width: rows.width)
        let height = summaryHeight + rows.height
        var svg = svgOpen("chart-size", width: rows.width, height: height, label: "Size on disk per layer, mask and values")

        // The whole file as one bar: mask, values, and index with header and footer.
        let mask = Double(report.tensors.reduce(0) { $0 + $1.index.maskBytes })
        let values = Double(report.tensors.reduce(0) { $0 + $1.index.valuesBytes })
        let overhead = Double(max(0, report.overheadBytes))
        let whole = max(1, report.filter == nil ? mask + values + overhead : mask + values)
        var x = rows.plotLeft
        let segments: [(String, String, Double)] = report.filter == nil
            ? [("mask", "mask", mask), ("values", "values", values), ("overhead", "index and framing", overhead)]
            : [("mask", "mask", mask), ("values", "values", values)]
        svg += "<text class=\"label\" x=\"\(n(rows.labelWidth))\" y=\"\(n(24))\" text-anchor=\"end\">\(report.filter == nil ? "whole file" : "selection")</text>"
        for (cls, label, bytes) in segments {
            let w = bytes / whole * rows.plotWidth
            svg += "<rect class=\"seg \(cls)\" x=\"\(n(x))\" y=\"10\" width=\"\(n(w))\" height=\"20\"><title>\(label): \(ReportNumbers.bytes(Int(bytes)))</title></rect>"
            x += w
        }
        var legendX = rows.plotLeft
        for (cls, label, bytes) in segments {
            let text = "\(label) \(ReportNumbers.bytes(Int(bytes))) (\(ReportNumbers.percent(bytes / whole, 1)))"
            svg += "<rect class=\"swatch \(cls)\" x=\"\(n(legendX))\" y=\"37\" width=\"10\" height=\"10\"/>"
                + "<text class=\"legend\" x=\"\(n(legendX + 14))\" y=\"46\">\(escape(text))</text>"
            legendX += 14 + Double(text.count) * 6.8 + 18
        }

        svg += "<g transform=\"translate(0 \(n(summaryHeight)))\">"
        xAxis(rows, max: axis.max, step: axis.step, format: { ReportNumbers.bytes(Int($0.rounded())) }, into: &svg)
        rowLabels(rows, into: &svg)
        for (i, layer) in layers.enumerated() {
            let y = rows.y(i) + 4, h = rows.rowHeight - 8
            let wm = Double(layer.index.maskBytes) / axis.max * rows.plotWidth
            let wv = Double(layer.index.valuesBytes) / axis.max * rows.plotWidth
            svg += "<rect class=\"bar mask\" x=\"\(n(rows.plotLeft))\" y=\"\(n(y))\" width=\"\(n(wm))\" height=\"\(n(h))\">"
                + "<title>\(escape(layer.name)): mask \(ReportNumbers.bytes(layer.index.maskBytes))</title></rect>"
                + "<rect class=\"bar values\" x=\"\(n(rows.plotLeft + wm))\" y=\"\(n(y))\" width=\"\(n(wv))\" height=\"\(n(h))\">"
                + "<title>\(escape(layer.name)): values \(ReportNumbers.bytes(layer.index.valuesBytes))</title></rect>"
                + "<text class=\"value\" x=\"\(n(rows.plotLeft + wm + wv + 4))\" y=\"\(n(y + h - 3))\">"
                + "\(ReportNumbers.bytes(layer.index.storedBytes)) · \(ReportNumbers.fixed(layer.index.bitsPerElement, 2)) bits/el</text>"
        }
        svg += "</g>"
        return svg + "</svg>"
    }

    private static func agreementChart(_ agreement: [Int], elements: Int) -> String {
        let width = 1120.0, height = 240.0
        let left = 56.0, right = 16.0, top = 14.0, bottom = 44.0
        let total = Double(max(elements, 1))
        let shares = agreement.map { Double($0) / total }
        let axis = ReportNumbers.axis(shares.max() ?? 1)
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        let slot = plotWidth / Double(shares.count)
        var svg = svgOpen("chart-agreement", width: width, height: height, label: "Sign agreement histogram")
        var tick = 0.0
        while tick <= axis.max * 1.000_001 {
            let y = top + plotHeight - tick / axis.max * plotHeight
            svg += "<line class=\"grid\" x1=\"\(n(left))\" x2=\"\(n(width - right))\" y1=\"\(n(y))\" y2=\"\(n(y))\"/>"
                + "<text class=\"tick\" x=\"\(n(left - 6))\" y=\"\(n(y + 4))\" text-anchor=\"end\">\(ReportNumbers.significant(tick * 100, 3))%</text>"
            tick += axis.step
        }
        let n0 = agreement.count - 1
        for (m, share) in shares.enumerated() {
            let h = share / axis.max * plotHeight
            let x = left + Double(m) * slot
            svg += "<rect class=\"bar\(m == n0 ? " full" : "")\" x=\"\(n(x + slot * 0.15))\" y=\"\(n(top + plotHeight - h))\" width=\"\(n(slot * 0.7))\" height=\"\(n(h))\">"
                + "<title>m = \(m): \(ReportNumbers.count(agreement[m])) elements (\(ReportNumbers.percent(share)))</title></rect>"
                + "<text class=\"tick\" x=\"\(n(x + slot / 2))\" y=\"\(n(top + plotHeight + 16))\" text-anchor=\"middle\">\(m)</text>"
        }
        svg += "<line class=\"axis\" x1=\"\(n(left))\" x2=\"\(n(width - right))\" y1=\"\(n(top + plotHeight))\" y2=\"\(n(top + plotHeight))\"/>"
            + "<text class=\"axis-title\" x=\"\(n(left + plotWidth / 2))\" y=\"\(n(height - 6))\" text-anchor=\"middle\">m: task vectors sharing the majority sign</text>"
        return svg + "</svg>"
    }

    /// Replaces `&lt;key CLASS&gt;` markers in an escaped subtitle with colour keys.
    private static func keys(_ text: String) -> String {
        var out = text
        for cls in ["pos", "neg", "mask", "values", "overhead"] {
            out = out.replacing("&lt;key \(cls)&gt;", with: "<span class=\"key \(cls)\"></span>")
        }
        return out
    }

    // MARK: - Helpers

    private static func pow2(_ e: Int) -> Double {
        var value = 1.0
        if e >= 0 { for _ in 0..<e { value *= 2 } } else { for _ in 0..<(-e) { value /= 2 } }
        return value
    }

    /// A coordinate with at most one decimal.
    private static func n(_ value: Double) -> String {
        let text = ReportNumbers.fixed(value, 1)
        return text.hasSuffix(".0") ? String(text.dropLast(2)) : text
    }

    private static func elide(_ text: String, _ width: Int) -> String {
        guard text.count > width else { return text }
        let keep = width - 1
        return String(text.prefix(keep / 2 + keep % 2)) + "…" + String(text.suffix(keep / 2))
    }

    /// `text` with the characters HTML gives meaning to escaped.
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in DisplayText.escaped(text) {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(character)
            }
        }
        return out
    }

    private struct HTMLPage {
        var text = ""
        mutating func add(_ line: String) {
            text += line
            text += "\n"
        }
    }

    private static let style = """
        :root { --ink: #1f2933; --muted: #5f6b7a; --line: #e4e7eb; --pos: #2f6fb0; --neg: #d1603d; \
        --density: #3d8c7a; --mask: #9fb8d8; --values: #2f5f98; --overhead: #c9ced6; }
        * { box-sizing: border-box; }
        body { margin: 0; background: #f4f5f7; color: var(--ink); \
        font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", "Liberation Sans", sans-serif; }
        main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 40px; }
        h1 { font-size: 24px; margin: 0 0 4px; word-break: break-all; }
        h2 { font-size: 16px; margin: 0 0 2px; display: inline-block; }
        p.sub { color: var(--muted); margin: 2px 0 10px; font-size: 13px; }
        header p.sub { font-size: 14px; }
        .note { background: #fff8e1; border: 1px solid #f1dca7; padding: 6px 10px; border-radius: 6px; }
        .badge { display: inline-block; padding: 2px 10px; border-radius: 12px; font-weight: 600; font-size: 13px; margin-left: 4px; }
        .ok { background: #dff3e6; color: #17663a; } .warn { background: #fff1cc; color: #7d5400; } \
        .bad { background: #fde0de; color: #a3211f; }
        ul.problems { color: #a3211f; font-size: 13px; }
        .cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(175px, 1fr)); gap: 12px; margin: 16px 0; }
        .card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
        .card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
        .card .v { font-size: 22px; font-weight: 650; font-variant-numeric: tabular-nums; }
        .card .n { color: var(--muted); font-size: 12px; }
        .grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
        section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; margin: 0 0 14px; }
        svg.chart { display: block; }
        svg text { font-size: 12px; fill: #3e4c59; font-variant-numeric: tabular-nums; }
        svg text.value { font-size: 11px; fill: #52606d; dominant-baseline: middle; }
        svg text.inbar { font-size: 11px; fill: #fff; font-weight: 600; }
        svg text.tick { font-size: 11px; fill: #7b8794; }
        svg text.axis-title { font-size: 12px; fill: #52606d; }
        svg text.empty { font-size: 14px; fill: #9aa5b1; }
        svg .grid { stroke: #edf0f3; } svg .axis { stroke: #9aa5b1; } svg .mid { stroke: #1f2933; stroke-dasharray: 3 3; }
        rect.bar { fill: var(--density); } rect.pos, rect.swatch.pos { fill: var(--pos); } \
        rect.neg, rect.swatch.neg { fill: var(--neg); } rect.mask { fill: var(--mask); } \
        rect.values { fill: var(--values); } rect.overhead { fill: var(--overhead); }
        #chart-histogram rect.bar { fill: #6b5fb5; } #chart-agreement rect.bar { fill: #9aa5b1; } \
        #chart-agreement rect.bar.full { fill: var(--density); }
        table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
        th, td { padding: 4px 8px; border-bottom: 1px solid #eef0f2; text-align: right; white-space: nowrap; }
        th:first-child, td:first-child { text-align: left; }
        thead th { color: var(--muted); font-weight: 600; border-bottom: 1px solid var(--line); }
        table.meta th { text-align: left; color: var(--muted); font-weight: 600; width: 170px; }
        table.meta td { text-align: left; white-space: normal; word-break: break-word; }
        tr.total td { font-weight: 650; border-top: 1px solid #c9ced6; }
        details summary { cursor: pointer; }
        span.key { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 2px; border-radius: 2px; vertical-align: -1px; }
        span.key.pos { background: var(--pos); } span.key.neg { background: var(--neg); } span.key.mask { background: var(--mask); } \
        span.key.values { background: var(--values); } span.key.overhead { background: var(--overhead); }
        footer { color: var(--muted); font-size: 12px; margin-top: 8px; }
        """
}


import Foundation
import Testing
@testable import NegPatch

/// The opening tag and contents of the `<svg id="ID">` element of `html`.
private func svg(_ id: String, in html: String) -> String? {
    guard let start = html.range(of: "<svg id=\"\(id)\"") else { return nil }
    guard let end = html.range(of: "</svg>", range: start.upperBound..<html.endIndex) else { return nil }
    return String(html[start.lowerBound..<end.upperBound])
}

private func count(_ needle: String, in text: String) -> Int {
    text.components(separatedBy: needle).count - 1
}

@Suite("Audit HTML")
struct AuditHTMLTests {
    private func report(values: Bool = true, tensors: [SyntheticTensor] = Synthetic.tensors()) throws -> (PatchAuditReport, ScratchFolder) {
        let scratch = ScratchFolder("html")
        let source = try PatchFormats.open(try Synthetic.write(tensors, to: scratch.file("p.negpatch")))
        var options = PatchAuditOptions()
        options.values = values
        return (PatchAudit.run(source, options: options), scratch)
    }

    @Test("Each chart is there with one bar per layer, bin or count")
    func charts() throws {
        let (report, scratch) = try report()
        defer { scratch.remove() }
        let html = AuditHTML.render(report)
        let layers = report.layers.count
        #expect(layers == 7)

        let density = try #require(svg("chart-density", in: html))
        #expect(count("<rect class=\"bar\"", in: density) == layers)
        let signs = try #require(svg("chart-signs", in: html))
        #expect(count("<rect class=\"bar pos\"", in: signs) == layers)
        #expect(count("<rect class=\"bar neg\"", in: signs) == layers)
        let histogram = try #require(svg("chart-histogram", in: html))
        let bins = try #require(report.total.values?.histogram.occupied)
        #expect(count("<rect class=\"bar\"", in: histogram) == bins.count)
        let size = try #require(svg("chart-size", in: html))
        #expect(count("<rect class=\"bar mask\"", in: size) == layers)
        #expect(count("<rect class=\"bar values\"", in: size) == layers)
        let agreement = try #require(svg("chart-agreement", in: html))
        #expect(count("<rect class=\"bar", in: agreement) == report.metadata.n + 1)
        // Every layer is labelled in the per-layer charts.
        for layer in report.layers { #expect(density.contains(">\(layer.name)</text>")) }
    }

    @Test("The page is self-contained: no scripts, links, URLs or external resources")
    func selfContained() throws {
        let (report, scratch) = try report()
        defer { scratch.remove() }
        let html = AuditHTML.render(report).lowercased()
        for forbidden in ["<script", "<link", "http://", "https://", "src=", "url(", "@import", "<iframe", "<img"] {
            #expect(!html.contains(forbidden), "found \(forbidden)")
        }
        #expect(html.hasPrefix("<!doctype html>"))
        #expect(html.contains("<meta charset=\"utf-8\">"))
    }

    @Test("Names are escaped")
    func escaping() throws {
        var tensors = Array(Synthetic.tensors().prefix(2))
        tensors[1].name = "odd.<b>&\"name\".weight"
        let (report, scratch) = try report(tensors: tensors)
        defer { scratch.remove() }
        let html = AuditHTML.render(report)
        #expect(!html.contains("<b>"))
        #expect(html.contains("odd.&lt;b&gt;&amp;&quot;name&quot;.weight"))
    }

    @Test("Without value statistics the charts that need them say so and draw no bars")
    func withoutValues() throws {
        let (report, scratch) = try report(values: false)
        defer { scratch.remove() }
        let html = AuditHTML.render(report)
        #expect(count("<rect class=\"bar", in: try #require(svg("chart-signs", in: html))) == 0)
        #expect(count("<rect class=\"bar", in: try #require(svg("chart-histogram", in: html))) == 0)
        #expect(try #require(svg("chart-histogram", in: html)).contains("not computed"))
        #expect(count("<rect class=\"bar\"", in: try #require(svg("chart-density", in: html))) == report.layers.count)
        #expect(html.contains("Parts not checked"))
    }

    @Test("Written atomically to the path given")
    func write() throws {
        let (report, scratch) = try report()
        defer { scratch.remove() }
        let path = scratch.file("report.html")
        let size = try AuditHTML.write(report, to: path)
        let written = try String(contentsOfFile: path, encoding: .utf8)
        #expect(written.utf8.count == size)
        #expect(written == AuditHTML.render(report))
    }

    @Test("Report numbers: fixed, significant, bytes, counts, axes")
    func numbers() {
        #expect(ReportNumbers.fixed(0.125, 2) == "0.13")
        #expect(ReportNumbers.fixed(-0.001, 2) == "0.00")
        #expect(ReportNumbers.fixed(12.5, 0) == "13")
        #expect(ReportNumbers.fixed(0.05, 3) == "0.050")
        #expect(ReportNumbers.significant(0.000123456) == "0.0001235")
        #expect(ReportNumbers.significant(1.4591) == "1.459")
        #expect(ReportNumbers.significant(2.5e-7, 3) == "2.5e-07")
        #expect(ReportNumbers.significant(99999, 3) == "1e+05")
        #expect(ReportNumbers.percent(0.3863) == "38.63%")
        #expect(ReportNumbers.bytes(812) == "812 B")
        #expect(ReportNumbers.bytes(1_804_971) == "1.80 MB")
        #expect(ReportNumbers.count(2_988_505) == "2,988,505")
        #expect(ReportNumbers.axis(0.3863).max == 0.4)
        #expect(ReportNumbers.axis(1).max == 1)
        let axis = ReportNumbers.axis(238_830)
        #expect(axis.max >= 238_830 && axis.max <= 300_000)
    }
}

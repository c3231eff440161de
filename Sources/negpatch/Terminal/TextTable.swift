import NegPatch

/// A plain-text table that fits a terminal width: the first column (names) takes what the
/// others leave and is shortened in the middle when too long; the other columns are
/// right-aligned. Rows may be headings, printed across the whole width.
struct TextTable {
    /// The width tables are fitted to.
    static let width = 100

    private enum Row {
        case cells([String])
        case heading(String)
        case rule
    }

    private let headers: [String]
    private var rows: [Row] = []

    /// A table with these column headers (the first is the name column).
    init(_ headers: [String]) {
        self.headers = headers
    }

    /// Adds a row of cells, one per column.
    mutating func add(_ cells: [String]) {
        rows.append(.cells(cells.map(DisplayText.escaped)))
    }

    /// Adds a heading line (e.g. a layer name).
    mutating func heading(_ text: String) {
        rows.append(.heading(DisplayText.escaped(text)))
    }

    /// Adds a horizontal rule (before a total row).
    mutating func rule() {
        rows.append(.rule)
    }

    /// The table's lines, none wider than `width`.
    func render(width: Int = TextTable.width) -> [String] {
        let gap = 2
        var widths = headers.map(\.count)
        for case let .cells(cells) in rows {
            for (i, cell) in cells.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
        }
        let others = widths.dropFirst().reduce(0) { $0 + $1 + gap }
        widths[0] = max(12, min(widths[0], width - others))
        func line(_ cells: [String]) -> String {
            var out = Terminal.padRight(TextTable.elide(cells[0], widths[0]), widths[0])
            for i in 1..<headers.count {
                out += String(repeating: " ", count: gap) + Terminal.pad(i < cells.count ? cells[i] : "", widths[i])
            }
            return String(out.reversed().drop { $0 == " " }.reversed())
        }
        let total = widths.reduce(0, +) + gap * (widths.count - 1)
        var lines = [line(headers)]
        for row in rows {
            switch row {
            case let .cells(cells): lines.append(line(cells))
            case let .heading(text): lines.append(TextTable.elide(text, total))
            case .rule: lines.append(String(repeating: "-", count: total))
            }
        }
        return lines
    }

    /// `text` shortened to `width` characters by replacing its middle with `…`.
    static func elide(_ text: String, _ width: Int) -> String {
        guard text.count > width, width > 1 else { return text }
        let keep = width - 1
        let head = keep / 2 + keep % 2
        return String(text.prefix(head)) + "…" + String(text.suffix(keep - head))
    }
}

extension TextTable {
    /// `text` broken at spaces into lines of at most `width` characters; lines after the
    /// first start with `indent` spaces (the first line's prefix is the caller's).
    static func wrap(_ text: String, first: Int, indent: Int, width: Int = TextTable.width) -> [String] {
        var lines: [String] = []
        var line = ""
        var room = width - first
        for word in text.split(separator: " ", omittingEmptySubsequences: false) {
            if !line.isEmpty && line.count + 1 + word.count > room {
                lines.append(line)
                line = String(repeating: " ", count: indent)
                room = width
                line += word
            } else {
                line += (line.isEmpty || line.allSatisfy({ $0 == " " }) ? "" : " ") + word
            }
        }
        lines.append(line)
        return lines
    }
}

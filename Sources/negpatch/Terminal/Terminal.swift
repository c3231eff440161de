import Foundation
import NegPatch

/// How the command line speaks to people: error lines, progress, sizes.
enum Terminal {
    /// Prints `negpatch: error: MESSAGE` to stderr, on a line of its own (a progress bar
    /// drawn on the terminal is cleared first), and exits with status 1.
    static func fail(_ message: String) -> Never {
        ProgressBar.clearLine()
        FileHandle.standardError.write(Data("negpatch: error: \(DisplayText.escaped(message))\n".utf8))
        exit(1)
    }

    /// Prints a warning line to stderr.
    static func warn(_ message: String) {
        ProgressBar.clearLine()
        FileHandle.standardError.write(Data("negpatch: warning: \(DisplayText.escaped(message))\n".utf8))
    }

    /// Whether stderr is an interactive terminal (progress bars are drawn only then).
    static var stderrIsTerminal: Bool { isatty(2) == 1 }

    /// A byte count for people: `812 B`, `1.21 MB`, `3.40 GB` (decimal units).
    static func bytes(_ count: Int) -> String { ReportNumbers.bytes(count) }

    /// An integer with thousands separators: `2,000,000`.
    static func count(_ value: Int) -> String { ReportNumbers.count(value) }

    /// `text` right-aligned in `width` columns.
    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
    }

    /// `text` left-aligned in `width` columns.
    static func padRight(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }

    /// A share as a percentage with two decimals.
    static func percent(_ share: Double) -> String { ReportNumbers.percent(share) }
}

/// Prints one line to stdout with the control characters of any name in it shown escaped
/// (`DisplayText`): every line the commands print goes through here, so a tensor name or a
/// path from a file can never drive the terminal or forge a line.
func print(_ line: String) {
    Swift.print(DisplayText.escaped(line))
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal and redrawn at
/// most ten times a second.
final class ProgressBar: @unchecked Sendable {
    /// Whether some bar has drawn on stderr's current line, which a message must clear first
    /// (guarded by `lineLock`: bars draw from worker threads).
    nonisolated(unsafe) private static var lineDirty = false
    private static let lineLock = NSLock()

    /// Clears stderr's line if a progress bar left text on it.
    static func clearLine() {
        lineLock.lock()
        defer { lineLock.unlock() }
        guard lineDirty else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8))
        lineDirty = false
    }

    private static func markLineDirty() {
        lineLock.lock()
        lineDirty = true
        lineLock.unlock()
    }

    private let label: String
    private let enabled: Bool
    private let started = Date()
    private var lastDraw = Date.distantPast
    private var drawn = false
    private let lock = NSLock()

    init(_ label: String, quiet: Bool) {
        self.label = label
        enabled = !quiet && Terminal.stderrIsTerminal
    }

    /// Updates the bar to `done` of `total`.
    func update(_ done: Int, _ total: Int) {
        guard enabled else { return }
        lock.lock()
        defer { lock.unlock() }
        let now = Date()
        guard now.timeIntervalSince(lastDraw) >= 0.1 || done == total else { return }
        lastDraw = now
        let share = total == 0 ? 1 : Double(done) / Double(total)
        let width = 30
        let filled = Int(share * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let elapsed = now.timeIntervalSince(started)
        let line = "\r\(label) [\(bar)] " + String(format: "%5.1f%%  %.1f s", share * 100, elapsed)
        FileHandle.standardError.write(Data(line.utf8))
        drawn = true
        Self.markLineDirty()
    }

    /// Clears the bar's line.
    func finish() {
        guard enabled, drawn else { return }
        lock.lock()
        defer { lock.unlock() }
        Self.clearLine()
    }
}

/// A monotonic stopwatch.
struct Stopwatch {
    private let start = DispatchTime.now().uptimeNanoseconds
    /// Seconds since creation.
    var seconds: Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
}

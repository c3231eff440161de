/// Names and paths from files made safe to show a person: in an error line, a table, a
/// report.
///
/// A tensor name or a path is attacker-controlled text. Shown raw, an ESC or OSC sequence
/// moves the cursor or retitles the terminal, a BEL rings, a newline forges a second
/// `negpatch: error:` line, and a bidirectional override reorders what is read. Every such
/// character is shown as an escape instead, and very long names are shortened.
public enum DisplayText {
    /// `text` with every control character (C0, DEL, C1), the line and paragraph separators
    /// (U+2028, U+2029) and the bidirectional controls (U+200E-U+200F, U+202A-U+202E,
    /// U+2066-U+2069) written as `\xHH` or `\u{HHHH}`, and the backslash before such an
    /// escape doubled so it cannot be forged. Text without them is returned unchanged.
    public static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: needsEscape) else { return text }
        var out = ""
        out.reserveCapacity(text.utf8.count + 16)
        for scalar in text.unicodeScalars {
            if scalar == "\\" {
                out += "\\\\"
            } else if needsEscape(scalar) {
                out += scalar.value < 0x100 ? "\\x" + hex(scalar.value, digits: 2) : "\\u{" + hex(scalar.value, digits: 4) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// `escaped(text)`, shortened in the middle with `…` to at most `limit` characters.
    public static func shortened(_ text: String, limit: Int = 200) -> String {
        let safe = escaped(text)
        guard safe.count > limit, limit > 1 else { return safe }
        let head = (limit - 1) / 2
        let tail = limit - 1 - head
        return String(safe.prefix(head)) + "…" + String(safe.suffix(tail))
    }

    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F, 0x2028, 0x2029, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: true
        default: false
        }
    }

    private static func hex(_ value: UInt32, digits: Int) -> String {
        let text = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Number formatting for reports written by the library (the library does not use
/// Foundation): fixed decimals, significant digits, percentages, bytes and counts.
public enum ReportNumbers {
    /// `x` with exactly `digits` decimals, rounded half away from zero.
    public static func fixed(_ x: Double, _ digits: Int) -> String {
        guard x.isFinite else { return x.isNaN ? "NaN" : (x < 0 ? "-inf" : "inf") }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = (abs(x) * scale).rounded()
        guard scaled < 9e15 else { return "\(x)" }
        var text = String(Int64(scaled))
        if digits > 0 {
            if text.count <= digits { text = String(repeating: "0", count: digits - text.count + 1) + text }
            text.insert(".", at: text.index(text.endIndex, offsetBy: -digits))
        }
        return (x < 0 && scaled != 0 ? "-" : "") + text
    }

    /// `x` with `digits` significant digits, like C's `%.Ng` (trailing zeros removed).
    public static func significant(_ x: Double, _ digits: Int = 4) -> String {
        guard x.isFinite, x != 0 else { return x == 0 ? "0" : fixed(x, 0) }
        var exponent = Int(floor(log10(abs(x))))
        var mantissa = x / pow(10, Double(exponent))
        if abs((mantissa * pow(10, Double(digits - 1))).rounded()) >= pow(10, Double(digits)) {
            exponent += 1
            mantissa = x / pow(10, Double(exponent))
        }
        if exponent >= -4 && exponent < digits {
            return trimmed(fixed(x, max(0, digits - 1 - exponent)))
        }
        return trimmed(fixed(mantissa, digits - 1)) + "e" + (exponent < 0 ? "-" : "+") + (abs(exponent) < 10 ? "0" : "") + String(abs(exponent))
    }

    private static func trimmed(_ text: String) -> String {
        guard text.contains(".") else { return text }
        var out = text
        while out.hasSuffix("0") { out.removeLast() }
        if out.hasSuffix(".") { out.removeLast() }
        return out
    }

    /// A share as a percentage: `6.91%`.
    public static func percent(_ share: Double, _ digits: Int = 2) -> String {
        fixed(share * 100, digits) + "%"
    }

    /// A byte count in decimal units: `812 B`, `1.21 MB`.
    public static func bytes(_ count: Int) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var value = Double(count)
        var unit = 0
        while value >= 1000 && unit < units.count - 1 {
            value /= 1000
            unit += 1
        }
        return unit == 0 ? "\(count) B" : fixed(value, 2) + " " + units[unit]
    }

    /// An integer with thousands separators: `2,000,000`.
    public static func count(_ value: Int) -> String {
        let digits = String(value.magnitude)
        var out = ""
        for (i, character) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(character)
        }
        return value < 0 ? "-" + out : out
    }

    /// A round axis maximum at or above `value` (1, 2, 2.5 or 5 times a power of ten) and
    /// its tick step, for about four ticks.
    static func axis(_ value: Double) -> (max: Double, step: Double) {
        guard value > 0, value.isFinite else { return (1, 0.25) }
        let magnitude = pow(10, floor(log10(value / 4)))
        for factor in [1.0, 2.0, 2.5, 5.0, 10.0] {
            let step = factor * magnitude
            if step * 4 >= value * 0.999_999 { return ((value / step).rounded(.up) * step, step) }
        }
        return (value, value / 4)
    }
}

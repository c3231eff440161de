import ArgumentParser

/// The one number syntax every option accepts: an optional sign, decimal digits with an
/// optional fraction, and an optional exponent (`1`, `-0.25`, `.5`, `2e-3`). No spaces,
/// no hexadecimal (`0x10`), no `inf` or `nan`: what a person reads is what the tool takes.
enum StrictNumber {
    /// The value of `text`, or nil when it is not a finite number in that syntax.
    static func double<S: StringProtocol>(_ text: S) -> Double? {
        var bytes = Array(text.utf8)[...]
        if let first = bytes.first, first == UInt8(ascii: "+") || first == UInt8(ascii: "-") { bytes = bytes.dropFirst() }
        let digits = bytes.prefix { isDigit($0) }
        bytes = bytes.dropFirst(digits.count)
        var fraction = 0
        if bytes.first == UInt8(ascii: ".") {
            bytes = bytes.dropFirst()
            fraction = bytes.prefix { isDigit($0) }.count
            bytes = bytes.dropFirst(fraction)
        }
        guard digits.count + fraction > 0 else { return nil }
        if let e = bytes.first, e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            bytes = bytes.dropFirst()
            if let sign = bytes.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") { bytes = bytes.dropFirst() }
            let exponent = bytes.prefix { isDigit($0) }.count
            guard exponent > 0 else { return nil }
            bytes = bytes.dropFirst(exponent)
        }
        guard bytes.isEmpty, let value = Double(String(text)), value.isFinite else { return nil }
        return value
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }
}

/// A floating option value in `StrictNumber`'s syntax.
struct Number: ExpressibleByArgument, Sendable {
    /// The value given.
    let value: Double

    init(_ value: Double) { self.value = value }

    init?(argument: String) {
        guard let value = StrictNumber.double(argument) else { return nil }
        self.value = value
    }

    var defaultValueDescription: String { String(value) }
}

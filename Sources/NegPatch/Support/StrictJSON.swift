/// A JSON value as parsed by `StrictJSON`: objects keep their keys in document order and
/// numbers keep their text, so integers are read exactly and nothing is silently merged.
public indirect enum JSONValue: Sendable, Equatable {
    case object([(key: String, value: JSONValue)])
    case array([JSONValue])
    case string(String)
    /// A number's text exactly as written, e.g. `"12"` or `"-1.5e3"`.
    case number(String)
    case bool(Bool)
    case null

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case let (.object(a), .object(b)):
            a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case let (.array(a), .array(b)): a == b
        case let (.string(a), .string(b)): a == b
        case let (.number(a), .number(b)): a == b
        case let (.bool(a), .bool(b)): a == b
        case (.null, .null): true
        default: false
        }
    }

    /// The value as it appears in JSON, for error messages (`4e0`, `"x"`, `[...]`).
    public var shown: String {
        switch self {
        case let .number(text): text
        case let .string(text): "\"\(text)\""
        case let .bool(value): String(value)
        case .null: "null"
        case .array: "[...]"
        case .object: "{...}"
        }
    }

    /// A short name of the value's kind, for error messages.
    public var kind: String {
        switch self {
        case .object: "object"
        case .array: "array"
        case .string: "string"
        case .number: "number"
        case .bool: "boolean"
        case .null: "null"
        }
    }

    /// The value of `key` in an object (first occurrence; parsing rejects duplicates).
    public subscript(key: String) -> JSONValue? {
        guard case let .object(entries) = self else { return nil }
        return entries.first(where: { $0.key.sameBytes(as: key) })?.value
    }

    /// A non-negative integer that fits in `Int`, or nil (fractions, exponents, signs,
    /// leading zeros and overflow all give nil).
    public var nonNegativeInt: Int? {
        guard case let .number(text) = self, !text.isEmpty, text.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
            return nil
        }
        if text.utf8.count > 1 && text.utf8.first == 48 { return nil }
        return Int(text)
    }

    /// The number as a Double, or nil if this is not a number.
    public var double: Double? {
        guard case let .number(text) = self else { return nil }
        return Double(text)
    }

    /// The string, or nil.
    public var string: String? {
        guard case let .string(text) = self else { return nil }
        return text
    }
}

/// A validating JSON parser (RFC 8259) for untrusted headers.
///
/// Unlike a general-purpose decoder it rejects duplicate object keys, invalid UTF-8,
/// unescaped control characters, lone surrogates and nesting deeper than `maxDepth`, and it
/// reports the byte offset of the first problem.
public struct StrictJSON {
    /// Why a document was rejected, with the byte offset into it.
    public struct ParseError: Error, CustomStringConvertible {
        /// Byte offset of the problem within the document.
        public let offset: Int
        /// What is wrong there.
        public let reason: String
        public var description: String { "invalid JSON at byte \(offset): \(reason)" }
    }

    private let bytes: UnsafeRawBufferPointer
    private var position = 0
    private let maxDepth: Int

    /// Parses `bytes` as exactly one JSON value, surrounded by optional whitespace.
    public static func parse(_ bytes: UnsafeRawBufferPointer, maxDepth: Int = 64) throws -> JSONValue {
        var parser = StrictJSON(bytes: bytes, maxDepth: maxDepth)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        guard parser.position == bytes.count else {
            throw ParseError(offset: parser.position, reason: "unexpected data after the value")
        }
        return value
    }

    /// Parses the UTF-8 bytes of `array`.
    public static func parse(_ array: [UInt8], maxDepth: Int = 64) throws -> JSONValue {
        try array.withUnsafeBytes { raw in try parse(raw, maxDepth: maxDepth) }
    }

    private init(bytes: UnsafeRawBufferPointer, maxDepth: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
    }

    private func fail(_ reason: String) -> ParseError {
        ParseError(offset: position, reason: reason)
    }

    private var current: UInt8? { position < bytes.count ? bytes[position] : nil }

    private mutating func skipWhitespace() {
        while let byte = current, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 {
            position += 1
        }
    }

    private mutating func expect(_ literal: StaticString) throws {
        let count = literal.utf8CodeUnitCount
        guard position + count <= bytes.count else { throw fail("unexpected end of input") }
        let start = literal.utf8Start
        for i in 0..<count where bytes[position + i] != start[i] {
            throw fail("invalid literal")
        }
        position += count
    }

    private mutating func parseValue(depth: Int) throws -> JSONValue {
        guard depth <= maxDepth else { throw fail("nesting deeper than \(maxDepth)") }
        guard let byte = current else { throw fail("unexpected end of input") }
        switch byte {
        case UInt8(ascii: "{"): return try parseObject(depth: depth)
        case UInt8(ascii: "["): return try parseArray(depth: depth)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw fail("unexpected character")
        }
    }

    /// Objects of up to this many keys are checked for duplicates by a scan.
    private static let scanLimit = 16

    private mutating func parseObject(depth: Int) throws -> JSONValue {
        position += 1
        var entries: [(key: String, value: JSONValue)] = []
        // Keys are compared by their bytes, not by Unicode equivalence (`TensorName`).
        var seen = Set<TensorName>()
        skipWhitespace()
        if current == UInt8(ascii: "}") {
            position += 1
            return .object(entries)
        }
        while true {
            skipWhitespace()
            guard current == UInt8(ascii: "\"") else { throw fail("expected a string key") }
            let keyOffset = position
            let key = try parseString()
            // Small objects (a tensor's dtype, shape and offsets) are checked by a scan, so
            // a header of 200,000 tensors does not build 200,000 sets; large ones by a set.
            let duplicate: Bool
            if entries.count < Self.scanLimit {
                duplicate = entries.contains { $0.key.sameBytes(as: key) }
                if !duplicate, entries.count + 1 == Self.scanLimit {
                    seen.reserveCapacity(2 * Self.scanLimit)
                    for entry in entries { seen.insert(TensorName(entry.key)) }
                    seen.insert(TensorName(key))
                }
            } else {
                duplicate = !seen.insert(TensorName(key)).inserted
            }
            guard !duplicate else {
                throw ParseError(offset: keyOffset, reason: "duplicate key '\(key)'")
            }
            skipWhitespace()
            guard current == UInt8(ascii: ":") else { throw fail("expected ':'") }
            position += 1
            skipWhitespace()
            let value = try parseValue(depth: depth + 1)
            entries.append((key, value))
            skipWhitespace()
            guard let next = current else { throw fail("unexpected end of input in object") }
            position += 1
            if next == UInt8(ascii: "}") { return .object(entries) }
            guard next == UInt8(ascii: ",") else { throw ParseError(offset: position - 1, reason: "expected ',' or '}'") }
        }
    }

    private mutating func parseArray(depth: Int) throws -> JSONValue {
        position += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") {
            position += 1
            return .array(items)
        }
        while true {
            skipWhitespace()
            items.append(try parseValue(depth: depth + 1))
            skipWhitespace()
            guard let next = current else { throw fail("unexpected end of input in array") }
            position += 1
            if next == UInt8(ascii: "]") { return .array(items) }
            guard next == UInt8(ascii: ",") else { throw ParseError(offset: position - 1, reason: "expected ',' or ']'") }
        }
    }

    private mutating func parseNumber() throws -> JSONValue {
        let start = position
        if current == UInt8(ascii: "-") { position += 1 }
        guard let first = current, first >= 48, first <= 57 else { throw fail("invalid number") }
        if first == 48 {
            position += 1
        } else {
            while let d = current, d >= 48, d <= 57 { position += 1 }
        }
        if current == UInt8(ascii: ".") {
            position += 1
            guard let d = current, d >= 48, d <= 57 else { throw fail("invalid number: digit expected after '.'") }
            while let d = current, d >= 48, d <= 57 { position += 1 }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            position += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
            guard let d = current, d >= 48, d <= 57 else { throw fail("invalid number: digit expected in exponent") }
            while let d = current, d >= 48, d <= 57 { position += 1 }
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
        return .number(text)
    }

    private mutating func parseHex4() throws -> UInt32 {
        guard position + 4 <= bytes.count else { throw fail("unexpected end of input in \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[position]
            let digit: UInt32
            switch c {
            case 48...57: digit = UInt32(c - 48)
            case 65...70: digit = UInt32(c - 55)
            case 97...102: digit = UInt32(c - 87)
            default: throw fail("invalid \\u escape")
            }
            value = value << 4 | digit
            position += 1
        }
        return value
    }

    private mutating func parseString() throws -> String {
        position += 1  // opening quote
        var scalars = String.UnicodeScalarView()
        var runStart = position
        func flushRun(_ end: Int, into view: inout String.UnicodeScalarView) throws {
            guard end > runStart else { return }
            let run = UnsafeRawBufferPointer(rebasing: bytes[runStart..<end])
            guard let text = String(validating: run, as: UTF8.self) else {
                throw ParseError(offset: runStart, reason: "invalid UTF-8 in string")
            }
            view.append(contentsOf: text.unicodeScalars)
        }
        var escaped = false
        while true {
            guard let byte = current else { throw fail("unterminated string") }
            if byte == UInt8(ascii: "\"") {
                // Most strings (every tensor name, in practice) hold no escape: one
                // validated copy of their bytes, with no scalar-by-scalar rebuilding.
                if !escaped {
                    let run = UnsafeRawBufferPointer(rebasing: bytes[runStart..<position])
                    guard let text = String(validating: run, as: UTF8.self) else {
                        throw ParseError(offset: runStart, reason: "invalid UTF-8 in string")
                    }
                    position += 1
                    return text
                }
                try flushRun(position, into: &scalars)
                position += 1
                return String(scalars)
            }
            if byte < 0x20 { throw fail("control character in string") }
            if byte != UInt8(ascii: "\\") {
                position += 1
                continue
            }
            try flushRun(position, into: &scalars)
            escaped = true
            position += 1
            guard let escape = current else { throw fail("unterminated escape") }
            position += 1
            switch escape {
            case UInt8(ascii: "\""): scalars.append("\"")
            case UInt8(ascii: "\\"): scalars.append("\\")
            case UInt8(ascii: "/"): scalars.append("/")
            case UInt8(ascii: "b"): scalars.append("\u{08}")
            case UInt8(ascii: "f"): scalars.append("\u{0C}")
            case UInt8(ascii: "n"): scalars.append("\n")
            case UInt8(ascii: "r"): scalars.append("\r")
            case UInt8(ascii: "t"): scalars.append("\t")
            case UInt8(ascii: "u"):
                let high = try parseHex4()
                var code = high
                if (0xD800...0xDBFF).contains(high) {
                    guard position + 2 <= bytes.count, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") else {
                        throw fail("lone high surrogate")
                    }
                    position += 2
                    let low = try parseHex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw fail("invalid low surrogate") }
                    code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(high) {
                    throw fail("lone low surrogate")
                }
                guard let scalar = Unicode.Scalar(code) else { throw fail("invalid code point") }
                scalars.append(scalar)
            default:
                throw fail("invalid escape")
            }
            runStart = position
        }
    }
}

/// Writes JSON with sorted keys and no insignificant whitespace, so equal values give
/// equal bytes.
public enum CanonicalJSON {
    /// The canonical UTF-8 bytes of `value`. Object keys are sorted by their UTF-8 bytes.
    public static func encode(_ value: JSONValue) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(1024)
        write(value, into: &out)
        return out
    }

    private static func write(_ value: JSONValue, into out: inout [UInt8]) {
        switch value {
        case let .object(entries):
            out.append(UInt8(ascii: "{"))
            // Writers build most objects in key order already: check before sorting.
            let inOrder = zip(entries, entries.dropFirst()).allSatisfy { $0.key.precedesByBytes($1.key) }
            let sorted = inOrder ? entries : entries.sorted { $0.key.precedesByBytes($1.key) }
            for (i, entry) in sorted.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                writeString(entry.key, into: &out)
                out.append(UInt8(ascii: ":"))
                write(entry.value, into: &out)
            }
            out.append(UInt8(ascii: "}"))
        case let .array(items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                write(item, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case let .string(text):
            writeString(text, into: &out)
        case let .number(text):
            out.append(contentsOf: text.utf8)
        case let .bool(flag):
            out.append(contentsOf: (flag ? "true" : "false").utf8)
        case .null:
            out.append(contentsOf: "null".utf8)
        }
    }

    private static func writeString(_ text: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [92, 34])
            case UInt8(ascii: "\\"): out.append(contentsOf: [92, 92])
            case 0x0A: out.append(contentsOf: [92, 110])
            case 0x0D: out.append(contentsOf: [92, 114])
            case 0x09: out.append(contentsOf: [92, 116])
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: [92, 117, 48, 48, hex[Int(byte >> 4)], hex[Int(byte & 15)]])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

extension JSONValue {
    /// A JSON number for an integer.
    public static func int(_ value: Int) -> JSONValue { .number(String(value)) }

    /// A JSON number for a Double, written so that parsing it gives the same Double.
    /// Integral values are written without a fraction (`1`, not `1.0`).
    public static func double(_ value: Double) -> JSONValue {
        precondition(value.isFinite, "JSON has no representation for non-finite numbers")
        if value == value.rounded(), abs(value) < 1e15 {
            return .number(String(Int64(value)))
        }
        return .number("\(value)")
    }
}

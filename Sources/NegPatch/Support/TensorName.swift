/// A tensor name (or a JSON key, or a shard's file name) compared and hashed by its UTF-8
/// bytes, as safetensors, the patch formats and the file system store it.
///
/// Swift's `String` equality is Unicode canonical equivalence: `"café"` in NFC and
/// `"cafe\u{301}"` in NFD compare equal. Two such tensors are distinct in a file, and a
/// fine-tuned file naming the other form does not hold the base's tensor, so every lookup of
/// a name from a file goes through this type instead of a `String` key.
public struct TensorName: Hashable, Sendable, CustomStringConvertible {
    /// The name as text.
    public let text: String

    /// The name `text`, compared by its bytes.
    public init(_ text: String) { self.text = text }

    public static func == (a: TensorName, b: TensorName) -> Bool {
        a.text.utf8.elementsEqual(b.text.utf8)
    }

    public func hash(into hasher: inout Hasher) {
        var text = text
        text.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }

    public var description: String { text }
}

extension String {
    /// Whether this and `other` are the same bytes (not merely canonically equivalent).
    @inlinable
    public func sameBytes(as other: String) -> Bool {
        utf8.elementsEqual(other.utf8)
    }
}

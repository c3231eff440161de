#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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
        a.text.sameBytes(as: b.text)
    }

    public func hash(into hasher: inout Hasher) {
        // Native strings hand out their UTF-8 storage: one pass over the bytes, no copy.
        let hashed: Void? = text.utf8.withContiguousStorageIfAvailable { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        if hashed == nil {
            for byte in text.utf8 { hasher.combine(byte) }
        }
    }

    public var description: String { text }
}

extension String {
    /// Whether this and `other` are the same bytes (not merely canonically equivalent).
    public func sameBytes(as other: String) -> Bool {
        let count = utf8.count
        guard count == other.utf8.count else { return false }
        let compared: Bool?? = utf8.withContiguousStorageIfAvailable { a in
            other.utf8.withContiguousStorageIfAvailable { b in
                count == 0 || memcmp(a.baseAddress!, b.baseAddress!, count) == 0
            }
        }
        if let compared, let compared { return compared }
        return utf8.elementsEqual(other.utf8)
    }

    /// Whether this comes before `other` in the order of their UTF-8 bytes (shorter first
    /// where one is a prefix of the other), without copying either.
    public func precedesByBytes(_ other: String) -> Bool {
        let a = utf8.count, b = other.utf8.count
        let compared: Int32?? = utf8.withContiguousStorageIfAvailable { pa in
            other.utf8.withContiguousStorageIfAvailable { pb in
                min(a, b) == 0 ? 0 : memcmp(pa.baseAddress!, pb.baseAddress!, min(a, b))
            }
        }
        if let compared, let order = compared {
            return order != 0 ? order < 0 : a < b
        }
        return utf8.lexicographicallyPrecedes(other.utf8)
    }
}

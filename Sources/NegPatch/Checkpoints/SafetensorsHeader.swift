/// Builds the header of a new safetensors file.
public struct SafetensorsHeader {
    /// A tensor to be written: name, dtype, shape; data offsets are assigned in order.
    public struct Entry {
        /// Tensor name.
        public var name: String
        /// Element type.
        public var dtype: DType
        /// Shape.
        public var shape: [Int]

        /// Creates an entry.
        public init(name: String, dtype: DType, shape: [Int]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
        }

        /// Data bytes.
        public var byteCount: Int { dtype.byteCount(elements: checkedElementCount(shape) ?? 0) ?? 0 }
    }

    /// The bytes that start the file: the 8-byte length and the JSON header, padded with
    /// spaces to a multiple of 8 so the data is aligned (as the reference writer does).
    /// Tensors are laid out in the order given.
    public static func encode(_ entries: [Entry], metadata: [(key: String, value: String)]) -> [UInt8] {
        var fields: [(key: String, value: JSONValue)] = []
        if !metadata.isEmpty {
            fields.append(("__metadata__", .object(metadata.map { ($0.key, .string($0.value)) })))
        }
        var offset = 0
        for entry in entries {
            fields.append((entry.name, .object([
                ("dtype", .string(entry.dtype.rawValue)),
                ("shape", .array(entry.shape.map { .int($0) })),
                ("data_offsets", .array([.int(offset), .int(offset + entry.byteCount)])),
            ])))
            offset += entry.byteCount
        }
        var json = CanonicalJSON.encode(.object(fields))
        while (8 + json.count) % 8 != 0 { json.append(UInt8(ascii: " ")) }
        return littleEndianBytes(UInt64(json.count)) + json
    }
}

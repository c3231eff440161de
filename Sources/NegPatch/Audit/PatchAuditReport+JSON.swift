/// The audit report as JSON, in the schema of `formats/audit-json.md` (schema version 1).
extension PatchAuditReport {
    /// The schema's name and version, the first fields of the document.
    public static let jsonSchema = "negpatch-audit"
    /// Bumped on any incompatible change to the field names or meanings.
    public static let jsonSchemaVersion = 1

    /// The whole report. Numbers are JSON numbers; figures that were not computed are `null`.
    public func json() -> JSONValue {
        .object([
            ("schema", .string(Self.jsonSchema)),
            ("schema_version", .int(Self.jsonSchemaVersion)),
            ("file", .object([
                ("path", .string(path)),
                ("format", .string(format)),
                ("size", .int(fileSize)),
                ("parts_bytes", .int(patchStoredBytes)),
                ("overhead_bytes", .int(overheadBytes)),
            ])),
            ("metadata", metadata.json()),
            ("base_fingerprint", .object([
                ("algorithm", .string("xxh64")),
                ("tensors", .int(fingerprintTensors)),
            ])),
            ("selection", .object([
                ("filter", filter.map { .string($0) } ?? .null),
                ("tensors", .int(tensors.count)),
                ("patch_tensors", .int(patchTensors)),
            ])),
            ("values_computed", .bool(valuesComputed)),
            ("values_note", valuesNote.map { .string($0) } ?? .null),
            ("not_computed", .array(valuesComputed ? [] : Self.valueStatisticNames.map { .string($0) })),
            ("integrity", integrity.json()),
            ("tensors", .array(tensors.map { $0.json() })),
            ("layers", .array(layers.map { $0.json(tensors: tensors) })),
            ("total", total.json(tensors: tensors)),
        ])
    }
}

extension IntegrityStatus {
    /// `verdict`, the counts of blocks and parts checked, and every problem found.
    public func json() -> JSONValue {
        .object([
            ("verdict", .string(verdict.rawValue)),
            ("index_verified", .bool(true)),
            ("blocks_total", .int(blocksTotal)),
            ("blocks_checked", .int(blocksChecked)),
            ("parts_total", .int(partsTotal)),
            ("parts_checked", .int(partsChecked)),
            ("problems", .array(problems.map { .string($0) })),
        ])
    }
}

extension IndexFigures {
    /// The figures as object entries, shared by tensors, layers and the total.
    func jsonEntries() -> [(key: String, value: JSONValue)] {
        [
            ("tensors", .int(tensors)),
            ("elements", .int(elements)),
            ("nonzeros", .int(nonzeros)),
            ("density", .double(density)),
            ("blocks", .int(blocks)),
            ("dense_blocks", .int(denseBlocks)),
            ("mask_bytes", .int(maskBytes)),
            ("values_bytes", .int(valuesBytes)),
            ("stored_bytes", .int(storedBytes)),
            ("bits_per_element", .double(bitsPerElement)),
            ("agreement", agreement.map { .array($0.map { .int($0) }) } ?? .null),
        ]
    }
}

extension ValueStatistics {
    /// The statistics as an object; the histogram lists counts from its lowest to its
    /// highest occupied binary exponent.
    public func json() -> JSONValue {
        let occupied = histogram.occupied
        return .object([
            ("positive", .int(positive)),
            ("negative", .int(negative)),
            ("nonfinite", .int(nonfinite)),
            ("positive_share", .double(positiveShare)),
            ("negative_share", .double(negativeShare)),
            ("l2_norm", .double(l2Norm)),
            ("max_abs", .double(Double(maxAbs))),
            ("abs_histogram", .object([
                ("base", .int(2)),
                ("min_exponent", occupied.map { .int($0.lowerBound) } ?? .null),
                ("counts", .array(occupied.map { range in range.map { .int(histogram[$0]) } } ?? [])),
            ])),
        ])
    }
}

extension TensorAudit {
    func json() -> JSONValue {
        .object([
            ("name", .string(name)),
            ("layer", .string(layer)),
            ("dtype", .string(dtype.rawValue)),
            ("shape", .array(shape.map { .int($0) })),
        ] + index.jsonEntries() + [
            ("values", values?.json() ?? .null),
        ])
    }
}

extension GroupAudit {
    func json(tensors: [TensorAudit]) -> JSONValue {
        .object([
            ("name", .string(name)),
            ("tensor_names", .array(members.map { .string(tensors[$0].name) })),
        ] + index.jsonEntries() + [
            ("values", values?.json() ?? .null),
        ])
    }
}

/// The diff report as JSON (`formats/audit-json.md`, section "diff").
extension PatchDiffReport {
    /// The schema's name; the version is `PatchAuditReport.jsonSchemaVersion`.
    public static let jsonSchema = "negpatch-diff"

    /// The whole report; undefined figures are `null`.
    public func json() -> JSONValue {
        .object([
            ("schema", .string(Self.jsonSchema)),
            ("schema_version", .int(PatchAuditReport.jsonSchemaVersion)),
            ("a", .object([("path", .string(pathA)), ("metadata", metadataA.json())])),
            ("b", .object([("path", .string(pathB)), ("metadata", metadataB.json())])),
            ("same_base", .bool(sameBase)),
            ("tensors", .array(tensors.map { tensor in
                .object([("name", .string(tensor.name)), ("shape", .array(tensor.shape.map { .int($0) }))]
                        + tensor.figures.jsonEntries())
            })),
            ("only_in_a", .array(onlyInA.map { .string($0) })),
            ("only_in_b", .array(onlyInB.map { .string($0) })),
            ("total", .object(total.jsonEntries())),
        ])
    }
}

extension DiffFigures {
    func jsonEntries() -> [(key: String, value: JSONValue)] {
        func optional(_ value: Double?) -> JSONValue { value.map { .double($0) } ?? .null }
        return [
            ("elements", .int(elements)),
            ("nonzeros_a", .int(nonzerosA)),
            ("nonzeros_b", .int(nonzerosB)),
            ("common", .int(common)),
            ("union", .int(union)),
            ("same_sign", .int(sameSign)),
            ("jaccard", optional(jaccard)),
            ("sign_agreement", optional(signAgreement)),
            ("correlation", optional(correlation)),
            ("correlated_pairs", .int(moments.count)),
        ]
    }
}

import CNegPatchABI
import NegPatch

#if canImport(Glibc)
import Glibc
#endif

// The C ABI declared in Sources/CNegPatchABI/include/negpatch.h: thin functions over the
// library's readers, `Patcher` and `PatchKernels`, so a caller's tensors are patched by the
// very code `negpatch apply` runs. Every function catches what the library throws and
// returns it as a status plus a `negpatch_error`.

public typealias ErrorOut = UnsafeMutablePointer<UnsafeMutablePointer<negpatch_error>?>?

// Made once and never freed or written: the static storage negpatch_version promises.
nonisolated(unsafe) private let versionString: UnsafeMutablePointer<CChar> = strdup(NegPatchVersion.version)

private func handle(_ pointer: OpaquePointer) -> ABIPatch {
    Unmanaged<ABIPatch>.fromOpaque(UnsafeRawPointer(pointer)).takeUnretainedValue()
}

private func string(_ pointer: UnsafePointer<CChar>?, _ what: String) throws -> String {
    guard let pointer else { throw NegPatchError(.invalidArgument, file: nil, "\(what) is NULL") }
    return String(cString: pointer)
}

private func parseDType(_ pointer: UnsafePointer<CChar>?) throws -> DType {
    let name = try string(pointer, "dtype")
    guard let dtype = DType(rawValue: name), [.F32, .F16, .BF16, .F64].contains(dtype) else {
        throw NegPatchError(.invalidArgument, file: nil, "dtype '\(name)' cannot be patched (F32, F16, BF16 or F64)")
    }
    return dtype
}

private func parseShape(_ pointer: UnsafePointer<Int64>?, _ rank: Int) throws -> [Int] {
    guard rank > 0 else { return [] }
    guard let pointer else { throw NegPatchError(.invalidArgument, file: nil, "shape is NULL with rank \(rank)") }
    return (0..<rank).map { Int(pointer[$0]) }
}

private func copyOut(_ bytes: [UInt8]) -> UnsafeMutablePointer<CChar> {
    let out = malloc(bytes.count + 1)!.bindMemory(to: CChar.self, capacity: bytes.count + 1)
    bytes.withUnsafeBufferPointer { b in
        UnsafeMutableRawPointer(out).copyMemory(from: b.baseAddress!, byteCount: b.count)
    }
    out[bytes.count] = 0
    return out
}

/// The library version (static storage). See negpatch.h.
@_cdecl("negpatch_version")
public func negpatchVersion() -> UnsafePointer<CChar> { UnsafePointer(versionString) }

/// `NEGPATCH_ABI_VERSION` of this build. See negpatch.h.
@_cdecl("negpatch_abi_version")
public func negpatchABIVersion() -> Int32 { 1 }

/// Opens a patch, checking its signature first when trusted keys are given; the handle is retained until `negpatch_close`. See negpatch.h.
@_cdecl("negpatch_open")
public func negpatchOpen(_ path: UnsafePointer<CChar>?, _ trustedKeys: UnsafePointer<UnsafePointer<CChar>?>?,
                         _ trustedKeyCount: Int, _ signature: UnsafePointer<CChar>?,
                         _ out: UnsafeMutablePointer<OpaquePointer?>?, _ error: ErrorOut) -> Int32 {
    ABIError.catching(error) {
        guard let out else { throw NegPatchError(.invalidArgument, file: nil, "patch (the output handle) is NULL") }
        let path = try string(path, "path")
        if trustedKeyCount > 0 {
            guard let trustedKeys else { throw NegPatchError(.invalidArgument, file: path, "trusted_keys is NULL") }
            let keys = try (0..<trustedKeyCount).map { try PatchPublicKey(contentsOf: string(trustedKeys[$0], "trusted key path")) }
            // Before the patch is parsed: an untrusted file never reaches the readers.
            try PatchSignature.verify(patch: path, trustedKeys: keys, signature: signature.map { String(cString: $0) })
        }
        let source = try PatchFormats.open(path)
        out.pointee = OpaquePointer(Unmanaged.passRetained(ABIPatch(source: source)).toOpaque())
    }
}

/// Releases a handle (NULL is ignored). See negpatch.h.
@_cdecl("negpatch_close")
public func negpatchClose(_ patch: OpaquePointer?) {
    guard let patch else { return }
    Unmanaged<ABIPatch>.fromOpaque(UnsafeRawPointer(patch)).release()
}

/// The path the patch was opened with, owned by the handle. See negpatch.h.
@_cdecl("negpatch_path")
public func negpatchPath(_ patch: OpaquePointer) -> UnsafePointer<CChar> { UnsafePointer(handle(patch).path) }

/// The format's name, owned by the handle. See negpatch.h.
@_cdecl("negpatch_format")
public func negpatchFormat(_ patch: OpaquePointer) -> UnsafePointer<CChar> { UnsafePointer(handle(patch).format) }

/// The index's metadata object as canonical JSON, malloc'd for the caller. See negpatch.h.
@_cdecl("negpatch_metadata_json")
public func negpatchMetadataJSON(_ patch: OpaquePointer, _ json: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
                                 _ error: ErrorOut) -> Int32 {
    ABIError.catching(error) {
        guard let json else { throw NegPatchError(.invalidArgument, file: nil, "json is NULL") }
        json.pointee = copyOut(CanonicalJSON.encode(handle(patch).source.index.metadata.json()))
    }
}

/// The base fingerprint as a JSON array, malloc'd for the caller. See negpatch.h.
@_cdecl("negpatch_fingerprint_json")
public func negpatchFingerprintJSON(_ patch: OpaquePointer, _ json: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
                                    _ error: ErrorOut) -> Int32 {
    ABIError.catching(error) {
        guard let json else { throw NegPatchError(.invalidArgument, file: nil, "json is NULL") }
        let entries = handle(patch).source.index.fingerprint.map { entry -> JSONValue in
            .object([
                ("name", .string(entry.name)),
                ("dtype", .string(entry.dtype.rawValue)),
                ("shape", .array(entry.shape.map { .int($0) })),
                ("digest", .string(XXH64.hex(entry.digest))),
            ])
        }
        json.pointee = copyOut(CanonicalJSON.encode(.array(entries)))
    }
}

/// The recommended lambda. See negpatch.h.
@_cdecl("negpatch_lambda")
public func negpatchLambda(_ patch: OpaquePointer) -> Double { handle(patch).source.index.metadata.lambda }

/// The number of patched tensors. See negpatch.h.
@_cdecl("negpatch_tensor_count")
public func negpatchTensorCount(_ patch: OpaquePointer) -> Int { handle(patch).names.count }

/// The index of tensor `name`, or -1. See negpatch.h.
@_cdecl("negpatch_tensor_find")
public func negpatchTensorFind(_ patch: OpaquePointer, _ name: UnsafePointer<CChar>?) -> Int64 {
    guard let name else { return -1 }
    return handle(patch).tensorIndex[TensorName(String(cString: name))].map(Int64.init) ?? -1
}

/// Tensor `i`'s name, owned by the handle; NULL out of range. See negpatch.h.
@_cdecl("negpatch_tensor_name")
public func negpatchTensorName(_ patch: OpaquePointer, _ i: Int) -> UnsafePointer<CChar>? {
    let h = handle(patch)
    return h.names.indices.contains(i) ? UnsafePointer(h.names[i]) : nil
}

/// Tensor `i`'s base dtype, owned by the handle; NULL out of range. See negpatch.h.
@_cdecl("negpatch_tensor_dtype")
public func negpatchTensorDType(_ patch: OpaquePointer, _ i: Int) -> UnsafePointer<CChar>? {
    let h = handle(patch)
    return h.dtypes.indices.contains(i) ? UnsafePointer(h.dtypes[i]) : nil
}

/// Tensor `i`'s rank; 0 out of range. See negpatch.h.
@_cdecl("negpatch_tensor_rank")
public func negpatchTensorRank(_ patch: OpaquePointer, _ i: Int) -> Int {
    let tensors = handle(patch).source.index.tensors
    return tensors.indices.contains(i) ? tensors[i].shape.count : 0
}

/// Tensor `i`'s extents, owned by the handle; NULL out of range or for rank 0. See negpatch.h.
@_cdecl("negpatch_tensor_shape")
public func negpatchTensorShape(_ patch: OpaquePointer, _ i: Int) -> UnsafePointer<Int64>? {
    let h = handle(patch)
    guard h.shapes.indices.contains(i), !h.source.index.tensors[i].shape.isEmpty else { return nil }
    return UnsafePointer(h.shapes[i].baseAddress)
}

/// Tensor `i`'s element count; 0 out of range. See negpatch.h.
@_cdecl("negpatch_tensor_elements")
public func negpatchTensorElements(_ patch: OpaquePointer, _ i: Int) -> Int64 {
    let tensors = handle(patch).source.index.tensors
    return tensors.indices.contains(i) ? Int64(tensors[i].elements) : 0
}

/// Tensor `i`'s stored nonzero count; 0 out of range. See negpatch.h.
@_cdecl("negpatch_tensor_nonzeros")
public func negpatchTensorNonzeros(_ patch: OpaquePointer, _ i: Int) -> Int64 {
    let tensors = handle(patch).source.index.tensors
    return tensors.indices.contains(i) ? Int64(tensors[i].nonzeros) : 0
}

/// Decodes tensor `name` into `count` floats at `out` (`TaskVectorDecoder.decode`). See negpatch.h.
@_cdecl("negpatch_decode")
public func negpatchDecode(_ patch: OpaquePointer, _ name: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<Float>?,
                           _ count: Int, _ error: ErrorOut) -> Int32 {
    ABIError.catching(error) {
        let h = handle(patch)
        let name = try string(name, "name")
        guard let t = h.tensorIndex[TensorName(name)] else {
            throw NegPatchError(.invalidArgument, file: h.source.path, tensor: name, "not in the patch")
        }
        let entry = h.source.index.tensors[t]
        guard count == entry.elements else {
            throw NegPatchError(.mismatch, file: h.source.path, tensor: name,
                                "the buffer holds \(count) floats, the tensor has \(entry.elements) elements")
        }
        guard let out, count > 0 else { return }
        try TaskVectorDecoder.decode(h.source, tensor: t, into: UnsafeMutableBufferPointer(start: out, count: count))
    }
}

/// Patches tensor `name` in the caller's buffer in place through `Patcher.patch`, as `negpatch apply` does. See negpatch.h.
@_cdecl("negpatch_apply")
public func negpatchApply(_ patch: OpaquePointer, _ name: UnsafePointer<CChar>?, _ dtypeName: UnsafePointer<CChar>?,
                          _ shapePointer: UnsafePointer<Int64>?, _ rank: Int, _ data: UnsafeMutableRawPointer?,
                          _ byteCount: Int, _ lambda: Double, _ flags: UInt32, _ error: ErrorOut) -> Int32 {
    ABIError.catching(error) {
        let h = handle(patch)
        let name = try string(name, "name")
        guard h.tensorIndex[TensorName(name)] != nil else {
            throw NegPatchError(.invalidArgument, file: h.source.path, tensor: name, "not in the patch")
        }
        let dtype = try parseDType(dtypeName)
        let shape = try parseShape(shapePointer, rank)
        guard data != nil || byteCount == 0 else {
            throw NegPatchError(.invalidArgument, file: h.source.path, tensor: name, "data is NULL")
        }
        let patcher = try h.patcher(lambda: lambda, allowNonFinite: flags & NEGPATCH_ALLOW_NONFINITE != 0)
        try patcher.patch(tensor: name, dtype: dtype, shape: shape, data: UnsafeMutableRawBufferPointer(start: data, count: byteCount))
    }
}

/// Checks a checkpoint against the base fingerprint (`BaseFingerprint.verify`). See negpatch.h.
@_cdecl("negpatch_check_base")
public func negpatchCheckBase(_ patch: OpaquePointer, _ base: UnsafePointer<CChar>?, _ error: ErrorOut) -> Int32 {
    ABIError.catching(error) {
        let h = handle(patch)
        let checkpoint = try Checkpoint(path: string(base, "base"))
        try BaseFingerprint.verify(checkpoint, matches: h.source.index.fingerprint, patch: h.source.path)
    }
}

/// Checks one in-memory base tensor against its fingerprint entry: name, dtype, shape, XXH64. See negpatch.h.
@_cdecl("negpatch_check_base_tensor")
public func negpatchCheckBaseTensor(_ patch: OpaquePointer, _ name: UnsafePointer<CChar>?, _ dtypeName: UnsafePointer<CChar>?,
                                    _ shapePointer: UnsafePointer<Int64>?, _ rank: Int, _ data: UnsafeRawPointer?,
                                    _ byteCount: Int, _ error: ErrorOut) -> Int32 {
    ABIError.catching(error) {
        let h = handle(patch)
        let name = try string(name, "name")
        let dtypeText = try string(dtypeName, "dtype")
        let shape = try parseShape(shapePointer, rank)
        func mismatch(_ message: String) -> NegPatchError {
            NegPatchError(.mismatch, file: nil, tensor: name, "\(message): this is not the base the patch \(h.source.path) was made for")
        }
        guard let entry = h.source.index.fingerprint.first(where: { $0.name.sameBytes(as: name) }) else {
            throw mismatch("tensor not in the patch's base fingerprint")
        }
        guard entry.dtype.rawValue == dtypeText, entry.shape == shape,
              let elements = checkedElementCount(entry.shape), byteCount == entry.dtype.byteCount(elements: elements) else {
            throw mismatch("base has \(dtypeText) \(shape) (\(byteCount) bytes), patch expects \(entry.dtype.rawValue) \(entry.shape)")
        }
        let digest = XXH64.hash(UnsafeRawBufferPointer(start: data, count: byteCount))
        guard digest == entry.digest else {
            throw mismatch("base fingerprint differs (content xxh64 \(XXH64.hex(digest)), patch expects \(XXH64.hex(entry.digest)))")
        }
    }
}

/// Runs `PatchVerifier`'s checks; the first problem becomes `.corrupt`. See negpatch.h.
@_cdecl("negpatch_verify")
public func negpatchVerify(_ patch: OpaquePointer, _ error: ErrorOut) -> Int32 {
    ABIError.catching(error) {
        let h = handle(patch)
        let report = PatchVerifier.verify(patch: h.source.path)
        if !report.intact {
            let first = report.problems.first ?? report.checks.first { $0.passed != true }?.detail ?? "failed"
            throw NegPatchError(.corrupt, file: h.source.path, "not intact: \(first)")
        }
    }
}

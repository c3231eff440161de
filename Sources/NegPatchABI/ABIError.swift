import CNegPatchABI
import NegPatch

#if canImport(Glibc)
import Glibc
#endif

/// Errors crossing the C ABI: every Swift error becomes a `negpatch_error` and a status.
enum ABIError {
    /// The status for a library error code.
    static func status(_ code: NegPatchError.Code) -> negpatch_status {
        switch code {
        case .malformed: NEGPATCH_MALFORMED
        case .corrupt: NEGPATCH_CORRUPT
        case .mismatch: NEGPATCH_MISMATCH
        case .invalidValue: NEGPATCH_INVALID_VALUE
        case .invalidArgument: NEGPATCH_INVALID_ARGUMENT
        case .io: NEGPATCH_IO
        case .untrusted: NEGPATCH_UNTRUSTED
        case .changed: NEGPATCH_CHANGED
        case .resources: NEGPATCH_RESOURCES
        }
    }

    /// Runs `body`; on a throw stores the error in `out` (when not NULL) and returns its
    /// status, else `NEGPATCH_OK`.
    static func catching(_ out: UnsafeMutablePointer<UnsafeMutablePointer<negpatch_error>?>?,
                         _ body: () throws -> Void) -> Int32 {
        do {
            try body()
            return Int32(NEGPATCH_OK.rawValue)
        } catch let error as NegPatchError {
            return store(error, in: out)
        } catch {
            return store(NegPatchError(.invalidArgument, file: nil, "\(error)"), in: out)
        }
    }

    /// Stores `error` in `out` and returns its status.
    static func store(_ error: NegPatchError, in out: UnsafeMutablePointer<UnsafeMutablePointer<negpatch_error>?>?) -> Int32 {
        let status = status(error.code)
        if let out {
            let escapedTensor = error.tensor.map(escaped)
            let shown = NegPatchError(error.code, file: error.file.map(escaped), tensor: escapedTensor, escaped(error.message))
            // malloc, not Swift's allocator: negpatch_error_free (C) releases it with free().
            let raw = malloc(MemoryLayout<negpatch_error>.stride)!.bindMemory(to: negpatch_error.self, capacity: 1)
            raw.initialize(to: negpatch_error(
                code: Int32(status.rawValue),
                code_name: UnsafePointer(strdup(error.code.rawValue)),
                message: UnsafePointer(strdup(shown.description)),
                file: error.file.map { UnsafePointer(strdup(escaped($0))) },
                tensor: escapedTensor.map { UnsafePointer(strdup($0)) }))
            out.pointee = raw
        }
        return Int32(status.rawValue)
    }

    /// `text` with control characters (C0, DEL, C1) written as `\u{XX}`, so a name taken
    /// from a file cannot move a terminal's cursor or forge a line of output.
    static func escaped(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            if scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) {
                out += "\\u{" + String(scalar.value, radix: 16) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

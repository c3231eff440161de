#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An error a person can act on: what went wrong, in which file, and where applicable in
/// which tensor and at which byte offset or element.
///
/// `description` is a single line suitable for `negpatch: error: <description>`.
public struct NegPatchError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of failure this is; stable for programs that branch on it.
    public enum Code: String, Sendable {
        /// The input is not in the format it claims (bad header, offsets, checksum, JSON).
        case malformed
        /// The input is truncated or its bytes do not match their checksum.
        case corrupt
        /// Inputs disagree with each other (names, shapes, dtypes, base fingerprint).
        case mismatch
        /// An input value is not acceptable (NaN or Inf where finite values are needed).
        case invalidValue
        /// The request itself is not valid (bad option value, unsupported dtype).
        case invalidArgument
        /// The operating system refused an I/O operation.
        case io
        /// A signature check failed: the patch is unsigned, signed by a key that is not
        /// trusted, or changed after it was signed.
        case untrusted
        /// An input file changed (shrank, grew or was rewritten) while it was being read.
        case changed
        /// Memory or threads ran out (an address-space limit such as `ulimit -v`).
        case resources
    }

    /// The kind of failure.
    public let code: Code
    /// The file the failure concerns, as the user named it.
    public let file: String?
    /// The tensor the failure concerns, if any.
    public let tensor: String?
    /// What went wrong, without the file and tensor (they are added by `description`).
    public let message: String

    /// Creates an error about `file` (and optionally `tensor`).
    public init(_ code: Code, file: String?, tensor: String? = nil, _ message: String) {
        self.code = code
        self.file = file
        self.tensor = tensor
        self.message = message
    }

    /// One line: `FILE: tensor 'NAME': MESSAGE`, leaving out what does not apply. Names
    /// and paths come from files: their control characters are shown escaped (so a name can
    /// never end the line or drive the terminal) and long ones are shortened in the middle
    /// (`DisplayText`), so the line stays one readable line.
    public var description: String {
        var parts: [String] = []
        if let file { parts.append(DisplayText.shortened(file, limit: 240)) }
        if let tensor { parts.append("tensor '\(DisplayText.shortened(tensor, limit: 240))'") }
        parts.append(DisplayText.shortened(message, limit: 1000))
        return parts.joined(separator: ": ")
    }

    /// The same line with names and paths exactly as they are (no escaping, no
    /// shortening), for machine-readable reports such as `audit --json`; what prints it for
    /// a person escapes it there.
    public var plainDescription: String {
        var parts: [String] = []
        if let file { parts.append(file) }
        if let tensor { parts.append("tensor '\(tensor)'") }
        parts.append(message)
        return parts.joined(separator: ": ")
    }

    /// The same error placed in `file` (and `tensor`), where the thrower did not know them.
    public func located(file: String? = nil, tensor: String? = nil) -> NegPatchError {
        NegPatchError(code, file: self.file ?? file, tensor: self.tensor ?? tensor, message)
    }
}

/// The text of the C library's last error (`errno`).
@inline(__always)
func systemErrorText(_ code: Int32) -> String {
    String(cString: strerror(code))
}

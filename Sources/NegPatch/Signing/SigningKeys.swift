import Crypto

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An Ed25519 public key that patch signatures are checked against.
///
/// Key file (`negpatch keygen` writes it as `KEY.pub`), exactly two lines ending in LF:
///
///     negpatch ed25519 public key v1
///     <64 lowercase hex digits: the 32-byte public key (RFC 8032)>
public struct PatchPublicKey: Sendable, Equatable {
    /// The first line of a public key file.
    public static let fileHeader = "negpatch ed25519 public key v1"

    /// The 32 bytes of the key.
    public let rawRepresentation: [UInt8]

    /// Wraps 32 raw bytes. Throws `.invalidArgument` for any other length or a point that
    /// is not a valid Ed25519 public key.
    public init(rawRepresentation: [UInt8]) throws {
        guard rawRepresentation.count == 32, (try? Curve25519.Signing.PublicKey(rawRepresentation: rawRepresentation)) != nil else {
            throw NegPatchError(.invalidArgument, file: nil, "not a 32-byte Ed25519 public key")
        }
        self.rawRepresentation = rawRepresentation
    }

    /// Reads a public key file. Throws `.invalidArgument` naming the file when it is not one
    /// (a private key file given by mistake is called out as such).
    public init(contentsOf path: String) throws {
        let hex = try readKeyFile(path, header: Self.fileHeader, kind: "public key")
        do {
            try self.init(rawRepresentation: hex)
        } catch let error as NegPatchError {
            throw error.located(file: path)
        }
    }

    /// A short identifier for messages: the first 16 hex digits of the key's SHA-256.
    public var id: String {
        String(hexString(Array(SHA256.hash(data: rawRepresentation))).prefix(16))
    }

    /// The key file's text.
    public var fileText: String {
        "\(Self.fileHeader)\n\(hexString(rawRepresentation))\n"
    }

    /// Whether `signature` is this key's Ed25519 signature of `message`.
    func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: rawRepresentation) else { return false }
        return key.isValidSignature(signature, for: message)
    }

    /// Writes the key file atomically (mode 0644), refusing to replace an existing file.
    public func write(to path: String) throws {
        try writeKeyFile(path, text: fileText, mode: 0o644)
    }
}

/// An Ed25519 private key that signs patches.
///
/// Key file (`negpatch keygen -o KEY` writes it with mode 0600), exactly two lines ending
/// in LF:
///
///     negpatch ed25519 private key v1
///     <64 lowercase hex digits: the 32-byte private key seed (RFC 8032)>
public struct PatchSigningKey: Sendable {
    /// The first line of a private key file.
    public static let fileHeader = "negpatch ed25519 private key v1"

    /// The 32-byte seed (kept as bytes: the Crypto key type is not `Sendable`).
    private let seed: [UInt8]
    private var key: Curve25519.Signing.PrivateKey {
        // The seed was validated when this value was made.
        try! Curve25519.Signing.PrivateKey(rawRepresentation: seed)
    }

    /// A new random key from the system's secure random source.
    public static func generate() -> PatchSigningKey {
        PatchSigningKey(validSeed: Array(Curve25519.Signing.PrivateKey().rawRepresentation))
    }

    private init(validSeed: [UInt8]) {
        seed = validSeed
    }

    /// A key from its 32-byte seed. Throws `.invalidArgument` for any other length.
    public init(seed: [UInt8]) throws {
        guard seed.count == 32, (try? Curve25519.Signing.PrivateKey(rawRepresentation: seed)) != nil else {
            throw NegPatchError(.invalidArgument, file: nil, "not a 32-byte Ed25519 private key")
        }
        self.seed = seed
    }

    /// Reads a private key file. Throws `.invalidArgument` naming the file when it is not
    /// one, and refuses a file that others than its owner may read or write.
    public init(contentsOf path: String) throws {
        let seed = try readKeyFile(path, header: Self.fileHeader, kind: "private key")
        var info = stat()
        if stat(path, &info) == 0, info.st_mode & 0o077 != 0 {
            throw NegPatchError(.invalidArgument, file: path,
                                "private key file is accessible to other users (mode \(String(info.st_mode & 0o777, radix: 8))); run chmod 600 on it")
        }
        do {
            try self.init(seed: seed)
        } catch let error as NegPatchError {
            throw error.located(file: path)
        }
    }

    /// Creates a new key pair: the private key in `path` (mode 0600) and the public key in
    /// `path.pub`. Throws `.invalidArgument` if either file exists (keys are never
    /// overwritten), `.io` if they cannot be written.
    @discardableResult
    public static func createKeyPair(at path: String) throws -> PatchSigningKey {
        for file in [path, path + ".pub"] where access(file, F_OK) == 0 {
            throw NegPatchError(.invalidArgument, file: file, "exists; a key file is never overwritten (remove it first)")
        }
        let key = generate()
        try key.write(to: path)
        try key.publicKey.write(to: path + ".pub")
        return key
    }

    /// The matching public key.
    public var publicKey: PatchPublicKey {
        // A valid private key always has a valid public key.
        try! PatchPublicKey(rawRepresentation: Array(key.publicKey.rawRepresentation))
    }

    /// The Ed25519 signature (64 bytes) of `message`.
    func signature(for message: [UInt8]) throws -> [UInt8] {
        do {
            return Array(try key.signature(for: message))
        } catch {
            throw NegPatchError(.io, file: nil, "Ed25519 signing failed: \(error)")
        }
    }

    /// Writes the private key file atomically with mode 0600 (the file is never readable by
    /// others, not even while it is written), refusing to replace an existing file.
    public func write(to path: String) throws {
        try writeKeyFile(path, text: "\(Self.fileHeader)\n\(hexString(seed))\n", mode: 0o600)
    }
}

/// Reads a two-line key file and returns the 32 bytes of its second line.
private func readKeyFile(_ path: String, header: String, kind: String) throws -> [UInt8] {
    let file = try MappedFile(path: path)
    guard file.size <= 4096 else {
        throw NegPatchError(.invalidArgument, file: path, "not a negpatch \(kind) file (\(file.size) bytes)")
    }
    let text = String(decoding: file.bytes, as: UTF8.self)
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
    guard lines.count == 3, lines[2].isEmpty, lines[0] == header, let bytes = parseHex(lines[1]), bytes.count == 32 else {
        if lines.first.map(String.init) == PatchSigningKey.fileHeader, kind != "private key" {
            throw NegPatchError(.invalidArgument, file: path, "this is a private key; give the public key file (KEY.pub)")
        }
        if lines.first.map(String.init) == PatchPublicKey.fileHeader, kind != "public key" {
            throw NegPatchError(.invalidArgument, file: path, "this is a public key; signing needs the private key file")
        }
        throw NegPatchError(.invalidArgument, file: path, "not a negpatch \(kind) file (expected '\(header)' and 64 hex digits)")
    }
    return bytes
}

private func writeKeyFile(_ path: String, text: String, mode: mode_t) throws {
    if access(path, F_OK) == 0 {
        throw NegPatchError(.invalidArgument, file: path, "exists; a key file is never overwritten (remove it first)")
    }
    let output = try AtomicOutput(destination: path, mode: mode)
    try output.write(Array(text.utf8))
    try output.commit()
}

/// Lowercase hex digits of `bytes`.
func hexString(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 15)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// The bytes of an even-length string of lowercase hex digits, or nil.
func parseHex<S: StringProtocol>(_ text: S) -> [UInt8]? {
    let utf8 = Array(text.utf8)
    guard utf8.count % 2 == 0 else { return nil }
    func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: c - 48
        case 97...102: c - 87
        default: nil
        }
    }
    var out = [UInt8]()
    out.reserveCapacity(utf8.count / 2)
    var i = 0
    while i < utf8.count {
        guard let high = nibble(utf8[i]), let low = nibble(utf8[i + 1]) else { return nil }
        out.append(high << 4 | low)
        i += 2
    }
    return out
}

import Crypto

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A detached Ed25519 signature of a patch file (`formats/negpatch-v1.md`, section 8):
/// `P.sig` beside the patch `P`, in any patch format.
///
/// The signature covers the SHA-256 and the size of the patch's bytes, so every byte of
/// the file is bound: header, every part, the index with its metadata, checksums and base
/// fingerprint, and the footer. It is checked *before* the patch is parsed, so an untrusted
/// file reaches the patch readers only once a trusted key vouches for it.
///
/// The file is six lines of text, each ending in LF; the signed message is the exact bytes
/// of the first five (through the LF after `key`):
///
///     negpatch signature v1
///     algorithm ed25519
///     file-size <decimal bytes of the patch>
///     file-sha256 <64 lowercase hex digits>
///     key <64 lowercase hex digits: the signer's public key>
///     signature <128 lowercase hex digits: Ed25519 over the lines above>
public struct PatchSignature: Sendable, Equatable {
    /// The first line of a signature file.
    public static let fileHeader = "negpatch signature v1"
    /// The largest signature file a reader looks at.
    static let maxFileSize = 4096

    /// The patch's size in bytes when it was signed.
    public let fileSize: Int
    /// The SHA-256 of the patch's bytes when it was signed.
    public let sha256: [UInt8]
    /// The key that signed.
    public let key: PatchPublicKey
    /// The 64-byte Ed25519 signature of `signedMessage`.
    public let signature: [UInt8]

    /// The signature file for `patch` when none is named: `PATCH.sig`.
    public static func defaultPath(for patch: String) -> String {
        patch + ".sig"
    }

    /// The bytes the signature covers.
    var signedMessage: [UInt8] {
        Array("""
            \(Self.fileHeader)
            algorithm ed25519
            file-size \(fileSize)
            file-sha256 \(hexString(sha256))
            key \(hexString(key.rawRepresentation))

            """.utf8)
    }

    /// The signature file's text.
    public var fileText: String {
        String(decoding: signedMessage, as: UTF8.self) + "signature \(hexString(signature))\n"
    }

    // MARK: Signing

    /// Signs the patch at `patch` with `key` and writes the signature atomically to
    /// `output` (default `PATCH.sig`). The patch is opened and every block decoded first,
    /// so only an intact patch is signed. Throws what the patch reader throws, or `.io`.
    @discardableResult
    public static func sign(patch: String, key: PatchSigningKey, output: String? = nil) throws -> PatchSignature {
        let destination = output ?? defaultPath(for: patch)
        if sameFile(patch, destination) {
            throw NegPatchError(.invalidArgument, file: destination, "output would overwrite the patch")
        }
        let source = try PatchFormats.open(patch)
        for (t, tensor) in source.index.tensors.enumerated() {
            for b in tensor.blocks.indices { _ = try source.block(tensor: t, block: b) }
        }
        let (size, digest) = try digest(of: patch)
        guard size == source.fileSize else {
            throw NegPatchError(.io, file: patch, "changed while it was being signed")
        }
        let unsigned = PatchSignature(fileSize: size, sha256: digest, key: key.publicKey, signature: [])
        let signed = PatchSignature(fileSize: size, sha256: digest, key: key.publicKey,
                                    signature: try key.signature(for: unsigned.signedMessage))
        let file = try AtomicOutput(destination: destination)
        try file.write(Array(signed.fileText.utf8))
        try file.commit()
        return signed
    }

    // MARK: Verifying

    /// Checks that the patch at `patch` carries a valid signature by one of `trustedKeys`
    /// and has not changed since: reads the signature file (`signature`, default
    /// `PATCH.sig`), checks the signer is trusted and the Ed25519 signature, then the
    /// patch's size and SHA-256. Does not parse the patch. Returns the signature; throws
    /// `.untrusted` naming the patch (unsigned, untrusted signer, bad signature, changed
    /// patch) or `.malformed` naming a signature file that is not one.
    @discardableResult
    public static func verify(patch: String, trustedKeys: [PatchPublicKey], signature: String? = nil) throws -> PatchSignature {
        let signaturePath = signature ?? defaultPath(for: patch)
        guard access(signaturePath, F_OK) == 0 else {
            throw NegPatchError(.untrusted, file: patch, "not signed: no signature file \(signaturePath) (sign it with 'negpatch sign')")
        }
        let signed = try read(signaturePath)
        guard trustedKeys.contains(signed.key) else {
            throw NegPatchError(.untrusted, file: patch,
                                "signed by key \(signed.key.id), which is not a trusted key (trusted: \(trustedKeys.map(\.id).joined(separator: ", ")))")
        }
        guard signed.key.isValidSignature(signed.signature, for: signed.signedMessage) else {
            throw NegPatchError(.untrusted, file: patch, "the signature in \(signaturePath) is not valid (the signature file was altered)")
        }
        let (size, digest) = try digest(of: patch)
        guard size == signed.fileSize, digest == signed.sha256 else {
            throw NegPatchError(.untrusted, file: patch,
                                "changed after signing: \(size) bytes with SHA-256 \(hexString(digest).prefix(16))..., "
                                + "signed were \(signed.fileSize) bytes with SHA-256 \(hexString(signed.sha256).prefix(16))...")
        }
        return signed
    }

    /// Reads and parses a signature file (without checking the signature). Throws
    /// `.malformed` naming the file when it is not exactly the six lines of the format.
    public static func read(_ path: String) throws -> PatchSignature {
        let file = try MappedFile(path: path)
        func malformed(_ why: String) -> NegPatchError {
            NegPatchError(.malformed, file: path, "not a negpatch signature file: \(why)")
        }
        guard file.size <= maxFileSize else { throw malformed("\(file.size) bytes") }
        let lines = String(decoding: file.bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count == 7, lines[6].isEmpty else { throw malformed("expected six lines ending in LF") }
        guard lines[0] == fileHeader else { throw malformed("first line is not '\(fileHeader)'") }
        guard lines[1] == "algorithm ed25519" else { throw malformed("unsupported algorithm line '\(lines[1])'") }
        func field(_ line: Substring, _ name: String) throws -> Substring {
            guard line.hasPrefix(name + " ") else { throw malformed("expected a '\(name)' line, found '\(line.prefix(40))'") }
            return line.dropFirst(name.count + 1)
        }
        let sizeText = try field(lines[2], "file-size")
        guard !sizeText.isEmpty, sizeText.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), sizeText == "0" || !sizeText.hasPrefix("0"),
              let size = Int(sizeText)
        else { throw malformed("file-size is not a decimal count") }
        guard let digest = parseHex(try field(lines[3], "file-sha256")), digest.count == 32 else {
            throw malformed("file-sha256 is not 64 lowercase hex digits")
        }
        guard let keyBytes = parseHex(try field(lines[4], "key")), keyBytes.count == 32,
              let key = try? PatchPublicKey(rawRepresentation: keyBytes)
        else { throw malformed("key is not an Ed25519 public key in 64 lowercase hex digits") }
        guard let signature = parseHex(try field(lines[5], "signature")), signature.count == 64 else {
            throw malformed("signature is not 128 lowercase hex digits")
        }
        return PatchSignature(fileSize: size, sha256: digest, key: key, signature: signature)
    }

    /// The size and SHA-256 of the file at `path`, read through a private mapping.
    public static func digest(of path: String) throws -> (size: Int, sha256: [UInt8]) {
        let file = try MappedFile(path: path)
        var hasher = SHA256()
        var offset = 0
        // In slices, so a large patch is hashed without faulting it all in at once.
        while offset < file.size {
            let count = min(1 << 24, file.size - offset)
            hasher.update(bufferPointer: file.slice(offset, count))
            offset += count
        }
        return (file.size, Array(hasher.finalize()))
    }
}

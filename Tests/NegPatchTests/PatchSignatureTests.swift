import Foundation
import Testing
@testable import NegPatch

@Suite struct PatchSignatureTests {
    /// A copy of the golden patch, a key pair, and the patch signed with it.
    private struct Signed {
        let folder = TemporaryFolder()
        var patch: String { folder.file("golden.negpatch") }
        var keyPath: String { folder.file("key") }
        let key: PatchSigningKey
        let signature: PatchSignature

        init() throws {
            writeBytes(folder.file("golden.negpatch"), readBytes("\(repositoryRoot)/formats/golden/golden.negpatch"))
            key = try PatchSigningKey.createKeyPair(at: folder.file("key"))
            signature = try PatchSignature.sign(patch: folder.file("golden.negpatch"), key: key)
        }
    }

    @Test func aSignedPatchVerifiesWithItsKey() throws {
        let signed = try Signed()
        let trusted = try PatchPublicKey(contentsOf: signed.keyPath + ".pub")
        #expect(trusted == signed.key.publicKey)
        let checked = try PatchSignature.verify(patch: signed.patch, trustedKeys: [trusted])
        #expect(checked == signed.signature)
        #expect(checked.fileSize == readBytes(signed.patch).count)
        #expect(signed.folder.contents == ["golden.negpatch", "golden.negpatch.sig", "key", "key.pub"])
    }

    @Test func keyFilesHaveTheDocumentedFormAndModes() throws {
        let signed = try Signed()
        let privateText = String(decoding: readBytes(signed.keyPath), as: UTF8.self)
        let publicText = String(decoding: readBytes(signed.keyPath + ".pub"), as: UTF8.self)
        #expect(privateText.hasPrefix("negpatch ed25519 private key v1\n") && privateText.count == 32 + 64 + 1)
        #expect(publicText == "negpatch ed25519 public key v1\n\(hexString(signed.key.publicKey.rawRepresentation))\n")
        var info = stat()
        #expect(stat(signed.keyPath, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(stat(signed.keyPath + ".pub", &info) == 0 && info.st_mode & 0o777 == 0o644)
        // Reading the private key back gives the same key; keys are never overwritten.
        #expect(try PatchSigningKey(contentsOf: signed.keyPath).publicKey == signed.key.publicKey)
        let again = #expect(throws: NegPatchError.self) { try PatchSigningKey.createKeyPair(at: signed.keyPath) }
        #expect(again?.message.contains("never overwritten") == true)
        // A world-readable private key is refused, as is a public key given as the private one.
        chmod(signed.keyPath, 0o644)
        #expect(throws: NegPatchError.self) { try PatchSigningKey(contentsOf: signed.keyPath) }
        let swapped = #expect(throws: NegPatchError.self) { try PatchSigningKey(contentsOf: signed.keyPath + ".pub") }
        #expect(swapped?.message.contains("public key") == true)
    }

    @Test func anUnsignedPatchIsRefused() throws {
        let signed = try Signed()
        unlink(signed.patch + ".sig")
        let error = #expect(throws: NegPatchError.self) {
            try PatchSignature.verify(patch: signed.patch, trustedKeys: [signed.key.publicKey])
        }
        #expect(error?.code == .untrusted)
        #expect(error?.description.hasPrefix("\(signed.patch): not signed") == true)
    }

    @Test func aPatchSignedByAnotherKeyIsRefused() throws {
        let signed = try Signed()
        let other = PatchSigningKey.generate().publicKey
        let error = #expect(throws: NegPatchError.self) { try PatchSignature.verify(patch: signed.patch, trustedKeys: [other]) }
        #expect(error?.code == .untrusted)
        #expect(error?.message.contains("not a trusted key") == true)
        // Any one of several trusted keys will do.
        try PatchSignature.verify(patch: signed.patch, trustedKeys: [other, signed.key.publicKey])
    }

    /// Every byte of the patch is covered: any single changed byte or any truncation is refused.
    @Test func everyChangedByteOfTheSignedPatchIsRefused() throws {
        let signed = try Signed()
        let original = readBytes(signed.patch)
        var accepted: [Int] = []
        for position in original.indices {
            var bytes = original
            bytes[position] ^= 0x01
            writeBytes(signed.patch, bytes)
            if (try? PatchSignature.verify(patch: signed.patch, trustedKeys: [signed.key.publicKey])) != nil { accepted.append(position) }
        }
        #expect(accepted.isEmpty, "changes accepted at \(accepted)")
        for length in stride(from: 0, to: original.count, by: 97) {
            writeBytes(signed.patch, Array(original.prefix(length)))
            #expect(throws: NegPatchError.self) { try PatchSignature.verify(patch: signed.patch, trustedKeys: [signed.key.publicKey]) }
        }
    }

    /// A patch re-written as a valid patch (new lambda, checksums recomputed) still fails:
    /// the metadata is bound by the signature, not only by the patch's own checksums.
    @Test func validButChangedMetadataIsRefused() throws {
        let signed = try Signed()
        let forged = try rewriteIndex(signed.patch) { $0.replacingOccurrences(of: "\"lambda\":0.8", with: "\"lambda\":3") }
        writeBytes(signed.patch, forged)
        let reopened = try NegPatchFile(path: signed.patch)
        #expect(reopened.index.metadata.lambda == 3)
        let error = #expect(throws: NegPatchError.self) { try PatchSignature.verify(patch: signed.patch, trustedKeys: [signed.key.publicKey]) }
        #expect(error?.code == .untrusted)
        #expect(error?.message.contains("changed after signing") == true)
    }

    /// Editing the signature file to match a tampered patch breaks the Ed25519 signature.
    @Test func anEditedSignatureFileIsRefused() throws {
        let signed = try Signed()
        let sigPath = signed.patch + ".sig"
        let text = String(decoding: readBytes(sigPath), as: UTF8.self)
        var bytes = readBytes(signed.patch)
        bytes[40] ^= 1
        writeBytes(signed.patch, bytes)
        let (_, digest) = try PatchSignature.digest(of: signed.patch)
        let edited = text.replacingOccurrences(of: hexString(signed.signature.sha256), with: hexString(digest))
        writeBytes(sigPath, Array(edited.utf8))
        let error = #expect(throws: NegPatchError.self) { try PatchSignature.verify(patch: signed.patch, trustedKeys: [signed.key.publicKey]) }
        #expect(error?.message.contains("not valid") == true)
        // A signature file that is not one is malformed, naming it.
        writeBytes(sigPath, Array(text.prefix(60).utf8))
        let malformed = #expect(throws: NegPatchError.self) { try PatchSignature.verify(patch: signed.patch, trustedKeys: [signed.key.publicKey]) }
        #expect(malformed?.code == .malformed)
        #expect(malformed?.file == sigPath)
    }

    @Test func aDamagedPatchIsNotSigned() throws {
        let signed = try Signed()
        var bytes = readBytes(signed.patch)
        bytes[20] ^= 1  // inside the first part: only decoding the blocks finds it
        writeBytes(signed.patch, bytes)
        let error = #expect(throws: NegPatchError.self) { try PatchSignature.sign(patch: signed.patch, key: signed.key, output: signed.folder.file("x.sig")) }
        #expect(error?.code == .corrupt)
        #expect(!signed.folder.contents.contains("x.sig"))
    }
}

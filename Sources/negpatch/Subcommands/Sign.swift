import ArgumentParser
import NegPatch

struct Sign: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sign a patch with an Ed25519 key: writes PATCH.sig.",
        discussion: """
            Checks the patch is intact (every block decoded), then writes a detached \
            signature over the SHA-256 of all its bytes to PATCH.sig (or --output). Ship the \
            .sig with the patch; apply --trusted-key KEY.pub refuses a patch without a valid \
            signature by that key, or one changed in any byte after signing. Any patch \
            format can be signed.
            """
    )

    @Argument(help: ArgumentHelp("The patch to sign (.negpatch or .h5).", valueName: "patch"))
    var patch: String

    @Option(help: ArgumentHelp("The private key file (from negpatch keygen).", valueName: "key"))
    var key: String

    @Option(name: .shortAndLong, help: ArgumentHelp("Where to write the signature (default: PATCH.sig).", valueName: "sig"))
    var output: String?

    func run() throws {
        let signingKey = try PatchSigningKey(contentsOf: key)
        let destination = output ?? PatchSignature.defaultPath(for: patch)
        // The key is read and closed before the signature is written: compare it by identity.
        if sameFile(destination, key) {
            throw NegPatchError(.invalidArgument, file: destination, "output would overwrite the input \(key)")
        }
        let signature = try PatchSignature.sign(patch: patch, key: signingKey, output: destination)
        print("signed \(patch) (\(Terminal.bytes(signature.fileSize)), key \(signature.key.id)) -> \(destination)")
    }
}

import ArgumentParser
import NegPatch

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create an Ed25519 key pair for signing patches.",
        discussion: """
            Writes the private key to KEY (mode 0600: keep it secret) and the public key to \
            KEY.pub (give it to whoever applies your patches: apply --trusted-key KEY.pub). \
            Existing files are never overwritten. Formats: formats/negpatch-v1.md, section 8.
            """
    )

    @Option(name: .shortAndLong, help: ArgumentHelp("The private key file to write; the public key goes to KEY.pub.", valueName: "key"))
    var output: String

    func run() throws {
        let key = try PatchSigningKey.createKeyPair(at: output)
        print("key \(key.publicKey.id): private key -> \(output) (keep it secret), public key -> \(output).pub")
    }
}

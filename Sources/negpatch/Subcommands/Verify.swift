import ArgumentParser
import NegPatch

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a patch is intact and, given its base, that it belongs to it.",
        discussion: """
            Checks the file's structure and index checksum, that the patched tensors match the \
            base fingerprint, and every stored checksum, by decoding every block (for a \
            .negpatch: the xxh64 of every part, the zstd sizes and content checksums, the mask \
            popcounts). With --base, also hashes every tensor of that checkpoint and compares it \
            with the patch's base fingerprint. Prints each check and what it covered.

            With --trusted-key, first checks the patch's detached Ed25519 signature (PATCH.sig) \
            over the SHA-256 of every byte, before any reader parses the file; an unsigned, \
            foreign-signed or changed patch fails there.

            Exit status: 0 intact (and the base matches, and the signature is valid), 1 \
            damaged, unreadable, mismatched or not validly signed (each problem is listed), 2 on \
            a usage error.
            """
    )

    @Argument(help: ArgumentHelp("The patch (.negpatch or .h5).", valueName: "patch"))
    var patch: String

    @Option(help: ArgumentHelp("The checkpoint the patch should apply to.", valueName: "base"))
    var base: String?

    @Option(name: .customLong("trusted-key"), help: ArgumentHelp(
        "Also require a valid signature by this public key (KEY.pub from negpatch keygen); repeat to trust several.",
        valueName: "pub"))
    var trustedKeys: [String] = []

    @Option(help: ArgumentHelp("The patch's signature file, checked with --trusted-key (default: PATCH.sig).", valueName: "sig"))
    var signature: String?

    @OptionGroup var bound: WorkBoundOptions

    @Flag(name: .shortAndLong, help: "No progress bar.")
    var quiet = false

    func validate() throws {
        if signature != nil && trustedKeys.isEmpty {
            throw ValidationError("--signature needs --trusted-key")
        }
    }

    func run() throws {
        let clock = Stopwatch()
        // The signature comes first: a patch that is not from a trusted signer is not parsed.
        var signed = false
        if !trustedKeys.isEmpty {
            let keys = try trustedKeys.map { try PatchPublicKey(contentsOf: $0) }
            do {
                _ = try PatchSignature.verify(patch: patch, trustedKeys: keys, signature: signature)
                signed = true
            } catch let error as NegPatchError {
                print("verify \(patch)")
                print("  FAILED  signature       \(error.message)")
                print("NOT TRUSTED: signature check failed; the patch was not read further")
                throw ExitCode(1)
            }
        }
        let bar = ProgressBar("verify", quiet: quiet)
        // A patch that opens is first held to the work bound (the base's elements with
        // --base); one that does not open is reported by the verifier, check by check.
        let report: VerifyReport
        if let source = try? PatchFormats.open(patch) {
            try bound.check(source, base: base.flatMap { try? Checkpoint(path: $0) })
            report = PatchVerifier.verify(source, base: base, progress: bar.update)
        } else {
            report = PatchVerifier.verify(patch: patch, base: base, progress: bar.update)
        }
        bar.finish()
        if let shortage = report.resourceError { throw shortage }
        var heading = "verify \(patch)"
        if let format = report.format, let size = report.fileSize {
            heading += " (\(format), \(Terminal.bytes(size))" + (report.direction.map { "; applies \($0.formula)" } ?? "") + ")"
        }
        print(heading)
        if signed { print("  ok      signature       Ed25519 by a trusted key over the SHA-256 of every byte") }
        for check in report.checks {
            let mark = check.passed == true ? "ok    " : check.passed == false ? "FAILED" : "skip  "
            print("  \(mark)  \(Terminal.padRight(check.name, 15)) \(check.detail)")
        }
        for problem in report.problems.prefix(50) { print("  ! \(problem)") }
        if report.problems.count > 50 { print("  ! … and \(report.problems.count - 50) more") }
        let failed = report.checks.filter { $0.passed == false }.map(\.name)
        if report.intact {
            print("intact" + (base != nil ? ", and made for this base" : "") + String(format: " (%.2f s)", clock.seconds))
        } else if failed == ["base"] {
            print("intact, but NOT made for this base")
        } else {
            print("DAMAGED: \(failed.joined(separator: ", ")) failed")
        }
        if !report.intact { throw ExitCode(1) }
    }
}

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

            Exit status: 0 intact (and the base matches), 1 damaged, unreadable or mismatched \
            (each problem is listed), 2 on a usage error.
            """
    )

    @Argument(help: ArgumentHelp("The patch (.negpatch or .h5).", valueName: "patch"))
    var patch: String

    @Option(help: ArgumentHelp("The checkpoint the patch should apply to.", valueName: "base"))
    var base: String?

    @Flag(name: .shortAndLong, help: "No progress bar.")
    var quiet = false

    func run() throws {
        let clock = Stopwatch()
        let bar = ProgressBar("verify", quiet: quiet)
        let report = PatchVerifier.verify(patch: patch, base: base, progress: bar.update)
        bar.finish()
        var heading = "verify \(patch)"
        if let format = report.format, let size = report.fileSize { heading += " (\(format), \(Terminal.bytes(size)))" }
        print(heading)
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

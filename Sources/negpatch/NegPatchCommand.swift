import ArgumentParser
import Foundation
import NegPatch

@main
struct NegPatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "negpatch",
        abstract: "Machine unlearning as small, safe patches: merge task vectors, package, apply, audit.",
        discussion: """
            Exit status: 0 on success, 1 when an input is invalid, damaged or mismatched \
            (one line on stderr says what, in which file and tensor), 2 on a usage error.
            """,
        version: NegPatchVersion.version,
        subcommands: [Merge.self, Apply.self, Export.self, Convert.self, Audit.self, Verify.self, Diff.self, Keygen.self, Sign.self]
    )

    /// Runs the command, mapping failures to one error line and the documented exit codes.
    static func main() {
        // A write past a file size limit (ulimit -f) then fails with EFBIG, reported as a
        // clean error, instead of killing the process with SIGXFSZ.
        signal(SIGXFSZ, SIG_IGN)
        // Before any thread exists: SIGINT, SIGTERM and SIGHUP remove temporary outputs.
        SignalCleanup.start()
        do {
            var command = try parseAsRoot()
            try command.run()
            // A command that read zeros where an input had shrunk under its mapping did not
            // see the file's real bytes, whatever it concluded.
            if let change = OpenInputs.firstChange(.faults) { Terminal.fail(change.error.description) }
        } catch let error as NegPatchError {
            Terminal.fail((OpenInputs.firstChange(.any)?.error ?? error).description)
        } catch {
            if let change = OpenInputs.firstChange(.any), ![ExitCode.success, .validationFailure].contains(exitCode(for: error)) {
                Terminal.fail(change.error.description)
            }
            let code = exitCode(for: error)
            if code == .success {
                Swift.print(fullMessage(for: error))
                Foundation.exit(0)
            }
            if code == .validationFailure {
                ProgressBar.clearLine()
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            if let exit = error as? ExitCode { Foundation.exit(exit.rawValue) }
            Terminal.fail(String(describing: error))
        }
    }
}

import ArgumentParser
import NegPatch

/// `--max-elements`, shared by the commands that decode a whole patch without a base to
/// bound it (`verify`, `export`, `audit --values`, `diff`, `convert`).
struct WorkBoundOptions: ParsableArguments {
    @Option(name: .customLong("max-elements"), help: ArgumentHelp(
        "Decode a patch that declares up to N elements (default: 2^28, or 1024 per byte of the file if more; with --base, the base's own).",
        valueName: "n"))
    var maxElements: Int?

    func validate() throws {
        if let maxElements, maxElements <= 0 {
            throw ValidationError("--max-elements must be a positive number of elements")
        }
    }

    /// Refuses `source` when it declares more elements than allowed (`PatchWorkBound`).
    func check(_ source: any PatchSource, base: Checkpoint? = nil) throws {
        try PatchWorkBound.check(source, maxElements: maxElements, base: base)
    }
}

import ArgumentParser
import NegPatch

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a patch's task vector as dense float32 safetensors.",
        discussion: "One F32 tensor per patched tensor, with the base's names and shapes; the patch's metadata goes under __metadata__."
    )

    @Argument(help: ArgumentHelp("The patch (.negpatch or .h5).", valueName: "patch"))
    var patch: String

    @Option(name: .shortAndLong, help: ArgumentHelp("The safetensors file to write.", valueName: "out"))
    var output: String

    @OptionGroup var bound: WorkBoundOptions

    @Flag(name: .shortAndLong, help: "No progress bar.")
    var quiet = false

    func validate() throws {
        try OutputNames.checkCheckpoint(output)
    }

    func run() throws {
        let clock = Stopwatch()
        let source = try PatchFormats.open(patch)
        try bound.check(source)
        let bar = ProgressBar("export", quiet: quiet)
        let bytes = try TaskVectorExport.write(source, to: output, progress: bar.update)
        bar.finish()
        print("exported \(source.index.tensors.count) tensors, \(Terminal.count(source.index.elements)) elements: "
              + "\(Terminal.bytes(bytes)), " + String(format: "%.2f s", clock.seconds) + " -> \(output)")
    }
}

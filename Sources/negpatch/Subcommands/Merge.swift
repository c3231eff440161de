import ArgumentParser
import Foundation
import NegPatch

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge the task vectors of n fine-tuned checkpoints into a patch.",
        discussion: """
            Each input is a .safetensors file, a Hugging Face folder (model.safetensors or a \
            sharded model.safetensors.index.json), or a PEFT LoRA adapter folder \
            (adapter_config.json and adapter_model.safetensors). Task vectors are ft - base in \
            float32, or scaling * B @ A for an adapter; integer and boolean tensors are left out. The patch format follows the output's \
            extension (.negpatch, .h5) unless --format is given.

            Methods: \(MergeMethods.all.map { "\($0.name) (\($0.summary))" }.joined(separator: "; ")).
            """
    )

    @Option(name: .long, help: ArgumentHelp("The pretrained checkpoint.", valueName: "base"))
    var base: String

    @Argument(help: ArgumentHelp("The fine-tuned checkpoints or LoRA adapter folders, in merge order.", valueName: "fine-tuned"))
    var models: [String]

    @Option(name: .shortAndLong, help: ArgumentHelp("The patch to write.", valueName: "patch"))
    var output: String

    @Option(help: "Merge method: \(MergeMethods.names.joined(separator: ", ")).")
    var method = "negmerge"

    @Option(parsing: .unconditional, help: "Recommended lambda recorded in the patch (theta = base - lambda * tau).")
    var lambda = Number(1.0)

    @Option(help: "How apply uses tau: subtract (task negation, theta = base - lambda * tau) or add (the inputs are already unlearned: theta = base + lambda * tau).")
    var direction = PatchDirection.subtract

    @Option(name: .customLong("min-agree"), help: "consensus: how many task vectors must share the majority sign (default: a majority).")
    var minAgree: Int?

    @Option(parsing: .unconditional, help: ArgumentHelp("task-arithmetic: one weight per checkpoint, comma-separated (default all 1).", valueName: "w1,...,wn"))
    var weights: String?

    @Option(help: "ties, magnitude-prune: share of each task vector kept by magnitude, per tensor (default 0.2).")
    var density: Number?

    @Option(help: "dare, dare-ties: drop probability (default 0.9).")
    var drop: Number?

    @Option(help: "dare, dare-ties: random seed (default 0).")
    var seed: UInt64?

    @Option(help: "Patch format: \(PatchFormats.all.map { $0.name }.joined(separator: ", ")) (default: from the output's extension).")
    var format: String?

    @Option(help: "How values are stored: f32 (lossless), or lossy f16, bf16, int8 (int8 with a scale per block; .negpatch only).")
    var values = "f32"

    @Option(help: "HDF5 compression: \(HDF5PatchFormat.compressions.joined(separator: " or ")) (default gzip).")
    var compression: String?

    @Option(help: "Compression level: zstd 1-22 for .negpatch (default \(Zstd.defaultLevel)), gzip 1-9 for HDF5 (default \(HDF5PatchFormat.defaultGzipLevel)).")
    var level: Int?

    @Option(name: .customLong("block-size"), help: "Elements per stored block (a multiple of 64, at most 2^26 = 67108864).")
    var blockSize = 1 << 20

    @Flag(name: .customLong("allow-nonfinite"), help: "Merge even if an input holds NaN or infinity (by default an error names the file, tensor and element).")
    var allowNonFinite = false

    @Flag(help: "Print the sign-agreement histogram (what each --min-agree would keep).")
    var stats = false

    @Flag(name: .shortAndLong, help: "No progress bar.")
    var quiet = false

    func validate() throws {
        guard !models.isEmpty else { throw ValidationError("give at least one fine-tuned checkpoint") }
        guard Float(lambda.value).isFinite else { throw ValidationError("--lambda must be a finite number within float32's range") }
        guard blockSize > 0, blockSize % 64 == 0, blockSize <= PatchWorkBound.maxBlockElements else {
            throw ValidationError("--block-size must be a positive multiple of 64 up to 2^26 (67108864)")
        }
        try PatchOutputOptions.validate(format: format, compression: compression, level: level, output: output)
        try InputList.checkDistinct(base: base, models: models)
        guard let valueType = ValueType(rawValue: values) else {
            throw ValidationError("unknown --values '\(values)' (known: \(ValueType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        if valueType != .f32, PatchOutputOptions.format(format, output: output) == HDF5PatchFormat.self {
            throw ValidationError("--values \(values) needs the .negpatch format: HDF5 patches store float32 values")
        }
        guard let entry = MergeMethods.entry(method) else {
            throw ValidationError("unknown --method '\(method)' (known: \(MergeMethods.names.joined(separator: ", ")))")
        }
        // A parameter the method does not read would be ignored without a word.
        for (option, given) in [("min-agree", minAgree != nil), ("weights", weights != nil), ("density", density != nil),
                                ("drop", drop != nil), ("seed", seed != nil)] where given && !entry.parameters.contains(option) {
            let users = MergeMethods.all.filter { $0.parameters.contains(option) }.map(\.name)
            throw ValidationError("--\(option) is a parameter of \(users.joined(separator: ", ")), not of \(method)")
        }
        // Out-of-range parameters are usage errors, found before any file is read.
        do {
            _ = try MergeMethods.make(method, parameters: parameters(), modelCount: models.count)
        } catch let error as NegPatchError {
            throw ValidationError(error.message)
        }
    }

    private func parameters() throws -> MergeParameters {
        var parameters = MergeParameters()
        parameters.minAgree = minAgree
        parameters.weights = try weights.map(Self.parseWeights)
        parameters.density = density?.value
        parameters.drop = drop?.value
        parameters.seed = seed
        return parameters
    }

    func run() throws {
        let clock = Stopwatch()
        let baseCheckpoint = try Checkpoint(path: base)
        let fineTuned = try models.map { try MergeInputs.open($0) }
        for input in [base] + models where sameFile(input, output) {
            throw NegPatchError(.invalidArgument, file: output, "output would overwrite the input \(input)")
        }
        if models.count == 1 {
            Terminal.warn("one fine-tuned checkpoint: the patch holds \(method == "negmerge" ? "its task vector where it is nonzero" : "that single task vector"), nothing is merged")
        }
        let mergeMethod = try MergeMethods.make(method, parameters: parameters(), modelCount: models.count)
        var request = MergeRequest(base: baseCheckpoint, models: fineTuned, method: mergeMethod)
        request.lambda = lambda.value
        request.direction = direction
        request.blockElements = blockSize
        request.allowNonFinite = allowNonFinite
        let patchFormat = PatchOutputOptions.format(format, output: output)
        var options = PatchOutputOptions.writerOptions(format: patchFormat, compression: compression, level: level)
        options.valueType = ValueType(rawValue: values)!
        let writer = try patchFormat.writer(path: output, options: options)
        let bar = ProgressBar("merge", quiet: quiet)
        let summary = try Merger.run(request, writer: writer, progress: bar.update)
        bar.finish()
        if stats { printHistogram(summary) }
        let dense = summary.elements * 4
        let ratio = summary.patchBytes > 0 ? Double(dense) / Double(summary.patchBytes) : 0
        print("\(mergeMethod.name): \(models.count) checkpoints, \(summary.tensors) tensors, "
              + "\(Terminal.count(summary.elements)) elements, density \(Terminal.percent(summary.density)), "
              + "patch \(Terminal.bytes(summary.patchBytes)) ("
              + (ratio >= 1 ? String(format: "%.1fx smaller than", ratio) : "larger than")
              + " dense float32 \(Terminal.bytes(dense))), "
              + String(format: "%.2f s", clock.seconds) + " -> \(output)")
    }

    private static func parseWeights(_ text: String) throws -> [Double] {
        try text.split(separator: ",", omittingEmptySubsequences: false).map { token in
            guard let value = StrictNumber.double(token) else {
                throw ValidationError("--weights: '\(token)' is not a finite number")
            }
            return value
        }
    }

    private func printHistogram(_ summary: MergeSummary) {
        let n = summary.agreement.count - 1
        print("sign agreement (elements where m of \(n) task vectors share the majority sign):")
        print("   m        elements     share   at least m agree")
        var keptAtLeast = summary.agreement.reduce(0, +) - summary.agreement[0]
        for m in 0...n {
            let count = summary.agreement[m]
            let share = summary.elements == 0 ? 0 : Double(count) / Double(summary.elements)
            let kept = m == 0 ? "" : Terminal.percent(summary.elements == 0 ? 0 : Double(keptAtLeast) / Double(summary.elements))
            print(Terminal.pad(String(m), 4) + Terminal.pad(Terminal.count(count), 16) + Terminal.pad(Terminal.percent(share), 10)
                  + Terminal.pad(kept, 19))
            if m > 0 { keptAtLeast -= count }
        }
    }
}

extension PatchDirection: ExpressibleByArgument {}

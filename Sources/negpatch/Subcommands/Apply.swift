import ArgumentParser
import Foundation
import NegPatch

struct Apply: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply a patch to its base: theta = base - lambda * tau.",
        discussion: """
            Writes a ready checkpoint with the base's layout: the same header, tensor order, \
            __metadata__ and shard files; only the patched floating tensors change (computed \
            in float32, rounded to the base dtype, ties to even). The base fingerprint must \
            match the patch's unless --ignore-base-mismatch is given.

            With several lambdas (--lambda 0.5,0.75,1.0 or a range start:stop:step) the patch \
            is decoded once and OUT is a folder receiving one checkpoint per lambda, named \
            lambda-VALUE.safetensors (or folders lambda-VALUE for a folder base).
            """
    )

    @Option(name: .long, help: ArgumentHelp("The pretrained checkpoint the patch was made for.", valueName: "base"))
    var base: String

    @Option(name: .long, help: ArgumentHelp("The patch (.negpatch or .h5).", valueName: "patch"))
    var patch: String

    @Option(parsing: .unconditional, help: ArgumentHelp("Lambda, or a list a,b,c, or a range start:stop:step (default: the patch's).", valueName: "lambda"))
    var lambda: String?

    @Option(name: .shortAndLong, help: ArgumentHelp("The checkpoint to write (a folder for several lambdas).", valueName: "out"))
    var output: String

    @Flag(name: .customLong("ignore-base-mismatch"), help: "Apply even if the base's fingerprint differs from the patch's.")
    var ignoreBaseMismatch = false

    @Option(name: .customLong("trusted-key"), help: ArgumentHelp(
        "Refuse the patch unless it carries a valid signature by this public key (KEY.pub from negpatch keygen); repeat to trust several.",
        valueName: "pub"))
    var trustedKeys: [String] = []

    @Option(help: ArgumentHelp("The patch's signature file, checked with --trusted-key (default: PATCH.sig).", valueName: "sig"))
    var signature: String?

    @Flag(name: .customLong("allow-nonfinite"), help: "Apply even if the patched base tensors or the patch hold NaN or infinity.")
    var allowNonFinite = false

    @Flag(name: .customLong("allow-external-links"), help: "Copy a folder base's config and tokenizer files even when they are symbolic links leading outside the folder (and its Hugging Face cache's blobs/).")
    var allowExternalLinks = false

    @Flag(name: .shortAndLong, help: "No progress bar.")
    var quiet = false

    func validate() throws {
        if let lambda { _ = try LambdaList.parse(lambda) }
        try OutputNames.checkCheckpoint(output)
        if signature != nil && trustedKeys.isEmpty {
            throw ValidationError("--signature needs --trusted-key")
        }
    }

    func run() throws {
        let clock = Stopwatch()
        // The signature is checked before the patch is parsed: an untrusted file never
        // reaches the patch readers.
        if !trustedKeys.isEmpty {
            // Keys and the signature are read and closed before any output exists.
            for input in trustedKeys + [signature ?? PatchSignature.defaultPath(for: patch)] where sameFile(input, output) {
                throw NegPatchError(.invalidArgument, file: output, "output would overwrite the input \(input)")
            }
            let keys = try trustedKeys.map { try PatchPublicKey(contentsOf: $0) }
            try PatchSignature.verify(patch: patch, trustedKeys: keys, signature: signature)
        }
        let baseCheckpoint = try Checkpoint(path: base)
        let source = try PatchFormats.open(patch)
        let lambdas = try lambda.map(LambdaList.parse) ?? [(source.index.metadata.lambda, nil)]
        var outputs: [(lambda: Double, path: String)]
        // A sweep is built in a hidden folder beside OUT and renamed into place when every
        // checkpoint is written: an error or a signal leaves OUT as it was.
        var sweep: AtomicFolder?
        if lambdas.count == 1 {
            outputs = [(lambdas[0].value, output)]
        } else {
            sweep = try LambdaList.makeFolder(output)
            let suffix = baseCheckpoint.layout == .file ? ".safetensors" : ""
            outputs = lambdas.map { ($0.value, sweep!.path(for: "lambda-\($0.label ?? String($0.value))\(suffix)")) }
        }
        var request = ApplyRequest(base: baseCheckpoint, patch: source, outputs: outputs)
        request.ignoreBaseMismatch = ignoreBaseMismatch
        request.allowNonFinite = allowNonFinite
        request.allowExternalLinks = allowExternalLinks
        let bar = ProgressBar("apply", quiet: quiet)
        let bytes = try CheckpointPatcher.run(request, progress: bar.update)
        try sweep?.commit()
        bar.finish()
        let index = source.index
        let what = outputs.count == 1 ? "lambda \(outputs[0].lambda)" : "\(outputs.count) lambdas"
        print("applied \(lastPathComponent(patch)) (\(index.metadata.method), density \(Terminal.percent(index.density))) "
              + "to \(index.tensors.count) tensors with \(what): \(Terminal.bytes(bytes)) per checkpoint, "
              + String(format: "%.2f s", clock.seconds) + " -> \(output)")
    }
}

/// Parses `--lambda`: a number, a comma-separated list, or ranges `start:stop:step`.
enum LambdaList {
    /// Each value with the label its output is named by (the text as given, for listed values).
    static func parse(_ text: String) throws -> [(value: Double, label: String?)] {
        var values: [(value: Double, label: String?)] = []
        for piece in text.split(separator: ",", omittingEmptySubsequences: false) {
            let token = String(piece)
            let parts = token.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            if parts.count == 3 {
                guard let start = StrictNumber.double(parts[0]), let stop = StrictNumber.double(parts[1]),
                      let step = StrictNumber.double(parts[2]), step > 0, stop >= start
                else { throw ValidationError("--lambda range '\(token)' must be start:stop:step with step > 0 and stop >= start") }
                let steps = Int(((stop - start) / step + 1e-9).rounded(.down))
                guard steps < 100_000 else { throw ValidationError("--lambda range '\(token)' has too many values") }
                for i in 0...steps {
                    // Round to 12 significant decimals so 0.1 * 3 is named 0.3.
                    let value = ((start + Double(i) * step) * 1e12).rounded() / 1e12
                    values.append((value, String(value)))
                }
            } else {
                guard parts.count == 1, let value = StrictNumber.double(token) else {
                    throw ValidationError("--lambda '\(token)' is not a finite number or a range start:stop:step")
                }
                values.append((value, token))
            }
        }
        guard !values.isEmpty else { throw ValidationError("--lambda is empty") }
        // Values, not spellings: 0.1 and 0.10 are one checkpoint.
        var seen = Set<Double>()
        for value in values where !seen.insert(value.value).inserted {
            throw ValidationError("--lambda lists the value \(value.value) twice")
        }
        // Lambda multiplies tau in float32 (for F32, F16 and BF16 bases).
        if let huge = values.first(where: { !Float($0.value).isFinite }) {
            throw ValidationError("--lambda \(huge.value) is beyond float32's range (|lambda| < 3.4e38)")
        }
        return values
    }

    /// The sweep's output folder, written atomically: `path` must not exist or be an empty
    /// folder (a sweep never mixes its checkpoints with files already there).
    static func makeFolder(_ path: String) throws -> AtomicFolder {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw NegPatchError(.invalidArgument, file: path, "several lambdas need a folder as output, and this is a file")
        }
        return try AtomicFolder(destination: path)
    }
}

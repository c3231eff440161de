import ArgumentParser
import Foundation
import NegPatch

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a patch between formats (.negpatch <-> .h5), losslessly.",
        discussion: """
            Re-encodes block by block, keeping every block's encoding, the metadata and the \
            base fingerprint, so exporting the converted patch gives a byte-identical task \
            vector, and converting back with the same settings gives the original bytes. \
            The output format follows OUT's extension (.negpatch, .h5, .hdf5) unless \
            --format is given.
            """
    )

    @Argument(help: ArgumentHelp("The patch to convert (.negpatch or .h5).", valueName: "in"))
    var input: String

    @Argument(help: ArgumentHelp("The patch to write.", valueName: "out"))
    var output: String

    @Option(help: "Output format: \(PatchFormats.all.map { $0.name }.joined(separator: ", ")) (default: from OUT's extension).")
    var format: String?

    @Option(help: "HDF5 compression: \(HDF5PatchFormat.compressions.joined(separator: " or ")) (default gzip).")
    var compression: String?

    @Option(help: "Compression level: zstd 1-22 for .negpatch (default \(Zstd.defaultLevel)), gzip 1-9 for HDF5 (default \(HDF5PatchFormat.defaultGzipLevel)).")
    var level: Int?

    @OptionGroup var bound: WorkBoundOptions

    @Flag(name: .shortAndLong, help: "No progress bar.")
    var quiet = false

    func validate() throws {
        try PatchOutputOptions.validate(format: format, compression: compression, level: level, output: output)
    }

    func run() throws {
        let clock = Stopwatch()
        let source = try PatchFormats.open(input)
        try bound.check(source)
        let outputFormat = PatchOutputOptions.format(format, output: output)
        let writer = try outputFormat.writer(path: output, options: PatchOutputOptions.writerOptions(
            format: outputFormat, compression: compression, level: level))
        let bar = ProgressBar("convert", quiet: quiet)
        let bytes = try PatchConversion.convert(source, to: writer, progress: bar.update)
        bar.finish()
        let what = outputFormat == HDF5PatchFormat.self ? "hdf5, \(compression ?? "gzip")" : outputFormat.name
        print("converted \(lastPathComponent(input)) (\(source.formatName), \(Terminal.bytes(source.fileSize))) "
              + "to \(what): \(Terminal.bytes(bytes)), \(source.index.tensors.count) tensors, "
              + String(format: "%.2f s", clock.seconds) + " -> \(output)")
    }
}

/// The output options `merge` and `convert` share: format, HDF5 compression, level.
enum PatchOutputOptions {
    /// Checks the options for the format `output` will be written in.
    static func validate(format: String?, compression: String?, level: Int?, output: String) throws {
        if let format, PatchFormats.named(format) == nil {
            throw ValidationError("unknown --format '\(format)' (known: \(PatchFormats.all.map { $0.name }.joined(separator: ", ")))")
        }
        try OutputNames.checkPatch(output)
        if let compression {
            guard HDF5PatchFormat.compressions.contains(compression) else {
                throw ValidationError("unknown --compression '\(compression)' (known: \(HDF5PatchFormat.compressions.joined(separator: ", ")))")
            }
            guard Self.format(format, output: output) == HDF5PatchFormat.self else {
                throw ValidationError("--compression applies to HDF5 patches only; .negpatch is always zstd (use --level)")
            }
        }
        if let level {
            if Self.format(format, output: output) == HDF5PatchFormat.self {
                guard (1...9).contains(level) else { throw ValidationError("--level must be between 1 and 9 for HDF5 (gzip)") }
            } else {
                guard (1...22).contains(level) else { throw ValidationError("--level must be between 1 and 22") }
            }
        }
    }

    /// The format named by `--format`, else the one `output`'s extension selects.
    static func format(_ name: String?, output: String) -> any PatchFormat.Type {
        name.flatMap(PatchFormats.named) ?? PatchFormats.forOutput(output)
    }

    /// Writer options for `format`: the level goes to zstd or to gzip.
    static func writerOptions(format: any PatchFormat.Type, compression: String?, level: Int?) -> PatchWriterOptions {
        var options = PatchWriterOptions()
        if let compression { options.hdf5Compression = compression }
        if let level {
            if format == HDF5PatchFormat.self {
                options.gzipLevel = level
            } else {
                options.zstdLevel = Int32(level)
            }
        }
        return options
    }
}

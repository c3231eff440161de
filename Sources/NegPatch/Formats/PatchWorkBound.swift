/// How much decoding a patch may ask for before anything is decoded.
///
/// A patch's index declares its shapes, and decoding does work (and, per block, allocates
/// memory) in proportion to them, not to the file's size: zstd expands an all-zero frame by
/// up to 32,768 times, and a sparse block with no nonzero element may store no mask bytes at
/// all. A crafted 132 KB patch made `verify` take 8.4 GB and 48 s. The format therefore caps
/// what one block may hold (`maxBlockElements`) and what one zstd part may expand to
/// (`maxZstdExpansion`), and commands that decode an untrusted patch without a base to
/// bound it (`verify`, `export`, `audit --values`, `diff`, `convert`) accept at most
/// `defaultMaxElements(fileSize:)` declared elements unless told more with
/// `--max-elements N`, or given `--base`, whose real tensors then bound the patch.
public enum PatchWorkBound {
    /// The most elements a block may hold: 2^26 (64 Mi elements, a 256 MiB dense float32
    /// block). Writers refuse a larger `--block-size`; readers refuse a larger
    /// `block_elements` before allocating anything.
    public static let maxBlockElements = 1 << 26

    /// The most bytes a zstd frame of `length` bytes can decompress to: zstd's densest block
    /// (an RLE block) stores at most 128 KiB in 4 bytes, so no valid frame exceeds 32,768
    /// times its length. A part declaring more is refused when the index is read.
    public static func maxZstdExpansion(_ length: Int) -> Int {
        length.multipliedReportingOverflow(by: 32_768).overflow ? Int.max : length * 32_768
    }

    /// Elements a patch of `fileSize` bytes may declare when nothing else bounds it: 2^28
    /// (a 1 GiB dense float32 task vector), or 1,024 per byte of the file, whichever is more.
    /// Real patches hold far fewer elements per byte (a lossless patch at 7% density about 5,
    /// one whose task vector is 0.1% nonzero about 300): the bound only stops files whose
    /// declared shapes their bytes cannot justify.
    public static func defaultMaxElements(fileSize: Int) -> Int {
        max(1 << 28, fileSize.multipliedReportingOverflow(by: 1024).overflow ? Int.max : fileSize * 1024)
    }

    /// Throws when `source` declares more elements than allowed: `maxElements` when given,
    /// else the floating elements of `base` when given (a patch for that base never holds
    /// more), else `defaultMaxElements(fileSize:)`. Nothing has been decoded when it throws.
    public static func check(_ source: any PatchSource, maxElements: Int? = nil, base: Checkpoint? = nil) throws {
        let declared = source.index.elements
        let limit = maxElements ?? base?.floatingElementCount ?? defaultMaxElements(fileSize: source.fileSize)
        guard declared > limit else { return }
        let reason: String
        if maxElements != nil {
            reason = "more than --max-elements \(limit)"
        } else if let base {
            reason = "more than the \(ReportNumbers.count(limit)) floating-point elements of the base \(base.path)"
        } else {
            reason = "more than the \(ReportNumbers.count(limit)) a patch of \(ReportNumbers.bytes(source.fileSize)) may declare "
                + "without --base or --max-elements N (formats/SECURITY.md, decompression bombs)"
        }
        throw NegPatchError(.invalidArgument, file: source.path,
                            "declares \(ReportNumbers.count(declared)) elements, \(reason); nothing was decoded")
    }
}

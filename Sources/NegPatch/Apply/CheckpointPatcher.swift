#if canImport(Glibc)
import Glibc
#endif

/// What `CheckpointPatcher.run` writes: one unlearned checkpoint per lambda.
public struct ApplyRequest {
    /// The pretrained checkpoint.
    public var base: Checkpoint
    /// The patch.
    public var patch: any PatchSource
    /// One output path per lambda: a file for a file base, a folder for a folder base.
    public var outputs: [(lambda: Double, path: String)]
    /// Apply even when the base fingerprint differs (names, dtypes and shapes of the
    /// patched tensors must still match).
    public var ignoreBaseMismatch = false
    /// Apply even when a patched base tensor or the patch holds NaN or infinity (otherwise
    /// an error names the file, the tensor and the first such element).
    public var allowNonFinite = false
    /// Copy sidecar files (config, tokenizer) of a folder base even when they are symbolic
    /// links to files outside the base folder's tree and its Hugging Face cache's `blobs/`
    /// (by default such a link is refused: it would copy an unrelated file into the output).
    public var allowExternalLinks = false

    /// Creates a request.
    public init(base: Checkpoint, patch: any PatchSource, outputs: [(lambda: Double, path: String)]) {
        self.base = base
        self.patch = patch
        self.outputs = outputs
    }
}

/// Writes unlearned checkpoints: every patched tensor becomes `base - lambda * tau` (or
/// `base + lambda * tau` for a patch whose direction is `add`; see `PatchKernels`), every
/// other byte (header, other tensors, metadata, shard layout) is copied unchanged. Each block of the patch is decoded once and applied for every lambda.
/// Outputs are written atomically; on any error none of them is left behind.
public enum CheckpointPatcher {
    /// File extensions of weight files in other formats, never copied beside a patched
    /// checkpoint (they would hold the unpatched weights).
    static let foreignWeightExtensions = [".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".safetensors"]

    /// Checks the base, then writes every output. Returns the number of bytes written per
    /// output.
    @discardableResult
    public static func run(_ request: ApplyRequest, progress: ProgressHandler? = nil) throws -> Int {
        let base = request.base, patch = request.patch
        for output in request.outputs {
            // A patch's recorded lambda (1e308, say) reaches here unchecked by the CLI.
            guard output.lambda.isFinite, Float(output.lambda).isFinite else {
                throw NegPatchError(.invalidArgument, file: output.path, "lambda must be a finite number within float32's range, got \(output.lambda)")
            }
            for shard in base.shards where sameFile(shard.path, output.path) {
                throw NegPatchError(.invalidArgument, file: output.path, "output would overwrite the base checkpoint")
            }
            if sameFile(patch.path, output.path) {
                throw NegPatchError(.invalidArgument, file: output.path, "output would overwrite the patch")
            }
        }
        // Every patched tensor must exist in the base with the same dtype and shape,
        // whether or not the fingerprint is checked.
        let patched = patch.index.tensors.map { FingerprintEntry(name: $0.name, dtype: $0.dtype, shape: $0.shape, digest: 0) }
        try BaseFingerprint.checkStructure(base, matches: patched, patch: patch.path, all: false)
        if !request.ignoreBaseMismatch {
            try BaseFingerprint.verify(base, matches: patch.index.fingerprint, patch: patch.path)
        }

        let sidecars = base.layout == .file ? [] : try sidecars(of: base, allowExternalLinks: request.allowExternalLinks)
        let folders: [AtomicFolder?] = try request.outputs.map { output in
            base.layout == .file ? nil : try AtomicFolder(destination: output.path)
        }
        let patchIndex = Dictionary(uniqueKeysWithValues: patch.index.tensors.enumerated().map { (TensorName($0.element.name), $0.offset) })
        let total = patch.index.elements
        var done = 0
        for (s, shard) in base.shards.enumerated() {
            let name = lastPathComponent(shard.path)
            let files = try request.outputs.indices.map { i in
                try AtomicOutput(destination: folders[i]?.path(for: name) ?? request.outputs[i].path)
            }
            try writeShard(shard, shardIndex: s, base: base, patch: patch, patchIndex: patchIndex,
                           files: files, lambdas: request.outputs.map(\.lambda), checkFinite: !request.allowNonFinite) { count in
                done += count
                progress?(done, total)
            }
            for file in files { try file.commit() }
        }
        if base.layout != .file {
            for folder in folders.compactMap({ $0 }) {
                try copySidecars(sidecars, into: folder)
                try folder.commit()
            }
        }
        return base.shards.reduce(0) { $0 + $1.file.size }
    }

    private static func writeShard(_ shard: SafetensorsFile, shardIndex: Int, base: Checkpoint, patch: any PatchSource,
                                   patchIndex: [TensorName: Int], files: [AtomicOutput], lambdas: [Double],
                                   checkFinite: Bool, advanced: (Int) -> Void) throws {
        let source = shard.file
        for file in files { try file.truncate(to: source.size) }
        // Copy everything that is not patched: the header and unpatched tensors, coalesced.
        var ranges: [(start: Int, end: Int)] = []
        var cursor = 0
        var work: [(tensor: Int, info: TensorInfo)] = []
        for info in shard.tensors {
            if let t = patchIndex[TensorName(info.name)], info.dtype.isFloating {
                if info.fileOffset > cursor { ranges.append((cursor, info.fileOffset)) }
                cursor = info.fileOffset + info.byteCount
                work.append((t, info))
            }
        }
        if source.size > cursor { ranges.append((cursor, source.size)) }
        for file in files {
            for range in ranges {
                try file.write(source.slice(range.start, range.end - range.start), at: range.start)
            }
        }
        // Patched tensors, block by block, in parallel: decode once, apply per lambda.
        struct Item { let tensor: Int; let block: Int; let info: TensorInfo }
        var items: [Item] = []
        for (t, info) in work {
            for b in 0..<patch.index.tensors[t].blocks.count { items.append(Item(tensor: t, block: b, info: info)) }
        }
        let wanted = max(4, ProcessorCount.active * 3)
        // One buffer per slot of the window, reused from window to window: fresh memory for
        // every block would cost a page fault per 4 KiB written.
        let largest = items.reduce(0) { max($0, patch.index.tensors[$1.tensor].blockElements * $1.info.dtype.size) }
        // Under an address-space limit the window shrinks to the buffers that could be had
        // (one at least, else the error says what could not be allocated).
        var buffers: [UnsafeMutableRawPointer] = []
        defer { buffers.forEach { Memory.free($0.assumingMemoryBound(to: UInt8.self)) } }
        for _ in 0..<min(wanted, items.count) {
            do {
                buffers.append(UnsafeMutableRawPointer(try Memory.allocate(UInt8.self, count: largest, for: "a block of the base")))
            } catch where !buffers.isEmpty {
                break
            }
        }
        let window = buffers.count
        var start = 0
        while start < items.count {
            let slice = Array(items[start..<min(items.count, start + window)])
            try Parallel.forEach(slice.count) { j in
                let item = slice[j]
                let entry = patch.index.tensors[item.tensor]
                let size = item.info.dtype.size
                let offset = item.info.fileOffset + item.block * entry.blockElements * size
                let byteCount = entry.elementCount(ofBlock: item.block) * size
                let block = try patch.block(tensor: item.tensor, block: item.block)
                let buffer = buffers[j]
                for (k, file) in files.enumerated() {
                    // pread copies from the page cache without mapping the base's pages.
                    if !source.read(offset, byteCount, into: buffer) {
                        buffer.copyMemory(from: source.bytes.baseAddress! + offset, byteCount: byteCount)
                    }
                    if k == 0 && checkFinite {
                        try checkFiniteInputs(base: UnsafeRawPointer(buffer), shard: shard, info: item.info,
                                              block: block, blockStart: item.block * entry.blockElements, patch: patch)
                    }
                    // An adding patch subtracts with the negated lambda (formats/methods.md).
                    PatchKernels.apply(block, to: buffer, dtype: item.info.dtype,
                                       lambda: patch.index.metadata.direction.kernelLambda(lambdas[k]))
                    if checkFinite {
                        try checkFiniteResult(UnsafeRawPointer(buffer), info: item.info, count: block.count,
                                              blockStart: item.block * entry.blockElements, lambda: lambdas[k], base: shard.path)
                    }
                    try file.write(UnsafeRawBufferPointer(start: buffer, count: byteCount), at: offset)
                }
            }
            for file in files { file.startWriteback() }
            advanced(slice.reduce(0) { $0 + patch.index.tensors[$1.tensor].elementCount(ofBlock: $1.block) })
            start += slice.count
        }
    }

    /// Throws `.invalidValue` naming the file, the tensor and the element when the base
    /// block or the patch's values for it hold NaN or infinity.
    private static func checkFiniteInputs(base: UnsafeRawPointer, shard: SafetensorsFile, info: TensorInfo,
                                          block: SparseBlock, blockStart: Int, patch: any PatchSource) throws {
        if let bad = FiniteValues.firstNonFinite(base, dtype: info.dtype, count: block.count) {
            throw NegPatchError(.invalidValue, file: shard.path, tensor: info.name,
                                "non-finite value \(FiniteValues.value(base, dtype: info.dtype, at: bad)) at "
                                + "\(FiniteValues.describe(element: blockStart + bad, shape: info.shape)) (use --allow-nonfinite to apply anyway)")
        }
        let finite = block.values.withUnsafeBufferPointer { v in
            v.isEmpty || FiniteValues.allFinite(v.baseAddress!, count: v.count)
        }
        if !finite {
            let j = block.values.firstIndex { !$0.isFinite }!
            let element = blockStart + (block.indices.map { Int($0[j]) } ?? j)
            throw NegPatchError(.invalidValue, file: patch.path, tensor: info.name,
                                "non-finite task-vector value \(block.values[j]) at "
                                + "\(FiniteValues.describe(element: element, shape: info.shape)) (use --allow-nonfinite to apply anyway)")
        }
    }

    /// Throws `.invalidValue` naming the tensor and the element when finite inputs gave a
    /// non-finite result (`lambda * tau` beyond float32, or a value beyond the base dtype's
    /// range, such as float16's 65504): a checkpoint is never written with an infinity.
    private static func checkFiniteResult(_ data: UnsafeRawPointer, info: TensorInfo, count: Int, blockStart: Int,
                                          lambda: Double, base: String) throws {
        guard let bad = FiniteValues.firstNonFinite(data, dtype: info.dtype, count: count) else { return }
        throw NegPatchError(.invalidValue, file: base, tensor: info.name,
                            "the patched value at \(FiniteValues.describe(element: blockStart + bad, shape: info.shape)) with lambda \(lambda) "
                            + "is \(FiniteValues.value(data, dtype: info.dtype, at: bad)): beyond the range of \(info.dtype)")
    }

    /// The folders a sidecar's links may lead into: the base folder's own tree and, for a
    /// Hugging Face cache snapshot (`models--ORG--NAME/snapshots/REV/`), the cache's `blobs/`
    /// (every file of a snapshot is a link there). Real paths, links resolved.
    static func linkRoots(of folder: String) -> [String] {
        guard let root = realPath(folder) else { return [] }
        var roots = [root]
        let (snapshots, _) = splitPath(root)
        let cache = splitPath(snapshots).folder
        // blobs/ counts only as a real folder of the cache itself: a blobs link could lead
        // anywhere.
        var info = stat()
        if lastPathComponent(snapshots) == "snapshots", lstat("\(cache)/blobs", &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR,
           let blobs = realPath("\(cache)/blobs"), blobs == "\(cache)/blobs" {
            roots.append(blobs)
        }
        return roots
    }

    /// Throws `.invalidArgument` when `path` (a sidecar named `name` in `base`) resolves to a
    /// file outside every folder of `roots`.
    static func checkLinkStaysInside(_ path: String, name: String, roots: [String], base: String) throws {
        var info = stat()
        guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFLNK else { return }
        let target = realPath(path) ?? path
        guard !roots.contains(where: { target.hasPrefix($0 + "/") }) else { return }
        throw NegPatchError(.invalidArgument, file: path,
                            "'\(name)' is a symbolic link to '\(target)', outside the checkpoint folder \(base) and its cache's blobs/: "
                            + "not copied into the output (--allow-external-links copies it anyway)")
    }

    private static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Copies the base folder's other files (index, config, tokenizer) into the output
    /// folder, leaving out weight files of other formats.
    private static func copySidecars(_ sidecars: [(name: String, path: String)], into folder: AtomicFolder) throws {
        for sidecar in sidecars {
            let source = try MappedFile(path: sidecar.path)
            let output = try AtomicOutput(destination: folder.path(for: sidecar.name))
            try output.write(source.bytes)
            try output.commit()
        }
    }

    /// The base folder's other files (index, config, tokenizer) that an output folder gets a
    /// copy of, in name order: regular files (or links to them), not hidden, not shards, not
    /// weight files of other formats. A link leading out of the base folder is refused
    /// unless `allowExternalLinks` (`checkLinkStaysInside`), before anything is written.
    private static func sidecars(of base: Checkpoint, allowExternalLinks: Bool) throws -> [(name: String, path: String)] {
        let shardNames = Set(base.shards.map { TensorName(lastPathComponent($0.path)) })
        let roots = allowExternalLinks ? [] : linkRoots(of: base.path)
        guard let dir = opendir(base.path) else {
            throw NegPatchError(.io, file: base.path, "cannot list folder: \(systemErrorText(errno))")
        }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            names.append(name)
        }
        closedir(dir)
        var found: [(name: String, path: String)] = []
        for name in names.sorted() {
            if name.hasPrefix(".") || shardNames.contains(TensorName(name)) { continue }
            if name != Checkpoint.indexFileName && foreignWeightExtensions.contains(where: { name.lowercased().hasSuffix($0) }) { continue }
            let path = "\(base.path)/\(name)"
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
            if !allowExternalLinks { try checkLinkStaysInside(path, name: name, roots: roots, base: base.path) }
            found.append((name, path))
        }
        return found
    }
}

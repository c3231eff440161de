/// Float32 tiles of the base and of every model's input, read with `pread` into buffers
/// reused from tile to tile.
///
/// Kernels take `tau_k = models[k][i] - base[i]` over a tile, whatever the inputs are:
///
/// - When every task vector is a stored tensor (`TaskVectorSource.stored`: fine-tuned
///   checkpoints), `base` is the base tile and `models[k]` the stored tile of model k, so
///   the kernels subtract in their own registers (today's fast path; `loadStored` keeps
///   bfloat16 as stored).
/// - Otherwise (a LoRA adapter among the inputs), `models[k]` is the tile of `tau_k`
///   itself, computed by its source, and `base` is a tile of zeros: `x - 0` is `x` bit for
///   bit (`-0.0` included), so the kernels compute the same `tau` either way.
///
/// Reading a tile of each of the n models into cache-resident buffers, instead of touching
/// n memory-mapped streams at once, keeps the merge loops fed from the cache; the buffers
/// take `(n + 2) * tile` floats (a few hundred kilobytes), whatever the tensor's size.
struct TileInputs {
    private let base: TensorSource
    private let models: [any TaskVectorSource]
    /// The models' stored tensors, when every model has one.
    private let stored: [TensorSource]?
    private let floats: UnsafeMutablePointer<Float>
    private let zeros: UnsafeMutablePointer<Float>
    private let raw: UnsafeMutableRawPointer
    private let pointers: UnsafeMutablePointer<UnsafePointer<Float>>
    private let storedPointers: UnsafeMutablePointer<UnsafeRawPointer>
    /// Elements per tile.
    let capacity: Int
    /// Whether `loadStored` may be used: the base and every model are stored bfloat16.
    let readsStoredBFloat16: Bool

    init(base: TensorSource, models: [any TaskVectorSource]) {
        self.base = base
        self.models = models
        let stored = models.compactMap(\.stored)
        self.stored = stored.count == models.count ? stored : nil
        readsStoredBFloat16 = base.dtype == .BF16 && self.stored?.allSatisfy { $0.dtype == .BF16 } == true
        // About a megabyte of buffers per thread whatever n: fewer elements per tile as n
        // grows, so memory stays flat in n.
        let capacity = min(inputTile, max(2048, (inputBudget / (models.count + 1)) & ~63))
        self.capacity = capacity
        floats = .allocate(capacity: capacity * (models.count + 1))
        zeros = .allocate(capacity: self.stored == nil ? capacity : 1)
        zeros.initialize(repeating: 0, count: self.stored == nil ? capacity : 1)
        // Conversion space for stored tiles that are not float32 (a LoRA adapter's saved
        // tensor may be stored in another dtype than the base's).
        let converted = ([base] + (self.stored ?? [])).filter { $0.dtype != .F32 }.map(\.dtype.size).max()
        raw = .allocate(byteCount: converted.map { capacity * $0 } ?? 1, alignment: 64)
        pointers = .allocate(capacity: max(models.count, 1))
        storedPointers = .allocate(capacity: max(models.count, 1))
    }

    func deallocate() {
        floats.deallocate()
        zeros.deallocate()
        raw.deallocate()
        pointers.deallocate()
        storedPointers.deallocate()
    }

    /// The base tile and the models' tiles for elements `start ..< start + count`
    /// (`count <= capacity`), such that `models[k][i] - base[i]` is `tau_k`.
    func load(start: Int, count: Int) -> (base: UnsafePointer<Float>, models: UnsafePointer<UnsafePointer<Float>>) {
        fill(base, start: start, count: count, into: floats)
        guard let stored else {
            for (k, model) in models.enumerated() {
                let tile = floats + (k + 1) * capacity
                model.load(start, count, base: floats, into: tile)
                pointers[k] = UnsafePointer(tile)
            }
            return (UnsafePointer(zeros), UnsafePointer(pointers))
        }
        for (k, model) in stored.enumerated() {
            let tile = floats + (k + 1) * capacity
            fill(model, start: start, count: count, into: tile)
            pointers[k] = UnsafePointer(tile)
        }
        return (UnsafePointer(floats), UnsafePointer(pointers))
    }

    /// The tiles for elements `start ..< start + count` as stored, for a kernel that widens
    /// bfloat16 in its own registers (`TileElement`): no float32 copy is written or read
    /// back. Only when `readsStoredBFloat16`.
    func loadStored(start: Int, count: Int) -> (base: UnsafeRawPointer, models: UnsafePointer<UnsafeRawPointer>) {
        let tiles = UnsafeMutableRawPointer(floats)
        let size = base.dtype.size
        fillStored(base, start: start, count: count, into: tiles)
        for (k, model) in stored!.enumerated() {
            let tile = tiles + (k + 1) * capacity * size
            fillStored(model, start: start, count: count, into: tile)
            storedPointers[k] = UnsafeRawPointer(tile)
        }
        return (UnsafeRawPointer(tiles), UnsafePointer(storedPointers))
    }
    private func fillStored(_ source: TensorSource, start: Int, count: Int, into tile: UnsafeMutableRawPointer) {
        source.copyRaw(start, count, into: tile)
        // Finite in bfloat16 is finite in float32: the check runs on the stored bits.
        source.checkFinite(stored: tile, count: count)
    }

    private func fill(_ source: TensorSource, start: Int, count: Int, into tile: UnsafeMutablePointer<Float>) {
        if source.dtype == .F32 {
            source.copyRaw(start, count, into: tile)
        } else {
            source.copyRaw(start, count, into: raw)
            FloatConversion.toFloat32(raw, dtype: source.dtype, start: 0, count: count, into: tile)
        }
        // The tile is in the cache now, so the finite check costs one more pass over it.
        source.checkFinite(tile, count: count)
    }
}

/// The most elements per input tile of the streaming kernels.
let inputTile = 16384
/// Floats of input buffers per thread across the base and the n models.
let inputBudget = 1 << 18

/// How a kernel reads eight (or one) float32 lanes from a tile: float32 tiles as they are,
/// bfloat16 tiles widened in registers (a bfloat16 is the high half of a float32).
protocol TileElement {
    static func lanes(_ tile: UnsafeRawPointer, _ i: Int) -> SIMD8<Float>
    static func scalar(_ tile: UnsafeRawPointer, _ i: Int) -> Float
}

/// Float32 tiles.
enum Float32Tile: TileElement {
    @inline(__always)
    static func lanes(_ tile: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
        tile.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self)
    }

    @inline(__always)
    static func scalar(_ tile: UnsafeRawPointer, _ i: Int) -> Float {
        tile.loadUnaligned(fromByteOffset: i &* 4, as: Float.self)
    }
}

/// BFloat16 tiles, as stored.
enum BFloat16Tile: TileElement {
    @inline(__always)
    static func lanes(_ tile: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
        let bits = SIMD8<UInt32>(truncatingIfNeeded: tile.loadUnaligned(fromByteOffset: i &* 2, as: SIMD8<UInt16>.self))
        return unsafeBitCast(bits &<< 16, to: SIMD8<Float>.self)
    }

    @inline(__always)
    static func scalar(_ tile: UnsafeRawPointer, _ i: Int) -> Float {
        Float(bitPattern: UInt32(tile.loadUnaligned(fromByteOffset: i &* 2, as: UInt16.self)) << 16)
    }
}

/// Float32 tiles of the base and of every model, read with `pread` into buffers reused
/// from tile to tile.
///
/// Reading a tile of each of the n models into cache-resident buffers, instead of touching
/// n memory-mapped streams at once, keeps the merge loops fed from the cache; the buffers
/// take `(n + 1) * tile` floats (a few hundred kilobytes), whatever the tensor's size.
struct TileInputs {
    private let base: TensorSource
    private let models: [TensorSource]
    private let floats: UnsafeMutablePointer<Float>
    private let raw: UnsafeMutableRawPointer
    private let pointers: UnsafeMutablePointer<UnsafePointer<Float>>
    private let storedPointers: UnsafeMutablePointer<UnsafeRawPointer>
    /// Elements per tile.
    let capacity: Int

    init(base: TensorSource, models: [TensorSource]) {
        self.base = base
        self.models = models
        // About a megabyte of buffers per thread whatever n: fewer elements per tile as n
        // grows, so memory stays flat in n.
        let capacity = min(inputTile, max(2048, (inputBudget / (models.count + 1)) & ~63))
        self.capacity = capacity
        floats = .allocate(capacity: capacity * (models.count + 1))
        raw = .allocate(byteCount: base.dtype == .F32 ? 1 : capacity * base.dtype.size, alignment: 64)
        pointers = .allocate(capacity: max(models.count, 1))
        storedPointers = .allocate(capacity: max(models.count, 1))
    }

    func deallocate() {
        floats.deallocate()
        raw.deallocate()
        pointers.deallocate()
        storedPointers.deallocate()
    }

    /// The base tile and the models' tiles for elements `start ..< start + count`
    /// (`count <= capacity`).
    func load(start: Int, count: Int) -> (base: UnsafePointer<Float>, models: UnsafePointer<UnsafePointer<Float>>) {
        fill(base, start: start, count: count, into: floats)
        for (k, model) in models.enumerated() {
            let tile = floats + (k + 1) * capacity
            fill(model, start: start, count: count, into: tile)
            pointers[k] = UnsafePointer(tile)
        }
        return (UnsafePointer(floats), UnsafePointer(pointers))
    }

    /// The tiles for elements `start ..< start + count` as stored, for a kernel that widens
    /// bfloat16 in its own registers (`TileElement`): no float32 copy is written or read
    /// back. The sources must be BF16.
    func loadStored(start: Int, count: Int) -> (base: UnsafeRawPointer, models: UnsafePointer<UnsafeRawPointer>) {
        let tiles = UnsafeMutableRawPointer(floats)
        let size = base.dtype.size
        fillStored(base, start: start, count: count, into: tiles)
        for (k, model) in models.enumerated() {
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

/// Per-tile scratch shared by the merge kernels: the base tile in float32, the current
/// model's task-vector tile, and the sign counts that feed the agreement histogram.
///
/// Kernels fill `pos` and `neg` as they stream the models and call `recordAgreement` once
/// per tile; the histogram is the same for every method (`formats/methods.md`).
struct MergeTile {
    /// Elements per tile.
    let capacity: Int
    /// Base values of the tile, float32.
    let base: UnsafeMutablePointer<Float>
    /// The current model's values, turned in place into its task vector.
    let task: UnsafeMutablePointer<Float>
    /// Count of task vectors with a positive element.
    let pos: UnsafeMutablePointer<Float>
    /// Count of task vectors with a negative element.
    let neg: UnsafeMutablePointer<Float>
    /// Extra float arrays of `capacity` for the kernel's own accumulators.
    let extra: UnsafeMutablePointer<Float>
    private let extraCount: Int

    /// Allocates a tile with `extraArrays` accumulators of `capacity` floats.
    init(capacity: Int = mergeTile, extraArrays: Int) {
        self.capacity = capacity
        extraCount = extraArrays
        let storage = UnsafeMutablePointer<Float>.allocate(capacity: capacity * (4 + extraArrays))
        base = storage
        task = storage + capacity
        pos = storage + 2 * capacity
        neg = storage + 3 * capacity
        extra = storage + 4 * capacity
    }

    /// Frees the storage.
    func deallocate() { base.deallocate() }

    /// Accumulator `k` of the kernel's own (each `capacity` floats).
    func accumulator(_ k: Int) -> UnsafeMutablePointer<Float> { extra + k * capacity }

    /// Loads the base tile and clears the sign counts.
    func begin(_ source: TensorSource, start: Int, count: Int) {
        source.load(start, count, into: base)
        pos.initialize(repeating: 0, count: count)
        neg.initialize(repeating: 0, count: count)
    }

    /// Loads one model's tile as its task vector `ft - base` and counts its signs.
    func loadTask(_ model: TensorSource, start: Int, count: Int) {
        model.load(start, count, into: task)
        for i in 0..<count {
            let x = task[i] - base[i]
            task[i] = x
            pos[i] += x > 0 ? 1 : 0
            neg[i] += x < 0 ? 1 : 0
        }
    }

    /// Adds the tile's elements to the agreement histogram (m = max(pos, neg)).
    func recordAgreement(count: Int, into histogram: UnsafeMutablePointer<Int>) {
        for i in 0..<count {
            histogram[Int(max(pos[i], neg[i]))] &+= 1
        }
    }
}

/// Runs `body` over the tiles of `start ..< start + count`, passing each tile's offset
/// within the range and its length.
@inline(__always)
func forEachTile(count: Int, tile: Int = mergeTile, _ body: (_ offset: Int, _ length: Int) -> Void) {
    var offset = 0
    while offset < count {
        let length = min(tile, count - offset)
        body(offset, length)
        offset += length
    }
}

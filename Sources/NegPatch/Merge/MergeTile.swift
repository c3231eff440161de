/// Per-tile scratch shared by the merge kernels: the base tile in float32, the current
/// model's task-vector tile, and the sign counts that feed the agreement histogram.
///
/// Kernels fill `pos` and `neg` as they stream the models and call `recordAgreement` once
/// per tile; the histogram is the same for every method (`formats/methods.md`).
struct MergeTile {
    /// Elements per tile.
    let capacity: Int
    private let inputs: TileInputs
    private let storage: UnsafeMutablePointer<Float>
    /// The current model's task vector `ft - base` over the tile.
    let task: UnsafeMutablePointer<Float>
    /// Count of task vectors with a positive element.
    let pos: UnsafeMutablePointer<Float>
    /// Count of task vectors with a negative element.
    let neg: UnsafeMutablePointer<Float>
    private var base: UnsafePointer<Float>
    private var models: UnsafePointer<UnsafePointer<Float>>

    /// Allocates a tile over `base` and `models`.
    init(base source: TensorSource, models sources: [any TaskVectorSource]) {
        inputs = TileInputs(base: source, models: sources)
        capacity = inputs.capacity
        storage = .allocate(capacity: capacity * 3)
        task = storage
        pos = storage + capacity
        neg = storage + 2 * capacity
        (base, models) = inputs.load(start: 0, count: 0)
    }

    /// Frees the storage.
    func deallocate() {
        storage.deallocate()
        inputs.deallocate()
    }

    /// Reads the tile of the base and of every model, and clears the sign counts.
    mutating func begin(start: Int, count: Int) {
        (base, models) = inputs.load(start: start, count: count)
        pos.initialize(repeating: 0, count: count)
        neg.initialize(repeating: 0, count: count)
    }

    /// Puts model `k`'s task vector over the tile into `task` and counts its signs.
    func loadTask(_ k: Int, count: Int) {
        let ft = models[k]
        for i in 0..<count {
            let x = ft[i] - base[i]
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
func forEachTile(count: Int, tile: Int, _ body: (_ offset: Int, _ length: Int) -> Void) {
    var offset = 0
    while offset < count {
        let length = min(tile, count - offset)
        body(offset, length)
        offset += length
    }
}

/// Agreement histograms kept one per vector lane, summed at the end.
///
/// Neighbouring elements mostly share m, so a single histogram would make every increment
/// wait for the one before it; a histogram per lane keeps them independent.
struct LaneHistograms {
    /// Lanes of the vector loops that record into it.
    static let lanes = 8
    /// Agreement counts of eight elements.
    typealias Counts = SIMD8<Int32>
    private let buckets: Int
    private let counts: UnsafeMutablePointer<Int>

    /// Histograms of `buckets` counts (n + 1), all zero.
    init(buckets: Int) {
        self.buckets = buckets
        counts = .allocate(capacity: Self.lanes * buckets)
        counts.initialize(repeating: 0, count: Self.lanes * buckets)
    }

    /// Frees the counts.
    func deallocate() { counts.deallocate() }

    /// Counts one element per lane, each at bucket `m[lane]` (0 ... n).
    @inline(__always)
    func record(_ m: Counts) {
        // Spelled out lane by lane: a loop here was left rolled, spilling m to the stack.
        counts[Int(m[0])] &+= 1
        counts[buckets + Int(m[1])] &+= 1
        counts[2 * buckets + Int(m[2])] &+= 1
        counts[3 * buckets + Int(m[3])] &+= 1
        counts[4 * buckets + Int(m[4])] &+= 1
        counts[5 * buckets + Int(m[5])] &+= 1
        counts[6 * buckets + Int(m[6])] &+= 1
        counts[7 * buckets + Int(m[7])] &+= 1
    }

    /// The counts as float32, exactly (counts below 2^23): the bits of 2^23 + count minus
    /// 2^23. The standard library's conversion goes lane by lane through memory.
    @inline(__always)
    static func float(_ counts: Counts) -> SIMD8<Float> {
        unsafeBitCast(counts | 0x4B00_0000, to: SIMD8<Float>.self) - 8_388_608
    }

    /// Adds the lanes' counts to `histogram` (`buckets` counts).
    func add(into histogram: UnsafeMutablePointer<Int>) {
        for lane in 0..<Self.lanes {
            for m in 0..<buckets { histogram[m] &+= counts[lane * buckets + m] }
        }
    }
}

/// Runs a vector kernel's `body` with tile inputs over `base` and `models` and lane
/// histograms of n + 1 buckets, then adds the histograms to `agreement` and frees both.
@inline(__always)
func withLaneTiles(base: TensorSource, models: [any TaskVectorSource], agreement: UnsafeMutablePointer<Int>,
                   _ body: (TileInputs, LaneHistograms) -> Void) {
    let inputs = TileInputs(base: base, models: models)
    let histogram = LaneHistograms(buckets: models.count + 1)
    defer {
        inputs.deallocate()
        histogram.add(into: agreement)
        histogram.deallocate()
    }
    body(inputs, histogram)
}

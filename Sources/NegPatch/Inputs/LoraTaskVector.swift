/// The task vector `scaling * (B @ A)` of one LoRA-adapted weight, computed for any range
/// of its elements, in float32, from the factors as stored.
///
/// For an element (row, column) of the weight (row-major), with `r` the rank:
/// `s = 0; s = s + L[row, j] * M[j, column]` for j = 0 ..< r in index order (each product
/// and each sum rounded to float32, no fused multiply-add), then `tau = scaling * s`, where
/// `L[row, j] * M[j, column]` is `B[row, j] * A[j, column]` for a plain weight (out, in) and
/// `A[j, row] * B[column, j]` for a weight stored transposed (`fan_in_fan_out`) or an
/// embedding (vocab, dim): the product of the same two numbers either way
/// (`formats/methods.md`).
///
/// A range is computed by column chunks: the chunk of `M` (r rows) is converted to float32
/// once and used by every row of the range, so the work per element is r multiply-adds and
/// memory is a few tens of kilobytes of stack, whatever the weight's size.
public struct LoraTaskVector: TaskVectorSource, @unchecked Sendable {
    /// Which factor gives the rows of the weight.
    public enum Layout: Sendable, Equatable {
        /// Weight (out, in): rows from B (out, r), columns from A (r, in).
        case bRows
        /// Weight (in, out) or (vocab, dim): rows from A (r, in), columns from B (out, r).
        case aRows

        /// The layout of an embedding or of a weight with `fanInFanOut`.
        init(embedding: Bool, fanInFanOut: Bool) {
            self = embedding || fanInFanOut ? .aRows : .bRows
        }
    }

    public let name: String
    public let shape: [Int]
    public let dtype: DType
    public var stored: TensorSource? { nil }
    let a: TensorSource
    let b: TensorSource
    let rank: Int
    let scaling: Float
    let layout: Layout
    let rows: Int
    let columns: Int
    let nonFinite: UnsafeMutablePointer<UInt8>?

    /// Floats of the M chunk converted per step (64 KB of stack with its transposing copy).
    static let chunkFloats = 8192

    init(name: String, shape: [Int], dtype: DType, a: TensorSource, b: TensorSource, rank: Int, scaling: Float,
         layout: Layout, nonFinite: UnsafeMutablePointer<UInt8>?) {
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.a = a
        self.b = b
        self.rank = rank
        self.scaling = scaling
        self.layout = layout
        rows = shape[0]
        columns = shape[1]
        self.nonFinite = nonFinite
    }

    public func load(_ start: Int, _ count: Int, base: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        out.initialize(repeating: 0, count: count)
        guard count > 0 else { return }
        let r = rank, end = start + count
        let firstRow = start / columns, lastRow = (end - 1) / columns
        let chunk = max(1, min(columns, Self.chunkFloats / r))
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * r * chunk + r) { scratch in
            let m = scratch.baseAddress!, gathered = m + r * chunk, l = gathered + r * chunk
            var c0 = 0
            while c0 < columns {
                let w = min(chunk, columns - c0)
                // Rows of the range that reach into columns c0 ..< c0 + w.
                let from = max(firstRow, (start - c0 + columns - w) / columns)
                let to = end - 1 - c0 < 0 ? -1 : min(lastRow, (end - 1 - c0) / columns)
                if from <= to {
                    loadColumns(c0, w, into: m, scratch: gathered)
                    for row in from...to {
                        let lo = max(start, row * columns + c0), hi = min(end, row * columns + c0 + w)
                        guard lo < hi else { continue }
                        loadRow(row, into: l)
                        let o = out + (lo - start)
                        let offset = lo - row * columns - c0
                        for j in 0..<r {
                            let lj = l[j]
                            let mj = m + j * w + offset
                            for x in 0..<(hi - lo) { o[x] = o[x] + lj * mj[x] }
                        }
                    }
                }
                c0 += w
            }
        }
        for i in 0..<count { out[i] = scaling * out[i] }
        if let nonFinite, !FiniteValues.allFinite(out, count: count) { nonFinite.pointee = 1 }
    }

    /// `M[j, c0 ..< c0 + w]` for every j, as a (r, w) row-major float32 block.
    @inline(__always)
    private func loadColumns(_ c0: Int, _ w: Int, into m: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        let r = rank
        switch layout {
        case .bRows:
            // M = A, (r, columns) row-major: one contiguous run per rank index.
            for j in 0..<r { a.load(j * columns + c0, w, into: m + j * w) }
        case .aRows:
            // M = B^T with B (columns, r) row-major: B's rows c0 ..< c0 + w, transposed.
            b.load(c0 * r, w * r, into: scratch)
            for x in 0..<w {
                for j in 0..<r { m[j * w + x] = scratch[x * r + j] }
            }
        }
    }

    /// `L[row, 0 ..< r]`.
    @inline(__always)
    private func loadRow(_ row: Int, into l: UnsafeMutablePointer<Float>) {
        switch layout {
        case .bRows:
            b.load(row * rank, rank, into: l)
        case .aRows:
            for j in 0..<rank { a.load(j * rows + row, 1, into: l + j) }
        }
    }
}

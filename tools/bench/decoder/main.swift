// Micro-benchmark of the bitmask decoder: a 64-bit word scan with trailing-zero counts
// versus a 256-entry table from a mask byte to its set-bit offsets. Both turn a block's
// mask and values into its dense float32 task vector; the figure is GB/s of dense output.
//
//   swift run -c release negpatch-bench-decoder [elements]
import Foundation
import NegPatch

let elements = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1])! : 1 << 24
let block = 1 << 20

func seconds(_ body: () -> Void) -> Double {
    var best = Double.infinity
    for _ in 0..<5 {
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
    return best
}

print("| density | word scan (GB/s dense) | byte table (GB/s dense) |")
print("| --- | --- | --- |")
for density in [0.01, 0.07, 0.15, 0.3, 0.6, 0.9] {
    var state: UInt64 = 0x1234_5678
    var dense = [Float](repeating: 0, count: elements)
    for i in 0..<elements {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        if Double(state >> 11) * 0x1p-53 < density { dense[i] = Float(i % 97) + 1 }
    }
    var mask = [UInt8](repeating: 0, count: Bitmask.byteCount(elements))
    var values = [Float](repeating: 0, count: elements + 8)
    var blockValueStart: [Int] = []
    var kept = 0
    dense.withUnsafeBufferPointer { d in
        mask.withUnsafeMutableBufferPointer { m in
            values.withUnsafeMutableBufferPointer { v in
                for start in stride(from: 0, to: elements, by: block) {
                    blockValueStart.append(kept)
                    kept += Bitmask.pack(d.baseAddress! + start, count: min(block, elements - start),
                                         mask: m.baseAddress! + start / 8, values: v.baseAddress! + kept)
                }
            }
        }
    }
    var out = [Float](repeating: 0, count: elements)
    var indices = [UInt32](repeating: 0, count: block + 8)
    func run(table: Bool) -> Double {
        let time = seconds {
            mask.withUnsafeBufferPointer { m in
                values.withUnsafeBufferPointer { v in
                    out.withUnsafeMutableBufferPointer { o in
                        indices.withUnsafeMutableBufferPointer { idx in
                            for (b, start) in stride(from: 0, to: elements, by: block).enumerated() {
                                let count = min(block, elements - start)
                                let found = table
                                    ? Bitmask.setBitIndicesByTable(m.baseAddress! + start / 8, count: count, into: idx.baseAddress!)
                                    : Bitmask.setBitIndices(m.baseAddress! + start / 8, count: count, into: idx.baseAddress!)
                                let dst = o.baseAddress! + start
                                dst.initialize(repeating: 0, count: count)
                                let src = v.baseAddress! + blockValueStart[b]
                                for j in 0..<found { dst[Int(idx[j])] = src[j] }
                            }
                        }
                    }
                }
            }
        }
        precondition(out == dense, "decoder output differs")
        return Double(elements * 4) / time / 1e9
    }
    let scan = run(table: false)
    let table = run(table: true)
    print("| \(density) | " + String(format: "%.2f", scan) + " | " + String(format: "%.2f", table) + " |")
}

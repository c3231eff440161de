#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Large buffers whose allocation may fail.
///
/// Swift's own allocations end the process when the system refuses memory (under
/// `ulimit -v 115000`, apply died with a fatal error). Buffers of a block or more come from
/// here instead: `malloc` with its result checked, so running out of address space is one
/// error naming what needed the memory. Free them with `Memory.free`.
enum Memory {
    /// `count` uninitialised elements of `T`, aligned to 64 bytes. Throws `.resources` if
    /// the system refuses.
    static func allocate<T>(_: T.Type, count: Int, for purpose: @autoclosure () -> String) throws -> UnsafeMutablePointer<T> {
        let (bytes, overflow) = max(count, 1).multipliedReportingOverflow(by: MemoryLayout<T>.stride)
        var raw: UnsafeMutableRawPointer?
        guard !overflow, posix_memalign(&raw, max(64, MemoryLayout<T>.alignment), bytes) == 0, let raw else {
            throw NegPatchError(.resources, file: nil,
                                "out of memory: cannot allocate \(ReportNumbers.bytes(overflow ? Int.max : bytes)) for \(purpose()) (is an address-space limit such as ulimit -v set?)")
        }
        return raw.bindMemory(to: T.self, capacity: max(count, 1))
    }

    /// Frees a buffer from `allocate`.
    static func free<T>(_ pointer: UnsafeMutablePointer<T>) {
        Glibc.free(pointer)
    }

    /// Checks that twice `bytes` can be allocated now, by allocating and freeing them (a
    /// mapping and an unmapping, no page touched): a cheap preflight before Swift arrays of
    /// about `bytes` in all are made, so that an address-space limit is an error here rather
    /// than a fatal error inside an array's allocation. Twice, because the other threads of
    /// a parallel loop allocate blocks of the same size meanwhile.
    static func reserve(_ bytes: Int, for purpose: @autoclosure () -> String) throws {
        let pointer = try allocate(UInt8.self, count: bytes.multipliedReportingOverflow(by: 2).overflow ? Int.max : 2 * bytes,
                                   for: purpose())
        free(pointer)
    }
}

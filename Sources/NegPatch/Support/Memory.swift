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
        guard !overflow, leavesHeadroom(bytes), posix_memalign(&raw, max(64, MemoryLayout<T>.alignment), bytes) == 0, let raw else {
            throw NegPatchError(.resources, file: nil,
                                "out of memory: cannot allocate \(ReportNumbers.bytes(overflow ? Int.max : bytes)) for \(purpose()) (is an address-space limit such as ulimit -v set?)")
        }
        return raw.bindMemory(to: T.self, capacity: max(count, 1))
    }

    /// Address space kept free under a limit (`ulimit -v`) for the runtime's own small
    /// allocations, which end the process when refused: a checked allocation that would
    /// leave less is refused instead, so the limit is met at a checked place. Measured:
    /// without it, `apply` under `ulimit -v 125000` met the limit inside a worker thread's
    /// small allocation (a crash); 24 MB covers the worker threads' needs and the error path.
    static let headroom = 24 << 20

    /// The address-space limit, or nil when there is none (read once).
    private static let addressSpaceLimit: Int? = {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return nil }
        return Int(clamping: limit.rlim_cur)
    }()

    /// Whether `bytes` more of address space leave `headroom` under the limit (always true
    /// without one). Reads the process's current size from /proc/self/statm.
    static func leavesHeadroom(_ bytes: Int) -> Bool {
        guard let limit = addressSpaceLimit else { return true }
        guard let used = currentAddressSpace() else { return true }
        let (total, overflow) = used.addingReportingOverflow(bytes)
        return !overflow && total <= limit - headroom
    }

    private static func currentAddressSpace() -> Int? {
        let fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let got = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, 63) }
        guard got > 0 else { return nil }
        var pages = 0
        for byte in buffer.prefix(got) {
            guard byte >= 0x30, byte <= 0x39 else { break }
            pages = pages &* 10 &+ Int(byte - 0x30)
        }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
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

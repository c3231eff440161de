#if canImport(Glibc)
import CLinux
#endif

/// Data-parallel loops over the machine's cores.
///
/// The loop runs on plain pthreads (`clinux_parallel_for`), the calling thread included. A
/// thread that cannot be started (under `ulimit -v`, or a thread limit) is left out and its
/// share runs on the threads that did start, serially at worst: libdispatch's
/// `concurrentPerform` instead waited forever in `_dispatch_temporary_resource_shortage`
/// under `ulimit -v 110000`.
///
/// The bodies may capture non-`Sendable` state (buffers, writers): each iteration must
/// touch only its own slice of it, which is how every caller in NegPatch uses them.
enum Parallel {
    /// Threads a loop uses: the CPUs this process may run on.
    static let threads = Int(clinux_available_cpus())

    /// Runs `body(i)` for every `i` in `0..<count`, concurrently, and returns the results in
    /// order. If any iteration throws, the first error in index order is rethrown after all
    /// iterations have finished.
    static func map<T>(_ count: Int, _ body: (Int) throws -> T) throws -> [T] {
        guard count > 0 else { return [] }
        if count == 1 { return [try body(0)] }
        let results = UnsafeMutableBufferPointer<Result<T, Error>?>.allocate(capacity: count)
        results.initialize(repeating: nil)
        defer {
            results.deinitialize()
            results.deallocate()
        }
        withoutActuallyEscaping(body) { escapable in
            var loop = Loop(run: { i in results[i] = Result { try escapable(i) } })
            withUnsafeMutablePointer(to: &loop) { pointer in
                _ = clinux_parallel_for(count, Int32(threads), { context, i in
                    context!.assumingMemoryBound(to: Loop.self).pointee.run(i)
                }, pointer)
            }
        }
        return try results.map { try $0!.get() }
    }

    /// Runs `body(i)` for every `i` in `0..<count`, concurrently.
    static func forEach(_ count: Int, _ body: (Int) throws -> Void) throws {
        _ = try map(count, body)
    }

    /// The body of one loop, reached from C through a pointer.
    private struct Loop {
        let run: (Int) -> Void
    }
}

/// A value passed across threads whose safety the caller guarantees.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

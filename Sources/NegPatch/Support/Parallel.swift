import Dispatch

/// Data-parallel loops over the machine's cores.
///
/// The bodies may capture non-`Sendable` state (buffers, writers): each iteration must
/// touch only its own slice of it, which is how every caller in NegPatch uses them.
enum Parallel {
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
            let shared = UncheckedSendable((body: escapable, results: results))
            DispatchQueue.concurrentPerform(iterations: count) { i in
                shared.value.results[i] = Result { try shared.value.body(i) }
            }
        }
        return try results.map { try $0!.get() }
    }

    /// Runs `body(i)` for every `i` in `0..<count`, concurrently.
    static func forEach(_ count: Int, _ body: (Int) throws -> Void) throws {
        _ = try map(count, body)
    }
}

/// A value passed across threads whose safety the caller guarantees.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

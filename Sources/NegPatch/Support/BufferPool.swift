#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Buffers of one fixed size, handed out to concurrent work items and taken back, so that
/// block after block runs in memory already faulted in instead of fresh pages. It never
/// holds more buffers than items ever ran at once.
final class BufferPool<Element: BitwiseCopyable>: @unchecked Sendable {
    /// Elements per buffer.
    let capacity: Int
    private var idle: [UnsafeMutablePointer<Element>] = []
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    /// A pool of buffers of `capacity` elements (uninitialised when first handed out).
    init(capacity: Int) {
        self.capacity = max(capacity, 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        for buffer in idle { buffer.deallocate() }
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with a buffer of `capacity` elements to itself; its contents are whatever
    /// the last user left.
    func withBuffer<R>(_ body: (UnsafeMutablePointer<Element>) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        let buffer = idle.popLast() ?? .allocate(capacity: capacity)
        pthread_mutex_unlock(mutex)
        defer {
            pthread_mutex_lock(mutex)
            idle.append(buffer)
            pthread_mutex_unlock(mutex)
        }
        return try body(buffer)
    }
}

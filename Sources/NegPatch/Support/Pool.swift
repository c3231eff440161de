#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Resources of one kind (buffers of a fixed size, compression contexts) handed out to
/// concurrent work items and taken back, so block after block reuses memory that is already
/// faulted in and initialised instead of making it afresh. It never holds more resources
/// than items ever ran at once, and frees them when it goes.
final class Pool<Resource>: @unchecked Sendable {
    private let make: () throws -> Resource
    private let destroy: (Resource) -> Void
    private var idle: [Resource] = []
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    /// A pool that creates resources with `make` when none is idle, and frees them with
    /// `destroy`.
    init(make: @escaping () throws -> Resource, destroy: @escaping (Resource) -> Void) {
        self.make = make
        self.destroy = destroy
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        for resource in idle { destroy(resource) }
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with a resource to itself: an idle one as the last user left it, or a new
    /// one. Rethrows what `make` or `body` throws.
    func withResource<R>(_ body: (Resource) throws -> R) throws -> R {
        pthread_mutex_lock(mutex)
        let reused = idle.popLast()
        pthread_mutex_unlock(mutex)
        let resource = try reused ?? make()
        defer {
            pthread_mutex_lock(mutex)
            idle.append(resource)
            pthread_mutex_unlock(mutex)
        }
        return try body(resource)
    }
}

extension Pool {
    /// A pool of buffers of `capacity` elements each (uninitialised when first handed out).
    /// A buffer the system cannot provide is an error (`Memory.allocate`), not a crash.
    static func buffers<Element: BitwiseCopyable>(of _: Element.Type, capacity: Int) -> Pool
    where Resource == UnsafeMutablePointer<Element> {
        Pool(make: { try Memory.allocate(Element.self, count: capacity, for: "a buffer of \(capacity) elements") },
             destroy: { Memory.free($0) })
    }
}

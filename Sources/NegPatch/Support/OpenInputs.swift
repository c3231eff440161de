#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The files this process is reading right now, by identity (device and inode), so that no
/// output can replace one of them, however its path is spelled.
///
/// Every input is opened through `MappedFile`, which registers the file for as long as it is
/// open; `AtomicOutput` refuses a destination that is one of them. This covers the files
/// behind a folder argument (the shards and the index of a sharded checkpoint), hard links,
/// symbolic links and `..` spellings alike, which no comparison of argument paths can.
enum OpenInputs {
    private struct Identity: Hashable {
        let device: UInt64
        let inode: UInt64
    }

    private final class Registry: @unchecked Sendable {
        var files: [Identity: (path: String, opened: Int)] = [:]
        let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        init() { pthread_mutex_init(mutex, nil) }

        func locked<R>(_ body: (Registry) -> R) -> R {
            pthread_mutex_lock(mutex)
            defer { pthread_mutex_unlock(mutex) }
            return body(self)
        }
    }

    private static let registry = Registry()

    private static func identity(_ info: stat) -> Identity {
        Identity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    /// Records that the file described by `info` (from `fstat` of its open descriptor) is
    /// being read under the name `path`. Balanced by `closed(_:)`.
    static func opened(_ info: stat, path: String) {
        let key = identity(info)
        registry.locked { r in
            if let entry = r.files[key] {
                r.files[key] = (entry.path, entry.opened + 1)
            } else {
                r.files[key] = (path, 1)
            }
        }
    }

    /// Records that one reader of the file described by `info` has closed it.
    static func closed(_ info: stat) {
        let key = identity(info)
        registry.locked { r in
            guard let entry = r.files[key] else { return }
            r.files[key] = entry.opened > 1 ? (entry.path, entry.opened - 1) : nil
        }
    }

    /// The name of the open input that is the file described by `info`, if it is one.
    static func input(matching info: stat) -> String? {
        let key = identity(info)
        return registry.locked { $0.files[key]?.path }
    }
}

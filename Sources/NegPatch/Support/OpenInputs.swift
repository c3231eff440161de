#if canImport(Glibc)
import CLinux
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The files this process is reading right now, by identity (device and inode), so that no
/// output can replace one of them, however its path is spelled; and whether any file it has
/// read changed while it was being read.
///
/// Every input is opened through `MappedFile`, which registers the file for as long as it is
/// open; `AtomicOutput` refuses a destination that is one of them. This covers the files
/// behind a folder argument (the shards and the index of a sharded checkpoint), hard links,
/// symbolic links and `..` spellings alike, which no comparison of argument paths can.
///
/// Each open also records the file's size and modification time and its mapping's SIGBUS
/// guard. A file that shrank under its mapping (a guarded fault), or whose size or time
/// differs from what `fstat` said when it was opened, has *changed while being read*: what
/// was read from it may be a mix of two files. `AtomicOutput.commit()` then refuses to put
/// any output in place, and the command line reports the change instead of whatever error
/// the mixed bytes caused.
public enum OpenInputs {
    private struct Identity: Hashable {
        let device: UInt64
        let inode: UInt64
    }

    /// What was recorded about one open descriptor.
    private struct Watch {
        let path: String
        let size: Int
        let modified: timespec
        let guardSlot: Int32
    }

    private final class Registry: @unchecked Sendable {
        var files: [Identity: (path: String, opened: Int)] = [:]
        var watches: [Int32: Watch] = [:]
        /// Changes found when a changed file was closed, oldest first.
        var changes: [InputChange] = []
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

    /// Records that the file described by `info` (from `fstat` of its open `descriptor`) is
    /// being read under the name `path`, through the mapping guarded by `guardSlot` (-1 for
    /// none). Balanced by `closed(_:descriptor:guardSlot:)`.
    static func opened(_ info: stat, path: String, descriptor: Int32, guardSlot: Int32) {
        let key = identity(info)
        let watch = Watch(path: path, size: Int(info.st_size), modified: info.st_mtim, guardSlot: guardSlot)
        registry.locked { r in
            if let entry = r.files[key] {
                r.files[key] = (entry.path, entry.opened + 1)
            } else {
                r.files[key] = (path, 1)
            }
            r.watches[descriptor] = watch
        }
    }

    /// Records that one reader of the file described by `info` is closing it (call before
    /// the descriptor is closed and the guard slot released); a change found now is kept.
    static func closed(_ info: stat, descriptor: Int32, guardSlot: Int32) {
        let key = identity(info)
        registry.locked { r in
            if let watch = r.watches.removeValue(forKey: descriptor), let change = check(watch, descriptor: descriptor) {
                r.changes.append(change)
            }
            guard let entry = r.files[key] else { return }
            r.files[key] = entry.opened > 1 ? (entry.path, entry.opened - 1) : nil
        }
    }

    /// The name of the open input that is the file described by `info`, if it is one.
    static func input(matching info: stat) -> String? {
        let key = identity(info)
        return registry.locked { $0.files[key]?.path }
    }

    /// Which changes `firstChange(_:)` looks for.
    public enum ChangeKind: Sendable {
        /// Faults only: some bytes were read as zeros because the file had shrunk.
        case faults
        /// What makes an output untrustworthy: any fault, and any change of a file still
        /// open (a closed file that changed afterwards was read whole before it changed).
        case beforeCommit
        /// Any fault or change of size or time, of files open now or already closed.
        case any
    }

    /// The first input that changed while this process read it, of the given kind: a
    /// guarded mapping faulted, or its size or modification time is not what `fstat` said
    /// when it was opened.
    public static func firstChange(_ kind: ChangeKind) -> InputChange? {
        registry.locked { r in
            if let change = r.changes.first(where: { kind == .any || $0.faulted }) { return change }
            for (descriptor, watch) in r.watches.sorted(by: { $0.key < $1.key }) {
                if let change = check(watch, descriptor: descriptor), kind != .faults || change.faulted { return change }
            }
            return nil
        }
    }

    private static func check(_ watch: Watch, descriptor: Int32) -> InputChange? {
        let faulted = watch.guardSlot >= 0 && clinux_guard_faults(watch.guardSlot) > 0
        var now = stat()
        let current = fstat(descriptor, &now) == 0 ? Int(now.st_size) : watch.size
        let retimed = fstat(descriptor, &now) == 0
            && (now.st_mtim.tv_sec != watch.modified.tv_sec || now.st_mtim.tv_nsec != watch.modified.tv_nsec)
        guard faulted || current != watch.size || retimed else { return nil }
        return InputChange(path: watch.path, openedSize: watch.size, currentSize: current, faulted: faulted)
    }
}

/// An input file that changed while it was being read.
public struct InputChange: Sendable, Equatable {
    /// The file, as it was opened.
    public let path: String
    /// Its size in bytes when it was opened.
    public let openedSize: Int
    /// Its size in bytes when the change was found.
    public let currentSize: Int
    /// Whether a read through its mapping found a page past the file's end (and read zeros).
    public let faulted: Bool

    /// The error that reports the change: `FILE: changed while being read (N bytes when
    /// opened, M now)`.
    public var error: NegPatchError {
        NegPatchError(.changed, file: path, "changed while being read (\(openedSize) bytes when opened, \(currentSize) now)")
    }
}

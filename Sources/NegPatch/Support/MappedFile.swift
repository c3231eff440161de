#if canImport(Glibc)
import CLinux
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A regular file mapped read-only into memory for as long as this object lives.
///
/// Mapping lets checkpoints of many gigabytes be read without copying them into anonymous
/// memory: the pages belong to the page cache and are shared by every reader. The mapping
/// is private and read-only, so nothing done through it can change the file.
///
/// A file that shrinks while it is mapped would raise SIGBUS on the next access past its new
/// end. The mapping is therefore guarded (`clinux_guard_register`): such an access reads
/// zeros instead, the fault is recorded, and `OpenInputs` reports the file as changed while
/// being read, so no output is committed and the command ends with one error line.
public final class MappedFile: @unchecked Sendable {
    /// The path the file was opened with.
    public let path: String
    /// The file's size in bytes when it was mapped.
    public let size: Int
    /// The open descriptor, kept for positioned reads (`pread`) alongside the mapping.
    public let descriptor: Int32
    private let start: UnsafeRawPointer?
    /// The file's identity when it was opened, registered with `OpenInputs` while mapped.
    private let identity: stat
    /// The SIGBUS guard slot of the mapping (-1 for an empty file).
    private let guardSlot: Int32

    /// Whether the file is registered with `OpenInputs` as an input of the command.
    private let isInput: Bool

    /// Maps `path`. Throws `.io` if it cannot be opened, is not a regular file, or cannot
    /// be mapped. `isInput: false` is for reading back a file this process writes itself
    /// (its temporary output), which is then neither protected from being overwritten nor
    /// watched for changes.
    public init(path: String, isInput: Bool = true) throws {
        self.path = path
        self.isInput = isInput
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw NegPatchError(.io, file: path, "cannot open: \(systemErrorText(errno))")
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            close(fd)
            throw NegPatchError(.io, file: path, "cannot stat: \(systemErrorText(errno))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw NegPatchError(.io, file: path, "not a regular file")
        }
        descriptor = fd
        size = Int(info.st_size)
        identity = info
        if size == 0 {
            start = nil
            guardSlot = -1
        } else {
            // Under an address-space limit, a mapping that would leave the runtime too little
            // room is refused here, as a clean error (`Memory.headroom`).
            let mapped = Memory.leavesHeadroom(size) ? mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0) : nil
            if mapped == nil { errno = ENOMEM }
            guard let mapped, mapped != MAP_FAILED else {
                close(fd)
                let code = errno
                throw NegPatchError(code == ENOMEM ? .resources : .io, file: path, "cannot map \(size) bytes: \(systemErrorText(code))")
            }
            guardSlot = clinux_guard_register(mapped, size)
            guard guardSlot >= 0 else {
                munmap(mapped, size)
                close(fd)
                throw NegPatchError(.io, file: path, "cannot guard the mapping: more than \(CLINUX_GUARD_SLOTS) files mapped at once")
            }
            start = UnsafeRawPointer(mapped)
        }
        if isInput { OpenInputs.opened(info, path: path, descriptor: fd, guardSlot: guardSlot) }
    }

    deinit {
        if isInput { OpenInputs.closed(identity, descriptor: descriptor, guardSlot: guardSlot) }
        if let start {
            clinux_guard_unregister(guardSlot)
            munmap(UnsafeMutableRawPointer(mutating: start), size)
        }
        close(descriptor)
    }

    /// Reads `count` bytes at `offset` into `destination` with `pread`, which copies from the
    /// page cache without mapping pages into this process. Returns false on a short read.
    public func read(_ offset: Int, _ count: Int, into destination: UnsafeMutableRawPointer) -> Bool {
        var done = 0
        while done < count {
            let got = pread(descriptor, destination + done, count - done, off_t(offset + done))
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else { return false }
            done += got
        }
        return true
    }

    /// The whole file. Valid while this object is alive.
    public var bytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: start, count: size)
    }

    /// `count` bytes from `offset`; the caller has checked the range lies within the file.
    public func slice(_ offset: Int, _ count: Int) -> UnsafeRawBufferPointer {
        precondition(offset >= 0 && count >= 0 && offset <= size - count, "slice outside mapped file")
        return UnsafeRawBufferPointer(start: start.map { $0 + offset }, count: count)
    }
}

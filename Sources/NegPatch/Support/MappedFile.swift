#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A regular file mapped read-only into memory for as long as this object lives.
///
/// Mapping lets checkpoints of many gigabytes be read without copying them into anonymous
/// memory: the pages belong to the page cache and are shared by every reader. The mapping
/// is private and read-only, so nothing done through it can change the file.
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

    /// Maps `path`. Throws `.io` if it cannot be opened, is not a regular file, or cannot
    /// be mapped.
    public init(path: String) throws {
        self.path = path
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
        } else {
            let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
            guard let mapped, mapped != MAP_FAILED else {
                close(fd)
                throw NegPatchError(.io, file: path, "cannot map \(size) bytes: \(systemErrorText(errno))")
            }
            start = UnsafeRawPointer(mapped)
        }
        OpenInputs.opened(info, path: path)
    }

    deinit {
        OpenInputs.closed(identity)
        if let start {
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

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
    private let start: UnsafeRawPointer?

    /// Maps `path`. Throws `.io` if it cannot be opened, is not a regular file, or cannot
    /// be mapped.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw NegPatchError(.io, file: path, "cannot open: \(systemErrorText(errno))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw NegPatchError(.io, file: path, "cannot stat: \(systemErrorText(errno))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw NegPatchError(.io, file: path, "not a regular file")
        }
        size = Int(info.st_size)
        if size == 0 {
            start = nil
            return
        }
        let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let mapped, mapped != MAP_FAILED else {
            throw NegPatchError(.io, file: path, "cannot map \(size) bytes: \(systemErrorText(errno))")
        }
        start = UnsafeRawPointer(mapped)
    }

    deinit {
        if let start {
            munmap(UnsafeMutableRawPointer(mutating: start), size)
        }
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

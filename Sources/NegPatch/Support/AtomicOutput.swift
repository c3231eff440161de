#if canImport(Glibc)
import CLinux
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The one way NegPatch writes a final output file: into a temporary file in the same
/// folder, flushed with `fsync`, then renamed over the destination.
///
/// Until `commit()` returns, the destination is exactly as it was; a crash, a `SIGKILL` or
/// an error leaves at most a hidden temporary file (`.NAME.tmp-XXXXXX`) beside it, which
/// `discard()` or deinitialisation removes when the process is still alive to do so, and
/// the command line's signal thread removes on SIGINT, SIGTERM and SIGHUP.
/// `commit()` refuses to put the file in place when an input changed while it was being
/// read (`OpenInputs.firstChange(.beforeCommit)`).
///
/// A destination that is a symbolic link is written where the link points: the link is
/// resolved (through every hop) and the temporary file is made beside its target, which the
/// rename replaces, so the link itself stays. A destination that is a file this process is
/// reading (`OpenInputs`: a shard or index behind a folder argument, under any spelling) is
/// refused before anything is created.
public final class AtomicOutput {
    /// The path that `commit()` will replace, as the caller named it.
    public let destination: String
    /// The file that `commit()` actually replaces: `destination` with symbolic links followed.
    public let resolvedDestination: String
    /// The temporary file being written. A library that writes files by path (HDF5) may
    /// create and fill the file at this path itself; once it has closed the file, `commit()`
    /// flushes it through this object's descriptor (the same file) and renames it.
    public let temporaryPath: String
    private var fd: Int32
    private var committed = false
    /// Bytes written so far (the file's current size when only `write` is used).
    public private(set) var bytesWritten: Int = 0

    /// Creates the temporary file beside `destination`, with permissions `mode` (0644 by
    /// default; a private key uses 0600, which the file has from its creation on). Throws
    /// `.io` if the folder is not writable, or if `destination` exists and is a directory,
    /// a device, a pipe or a socket (only regular files are replaced).
    public init(destination: String, mode: mode_t = 0o644) throws {
        self.destination = destination
        var info = stat()
        if stat(destination, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR {
            throw NegPatchError(.io, file: destination, "is a directory, expected a file path")
        }
        // Renaming over a device, pipe or socket (`-o /dev/null`) would replace that node
        // with a regular file; outputs only ever replace regular files.
        if stat(destination, &info) == 0, (info.st_mode & S_IFMT) != S_IFREG {
            throw NegPatchError(.io, file: destination, "exists and is not a regular file (a device or pipe); outputs replace only regular files")
        }
        if stat(destination, &info) == 0, let input = OpenInputs.input(matching: info) {
            throw NegPatchError(.invalidArgument, file: destination, "output would overwrite the input \(input)")
        }
        resolvedDestination = try resolveLinks(destination)
        let (folder, name) = splitPath(resolvedDestination)
        var template = Array("\(folder)/.\(name).tmp-XXXXXX".utf8CString)
        // Created and registered as one step, so a SIGINT, SIGTERM or SIGHUP at any moment
        // finds it and removes it (`clinux_signals_start`).
        let created = template.withUnsafeMutableBufferPointer { clinux_temp_file($0.baseAddress!) }
        guard created >= 0 else {
            throw NegPatchError(.io, file: destination, "cannot create a temporary file in '\(folder)': \(systemErrorText(errno))")
        }
        fd = created
        temporaryPath = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // mkstemp creates the file 0600; widen it only when asked to.
        if mode != 0o600 { _ = fchmod(fd, mode) }
    }

    deinit {
        if !committed { discard() }
    }

    /// Appends `bytes`. Throws `.io` on a write error (for example a full disk). Every
    /// 32 MiB appended, the disk write of what came before is started (`startWriteback()`).
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        try writeAll(bytes, at: nil)
        bytesWritten += bytes.count
        if bytesWritten - writebackStarted >= Self.writebackStride {
            startWriteback()
            writebackStarted = bytesWritten
        }
    }

    /// Appended bytes between two automatic `startWriteback()` calls.
    private static let writebackStride = 32 << 20
    private var writebackStarted = 0

    /// Appends the bytes of `array`.
    public func write(_ array: [UInt8]) throws {
        try array.withUnsafeBytes { try write($0) }
    }

    /// Writes `bytes` at `offset` without moving the append position. Positional writes may
    /// come from several threads at once; their writer calls `startWriteback()` itself.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        try writeAll(bytes, at: offset)
    }

    /// Sets the temporary file's size (used to pre-size outputs written with offsets).
    public func truncate(to size: Int) throws {
        guard ftruncate(fd, off_t(size)) == 0 else {
            throw NegPatchError(.io, file: destination, "cannot size output to \(size) bytes: \(systemErrorText(errno))")
        }
    }

    /// Asks the system to start writing what has been written so far to disk, without
    /// waiting: a long output then overlaps its disk writes with the work still to come, and
    /// the flush in `commit()` has less left to wait for. A hint only; it never fails.
    public func startWriteback() {
        #if canImport(Glibc)
        _ = clinux_start_writeback(fd)
        #endif
    }

    /// The open descriptor of the temporary file, for `copy_file_range` and `mmap`.
    public var descriptor: Int32 { fd }

    private func writeAll(_ bytes: UnsafeRawBufferPointer, at offset: Int?) throws {
        guard var cursor = bytes.baseAddress else { return }
        var remaining = bytes.count
        var position = offset ?? 0
        while remaining > 0 {
            let chunk = min(remaining, 1 << 30)
            let written = offset == nil ? Glibc.write(fd, cursor, chunk) : pwrite(fd, cursor, chunk, off_t(position))
            if written < 0 {
                if errno == EINTR { continue }
                throw NegPatchError(.io, file: destination, "write failed: \(systemErrorText(errno))")
            }
            cursor += written
            remaining -= written
            position += written
        }
    }

    /// Flushes the temporary file to disk and renames it over the destination, then
    /// flushes the folder so the rename itself is durable.
    public func commit() throws {
        guard !committed else { return }
        guard fsync(fd) == 0 else {
            throw NegPatchError(.io, file: destination, "cannot flush output: \(systemErrorText(errno))")
        }
        guard close(fd) == 0 else {
            fd = -1
            throw NegPatchError(.io, file: destination, "cannot close output: \(systemErrorText(errno))")
        }
        fd = -1
        // What was read from an input that changed meanwhile may be a mix of two files.
        if let change = OpenInputs.firstChange(.beforeCommit) { throw change.error }
        guard clinux_temp_commit(temporaryPath, resolvedDestination) == 0 else {
            throw NegPatchError(.io, file: destination, "cannot rename the finished output into place: \(systemErrorText(errno))")
        }
        committed = true
        syncFolder(splitPath(resolvedDestination).folder)
    }

    /// Removes the temporary file; the destination is untouched.
    public func discard() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        if !committed {
            unlink(temporaryPath)
            clinux_temp_forget(temporaryPath)
        }
    }
}

/// A folder output written atomically: files go into a hidden temporary folder beside
/// the destination, which is renamed into place by `commit()`.
///
/// The destination must not exist or must be an empty folder; NegPatch never deletes a
/// folder that holds files.
public final class AtomicFolder {
    /// The folder `commit()` creates, as the caller named it.
    public let destination: String
    /// The folder `commit()` actually creates: `destination` with symbolic links followed,
    /// so that a link to an empty folder stays a link.
    public let resolvedDestination: String
    /// The temporary folder being filled.
    public let temporaryPath: String
    private var committed = false

    /// Creates the temporary folder. Throws `.io` if the destination is a non-empty folder
    /// or a file, or the parent is not writable.
    public init(destination: String) throws {
        self.destination = destination
        resolvedDestination = try resolveLinks(destination)
        var info = stat()
        if stat(destination, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFDIR else {
                throw NegPatchError(.io, file: destination, "exists and is not a folder")
            }
            guard isEmptyFolder(destination) else {
                throw NegPatchError(.io, file: destination, "folder exists and is not empty; remove it or choose another output")
            }
        }
        let (parent, name) = splitPath(resolvedDestination)
        var template = Array("\(parent)/.\(name).tmp-XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { clinux_temp_folder($0.baseAddress!) }
        guard created == 0 else {
            throw NegPatchError(.io, file: destination, "cannot create a temporary folder in '\(parent)': \(systemErrorText(errno))")
        }
        temporaryPath = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        _ = chmod(temporaryPath, 0o755)
    }

    deinit {
        if !committed { discard() }
    }

    /// The path inside the temporary folder for a file called `name`.
    public func path(for name: String) -> String {
        "\(temporaryPath)/\(name)"
    }

    /// Renames the filled temporary folder into place (replacing an empty destination).
    /// Files inside must already be flushed (`AtomicOutput.commit` does that).
    public func commit() throws {
        guard !committed else { return }
        syncFolder(temporaryPath)
        var info = stat()
        if stat(destination, &info) == 0 {
            // rename(2) replaces an empty directory atomically; a non-empty one fails.
            guard isEmptyFolder(destination) else {
                throw NegPatchError(.io, file: destination, "folder was filled by someone else while writing")
            }
        }
        if let change = OpenInputs.firstChange(.beforeCommit) { throw change.error }
        guard clinux_temp_commit(temporaryPath, resolvedDestination) == 0 else {
            throw NegPatchError(.io, file: destination, "cannot rename the finished folder into place: \(systemErrorText(errno))")
        }
        committed = true
        syncFolder(splitPath(resolvedDestination).folder)
    }

    /// Removes the temporary folder and everything in it (folders inside it too, as a
    /// sweep of folder checkpoints makes; links are removed, never followed).
    public func discard() {
        guard !committed else { return }
        removeTree(temporaryPath)
        clinux_temp_forget(temporaryPath)
    }
}

/// Splits a path into its folder (`.` when there is none) and last component.
func splitPath(_ path: String) -> (folder: String, name: String) {
    var trimmed = path
    while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed.removeLast() }
    guard let slash = trimmed.lastIndex(of: "/") else { return (".", trimmed) }
    let folder = String(trimmed[..<slash])
    return (folder.isEmpty ? "/" : folder, String(trimmed[trimmed.index(after: slash)...]))
}

/// `path` with the symbolic links of its last component followed, hop by hop, to the file
/// they name (which need not exist yet). The folders on the way are left to the kernel, which
/// follows them in `rename` as in `open`. Throws `.io` for a loop of links.
func resolveLinks(_ path: String) throws -> String {
    var current = path
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    for _ in 0..<40 {
        var info = stat()
        guard lstat(current, &info) == 0, (info.st_mode & S_IFMT) == S_IFLNK else { return current }
        let length = readlink(current, &buffer, buffer.count - 1)
        guard length > 0 else { return current }
        let target = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        current = target.hasPrefix("/") ? target : "\(splitPath(current).folder)/\(target)"
    }
    throw NegPatchError(.io, file: path, "too many levels of symbolic links")
}

/// The last component of a path, as recorded in patch metadata.
public func lastPathComponent(_ path: String) -> String {
    splitPath(path).name
}

/// Removes `path` and, if it is a folder (not a link to one), everything below it.
private func removeTree(_ path: String) {
    var info = stat()
    guard lstat(path, &info) == 0 else { return }
    guard (info.st_mode & S_IFMT) == S_IFDIR else {
        unlink(path)
        return
    }
    if let dir = opendir(path) {
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        closedir(dir)
        for name in names { removeTree("\(path)/\(name)") }
    }
    rmdir(path)
}

private func isEmptyFolder(_ path: String) -> Bool {
    guard let dir = opendir(path) else { return false }
    defer { closedir(dir) }
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
        }
        if name != "." && name != ".." { return false }
    }
    return true
}

private func syncFolder(_ path: String) {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { return }
    _ = fsync(fd)
    close(fd)
}

/// Whether two paths name the same existing file (same device and inode).
public func sameFile(_ a: String, _ b: String) -> Bool {
    var sa = stat(), sb = stat()
    guard stat(a, &sa) == 0, stat(b, &sb) == 0 else { return false }
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
}

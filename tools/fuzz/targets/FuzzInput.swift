// Shared by every fuzz target: hands the fuzzer's bytes to readers that take a path.
//
// The readers map files by path, as they do in production; rather than distort the library
// with an in-memory entry point, each input is written into one unlinked file in /dev/shm
// (memory-backed) and opened as /proc/self/fd/N, so no disk I/O happens per execution.

#if canImport(Glibc)
import Glibc
#endif

enum FuzzInput {
    nonisolated(unsafe) private static var descriptor: Int32 = -1

    /// Replaces the in-memory file's contents with `bytes` and returns a path that opens it.
    static func path(holding bytes: UnsafeRawBufferPointer) -> String {
        if descriptor < 0 {
            // /dev/shm where there is one (memory-backed), else the temporary folder.
            for folder in ["/dev/shm", "/tmp"] where descriptor < 0 {
                var template = Array("\(folder)/negpatch-fuzz-XXXXXX".utf8CString)
                descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
                if descriptor >= 0 { template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) } }
            }
            precondition(descriptor >= 0, "cannot create the fuzz input file")
        }
        precondition(ftruncate(descriptor, 0) == 0)
        var done = 0
        while done < bytes.count {
            let wrote = pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(done))
            precondition(wrote > 0, "pwrite to memfd failed")
            done += wrote
        }
        return "/proc/self/fd/\(descriptor)"
    }
}

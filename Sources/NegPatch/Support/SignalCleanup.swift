#if canImport(Glibc)
import CLinux
#endif

/// Removal of temporary outputs when the process is asked to stop.
///
/// A SIGINT (Ctrl-C), SIGTERM or SIGHUP used to end the process with a full-size hidden
/// `.NAME.tmp-XXXXXX` beside each destination. Once `start()` has run, every temporary file
/// and folder of `AtomicOutput` and `AtomicFolder` is registered from its creation until its
/// rename into place, and one thread waits for these signals (`sigwait`): it removes what is
/// registered, then ends the process by the same signal, so the parent sees the status the
/// signal always gave. A `SIGKILL` cannot be caught and may still leave one behind.
public enum SignalCleanup {
    /// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and starts the thread that
    /// handles them. Call it first in `main`, before any other thread exists, so that every
    /// thread inherits the blocked mask and the signals reach only the handling thread.
    public static func start() {
        #if canImport(Glibc)
        clinux_signals_start()
        #endif
    }
}

#ifndef NEGPATCH_CLINUX_H
#define NEGPATCH_CLINUX_H

/* Linux calls that Glibc's Swift module leaves out because they need _GNU_SOURCE, and the
   few pieces of process plumbing that must be written in C: a SIGBUS guard for mapped
   input files, a signal thread that removes temporary outputs, and a parallel loop on
   pthreads that survives a failed thread start. */
#ifdef __linux__
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <stddef.h>

/* Starts writing back the dirty pages of a file without waiting for them. */
static inline int clinux_start_writeback(int fd) {
    return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

/* ---- SIGBUS guard for mapped input files ----
   A file that shrinks while it is mapped makes every access past its new end raise SIGBUS.
   A registered mapping range is guarded: such a fault maps anonymous zero pages over the
   rest of the range (MAP_FIXED), counts the fault and returns, so the reader sees zeros
   (which its checksums then reject) instead of dying. A SIGBUS anywhere else restores the
   previous handler (the Swift runtime's) and returns, so it crashes exactly as before. */

/* Guards `length` bytes mapped at `start`. Returns a slot number, or -1 when every slot is
   taken (CLINUX_GUARD_SLOTS mappings at once) or the handler cannot be installed. */
int clinux_guard_register(const void *start, size_t length);
/* Stops guarding a slot (before its mapping is unmapped). */
void clinux_guard_unregister(int slot);
/* How many faults the guard absorbed for a slot since it was registered. */
long clinux_guard_faults(int slot);

#define CLINUX_GUARD_SLOTS 8192

/* ---- Temporary outputs removed on SIGINT, SIGTERM and SIGHUP ----
   clinux_signals_start() blocks the three signals in the calling thread (call it first in
   main, before any other thread exists, so every thread inherits the mask) and starts one
   thread that waits for them with sigwait(). When one arrives, that thread removes every
   registered temporary path (files first, then folders with the files in them), restores
   the signal's default action and raises it again, so the process ends by that signal. */
void clinux_signals_start(void);

/* mkstemp(template) and the registration of the file it creates, as one step under the
   registry's lock (a signal between the two could otherwise leave the file). Returns the
   descriptor or -1 with errno set. */
int clinux_temp_file(char *template_path);
/* mkdtemp(template) and its registration, as one step. Returns 0 or -1 with errno set. */
int clinux_temp_folder(char *template_path);
/* rename(temporary, destination) and, when it succeeds, the end of the registration, as
   one step. Returns rename's result (errno set on failure). */
int clinux_temp_commit(const char *temporary, const char *destination);
/* Ends the registration of a temporary path (after the caller removed it). */
void clinux_temp_forget(const char *temporary);

/* ---- A parallel loop on pthreads ----
   Calls body(context, i) for every i in 0..<count, from up to `threads` threads (the
   calling thread included), each taking the next index from a shared counter. A thread
   that cannot be started (a memory limit, a thread limit) is simply not used: at worst the
   calling thread runs every iteration. Returns the number of threads that ran. */
typedef void (*clinux_loop_body)(void *context, long index);
int clinux_parallel_for(long count, int threads, clinux_loop_body body, void *context);
/* The number of CPUs this process may run on (at least 1). */
int clinux_available_cpus(void);
#endif

#endif

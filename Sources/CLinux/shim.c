#include "CLinux.h"

#ifdef __linux__
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- SIGBUS guard ---- */

struct guard_slot {
    _Atomic uintptr_t start; /* 0 when the slot is free */
    _Atomic size_t length;
    _Atomic long faults;
};

static struct guard_slot guard_slots[CLINUX_GUARD_SLOTS];
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction guard_previous;
static int guard_installed = 0;
static uintptr_t guard_page_size = 4096;

static void guard_on_sigbus(int sig, siginfo_t *info, void *context) {
    (void)sig;
    (void)context;
    int saved = errno;
    uintptr_t address = (uintptr_t)info->si_addr;
    for (int i = 0; i < CLINUX_GUARD_SLOTS; i++) {
        uintptr_t start = atomic_load(&guard_slots[i].start);
        if (start == 0) continue;
        size_t length = atomic_load(&guard_slots[i].length);
        if (address < start || address - start >= length) continue;
        /* Every page from the faulting one to the end of the mapping lies past the file's
           new end: replace them all with zeros at once, so a shrunken file costs one fault,
           not one per page. */
        uintptr_t page = address & ~(guard_page_size - 1);
        uintptr_t end = (start + length + guard_page_size - 1) & ~(guard_page_size - 1);
        void *mapped = mmap((void *)page, end - page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (mapped == MAP_FAILED) break;
        atomic_fetch_add(&guard_slots[i].faults, 1);
        errno = saved;
        return;
    }
    /* Not a guarded mapping: put back the handler that was there before and return, so the
       faulting instruction runs again and crashes the way it always did. */
    sigaction(SIGBUS, &guard_previous, NULL);
    errno = saved;
}

static int guard_install_locked(void) {
    if (guard_installed) return 0;
    long size = sysconf(_SC_PAGESIZE);
    if (size > 0) guard_page_size = (uintptr_t)size;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = guard_on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGBUS, &action, &guard_previous) != 0) return -1;
    guard_installed = 1;
    return 0;
}

int clinux_guard_register(const void *start, size_t length) {
    if (start == NULL || length == 0) return -1;
    pthread_mutex_lock(&guard_lock);
    int slot = -1;
    if (guard_install_locked() == 0) {
        for (int i = 0; i < CLINUX_GUARD_SLOTS; i++) {
            if (atomic_load(&guard_slots[i].start) == 0) {
                atomic_store(&guard_slots[i].faults, 0);
                atomic_store(&guard_slots[i].length, length);
                atomic_store(&guard_slots[i].start, (uintptr_t)start);
                slot = i;
                break;
            }
        }
    }
    pthread_mutex_unlock(&guard_lock);
    return slot;
}

void clinux_guard_unregister(int slot) {
    if (slot < 0 || slot >= CLINUX_GUARD_SLOTS) return;
    pthread_mutex_lock(&guard_lock);
    atomic_store(&guard_slots[slot].start, 0);
    pthread_mutex_unlock(&guard_lock);
}

long clinux_guard_faults(int slot) {
    if (slot < 0 || slot >= CLINUX_GUARD_SLOTS) return 0;
    return atomic_load(&guard_slots[slot].faults);
}

/* ---- Temporary outputs and the signal thread ---- */

struct temp_entry {
    char *path;
    int folder;
};

static pthread_mutex_t temp_lock = PTHREAD_MUTEX_INITIALIZER;
static struct temp_entry *temp_entries = NULL;
static size_t temp_count = 0, temp_capacity = 0;

/* Called with temp_lock held. Returns 0, or -1 when out of memory. */
static int temp_add_locked(const char *path, int folder) {
    if (temp_count == temp_capacity) {
        size_t capacity = temp_capacity ? temp_capacity * 2 : 16;
        struct temp_entry *grown = realloc(temp_entries, capacity * sizeof *grown);
        if (grown == NULL) return -1;
        temp_entries = grown;
        temp_capacity = capacity;
    }
    char *copy = strdup(path);
    if (copy == NULL) return -1;
    temp_entries[temp_count].path = copy;
    temp_entries[temp_count].folder = folder;
    temp_count++;
    return 0;
}

static void temp_remove_locked(const char *path) {
    for (size_t i = temp_count; i-- > 0;) {
        if (strcmp(temp_entries[i].path, path) == 0) {
            free(temp_entries[i].path);
            memmove(&temp_entries[i], &temp_entries[i + 1], (temp_count - i - 1) * sizeof *temp_entries);
            temp_count--;
            return;
        }
    }
}

int clinux_temp_file(char *template_path) {
    pthread_mutex_lock(&temp_lock);
    int fd = mkstemp(template_path);
    if (fd >= 0 && temp_add_locked(template_path, 0) != 0) {
        close(fd);
        unlink(template_path);
        fd = -1;
        errno = ENOMEM;
    }
    pthread_mutex_unlock(&temp_lock);
    return fd;
}

int clinux_temp_folder(char *template_path) {
    pthread_mutex_lock(&temp_lock);
    int result = mkdtemp(template_path) == NULL ? -1 : 0;
    if (result == 0 && temp_add_locked(template_path, 1) != 0) {
        rmdir(template_path);
        result = -1;
        errno = ENOMEM;
    }
    pthread_mutex_unlock(&temp_lock);
    return result;
}

int clinux_temp_commit(const char *temporary, const char *destination) {
    pthread_mutex_lock(&temp_lock);
    int result = rename(temporary, destination);
    int saved = errno;
    if (result == 0) temp_remove_locked(temporary);
    pthread_mutex_unlock(&temp_lock);
    errno = saved;
    return result;
}

void clinux_temp_forget(const char *temporary) {
    pthread_mutex_lock(&temp_lock);
    temp_remove_locked(temporary);
    pthread_mutex_unlock(&temp_lock);
}

/* Removes everything inside the folder open as `dfd` (folders inside it too, as a sweep of
   folder checkpoints makes; links are removed, never followed), then closes `dfd`. */
static void remove_contents(int dfd, int depth) {
    DIR *dir = fdopendir(dfd);
    if (dir == NULL) {
        close(dfd);
        return;
    }
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
        if (unlinkat(dfd, entry->d_name, 0) == 0) continue;
        if (depth < 16) {
            int child = openat(dfd, entry->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (child >= 0) remove_contents(child, depth + 1);
        }
        unlinkat(dfd, entry->d_name, AT_REMOVEDIR);
    }
    closedir(dir);
}

/* Removes a temporary folder: what is in it, then the folder. */
static void remove_folder(const char *path) {
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd >= 0) remove_contents(dfd, 0);
    rmdir(path);
}

static sigset_t cleanup_signals;

static void *signal_thread(void *unused) {
    (void)unused;
    int sig = 0;
    while (sigwait(&cleanup_signals, &sig) != 0) {}
    /* The lock is never released: no thread may create or commit a temporary path once the
       process is ending. Files first (they may lie inside a registered folder), newest first. */
    pthread_mutex_lock(&temp_lock);
    for (size_t i = temp_count; i-- > 0;) {
        if (!temp_entries[i].folder) unlink(temp_entries[i].path);
    }
    for (size_t i = temp_count; i-- > 0;) {
        if (temp_entries[i].folder) remove_folder(temp_entries[i].path);
    }
    signal(sig, SIG_DFL);
    sigset_t only;
    sigemptyset(&only);
    sigaddset(&only, sig);
    pthread_sigmask(SIG_UNBLOCK, &only, NULL);
    raise(sig);
    _exit(128 + sig);
    return NULL;
}

void clinux_signals_start(void) {
    sigemptyset(&cleanup_signals);
    sigaddset(&cleanup_signals, SIGINT);
    sigaddset(&cleanup_signals, SIGTERM);
    sigaddset(&cleanup_signals, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &cleanup_signals, NULL) != 0) return;
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, 64 * 1024);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int started = pthread_create(&thread, &attributes, signal_thread, NULL);
    pthread_attr_destroy(&attributes);
    if (started != 0) {
        /* No thread to clean up: leave the signals as they were (a kill then may leave a
           temporary file, as a SIGKILL always may). */
        pthread_sigmask(SIG_UNBLOCK, &cleanup_signals, NULL);
    }
}

/* ---- Parallel loop ---- */

struct loop_state {
    _Atomic long next;
    long count;
    clinux_loop_body body;
    void *context;
};

static void loop_run(struct loop_state *state) {
    for (;;) {
        long i = atomic_fetch_add(&state->next, 1);
        if (i >= state->count) return;
        state->body(state->context, i);
    }
}

static void *loop_worker(void *argument) {
    loop_run((struct loop_state *)argument);
    return NULL;
}

int clinux_parallel_for(long count, int threads, clinux_loop_body body, void *context) {
    if (count <= 0) return 0;
    struct loop_state state;
    atomic_init(&state.next, 0);
    state.count = count;
    state.body = body;
    state.context = context;
    if (threads > count) threads = (int)count;
    if (threads > 256) threads = 256;
    pthread_t workers[256];
    int started = 0;
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&workers[started], NULL, loop_worker, &state) != 0) break;
        started++;
    }
    loop_run(&state);
    for (int t = 0; t < started; t++) pthread_join(workers[t], NULL);
    return started + 1;
}

int clinux_available_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
#endif

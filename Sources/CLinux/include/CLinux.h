#ifndef NEGPATCH_CLINUX_H
#define NEGPATCH_CLINUX_H

/* Linux calls that Glibc's Swift module leaves out because they need _GNU_SOURCE. */
#ifdef __linux__
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>

/* Starts writing back the dirty pages of a file without waiting for them. */
static inline int clinux_start_writeback(int fd) {
    return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}
#endif

#endif

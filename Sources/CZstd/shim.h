#ifndef NEGPATCH_CZSTD_SHIM_H
#define NEGPATCH_CZSTD_SHIM_H
#include <zstd.h>

/* Frame-size sentinels are macros built from arithmetic that Swift does not import. */
static inline unsigned long long czstd_contentsize_unknown(void) { return ZSTD_CONTENTSIZE_UNKNOWN; }
static inline unsigned long long czstd_contentsize_error(void) { return ZSTD_CONTENTSIZE_ERROR; }

#endif

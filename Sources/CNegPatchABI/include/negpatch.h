/*
 * negpatch.h: the C ABI of NegPatch (libNegPatchABI.so).
 *
 * Open a patch (.negpatch or .h5), read its metadata, list and decode its tensors, and
 * patch tensors in a caller's memory in place: theta = base - lambda * tau, bit for bit
 * what `negpatch apply` writes (the same kernels: float32 arithmetic with two roundings,
 * rounded to the tensor's dtype with round-to-nearest-even; F64 in float64).
 *
 * Conventions
 * - Every function is named negpatch_...; every type negpatch_....
 * - Functions that can fail return a negpatch_status (0 on success). On failure, when
 *   `error` is not NULL, *error receives a new negpatch_error (free it with
 *   negpatch_error_free); on success *error is left untouched.
 * - Strings are NUL-terminated UTF-8. Strings returned as `const char *` belong to the
 *   patch handle and live until negpatch_close; `char *` results are the caller's, freed
 *   with negpatch_string_free.
 * - dtypes are named as safetensors names them: "F32", "F16", "BF16", "F64".
 * - A handle may be used from several threads at once; each call decodes blocks in
 *   parallel and holds at most one block of decoded values per thread.
 */
#ifndef NEGPATCH_H
#define NEGPATCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The version of this ABI; changes when a signature or a struct layout changes. */
#define NEGPATCH_ABI_VERSION 1

/** What went wrong. The names match NegPatchError.Code of the Swift library. */
typedef enum negpatch_status {
    NEGPATCH_OK = 0,
    NEGPATCH_MALFORMED = 1,        /* not in the format it claims */
    NEGPATCH_CORRUPT = 2,          /* truncated, or bytes not matching their checksum */
    NEGPATCH_MISMATCH = 3,         /* names, shapes, dtypes or base fingerprint disagree */
    NEGPATCH_INVALID_VALUE = 4,    /* NaN or infinity where finite values are needed */
    NEGPATCH_INVALID_ARGUMENT = 5, /* the request itself is not valid */
    NEGPATCH_IO = 6,               /* the operating system refused an I/O operation */
    NEGPATCH_UNTRUSTED = 7,        /* unsigned, signed by an untrusted key, or changed */
    NEGPATCH_CHANGED = 8,          /* a file changed (shrank, was rewritten) while being read */
    NEGPATCH_RESOURCES = 9         /* memory or threads ran out */
} negpatch_status;

/** An error: a code and one line naming the file and the tensor. */
typedef struct negpatch_error {
    int code;               /* a negpatch_status other than NEGPATCH_OK */
    const char *code_name;  /* "malformed", "corrupt", "mismatch", "invalidValue", ... */
    const char *message;    /* one line: FILE: tensor 'NAME': what went wrong; control
                               characters of names escaped */
    const char *file;       /* the file concerned, or NULL */
    const char *tensor;     /* the tensor concerned (escaped), or NULL */
} negpatch_error;

/** An open patch. */
typedef struct negpatch_patch negpatch_patch;

/** Flags of negpatch_apply. */
#define NEGPATCH_ALLOW_NONFINITE 1u /* accept NaN or infinity in the tensor or the patch */

/** Frees an error from any negpatch_ function (NULL is ignored). */
void negpatch_error_free(negpatch_error *error);

/** Frees a string returned as `char *` (NULL is ignored). */
void negpatch_string_free(char *string);

/** The library version, e.g. "0.1.0". Static storage. */
const char *negpatch_version(void);

/** NEGPATCH_ABI_VERSION of the library, to compare with the header's. */
int negpatch_abi_version(void);

/**
 * Opens and validates the patch at `path` (format recognised by content).
 *
 * With trusted_key_count > 0, the detached signature (`signature`, or PATH.sig when
 * NULL) must be a valid Ed25519 signature by one of the public key files listed in
 * `trusted_keys` (KEY.pub from `negpatch keygen`) over every byte of the patch; it is
 * checked before any byte of the patch is parsed, else NEGPATCH_UNTRUSTED.
 * On success *patch receives the handle (close it with negpatch_close).
 */
int negpatch_open(const char *path, const char *const *trusted_keys, size_t trusted_key_count,
                  const char *signature, negpatch_patch **patch, negpatch_error **error);

/** Closes a handle (NULL is ignored). */
void negpatch_close(negpatch_patch *patch);

/** The path the patch was opened with. */
const char *negpatch_path(const negpatch_patch *patch);

/** The format's name: "negpatch" or "hdf5". */
const char *negpatch_format(const negpatch_patch *patch);

/**
 * The patch's metadata object as JSON, exactly the "metadata" of the index
 * (formats/negpatch-v1.md): method, parameters, n, inputs, base, lambda, tool, lossy and
 * any fields later versions add. Free *json with negpatch_string_free.
 */
int negpatch_metadata_json(const negpatch_patch *patch, char **json, negpatch_error **error);

/**
 * The base fingerprint as a JSON array of {"name", "dtype", "shape", "digest"} (digest:
 * XXH64 of the tensor's raw bytes, 16 lowercase hex digits), in base order. Free *json
 * with negpatch_string_free.
 */
int negpatch_fingerprint_json(const negpatch_patch *patch, char **json, negpatch_error **error);

/** The recommended lambda recorded in the patch. */
double negpatch_lambda(const negpatch_patch *patch);

/** The number of patched tensors. */
size_t negpatch_tensor_count(const negpatch_patch *patch);

/** The index of the tensor called `name`, or -1 when the patch does not change it. */
int64_t negpatch_tensor_find(const negpatch_patch *patch, const char *name);

/** Tensor `i`'s name (NULL when i is out of range). */
const char *negpatch_tensor_name(const negpatch_patch *patch, size_t i);

/** Tensor `i`'s base dtype, e.g. "BF16" (NULL when i is out of range). */
const char *negpatch_tensor_dtype(const negpatch_patch *patch, size_t i);

/** Tensor `i`'s number of dimensions (0 when out of range). */
size_t negpatch_tensor_rank(const negpatch_patch *patch, size_t i);

/** Tensor `i`'s shape, rank values (NULL when out of range or rank 0). */
const int64_t *negpatch_tensor_shape(const negpatch_patch *patch, size_t i);

/** Tensor `i`'s number of elements (0 when out of range). */
int64_t negpatch_tensor_elements(const negpatch_patch *patch, size_t i);

/** Tensor `i`'s number of nonzero task-vector elements (0 when out of range). */
int64_t negpatch_tensor_nonzeros(const negpatch_patch *patch, size_t i);

/**
 * Decodes tensor `name`'s task vector into `out`: `count` float32 values, row-major,
 * zeros where the patch stores none. `count` must be the tensor's element count.
 * Verifies every checksum it reads.
 */
int negpatch_decode(const negpatch_patch *patch, const char *name, float *out, size_t count,
                    negpatch_error **error);

/**
 * Patches tensor `name` in place: `data` holds the base tensor, `nbytes` bytes of
 * `dtype` ("F32", "F16", "BF16" or "F64"), row-major, with the given shape; each element
 * becomes base - lambda * tau, exactly as `negpatch apply --lambda LAMBDA` computes it.
 * The dtype and shape must be the patch's (NEGPATCH_MISMATCH otherwise). Unless flags
 * holds NEGPATCH_ALLOW_NONFINITE, NaN or infinity in the tensor (checked before any
 * change) or in the patch is NEGPATCH_INVALID_VALUE. On a corrupt block the blocks
 * already applied stay applied. A tensor the patch does not change is
 * NEGPATCH_INVALID_ARGUMENT.
 */
int negpatch_apply(const negpatch_patch *patch, const char *name, const char *dtype,
                   const int64_t *shape, size_t rank, void *data, size_t nbytes, double lambda,
                   unsigned flags, negpatch_error **error);

/**
 * Checks that the checkpoint at `base` (a .safetensors file or a sharded folder) is the
 * base the patch was made for: the same tensors, dtypes, shapes and XXH64 digests, else
 * NEGPATCH_MISMATCH naming the first tensor that differs.
 */
int negpatch_check_base(const negpatch_patch *patch, const char *base, negpatch_error **error);

/**
 * Checks one base tensor held in memory against the fingerprint: it must be listed, with
 * this dtype, shape and the XXH64 of these `nbytes` bytes, else NEGPATCH_MISMATCH.
 */
int negpatch_check_base_tensor(const negpatch_patch *patch, const char *name, const char *dtype,
                               const int64_t *shape, size_t rank, const void *data, size_t nbytes,
                               negpatch_error **error);

/**
 * Runs every integrity check of `negpatch verify` (every checksum of every block); the
 * first problem is returned as NEGPATCH_CORRUPT or NEGPATCH_MALFORMED.
 */
int negpatch_verify(const negpatch_patch *patch, negpatch_error **error);

#ifdef __cplusplus
}
#endif

#endif /* NEGPATCH_H */

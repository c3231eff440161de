/*
 * A C program over the NegPatch C ABI (negpatch.h), driven by tools/tests/test_c_abi.py,
 * which compares what it writes with `negpatch export` and `negpatch apply`.
 *
 *   negpatch_abi_test list PATCH                      metadata JSON, then one line per tensor:
 *                                                     index, name, dtype, shape, elements, nonzeros
 *   negpatch_abi_test decode PATCH DIR                DIR/<i>.f32: tensor i's dense float32 tau
 *   negpatch_abi_test apply PATCH LAMBDA IN OUT       OUT/<i>.raw: IN/<i>.raw (tensor i's base
 *                                                     bytes, in its dtype) patched in place
 *   negpatch_abi_test open PATCH [KEY.pub...]         status and error of negpatch_open
 *   negpatch_abi_test check-base PATCH BASE           status and error of negpatch_check_base
 *   negpatch_abi_test errors PATCH                    error paths: codes, files and tensors named
 *
 * Exit status: 0 when every step did what it should, 1 otherwise.
 */
#include "negpatch.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

static void report(const char *what, int status, negpatch_error *error) {
    printf("%s: status %d", what, status);
    if (error != NULL) {
        printf(" code %s file %s tensor %s message %s", error->code_name, error->file ? error->file : "(none)",
               error->tensor ? error->tensor : "(none)", error->message);
    }
    printf("\n");
}

static negpatch_patch *open_or_die(const char *path) {
    negpatch_patch *patch = NULL;
    negpatch_error *error = NULL;
    int status = negpatch_open(path, NULL, 0, NULL, &patch, &error);
    if (status != NEGPATCH_OK) {
        report("open", status, error);
        negpatch_error_free(error);
        exit(1);
    }
    return patch;
}

static size_t dtype_size(const char *dtype) {
    if (strcmp(dtype, "F64") == 0) return 8;
    if (strcmp(dtype, "F32") == 0) return 4;
    return 2;
}

static char *path_of(const char *dir, size_t i, const char *suffix) {
    size_t n = strlen(dir) + 32;
    char *path = malloc(n);
    snprintf(path, n, "%s/%zu.%s", dir, i, suffix);
    return path;
}

static int list(const char *path) {
    negpatch_patch *patch = open_or_die(path);
    char *json = NULL;
    negpatch_error *error = NULL;
    int status = negpatch_metadata_json(patch, &json, &error);
    if (status != NEGPATCH_OK) {
        report("metadata", status, error);
        return 1;
    }
    printf("%s\n", json);
    negpatch_string_free(json);
    printf("format %s lambda %.17g\n", negpatch_format(patch), negpatch_lambda(patch));
    size_t count = negpatch_tensor_count(patch);
    for (size_t i = 0; i < count; i++) {
        const char *name = negpatch_tensor_name(patch, i);
        size_t rank = negpatch_tensor_rank(patch, i);
        const int64_t *shape = negpatch_tensor_shape(patch, i);
        printf("%zu\t%s\t%s\t", i, name, negpatch_tensor_dtype(patch, i));
        for (size_t d = 0; d < rank; d++) printf(d ? ",%" PRId64 : "%" PRId64, shape[d]);
        printf("\t%" PRId64 "\t%" PRId64 "\n", negpatch_tensor_elements(patch, i), negpatch_tensor_nonzeros(patch, i));
        if (negpatch_tensor_find(patch, name) != (int64_t)i) {
            printf("negpatch_tensor_find(%s) != %zu\n", name, i);
            failures++;
        }
    }
    if (negpatch_tensor_name(patch, count) != NULL || negpatch_tensor_find(patch, "no such tensor") != -1) {
        printf("out-of-range lookups did not return NULL / -1\n");
        failures++;
    }
    negpatch_close(patch);
    return failures ? 1 : 0;
}

static int decode(const char *path, const char *dir) {
    negpatch_patch *patch = open_or_die(path);
    size_t count = negpatch_tensor_count(patch);
    for (size_t i = 0; i < count; i++) {
        size_t elements = (size_t)negpatch_tensor_elements(patch, i);
        float *tau = malloc(elements * sizeof(float) + 1);
        negpatch_error *error = NULL;
        int status = negpatch_decode(patch, negpatch_tensor_name(patch, i), tau, elements, &error);
        if (status != NEGPATCH_OK) {
            report("decode", status, error);
            negpatch_error_free(error);
            return 1;
        }
        char *out = path_of(dir, i, "f32");
        FILE *f = fopen(out, "wb");
        if (f == NULL || fwrite(tau, sizeof(float), elements, f) != elements || fclose(f) != 0) {
            perror(out);
            return 1;
        }
        free(out);
        free(tau);
    }
    negpatch_close(patch);
    return 0;
}

static int apply(const char *path, double lambda, const char *in_dir, const char *out_dir) {
    negpatch_patch *patch = open_or_die(path);
    size_t count = negpatch_tensor_count(patch);
    for (size_t i = 0; i < count; i++) {
        const char *dtype = negpatch_tensor_dtype(patch, i);
        size_t nbytes = (size_t)negpatch_tensor_elements(patch, i) * dtype_size(dtype);
        char *in = path_of(in_dir, i, "raw");
        FILE *f = fopen(in, "rb");
        void *data = malloc(nbytes + 1);
        if (f == NULL || fread(data, 1, nbytes, f) != nbytes) {
            perror(in);
            return 1;
        }
        fclose(f);
        negpatch_error *error = NULL;
        int status = negpatch_apply(patch, negpatch_tensor_name(patch, i), dtype, negpatch_tensor_shape(patch, i),
                                    negpatch_tensor_rank(patch, i), data, nbytes, lambda, 0, &error);
        if (status != NEGPATCH_OK) {
            report("apply", status, error);
            negpatch_error_free(error);
            return 1;
        }
        char *out = path_of(out_dir, i, "raw");
        f = fopen(out, "wb");
        if (f == NULL || fwrite(data, 1, nbytes, f) != nbytes || fclose(f) != 0) {
            perror(out);
            return 1;
        }
        free(in);
        free(out);
        free(data);
    }
    negpatch_close(patch);
    return 0;
}

static int open_with_keys(const char *path, int key_count, char **keys) {
    negpatch_patch *patch = NULL;
    negpatch_error *error = NULL;
    int status = negpatch_open(path, (const char *const *)keys, (size_t)key_count, NULL, &patch, &error);
    report("open", status, error);
    negpatch_error_free(error);
    negpatch_close(patch);
    return 0;
}

static int check_base(const char *path, const char *base) {
    negpatch_patch *patch = open_or_die(path);
    negpatch_error *error = NULL;
    int status = negpatch_check_base(patch, base, &error);
    report("check-base", status, error);
    negpatch_error_free(error);
    negpatch_close(patch);
    return 0;
}

/* Expects `status` with `code`, and the error naming `file` and `tensor` (NULL: none). */
static void expect(const char *what, int status, negpatch_error *error, int code, const char *file, const char *tensor) {
    report(what, status, error);
    int ok = status == code && error != NULL && error->code == code && error->message != NULL && error->message[0] != 0 &&
             strchr(error->message, '\n') == NULL;
    if (ok && file != NULL) ok = error->file != NULL && strcmp(error->file, file) == 0 && strstr(error->message, file) != NULL;
    if (ok && tensor != NULL) ok = error->tensor != NULL && strcmp(error->tensor, tensor) == 0;
    if (!ok) {
        printf("  FAILED: expected status %d%s%s%s%s\n", code, file ? " naming file " : "", file ? file : "",
               tensor ? " and tensor " : "", tensor ? tensor : "");
        failures++;
    }
    negpatch_error_free(error);
}

static int errors(const char *path) {
    negpatch_patch *patch = NULL;
    negpatch_error *error = NULL;
    int status = negpatch_open("/nonexistent/forget.negpatch", NULL, 0, NULL, &patch, &error);
    expect("open missing file", status, error, NEGPATCH_IO, "/nonexistent/forget.negpatch", NULL);
    error = NULL;
    status = negpatch_open(NULL, NULL, 0, NULL, &patch, &error);
    expect("open NULL path", status, error, NEGPATCH_INVALID_ARGUMENT, NULL, NULL);
    /* A NULL error pointer is allowed: only the status comes back. */
    if (negpatch_open("/nonexistent/forget.negpatch", NULL, 0, NULL, &patch, NULL) != NEGPATCH_IO) {
        printf("open with error == NULL did not return NEGPATCH_IO\n");
        failures++;
    }

    patch = open_or_die(path);
    const char *name = negpatch_tensor_name(patch, 0);
    const char *dtype = negpatch_tensor_dtype(patch, 0);
    size_t elements = (size_t)negpatch_tensor_elements(patch, 0);
    size_t nbytes = elements * dtype_size(dtype);
    unsigned char *data = calloc(nbytes + 16, 1);
    float *tau = calloc(elements + 4, sizeof(float));

    error = NULL;
    status = negpatch_decode(patch, "no.such.tensor\n", tau, elements, &error);
    expect("decode unknown tensor", status, error, NEGPATCH_INVALID_ARGUMENT, path, "no.such.tensor\\u{a}");
    error = NULL;
    status = negpatch_decode(patch, name, tau, elements + 1, &error);
    expect("decode wrong count", status, error, NEGPATCH_MISMATCH, path, name);
    error = NULL;
    const char *other = strcmp(dtype, "F64") == 0 ? "F32" : "F64";
    status = negpatch_apply(patch, name, other, negpatch_tensor_shape(patch, 0), negpatch_tensor_rank(patch, 0), data,
                            elements * dtype_size(other), 1.0, 0, &error);
    expect("apply wrong dtype", status, error, NEGPATCH_MISMATCH, path, name);
    error = NULL;
    status = negpatch_apply(patch, name, "I64", negpatch_tensor_shape(patch, 0), negpatch_tensor_rank(patch, 0), data,
                            nbytes, 1.0, 0, &error);
    expect("apply integer dtype", status, error, NEGPATCH_INVALID_ARGUMENT, NULL, NULL);
    error = NULL;
    status = negpatch_apply(patch, name, dtype, negpatch_tensor_shape(patch, 0), negpatch_tensor_rank(patch, 0), data,
                            nbytes - 1, 1.0, 0, &error);
    expect("apply short buffer", status, error, NEGPATCH_MISMATCH, path, name);
    error = NULL;
    status = negpatch_apply(patch, name, dtype, negpatch_tensor_shape(patch, 0), negpatch_tensor_rank(patch, 0), data,
                            nbytes, NAN, 0, &error);
    expect("apply NaN lambda", status, error, NEGPATCH_INVALID_ARGUMENT, path, NULL);
    if (strcmp(dtype, "F32") == 0) {
        ((float *)data)[elements - 1] = INFINITY;
        error = NULL;
        status = negpatch_apply(patch, name, dtype, negpatch_tensor_shape(patch, 0), negpatch_tensor_rank(patch, 0), data,
                                nbytes, 1.0, 0, &error);
        expect("apply infinite base value", status, error, NEGPATCH_INVALID_VALUE, NULL, name);
        for (size_t i = 0; i + 1 < elements; i++) {
            if (((float *)data)[i] != 0.0f) {
                printf("a refused apply changed the tensor\n");
                failures++;
                break;
            }
        }
        if (negpatch_apply(patch, name, dtype, negpatch_tensor_shape(patch, 0), negpatch_tensor_rank(patch, 0), data,
                           nbytes, 1.0, NEGPATCH_ALLOW_NONFINITE, NULL) != NEGPATCH_OK) {
            printf("apply with NEGPATCH_ALLOW_NONFINITE failed\n");
            failures++;
        }
    }
    error = NULL;
    status = negpatch_check_base(patch, "/nonexistent/base.safetensors", &error);
    expect("check-base missing file", status, error, NEGPATCH_IO, "/nonexistent/base.safetensors", NULL);
    error = NULL;
    status = negpatch_check_base_tensor(patch, name, dtype, negpatch_tensor_shape(patch, 0), negpatch_tensor_rank(patch, 0),
                                        data, nbytes, &error);
    expect("check-base-tensor wrong content", status, error, NEGPATCH_MISMATCH, NULL, name);
    error = NULL;
    status = negpatch_verify(patch, &error);
    report("verify", status, error);
    if (status != NEGPATCH_OK) failures++;
    negpatch_error_free(error);
    if (strcmp(negpatch_version(), "") == 0 || negpatch_abi_version() != NEGPATCH_ABI_VERSION) {
        printf("version or ABI version wrong\n");
        failures++;
    }
    free(data);
    free(tau);
    negpatch_close(patch);
    negpatch_close(NULL);
    negpatch_error_free(NULL);
    printf("%d failures\n", failures);
    return failures ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "list") == 0) return list(argv[2]);
    if (argc == 4 && strcmp(argv[1], "decode") == 0) return decode(argv[2], argv[3]);
    if (argc == 6 && strcmp(argv[1], "apply") == 0) return apply(argv[2], strtod(argv[3], NULL), argv[4], argv[5]);
    if (argc >= 3 && strcmp(argv[1], "open") == 0) return open_with_keys(argv[2], argc - 3, argv + 3);
    if (argc == 4 && strcmp(argv[1], "check-base") == 0) return check_base(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "errors") == 0) return errors(argv[2]);
    fprintf(stderr, "usage: negpatch_abi_test list|decode|apply|open|check-base|errors PATCH ...\n");
    return 2;
}

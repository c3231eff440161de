// The two deallocators of the C ABI, in C so that callers and the Swift side agree on
// the allocator: everything negpatch_ functions hand out comes from malloc.
#include "negpatch.h"

#include <stdlib.h>

void negpatch_error_free(negpatch_error *error) {
    if (error == NULL) return;
    free((void *)error->code_name);
    free((void *)error->message);
    free((void *)error->file);
    free((void *)error->tensor);
    free(error);
}

void negpatch_string_free(char *string) { free(string); }

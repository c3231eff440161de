/* Everything lives in include/CLinux.h; a C target needs one source file. */
#include "CLinux.h"

/* kern_neon.c — placeholder */
#include "engine/kernels.h"

bool mp_kern_neon_fill(mp_kernels *k) {
    (void)k;
    return false;
}

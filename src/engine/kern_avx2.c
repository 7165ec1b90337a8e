/* kern_avx2.c — placeholder */
#include "engine/kernels.h"

bool mp_kern_avx2_fill(mp_kernels *k) {
    (void)k;
    return false;
}

/* kern_avx512.c — placeholder */
#include "engine/kernels.h"

bool mp_kern_avx512_fill(mp_kernels *k) {
    (void)k;
    return false;
}

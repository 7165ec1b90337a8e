/* kern_avx512.c — the AVX-512 level: the tile kernels of kern_x86.h on
 * 256-bit vectors with AVX-512 VL's 32 registers (larger tiles) and VNNI's
 * vpdpbusd with an accumulator (KX_VNNI) as the u8 x s8 dot product. Compiled with the AVX-512 F/BW/VL/
 * VNNI flags (CMakeLists); chosen only when the CPU reports them all. */
#include "engine/kernels.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512VL__) && \
    defined(__AVX512BW__) && defined(__AVX512VNNI__)

#define KX(name) avx512_##name
#define KX_VNNI 1
#define KX_ROWS_32 4
#define KX_TOKS_32 4
#define KX_ROWS_K 2
#define KX_TOKS_K 4
#include <immintrin.h>
#include "engine/kern_x86.h"

bool mp_kern_avx512_fill(mp_kernels *k) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512vl") ||
        !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vnni") ||
        !__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return false;
    k->name = "avx512";
    avx512_fill_table(k);
    return true;
}

#else

bool mp_kern_avx512_fill(mp_kernels *k) {
    (void)k;
    return false;
}

#endif

/* kern_avx2.c — the AVX2 level (with FMA and F16C): the tile kernels of
 * kern_x86.h with maddubs + madd as the u8 x s8 dot product and tiles that
 * fit 16 vector registers. Compiled with -mavx2 -mfma -mf16c (CMakeLists);
 * chosen only when the CPU reports all three. */
#include "engine/kernels.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#define KX(name) avx2_##name
#define KX_ROWS_32 2
#define KX_TOKS_32 4
#define KX_ROWS_K 1
#define KX_TOKS_K 4
#include <immintrin.h>
static inline __attribute__((always_inline)) __m256i kx_dot_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
#include "engine/kern_x86.h"

bool mp_kern_avx2_fill(mp_kernels *k) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return false;
    k->name = "avx2";
    avx2_fill_table(k);
    return true;
}

#else

bool mp_kern_avx2_fill(mp_kernels *k) {
    (void)k;
    return false;
}

#endif

/* sha256_shani.c — SHA-256 compression with the x86 SHA extensions
 * (sha256rnds2/msg1/msg2), compiled with -msha -msse4.1 and used only when
 * the CPU reports them (sha256.c chooses; tests/util/test_sha256.c checks it
 * against the plain C rounds on random data). The state is kept as the two
 * vectors the instructions want: ABEF and CDGH. */
#include "util/util.h"

#if defined(__x86_64__) && defined(__SHA__) && defined(__SSE4_1__)
#include <cpuid.h>
#include <stdatomic.h>
#include <immintrin.h>

/* CPUID leaf 7 EBX bit 29 (SHA) and leaf 1 ECX bit 19 (SSE4.1); read by hand
 * because not every compiler's __builtin_cpu_supports knows "sha". */
static bool cpu_has_sha(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 19))) return false;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return (b & (1u << 29)) != 0;
}


bool mp_sha256_blocks_shani(uint32_t h[8], const uint8_t *p, size_t n) {
    static atomic_int has = -1; /* racing threads all store the same answer */
    int h0 = atomic_load(&has);
    if (h0 < 0) atomic_store(&has, h0 = cpu_has_sha());
    if (!h0) return false;
    /* big-endian words of the message */
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i dcba = _mm_loadu_si128((const __m128i *)(const void *)h);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)(const void *)(h + 4));
    const __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    const __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
    for (size_t b = 0; b < n; b++, p += 64) {
        const __m128i abef0 = abef, cdgh0 = cdgh;
        __m128i w[4];
        for (int i = 0; i < 4; i++)
            w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 16 * i)),
                                    bswap);
        /* 16 groups of 4 rounds; group g uses W[4g..4g+3] = w[g % 4] and
         * then, while W is still needed, computes W[4g+16..4g+19] into it */
        for (int g = 0; g < 16; g++) {
            const __m128i wg = w[g % 4];
            __m128i m = _mm_add_epi32(wg, _mm_loadu_si128((const __m128i *)(const void *)(mp_sha256_k + 4 * g)));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, m);
            m = _mm_shuffle_epi32(m, 0x0E);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, m);
            if (g < 12) {
                const __m128i w1 = w[(g + 1) % 4], w2 = w[(g + 2) % 4], w3 = w[(g + 3) % 4];
                __m128i t = _mm_add_epi32(_mm_sha256msg1_epu32(wg, w1), _mm_alignr_epi8(w3, w2, 4));
                w[g % 4] = _mm_sha256msg2_epu32(t, w3);
            }
        }
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }
    const __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    const __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)(void *)h, _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)(void *)(h + 4), _mm_alignr_epi8(dchg, feba, 8));
    return true;
}

#else

bool mp_sha256_blocks_shani(uint32_t h[8], const uint8_t *p, size_t n) {
    (void)h, (void)p, (void)n;
    return false;
}

#endif

/* test_f16.c — binary16 and bfloat16 conversions: known bit patterns, ties to
 * even at every f16 rounding boundary, an independent double-precision model
 * of round-to-nearest-even on random inputs, and the exhaustive
 * f16 -> f32 -> f16 round trip. Pass a seed as argv[1] to repeat a run. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "testutil.h"

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#define CHECK_H(exp, f) CHECK_INT((exp), mp_f32_to_f16(f))
#define CHECK_B(exp, f) CHECK_INT((exp), mp_f32_to_bf16(f))

static void check_f16_known(void) {
    /* f16 -> f32 */
    CHECK(mp_f16_to_f32(0x3C00) == 1.0f);
    CHECK(mp_f16_to_f32(0xC000) == -2.0f);
    CHECK(mp_f16_to_f32(0x7BFF) == 65504.0f);
    CHECK(mp_f16_to_f32(0x0001) == ldexpf(1.0f, -24)); /* smallest subnormal */
    CHECK(mp_f16_to_f32(0x03FF) == 1023.0f * ldexpf(1.0f, -24)); /* largest subnormal */
    CHECK(mp_f16_to_f32(0x0400) == ldexpf(1.0f, -14));           /* smallest normal */
    CHECK(mp_f16_to_f32(0x3555) == 0x1.554p-2f);
    CHECK(bits_of(mp_f16_to_f32(0x0000)) == 0x00000000u);
    CHECK(bits_of(mp_f16_to_f32(0x8000)) == 0x80000000u);
    CHECK(mp_f16_to_f32(0x7C00) == INFINITY);
    CHECK(mp_f16_to_f32(0xFC00) == -INFINITY);
    CHECK(isnan(mp_f16_to_f32(0x7E00)));
    CHECK(isnan(mp_f16_to_f32(0x7C01))); /* signalling pattern is NaN too */
    CHECK(isnan(mp_f16_to_f32(0xFFFF)));

    /* f32 -> f16, exact values */
    CHECK_H(0x3C00, 1.0f);
    CHECK_H(0xC000, -2.0f);
    CHECK_H(0x7BFF, 65504.0f);
    CHECK_H(0x0001, ldexpf(1.0f, -24));
    CHECK_H(0x8001, -ldexpf(1.0f, -24));
    CHECK_H(0x0400, ldexpf(1.0f, -14));
    CHECK_H(0x0000, 0.0f);
    CHECK_H(0x8000, -0.0f);
    /* overflow: 65520 is the tie between 65504 and the next step (inf) */
    CHECK_H(0x7BFF, 65519.99f);
    CHECK_H(0x7C00, 65520.0f);
    CHECK_H(0x7C00, 1e6f);
    CHECK_H(0xFC00, -1e30f);
    CHECK_H(0x7C00, INFINITY);
    CHECK_H(0xFC00, -INFINITY);
    /* ties to even in the normal range: ulp(1) = 2^-10 */
    CHECK_H(0x3C00, 1.0f + 0x1p-11f);            /* tie -> even 0x3C00 */
    CHECK_H(0x3C02, 1.0f + 3 * 0x1p-11f);        /* tie -> even 0x3C02 */
    CHECK_H(0x3C01, 1.0f + 0x1p-11f + 0x1p-20f); /* just above the tie */
    CHECK_H(0x3C00, 1.0f + 0x1p-11f - 0x1p-23f); /* just below */
    CHECK_H(0x4000, 2.0f - 0x1p-12f);            /* tie at the top of a binade carries */
    /* subnormal range: unit 2^-24 */
    CHECK_H(0x0000, 0x1p-25f);                /* tie 0 / 1 -> 0 */
    CHECK_H(0x0001, 0x1p-25f + 0x1p-40f);     /* above the tie */
    CHECK_H(0x0002, 3 * 0x1p-25f);            /* tie 1 / 2 -> 2 */
    CHECK_H(0x0000, 0x1p-30f);
    CHECK_H(0x8000, -0x1p-30f);               /* underflow keeps the sign */
    CHECK_H(0x0400, 0x1p-14f - 0x1p-25f);     /* tie 0x3FF / 0x400 -> 0x400 */
    CHECK_H(0x03FF, 0x1p-14f - 0x1p-24f);
    CHECK_H(0x0000, 1e-45f);                  /* f32 subnormal */
    /* NaN stays NaN, sign and quietness kept */
    uint16_t h = mp_f32_to_f16(NAN);
    CHECK((h & 0x7C00) == 0x7C00 && (h & 0x03FF) != 0);
    h = mp_f32_to_f16(float_of(0x7F800001u)); /* payload only in low bits */
    CHECK((h & 0x7C00) == 0x7C00 && (h & 0x03FF) != 0);
    h = mp_f32_to_f16(float_of(0xFFC00000u));
    CHECK((h & 0xFC00) == 0xFC00 && (h & 0x03FF) != 0);
}

static double f16_value_or_overflow(uint16_t h) {
    /* the step past 65504 is 65536, used only to place the overflow tie */
    return h == 0x7C00 ? 65536.0 : (double)mp_f16_to_f32(h);
}

/* Every midpoint between consecutive non-negative finite f16 values (and the
 * overflow tie): the midpoint goes to the even code, the f32 neighbours below
 * and above go down and up. Mirrored for negative values. */
static void check_f16_all_ties(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 0x7C00; h++) {
        double mid = (f16_value_or_overflow((uint16_t)h) +
                      f16_value_or_overflow((uint16_t)(h + 1))) / 2;
        float m = (float)mid; /* exact: 12 significant bits */
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        int here = 0;
        for (int s = 0; s < 2; s++) {
            float sign = s ? -1.0f : 1.0f;
            uint16_t sb = s ? 0x8000 : 0;
            here += mp_f32_to_f16(sign * m) != (sb | even);
            here += mp_f32_to_f16(sign * nextafterf(m, 0.0f)) != (sb | h);
            here += mp_f32_to_f16(sign * nextafterf(m, INFINITY)) != (sb | (h + 1));
        }
        if (here && bad < 5) fprintf(stderr, "tie failure near f16 0x%04x\n", (unsigned)h);
        bad += here;
    }
    CHECK_INT(0, bad);
}

/* Independent model: round |f| on the f16 grid of its binade (2^(e-10),
 * never finer than the subnormal unit 2^-24) with nearbyint, which rounds
 * ties to even in the default mode. Returns the value, not the bits. */
static double ref_f16_round(float f) {
    double a = fabs((double)f);
    if (a >= 65520.0) return copysign(INFINITY, f);
    int e;
    frexp(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    int ex = e - 1 < -14 ? -14 : e - 1;
    double ulp = ldexp(1.0, ex - 10);
    return copysign(nearbyint(a / ulp) * ulp, f);
}

static void check_f16_random(uint64_t *rng) {
    enum { N = 1 << 21 };
    int bad = 0;
    for (int i = 0; i < N; i++) {
        uint64_t r = mp_test_rand(rng);
        /* exponents 100..147 cover underflow, subnormals, normals, overflow */
        uint32_t exp = 100 + (uint32_t)(r % 48);
        uint32_t u = (uint32_t)(r >> 32 & 0x807FFFFFu) | (exp << 23);
        float f = float_of(u);
        float got = mp_f16_to_f32(mp_f32_to_f16(f));
        double want = ref_f16_round(f);
        if (got != want || !signbit(got) != !signbit(want)) {
            if (bad++ < 5)
                fprintf(stderr, "f32 0x%08x: got %.9g, want %.9g\n", (unsigned)u, got, want);
        }
    }
    CHECK_INT(0, bad);
}

/* All 65536 patterns: decoding then encoding gives the same bits, except
 * NaNs, which must stay NaN (a signalling NaN may come back quiet). */
static void check_f16_roundtrip(void) {
    int bad = 0;
    for (uint32_t h = 0; h <= 0xFFFF; h++) {
        float f = mp_f16_to_f32((uint16_t)h);
        uint16_t back = mp_f32_to_f16(f);
        bool is_nan = (h & 0x7C00) == 0x7C00 && (h & 0x03FF) != 0;
        if (is_nan) {
            if (!isnan(f) || (back & 0x7C00) != 0x7C00 || (back & 0x03FF) == 0 ||
                (back & 0x8000) != (h & 0x8000))
                bad++;
        } else if (back != h) {
            if (bad++ < 5) fprintf(stderr, "0x%04x -> %g -> 0x%04x\n", (unsigned)h, f, back);
        }
    }
    CHECK_INT(0, bad);
}

static void check_bf16(void) {
    CHECK(mp_bf16_to_f32(0x3F80) == 1.0f);
    CHECK(mp_bf16_to_f32(0xC000) == -2.0f);
    CHECK(mp_bf16_to_f32(0x7F80) == INFINITY);
    CHECK(isnan(mp_bf16_to_f32(0x7FC0)));
    CHECK(bits_of(mp_bf16_to_f32(0x1234)) == 0x12340000u);
    CHECK_B(0x3F80, 1.0f);
    CHECK_B(0xC000, -2.0f);
    CHECK_B(0x3F80, float_of(0x3F808000u)); /* tie -> even */
    CHECK_B(0x3F82, float_of(0x3F818000u)); /* tie -> even (up) */
    CHECK_B(0x3F81, float_of(0x3F808001u)); /* above the tie */
    CHECK_B(0x3F80, float_of(0x3F807FFFu)); /* below the tie */
    CHECK_B(0x7F80, INFINITY);
    CHECK_B(0xFF80, -INFINITY);
    CHECK_B(0x7F80, float_of(0x7F7FFFFFu)); /* FLT_MAX rounds up to inf */
    CHECK_B(0x0001, float_of(0x00010000u)); /* subnormals are just truncated bits */
    CHECK_B(0x8000, -0.0f);
    /* NaN: top half with the quiet bit forced */
    CHECK_B(0x7FC0, float_of(0x7F800001u));
    CHECK_B(0xFFC1, float_of(0xFF810000u));
    CHECK_B(0x7FC0, float_of(0x7FC00000u));
    /* round trip of every bf16 pattern (NaN -> NaN) */
    int bad = 0;
    for (uint32_t h = 0; h <= 0xFFFF; h++) {
        uint16_t back = mp_f32_to_bf16(mp_bf16_to_f32((uint16_t)h));
        bool is_nan = (h & 0x7F80) == 0x7F80 && (h & 0x007F) != 0;
        if (is_nan ? back != (h | 0x0040) : back != h) bad++;
    }
    CHECK_INT(0, bad);
}

int main(int argc, char **argv) {
    uint64_t rng = mp_test_seed(argc, argv);
    check_f16_known();
    check_f16_all_ties();
    check_f16_random(&rng);
    check_f16_roundtrip();
    check_bf16();
    return mp_test_end("test_f16");
}

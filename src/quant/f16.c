/* f16.c — scalar conversions between f32 and the two 16-bit float formats,
 * done on bit patterns so the result does not depend on the compiler's
 * _Float16 support or the FPU rounding mode.
 *  - binary16 (IEEE half): to f32 exact; from f32 round-to-nearest-even with
 *    subnormals, overflow to +-inf, NaN kept NaN (made quiet, top payload bits
 *    kept).
 *  - bfloat16: the top half of an f32; from f32 as ggml does it (spec 2.2).
 * Not vectorised; bulk paths may add their own variants checked against these. */
#include <string.h>

#include "util/util.h"

/* binary32 / binary16 field layout. */
#define F32_SIGN 0x80000000u
#define F32_ABS 0x7FFFFFFFu
#define F32_EXP_INF 0x7F800000u
#define F32_MANT_BITS 23
#define F16_SIGN 0x8000u
#define F16_EXP_MASK 0x7C00u
#define F16_MANT_MASK 0x03FFu
#define F16_QUIET 0x0200u /* top mantissa bit: quiet NaN */
#define F16_MANT_BITS 10
#define MANT_DROP (F32_MANT_BITS - F16_MANT_BITS) /* 13 bits lost f32 -> f16 */
#define EXP_BIAS_DIFF (127 - 15)                  /* f32 bias minus f16 bias */

/* |x| thresholds as f32 bit patterns. */
#define F16_OVERFLOW_BITS 0x477FF000u  /* 65520 = 65504 + half an ulp: ties go to inf */
#define F16_MIN_NORMAL_BITS 0x38800000u /* 2^-14 */
#define F16_HALF_MIN_SUB_BITS 0x33000000u /* 2^-25: at or below, rounds to 0 */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Shifts m right by `shift` (1..31) rounding to nearest, ties to even. */
static uint32_t shift_round_even(uint32_t m, unsigned shift) {
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return q;
}

float mp_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & F16_SIGN) << 16;
    uint32_t exp = (h & F16_EXP_MASK) >> F16_MANT_BITS;
    uint32_t mant = h & F16_MANT_MASK;
    if (exp == F16_EXP_MASK >> F16_MANT_BITS) /* inf / NaN, payload kept */
        return f32_from_bits(sign | F32_EXP_INF | (mant << MANT_DROP));
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in f32 */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    return f32_from_bits(sign | ((exp + EXP_BIAS_DIFF) << F32_MANT_BITS) | (mant << MANT_DROP));
}

uint16_t mp_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u & F32_SIGN) >> 16);
    uint32_t a = u & F32_ABS;
    if (a > F32_EXP_INF)
        return (uint16_t)(sign | F16_EXP_MASK | F16_QUIET | ((a >> MANT_DROP) & F16_MANT_MASK));
    if (a >= F16_OVERFLOW_BITS) return (uint16_t)(sign | F16_EXP_MASK);
    if (a >= F16_MIN_NORMAL_BITS) {
        /* Rebias, then round the dropped mantissa bits; a carry out of the
         * mantissa correctly bumps the exponent (never to inf, see above). */
        uint32_t rebiased = a - ((uint32_t)EXP_BIAS_DIFF << F32_MANT_BITS);
        return (uint16_t)(sign | shift_round_even(rebiased, MANT_DROP));
    }
    if (a < F16_HALF_MIN_SUB_BITS) return sign;
    /* Subnormal result: value = m * 2^(e - 150) with the implicit bit in m;
     * in units of 2^-24 that is m >> (126 - e), shift 14..24. A result of
     * 0x400 is the smallest normal, which is the right encoding too. */
    uint32_t e = a >> F32_MANT_BITS;
    uint32_t m = (a & ((1u << F32_MANT_BITS) - 1)) | (1u << F32_MANT_BITS);
    return (uint16_t)(sign | shift_round_even(m, 126 - e));
}

float mp_bf16_to_f32(uint16_t h) {
    return f32_from_bits((uint32_t)h << 16);
}

/* Bit 6 of a bf16 is the top mantissa bit: setting it makes a NaN quiet. */
#define BF16_QUIET 0x0040u

uint16_t mp_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & F32_ABS) > F32_EXP_INF) return (uint16_t)((u >> 16) | BF16_QUIET);
    /* Round to nearest even on the low 16 bits; finite values near FLT_MAX
     * round up to inf, as in ggml. */
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
}

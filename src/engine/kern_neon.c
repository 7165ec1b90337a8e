/* kern_neon.c — the NEON level (AArch64 Advanced SIMD): activation
 * quantizers, float helpers and register-tiled matmul kernels, the
 * counterpart of kern_x86.h.
 *
 * Every kernel computes, for a tile of R weight rows x T tokens, the same
 * integer sums as kern_ref.c and scales them in float. Unlike x86, NEON
 * multiplies signed by signed bytes, so no sign trick or offset sums are
 * needed: codes are unpacked once per row and block (per 32 values for the
 * K-quants) as the reference's signed codes and reused for the T tokens.
 * The s8 x s8 dot product is the dot-product extension's sdot when the build
 * targets it (__ARM_FEATURE_DOTPROD, e.g. -march=armv8.2-a+dotprod), else
 * vmull + vpadal, so the file builds for baseline armv8-a.
 *
 * Tile sizes are chosen for 32 vector registers and have not been timed on
 * hardware. Q4_1/Q5_1, Q2_K/Q3_K and IQ4_XS keep the reference's kernels.
 * Checked against the reference by tests/engine/test_kernels.c;
 * scripts/check-neon.sh cross-builds that test and runs it under qemu. */
#include "engine/kernels.h"

/* little-endian only: the K-quant scale unpacking and the vector
 * reinterpretations assume it (every AArch64 Linux, macOS, Windows) */
#if defined(__aarch64__) && defined(__ARM_NEON) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__

#include <arm_neon.h>
#include <math.h>
#include <string.h>
#if defined(__linux__)
#include <sys/auxv.h>
#endif

#include "engine/engine.h"
#include "util/util.h"

#define NEON_INLINE static inline __attribute__((always_inline))
/* Full unrolling of the loops over a tile's rows and tokens (and other
 * short fixed loops), so that the tile's arrays live in registers: GCC -O2
 * otherwise keeps the loops and the arrays on the stack. */
#define NEON_UNROLL _Pragma("GCC unroll 16")

/* Register tiles (rows x tokens): 16 float accumulators plus the unpacked
 * codes of R rows and one token's activations stay within 32 registers. */
#define NEON_ROWS_32 4
#define NEON_TOKS_32 4
#define NEON_ROWS_K 2 /* K-quants: an int32 and a float sum per (row, token) */
#define NEON_TOKS_K 4

NEON_INLINE float neon_f16(const uint8_t *p) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(mp_load_u16(p)))), 0);
}

#if defined(__ARM_FEATURE_DOTPROD)
/* acc[k] += sum of a[4k..4k+3] b[4k..4k+3] */
NEON_INLINE int32x4_t neon_dot(int32x4_t acc, int8x16_t a, int8x16_t b) {
    return vdotq_s32(acc, a, b);
}
#else
/* Products in int16, two summed before widening: |a b| <= 128 * 127 =
 * 16256 (activations are within +-127), so a pair fits (32512 < 32767). */
NEON_INLINE int32x4_t neon_dot(int32x4_t acc, int8x16_t a, int8x16_t b) {
    int16x8_t p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    p = vmlal_high_s8(p, a, b);
    return vpadalq_s16(acc, p);
}
#endif

/* ------------------------------------------------- activation quantizers */

/* Bit-exact with kern_ref.c: the same max (maxNum, as fmaxf), the same single
 * multiply by 127/max, rounding to nearest even (vcvtnq), and the codes'
 * exact int16 sums per `sblk` values (16 or 32). */
static void neon_quant_q8(const float *x, int64_t n, uint8_t *row, int64_t blk, int64_t sblk) {
    int8_t *q = (int8_t *)row;
    float *d = (float *)(void *)(row + n);
    int16_t *s = (int16_t *)(void *)(row + n + (size_t)(n / blk) * sizeof(float));
    for (int64_t b = 0; b < n / blk; b++) {
        const float *xb = x + b * blk;
        float32x4_t m = vdupq_n_f32(0);
        for (int64_t i = 0; i < blk; i += 4) m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(xb + i)));
        const float amax = vmaxnmvq_f32(m);
        d[b] = amax / 127.0f;
        const float32x4_t id = vdupq_n_f32(amax > 0 ? 127.0f / amax : 0.0f);
        for (int64_t i = 0; i < blk; i += 16) {
            int32x4_t c[4];
            NEON_UNROLL for (int k = 0; k < 4; k++)
                c[k] = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(xb + i + 4 * k), id));
            const int16x8_t lo = vcombine_s16(vmovn_s32(c[0]), vmovn_s32(c[1]));
            const int16x8_t hi = vcombine_s16(vmovn_s32(c[2]), vmovn_s32(c[3]));
            vst1q_s8(q + b * blk + i, vcombine_s8(vmovn_s16(lo), vmovn_s16(hi)));
        }
    }
    for (int64_t g = 0; g < n / sblk; g++) {
        int sum = 0;
        for (int64_t i = 0; i < sblk; i += 16) sum += vaddlvq_s8(vld1q_s8(q + g * sblk + i));
        s[g] = (int16_t)sum;
    }
}

static void neon_quant_q8_32(const float *x, int64_t n, uint8_t *row) {
    neon_quant_q8(x, n, row, 32, 32);
}

static void neon_quant_q8_k(const float *x, int64_t n, uint8_t *row) {
    neon_quant_q8(x, n, row, MP_QK_K, 16);
}

/* ------------------------------------------------------------ float helpers */

static float neon_dot_f32(const float *a, const float *b, int64_t n) {
    float32x4_t s[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        NEON_UNROLL for (int k = 0; k < 4; k++)
            s[k] = vfmaq_f32(s[k], vld1q_f32(a + i + 4 * k), vld1q_f32(b + i + 4 * k));
    float r = vaddvq_f32(vaddq_f32(vaddq_f32(s[0], s[1]), vaddq_f32(s[2], s[3])));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

NEON_INLINE float32x4_t neon_h4(const uint16_t *h) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
}

static float neon_dot_f16(const float *a, const uint16_t *h, int64_t n) {
    float32x4_t s0 = vdupq_n_f32(0), s1 = vdupq_n_f32(0);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), neon_h4(h + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), neon_h4(h + i + 4));
    }
    float r = vaddvq_f32(vaddq_f32(s0, s1));
    for (; i < n; i++) r += a[i] * mp_f16_to_f32(h[i]);
    return r;
}

/* Weighted sum of value rows: 64 outputs at a time stay in 16 registers
 * while all n rows stream past them. */
NEON_INLINE float32x4_t neon_v4(int f16, const void *v, size_t at) {
    return f16 ? neon_h4((const uint16_t *)v + at) : vld1q_f32((const float *)v + at);
}

NEON_INLINE void neon_wsum(int f16, float *o, const float *w, const void *v, size_t stride,
                           int64_t n, int64_t d) {
    int64_t i0 = 0;
    for (; i0 + 64 <= d; i0 += 64) {
        float32x4_t acc[16];
        NEON_UNROLL for (int k = 0; k < 16; k++) acc[k] = vdupq_n_f32(0);
        for (int64_t p = 0; p < n; p++) {
            const size_t at = (size_t)p * stride + (size_t)i0;
            NEON_UNROLL for (int k = 0; k < 16; k++)
                acc[k] = vfmaq_n_f32(acc[k], neon_v4(f16, v, at + 4 * (size_t)k), w[p]);
        }
        NEON_UNROLL for (int k = 0; k < 16; k++) vst1q_f32(o + i0 + 4 * k, acc[k]);
    }
    for (; i0 + 4 <= d; i0 += 4) {
        float32x4_t acc = vdupq_n_f32(0);
        for (int64_t p = 0; p < n; p++)
            acc = vfmaq_n_f32(acc, neon_v4(f16, v, (size_t)p * stride + (size_t)i0), w[p]);
        vst1q_f32(o + i0, acc);
    }
    for (; i0 < d; i0++) {
        float s = 0;
        for (int64_t p = 0; p < n; p++) {
            const size_t at = (size_t)p * stride + (size_t)i0;
            s += w[p] * (f16 ? mp_f16_to_f32(((const uint16_t *)v)[at]) : ((const float *)v)[at]);
        }
        o[i0] = s;
    }
}

static void neon_wsum_f16(float *o, const float *w, const uint16_t *v, size_t stride, int64_t n,
                          int64_t d) {
    neon_wsum(1, o, w, v, stride, n, d);
}

static void neon_wsum_f32(float *o, const float *w, const float *v, size_t stride, int64_t n,
                          int64_t d) {
    neon_wsum(0, o, w, v, stride, n, d);
}

/* e^x as kern_x86.h's kx_exp: x = k ln2 + r, |r| <= ln2/2 (ln2 split in two
 * for an exact reduction), e^r by its degree-6 Taylor polynomial (< 2e-7
 * relative), 2^k built in the exponent bits; x clamped to [-87, 88]. */
NEON_INLINE float32x4_t neon_exp(float32x4_t x) {
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.0f)), vdupq_n_f32(88.0f));
    const float32x4_t k = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(x, k, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, k, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.0f / 720);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 120), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 24), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 6), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(k), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

/* tanh(y) = sign(y) (1 - 2 / (e^(2|y|) + 1)). */
NEON_INLINE float32x4_t neon_tanh(float32x4_t y) {
    const float32x4_t one = vdupq_n_f32(1.0f), ay = vabsq_f32(y);
    const float32x4_t t =
        vsubq_f32(one, vdivq_f32(vdupq_n_f32(2.0f), vaddq_f32(neon_exp(vaddq_f32(ay, ay)), one)));
    return vbslq_f32(vdupq_n_u32(0x80000000u), y, t);
}

static void neon_softcap(float *x, int64_t n, float cap) {
    const float inv = 1.0f / cap;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(x + i, vmulq_n_f32(neon_tanh(vmulq_n_f32(vld1q_f32(x + i), inv)), cap));
    for (; i < n; i++) x[i] = tanhf(x[i] * inv) * cap;
}

/* The activations of ops.c (mp_act_apply): GELU (tanh form), SiLU. */
NEON_INLINE float32x4_t neon_act(int act, float32x4_t x) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    if (act == MP_ACT_SILU) return vdivq_f32(x, vaddq_f32(one, neon_exp(vnegq_f32(x))));
    const float32x4_t y = vmulq_f32(vmulq_n_f32(x, 0.79788456080286535588f),
                                    vfmaq_f32(one, vdupq_n_f32(0.044715f), vmulq_f32(x, x)));
    return vmulq_f32(vmulq_n_f32(x, 0.5f), vaddq_f32(one, neon_tanh(y)));
}

static void neon_glu(int act, float *a, const float *g, const float *u, int64_t n, float gs,
                     float us) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t h = neon_act(act, vmulq_n_f32(vld1q_f32(g + i), gs));
        vst1q_f32(a + i, vmulq_f32(h, vmulq_n_f32(vld1q_f32(u + i), us)));
    }
    for (; i < n; i++) a[i] = mp_act_apply((mp_act)act, g[i] * gs) * (u[i] * us);
}

/* ------------------------------------------------------------- tile walk */

/* Walks the nr x nt output in RMAX x TMAX tiles; edge tiles get smaller
 * compile-time sizes through the switch (each case inlines `tile`). */
#define NEON_TILE_WALK(tile, type, RMAX, TMAX)                                                  \
    for (int64_t r0 = 0; r0 < nr; r0 += RMAX) {                                                 \
        const int R = nr - r0 < RMAX ? (int)(nr - r0) : RMAX;                                   \
        for (int64_t t0 = 0; t0 < nt; t0 += TMAX) {                                             \
            const int T = nt - t0 < TMAX ? (int)(nt - t0) : TMAX;                               \
            const uint8_t *wt = w + (size_t)r0 * ws, *at = a + (size_t)t0 * as;                 \
            float *yt = y + t0 * ldy + r0;                                                      \
            switch (R * 8 + T) {                                                                \
            NEON_CASES(tile, type, RMAX, TMAX)                                                  \
            default: break;                                                                     \
            }                                                                                   \
        }                                                                                       \
    }
/* a case larger than the walk's tile is never taken: the constant test
 * keeps it from being compiled */
#define NEON_CASE(tile, type, R, T, RMAX, TMAX)                                                 \
    case R * 8 + T:                                                                             \
        if (R <= RMAX && T <= TMAX) tile(type, R, T, n, wt, ws, at, as, yt, ldy);               \
        break;
#define NEON_CASES_T(tile, type, R, RMAX, TMAX)                                                 \
    NEON_CASE(tile, type, R, 1, RMAX, TMAX) NEON_CASE(tile, type, R, 2, RMAX, TMAX)             \
    NEON_CASE(tile, type, R, 3, RMAX, TMAX) NEON_CASE(tile, type, R, 4, RMAX, TMAX)
#define NEON_CASES(tile, type, RMAX, TMAX)                                                      \
    NEON_CASES_T(tile, type, 1, RMAX, TMAX) NEON_CASES_T(tile, type, 2, RMAX, TMAX)             \
    NEON_CASES_T(tile, type, 3, RMAX, TMAX) NEON_CASES_T(tile, type, 4, RMAX, TMAX)

#define NEON_GEMM(name, tile, type, RMAX, TMAX)                                                 \
    static void name(int64_t n, const uint8_t *w, size_t ws, int64_t nr, const uint8_t *a,      \
                     size_t as, int64_t nt, float *y, int64_t ldy) {                            \
        NEON_TILE_WALK(tile, type, RMAX, TMAX)                                                  \
    }

/* ------------------------------------------------------------ float types */

/* 4 weights of a float type as floats (weights may be unaligned: bytes). */
NEON_INLINE float32x4_t neon_wload4(int type, const uint8_t *p) {
    if (type == MP_TYPE_F32) return vreinterpretq_f32_u8(vld1q_u8(p));
    const uint16x4_t h = vreinterpret_u16_u8(vld1_u8(p));
    if (type == MP_TYPE_F16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16)); /* BF16: the top half of an f32 */
}

NEON_INLINE float neon_wload1(int type, const uint8_t *w, int64_t i) {
    if (type == MP_TYPE_F32) return mp_load_f32(w + 4 * i);
    const uint16_t h = mp_load_u16(w + 2 * i);
    return type == MP_TYPE_F16 ? mp_f16_to_f32(h) : mp_bf16_to_f32(h);
}

NEON_INLINE void neon_tile_float(int type, int R, int T, int64_t n, const uint8_t *w, size_t ws,
                                 const uint8_t *a, size_t as, float *y, int64_t ldy) {
    const size_t es = type == MP_TYPE_F32 ? 4 : 2;
    const float *x[4];
    float32x4_t acc[4][4];
    NEON_UNROLL for (int t = 0; t < T; t++)
        x[t] = (const float *)(const void *)(a + (size_t)t * as);
    NEON_UNROLL for (int r = 0; r < R; r++)
        NEON_UNROLL for (int t = 0; t < T; t++) acc[r][t] = vdupq_n_f32(0);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t wv[4];
        NEON_UNROLL for (int r = 0; r < R; r++)
            wv[r] = neon_wload4(type, w + (size_t)r * ws + (size_t)i * es);
        NEON_UNROLL for (int t = 0; t < T; t++) {
            const float32x4_t xv = vld1q_f32(x[t] + i);
            NEON_UNROLL for (int r = 0; r < R; r++) acc[r][t] = vfmaq_f32(acc[r][t], wv[r], xv);
        }
    }
    NEON_UNROLL for (int r = 0; r < R; r++)
        NEON_UNROLL for (int t = 0; t < T; t++) {
            float s = vaddvq_f32(acc[r][t]);
            for (int64_t j = i; j < n; j++)
                s += neon_wload1(type, w + (size_t)r * ws, j) * x[t][j];
            y[t * ldy + r] = s;
        }
}

NEON_GEMM(neon_gemm_f32, neon_tile_float, MP_TYPE_F32, 4, 4)
NEON_GEMM(neon_gemm_f16, neon_tile_float, MP_TYPE_F16, 4, 4)
NEON_GEMM(neon_gemm_bf16, neon_tile_float, MP_TYPE_BF16, 4, 4)

/* ------------------------------------------------- 32-value block types */

/* The signed codes of one block: values 0-15 and 16-31. */
typedef struct neon_q32 {
    int8x16_t lo, hi;
} neon_q32;

/* 16 nibbles in bytes 0..15: the low nibbles (values 0-15), then the high
 * ones (values 16-31), as in kern_ref.c's codes32. */
NEON_INLINE void neon_nibbles(const uint8_t *qs, uint8x16_t *lo, uint8x16_t *hi) {
    const uint8x16_t v = vld1q_u8(qs);
    *lo = vandq_u8(v, vdupq_n_u8(15));
    *hi = vshrq_n_u8(v, 4);
}

/* 16 bits -> 16 bytes, 16 where the bit is set. */
NEON_INLINE uint8x16_t neon_bits16(uint32_t bits) {
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t v = vcombine_u8(vdup_n_u8((uint8_t)bits), vdup_n_u8((uint8_t)(bits >> 8)));
    return vandq_u8(vtstq_u8(v, vld1q_u8(bit)), vdupq_n_u8(16));
}

NEON_INLINE neon_q32 neon_codes32(int type, const uint8_t *b, float *d) {
    neon_q32 q;
    uint8x16_t lo, hi;
    switch (type) {
    case MP_TYPE_Q8_0:
        *d = neon_f16(b);
        q.lo = vld1q_s8((const int8_t *)(b + MP_F16_BYTES));
        q.hi = vld1q_s8((const int8_t *)(b + MP_F16_BYTES + 16));
        return q;
    case MP_TYPE_Q4_0:
        *d = neon_f16(b);
        neon_nibbles(b + MP_F16_BYTES, &lo, &hi);
        q.lo = vsubq_s8(vreinterpretq_s8_u8(lo), vdupq_n_s8(8));
        q.hi = vsubq_s8(vreinterpretq_s8_u8(hi), vdupq_n_s8(8));
        return q;
    case MP_TYPE_Q5_0: {
        *d = neon_f16(b);
        const uint32_t h = mp_load_u32(b + MP_F16_BYTES);
        neon_nibbles(b + MP_F16_BYTES + 4, &lo, &hi);
        q.lo = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, neon_bits16(h))), vdupq_n_s8(16));
        q.hi = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(hi, neon_bits16(h >> 16))), vdupq_n_s8(16));
        return q;
    }
    case MP_TYPE_IQ4_NL:
    default: { /* IQ4_NL, MXFP4: a 16-entry table */
        const int8x16_t lut = vld1q_s8(type == MP_TYPE_IQ4_NL ? mp_kvalues_iq4nl : mp_kvalues_fp4);
        *d = type == MP_TYPE_IQ4_NL ? neon_f16(b) : mp_e8m0_to_f32_half(b[0]);
        neon_nibbles(b + (type == MP_TYPE_IQ4_NL ? MP_F16_BYTES : 1), &lo, &hi);
        q.lo = vqtbl1q_s8(lut, lo);
        q.hi = vqtbl1q_s8(lut, hi);
        return q;
    }
    }
}

NEON_INLINE void neon_tile32(int type, int R, int T, int64_t n, const uint8_t *w, size_t ws,
                             const uint8_t *a, size_t as, float *y, int64_t ldy) {
    const size_t bb = type == MP_TYPE_Q8_0     ? MP_Q8_0_BYTES
                      : type == MP_TYPE_Q4_0   ? MP_Q4_0_BYTES
                      : type == MP_TYPE_Q5_0   ? MP_Q5_0_BYTES
                      : type == MP_TYPE_IQ4_NL ? MP_IQ4_NL_BYTES
                                               : MP_MXFP4_BYTES;
    const int64_t nb = n / 32;
    float32x4_t acc[4][4];
    const float *da[4];
    NEON_UNROLL for (int r = 0; r < R; r++)
        NEON_UNROLL for (int t = 0; t < T; t++) acc[r][t] = vdupq_n_f32(0);
    NEON_UNROLL for (int t = 0; t < T; t++) da[t] = mp_act_d(a + (size_t)t * as, n);
    for (int64_t b = 0; b < nb; b++) {
        neon_q32 q[4];
        float dw[4];
        NEON_UNROLL for (int r = 0; r < R; r++)
            q[r] = neon_codes32(type, w + (size_t)r * ws + (size_t)b * bb, &dw[r]);
        NEON_UNROLL for (int t = 0; t < T; t++) {
            const int8_t *qa = (const int8_t *)(a + (size_t)t * as) + 32 * b;
            const int8x16_t alo = vld1q_s8(qa), ahi = vld1q_s8(qa + 16);
            NEON_UNROLL for (int r = 0; r < R; r++) {
                const int32x4_t p = neon_dot(neon_dot(vdupq_n_s32(0), q[r].lo, alo), q[r].hi, ahi);
                acc[r][t] = vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(p), dw[r] * da[t][b]);
            }
        }
    }
    NEON_UNROLL for (int r = 0; r < R; r++)
        NEON_UNROLL for (int t = 0; t < T; t++) y[t * ldy + r] = vaddvq_f32(acc[r][t]);
}

NEON_GEMM(neon_gemm_q8_0, neon_tile32, MP_TYPE_Q8_0, NEON_ROWS_32, NEON_TOKS_32)
NEON_GEMM(neon_gemm_q4_0, neon_tile32, MP_TYPE_Q4_0, NEON_ROWS_32, NEON_TOKS_32)
NEON_GEMM(neon_gemm_q5_0, neon_tile32, MP_TYPE_Q5_0, NEON_ROWS_32, NEON_TOKS_32)
NEON_GEMM(neon_gemm_iq4_nl, neon_tile32, MP_TYPE_IQ4_NL, NEON_ROWS_32, NEON_TOKS_32)
NEON_GEMM(neon_gemm_mxfp4, neon_tile32, MP_TYPE_MXFP4, NEON_ROWS_32, NEON_TOKS_32)

/* -------------------------------------------------------------- K-quants */

/* The scales of one super-block of one row. Q4_K/Q5_K: 8 six-bit scales
 * and mins (one per 32 values; the reference's per-16 pairs are equal);
 * Q6_K: 16 signed scales (one per 16), no mins. */
typedef struct neon_kblock {
    int32_t sc[16];
    int16x8_t mn; /* Q4_K/Q5_K mins, one per 32 values */
    float d, dmin;
} neon_kblock;

NEON_INLINE void neon_kunpack(int type, const uint8_t *b, neon_kblock *k) {
    if (type == MP_TYPE_Q6_K) {
        k->d = neon_f16(b + Q6K_D);
        k->dmin = 0;
        for (int g = 0; g < 16; g++) k->sc[g] = (int8_t)b[Q6K_SCALES + g];
        k->mn = vdupq_n_s16(0);
        return;
    }
    k->d = neon_f16(b);
    k->dmin = neon_f16(b + MP_F16_BYTES);
    /* the 12 packed bytes -> 8 scales and 8 mins (kern_ref.c k4_scale_min):
     * scales/mins 0-3 are the low 6 bits of bytes 0-3 / 4-7; scales/mins
     * 4-7 take their low 4 bits from bytes 8-11 (low/high nibble) and their
     * top 2 bits from the top of bytes 0-3 / 4-7 */
    const uint8_t *s = b + Q45K_SCALES;
    const uint32_t w0 = mp_load_u32(s), w1 = mp_load_u32(s + 4), w2 = mp_load_u32(s + 8);
    const uint32_t m6 = 0x3f3f3f3fu, m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
    const uint32_t sm[4] = {w0 & m6, (w2 & m4) | (((w0 >> 6) & m2) << 4), w1 & m6,
                            ((w2 >> 4) & m4) | (((w1 >> 6) & m2) << 4)};
    uint8_t bytes[16];
    memcpy(bytes, sm, sizeof bytes); /* little-endian: byte j of word w = value 4w + j */
    for (int j = 0; j < 8; j++) k->sc[j] = bytes[j];
    k->mn = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(bytes + 8)));
}

/* The signed codes of values 32j..32j+31 of a super-block. */
NEON_INLINE neon_q32 neon_kcodes(int type, const uint8_t *b, int j) {
    neon_q32 q;
    const uint8x16_t m4 = vdupq_n_u8(15);
    if (type == MP_TYPE_Q6_K) { /* 0..63, then the -32 */
        const int h = j / 4, r = j % 4;
        const uint8_t *ql = b + 64 * h + 32 * (r % 2), *qh = b + Q6K_QH + 32 * h;
        uint8x16_t v[2];
        NEON_UNROLL for (int k = 0; k < 2; k++) {
            const uint8x16_t l8 = vld1q_u8(ql + 16 * k), h8 = vld1q_u8(qh + 16 * k);
            const uint8x16_t lo = r < 2 ? vandq_u8(l8, m4) : vshrq_n_u8(l8, 4);
            /* bits 2r, 2r+1 of qh -> bits 4, 5 */
            const uint8x16_t hi = r == 0   ? vshlq_n_u8(h8, 4)
                                  : r == 1 ? vshlq_n_u8(h8, 2)
                                  : r == 2 ? h8
                                           : vshrq_n_u8(h8, 2);
            v[k] = vorrq_u8(lo, vandq_u8(hi, vdupq_n_u8(0x30)));
        }
        q.lo = vsubq_s8(vreinterpretq_s8_u8(v[0]), vdupq_n_s8(32));
        q.hi = vsubq_s8(vreinterpretq_s8_u8(v[1]), vdupq_n_s8(32));
        return q;
    }
    const uint8_t *qs = b + (type == MP_TYPE_Q5_K ? Q5K_QS : Q4K_QS) + 32 * (j / 2);
    uint8x16_t v[2];
    NEON_UNROLL for (int k = 0; k < 2; k++) {
        const uint8x16_t l8 = vld1q_u8(qs + 16 * k);
        v[k] = j % 2 ? vshrq_n_u8(l8, 4) : vandq_u8(l8, m4);
        if (type == MP_TYPE_Q5_K) { /* bit j of each qh byte -> 16 */
            const uint8x16_t h8 = vld1q_u8(b + Q5K_QH + 16 * k);
            v[k] = vorrq_u8(v[k], vandq_u8(vtstq_u8(h8, vdupq_n_u8((uint8_t)(1u << j))),
                                           vdupq_n_u8(16)));
        }
    }
    q.lo = vreinterpretq_s8_u8(v[0]);
    q.hi = vreinterpretq_s8_u8(v[1]);
    return q;
}

NEON_INLINE void neon_tilek(int type, int R, int T, int64_t n, const uint8_t *w, size_t ws,
                            const uint8_t *a, size_t as, float *y, int64_t ldy) {
    const size_t bb = type == MP_TYPE_Q4_K   ? MP_Q4_K_BYTES
                      : type == MP_TYPE_Q5_K ? MP_Q5_K_BYTES
                                             : MP_Q6_K_BYTES;
    const int64_t nb = n / MP_QK_K;
    float32x4_t acc[4][4];
    const float *da[4];
    const int16_t *sa[4];
    NEON_UNROLL for (int r = 0; r < R; r++)
        NEON_UNROLL for (int t = 0; t < T; t++) acc[r][t] = vdupq_n_f32(0);
    NEON_UNROLL for (int t = 0; t < T; t++) {
        da[t] = mp_act_d(a + (size_t)t * as, n);
        sa[t] = mp_act_s(a + (size_t)t * as, n, MP_QK_K);
    }
    for (int64_t b = 0; b < nb; b++) {
        neon_kblock kb[4];
        const uint8_t *wb[4];
        NEON_UNROLL for (int r = 0; r < R; r++) {
            wb[r] = w + (size_t)r * ws + (size_t)b * bb;
            neon_kunpack(type, wb[r], &kb[r]);
        }
        /* is = sum over 16-value groups g of sc[g] (q_g . qa_g), exactly */
        int32x4_t is[4][4];
        NEON_UNROLL for (int r = 0; r < R; r++)
            NEON_UNROLL for (int t = 0; t < T; t++) is[r][t] = vdupq_n_s32(0);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            neon_q32 q[4];
            NEON_UNROLL for (int r = 0; r < R; r++) q[r] = neon_kcodes(type, wb[r], j);
            NEON_UNROLL for (int t = 0; t < T; t++) {
                const int8_t *qa = (const int8_t *)(a + (size_t)t * as) + MP_QK_K * b + 32 * j;
                const int8x16_t alo = vld1q_s8(qa), ahi = vld1q_s8(qa + 16);
                const int32x4_t z = vdupq_n_s32(0);
                NEON_UNROLL for (int r = 0; r < R; r++) {
                    if (type == MP_TYPE_Q6_K) { /* a scale per 16 values */
                        const int32_t *sc = kb[r].sc + 2 * j;
                        is[r][t] = vmlaq_n_s32(is[r][t], neon_dot(z, q[r].lo, alo), sc[0]);
                        is[r][t] = vmlaq_n_s32(is[r][t], neon_dot(z, q[r].hi, ahi), sc[1]);
                    } else {
                        const int32x4_t p = neon_dot(neon_dot(z, q[r].lo, alo), q[r].hi, ahi);
                        is[r][t] = vmlaq_n_s32(is[r][t], p, kb[r].sc[j]);
                    }
                }
            }
        }
        NEON_UNROLL for (int t = 0; t < T; t++) {
            const float dt = da[t][b];
            /* ms = sum over 32-value groups j of mn[j] (sa[2j] + sa[2j+1]) */
            int16x8_t sp = vdupq_n_s16(0);
            if (type != MP_TYPE_Q6_K)
                sp = vpaddq_s16(vld1q_s16(sa[t] + 16 * b), vld1q_s16(sa[t] + 16 * b + 8));
            NEON_UNROLL for (int r = 0; r < R; r++) {
                acc[r][t] = vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(is[r][t]), kb[r].d * dt);
                if (type == MP_TYPE_Q6_K) continue;
                const int16x8_t mn = kb[r].mn;
                const int32x4_t ms =
                    vmlal_high_s16(vmull_s16(vget_low_s16(sp), vget_low_s16(mn)), sp, mn);
                acc[r][t] = vfmsq_f32(acc[r][t], vcvtq_f32_s32(ms), vdupq_n_f32(kb[r].dmin * dt));
            }
        }
    }
    NEON_UNROLL for (int r = 0; r < R; r++)
        NEON_UNROLL for (int t = 0; t < T; t++) y[t * ldy + r] = vaddvq_f32(acc[r][t]);
}

#define NEON_GEMMK(name, type)                                                                  \
    static void name(int64_t n, const uint8_t *w, size_t ws, int64_t nr, const uint8_t *a,      \
                     size_t as, int64_t nt, float *y, int64_t ldy) {                            \
        if (nt == 1) { /* a GEMV: more rows in flight instead of tokens */                   \
            NEON_TILE_WALK(neon_tilek, type, 4, 1)                                              \
        } else {                                                                                \
            NEON_TILE_WALK(neon_tilek, type, NEON_ROWS_K, NEON_TOKS_K)                          \
        }                                                                                       \
    }
NEON_GEMMK(neon_gemm_q4_k, MP_TYPE_Q4_K)
NEON_GEMMK(neon_gemm_q5_k, MP_TYPE_Q5_K)
NEON_GEMMK(neon_gemm_q6_k, MP_TYPE_Q6_K)

/* ----------------------------------------------------------------- table */

bool mp_kern_neon_fill(mp_kernels *k) {
#if defined(__ARM_FEATURE_DOTPROD) && defined(__linux__) && defined(HWCAP_ASIMDDP)
    /* this file built for the dot-product extension (and only it, or the
     * compiler may use sdot elsewhere too): refuse a CPU without it */
    if (!(getauxval(AT_HWCAP) & HWCAP_ASIMDDP)) return false;
#endif
    k->name = "neon";
    k->quant[MP_ACT_Q8_32] = neon_quant_q8_32;
    k->quant[MP_ACT_Q8_K] = neon_quant_q8_k;
    k->dot_f32 = neon_dot_f32;
    k->dot_f16 = neon_dot_f16;
    k->wsum_f16 = neon_wsum_f16;
    k->wsum_f32 = neon_wsum_f32;
    k->glu = neon_glu;
    k->softcap = neon_softcap;
    k->gemm[MP_TYPE_F32] = neon_gemm_f32;
    k->gemm[MP_TYPE_F16] = neon_gemm_f16;
    k->gemm[MP_TYPE_BF16] = neon_gemm_bf16;
    k->gemm[MP_TYPE_Q8_0] = neon_gemm_q8_0;
    k->gemm[MP_TYPE_Q4_0] = neon_gemm_q4_0;
    k->gemm[MP_TYPE_Q5_0] = neon_gemm_q5_0;
    k->gemm[MP_TYPE_IQ4_NL] = neon_gemm_iq4_nl;
    k->gemm[MP_TYPE_MXFP4] = neon_gemm_mxfp4;
    k->gemm[MP_TYPE_Q4_K] = neon_gemm_q4_k;
    k->gemm[MP_TYPE_Q5_K] = neon_gemm_q5_k;
    k->gemm[MP_TYPE_Q6_K] = neon_gemm_q6_k;
    return true;
}

#else

bool mp_kern_neon_fill(mp_kernels *k) {
    (void)k;
    return false;
}

#endif

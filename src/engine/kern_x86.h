/* kern_x86.h — the x86 tile kernels, written once and compiled twice:
 * kern_avx2.c (AVX2 + FMA + F16C) and kern_avx512.c (adds AVX-512 VL/BW and
 * VNNI, and 32 vector registers). The including file defines
 *   KX(name)      the level's prefix for every function here
 *   KX_ROWS_32    rows per register tile for the 32-value block types
 *   KX_TOKS_32    tokens per register tile for them
 *   KX_ROWS_K, KX_TOKS_K   the same for the K-quants
 *   KX_VNNI       to use vpdpbusd with an accumulator: the 32-value types
 *                 then move activations to u8 (q + 128) and start each sum
 *                 at -128 sum(w) instead of using the sign trick; or else
 *   kx_dot_u8s8(u, s)  eight int32 sums of four u8 x s8 products each
 * before including it.
 *
 * Every kernel computes, for a tile of R weight rows x T tokens, the same
 * integer sums as kern_ref.c and scales them in float:
 *  - 32-value types: codes are unpacked to signed bytes once per row and
 *    block and reused for the T tokens; the sign trick (|w| as u8, sign(w)
 *    moved onto the activation) makes them u8 x s8 products.
 *  - K-quants: codes are unsigned (Q4_K, Q5_K, Q6_K before its -32), so
 *    maddubs gives int16 pair sums, and madd with the sub-block scales gives
 *    the scaled int32 sums directly; the min (or -32 offset) term comes from
 *    the activation's sums per 16 values.
 * Tiles smaller than R x T at the edges use the same code with smaller
 * compile-time sizes. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "engine/engine.h"
#include "util/util.h"

#define KX_INLINE static inline __attribute__((always_inline))

KX_INLINE float kx_f16(const uint8_t *p) {
    return _cvtsh_ss(mp_load_u16(p));
}

KX_INLINE float kx_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

KX_INLINE int kx_hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* ------------------------------------------------- activation quantizers */

/* Bit-exact with kern_ref.c: the same max, the same single multiply by
 * 127/max, rounding to nearest even (the default MXCSR mode). */
KX_INLINE void kx_quant_block(const float *x, int64_t blk, int8_t *q, float *d) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int64_t i = 0; i < blk; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float amax = _mm_cvtss_f32(h);
    *d = amax / 127.0f;
    const __m256 id = _mm256_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
    for (int64_t i = 0; i < blk; i += 32) {
        __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), id));
        __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), id));
        __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 16), id));
        __m256i e = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 24), id));
        __m256i ab = _mm256_packs_epi32(a, b), ce = _mm256_packs_epi32(c, e);
        __m256i v = _mm256_packs_epi16(ab, ce);
        /* the packs work per 128-bit lane: put the dwords back in order */
        v = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(void *)(q + i), v);
    }
}

/* Sums of 16 codes: maddubs with ones pairs them, madd sums the pairs. */
KX_INLINE void kx_sums(const int8_t *q, int64_t n, int64_t g, int16_t *s) {
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (int64_t i = 0; i < n; i += 32) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(q + i));
        /* |v| with sign moved: sum(v) = sum(sign(1, v) * |v|) */
        __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16);
        /* p: eight int32 sums of 4 codes; lanes 0-3 = first 16, 4-7 = second */
        int32_t t[8];
        _mm256_storeu_si256((__m256i *)(void *)t, p);
        if (g == 16) {
            s[i / 16] = (int16_t)(t[0] + t[1] + t[2] + t[3]);
            s[i / 16 + 1] = (int16_t)(t[4] + t[5] + t[6] + t[7]);
        } else {
            s[i / 32] = (int16_t)(t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7]);
        }
    }
}

static void KX(quant_q8_32)(const float *x, int64_t n, uint8_t *row) {
    int8_t *q = (int8_t *)row;
    float *d = (float *)(void *)(row + n);
    for (int64_t b = 0; b < n / 32; b++) kx_quant_block(x + 32 * b, 32, q + 32 * b, d + b);
    kx_sums(q, n, 32, (int16_t *)(void *)(row + n + (size_t)(n / 32) * sizeof(float)));
}

static void KX(quant_q8_k)(const float *x, int64_t n, uint8_t *row) {
    int8_t *q = (int8_t *)row;
    float *d = (float *)(void *)(row + n);
    for (int64_t b = 0; b < n / MP_QK_K; b++)
        kx_quant_block(x + MP_QK_K * b, MP_QK_K, q + MP_QK_K * b, d + b);
    kx_sums(q, n, 16, (int16_t *)(void *)(row + n + (size_t)(n / MP_QK_K) * sizeof(float)));
}

/* ------------------------------------------------------------ float types */

static float KX(dot_f32)(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    float s = kx_hsum(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static float KX(dot_f16)(const float *a, const uint16_t *h, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 h0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(h + i)));
        const __m256 h1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(h + i + 8)));
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), h0, s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), h1, s1);
    }
    float s = kx_hsum(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * _cvtsh_ss(h[i]);
    return s;
}

/* Weighted sum of value rows: 64 outputs at a time stay in 8 registers
 * while all n rows stream past them. */
KX_INLINE __m256 kx_v8(int f16, const void *v, size_t at) {
    return f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)((const uint16_t *)v + at)))
               : _mm256_loadu_ps((const float *)v + at);
}

KX_INLINE float kx_v1(int f16, const void *v, size_t at) {
    return f16 ? _cvtsh_ss(((const uint16_t *)v)[at]) : ((const float *)v)[at];
}

KX_INLINE void kx_wsum(int f16, float *o, const float *w, const void *v, size_t stride, int64_t n,
                       int64_t d) {
    int64_t i0 = 0;
    for (; i0 + 64 <= d; i0 += 64) {
        __m256 acc[8];
        for (int k = 0; k < 8; k++) acc[k] = _mm256_setzero_ps();
        for (int64_t p = 0; p < n; p++) {
            const __m256 wp = _mm256_set1_ps(w[p]);
            const size_t at = (size_t)p * stride + (size_t)i0;
            for (int k = 0; k < 8; k++) acc[k] = _mm256_fmadd_ps(wp, kx_v8(f16, v, at + 8 * (size_t)k), acc[k]);
        }
        for (int k = 0; k < 8; k++) _mm256_storeu_ps(o + i0 + 8 * k, acc[k]);
    }
    for (; i0 + 8 <= d; i0 += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (int64_t p = 0; p < n; p++)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(w[p]), kx_v8(f16, v, (size_t)p * stride + (size_t)i0), acc);
        _mm256_storeu_ps(o + i0, acc);
    }
    for (; i0 < d; i0++) {
        float s = 0;
        for (int64_t p = 0; p < n; p++) s += w[p] * kx_v1(f16, v, (size_t)p * stride + (size_t)i0);
        o[i0] = s;
    }
}

static void KX(wsum_f16)(float *o, const float *w, const uint16_t *v, size_t stride, int64_t n,
                         int64_t d) {
    kx_wsum(1, o, w, v, stride, n, d);
}

static void KX(wsum_f32)(float *o, const float *w, const float *v, size_t stride, int64_t n,
                         int64_t d) {
    kx_wsum(0, o, w, v, stride, n, d);
}

/* e^x for |x| <= 88: x = k ln2 + r with |r| <= ln2/2 (ln2 split in two for
 * an exact reduction), e^r by its degree-6 Taylor polynomial (error < 2e-7
 * relative on that range), 2^k built in the exponent bits. */
KX_INLINE __m256 kx_exp(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* tanh(y) = sign(y) (1 - 2 / (e^(2|y|) + 1)), exact to ~1e-7 absolute. */
KX_INLINE __m256 kx_tanh(__m256 y) {
    const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
    const __m256 ay = _mm256_andnot_ps(sign, y);
    const __m256 t = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f),
                                                      _mm256_add_ps(kx_exp(_mm256_add_ps(ay, ay)), one)));
    return _mm256_or_ps(t, _mm256_and_ps(sign, y));
}

static void KX(softcap)(float *x, int64_t n, float cap) {
    const float inv = 1.0f / cap;
    const __m256 iv = _mm256_set1_ps(inv), cv = _mm256_set1_ps(cap);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(kx_tanh(_mm256_mul_ps(_mm256_loadu_ps(x + i), iv)), cv));
    for (; i < n; i++) x[i] = tanhf(x[i] * inv) * cap;
}

/* The activations of ops.c (mp_act_apply) on 8 lanes: GELU's tanh as
 * 1 - 2 / (e^(2y) + 1), SiLU as x / (1 + e^-x). */
KX_INLINE __m256 kx_act(int act, __m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    if (act == MP_ACT_SILU)
        return _mm256_div_ps(x, _mm256_add_ps(one, kx_exp(_mm256_sub_ps(_mm256_setzero_ps(), x))));
    const __m256 y = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.79788456080286535588f), x),
                                   _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), _mm256_mul_ps(x, x), one));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(one, kx_tanh(y)));
}

static void KX(glu)(int act, float *a, const float *g, const float *u, int64_t n, float gs,
                    float us) {
    const __m256 gv = _mm256_set1_ps(gs), uv = _mm256_set1_ps(us);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 h = kx_act(act, _mm256_mul_ps(_mm256_loadu_ps(g + i), gv));
        _mm256_storeu_ps(a + i, _mm256_mul_ps(h, _mm256_mul_ps(_mm256_loadu_ps(u + i), uv)));
    }
    for (; i < n; i++) a[i] = mp_act_apply((mp_act)act, g[i] * gs) * (u[i] * us);
}

/* 8 weights of a float type as floats. */
KX_INLINE __m256 kx_load8(int type, const uint8_t *w) {
    if (type == MP_TYPE_F32) return _mm256_loadu_ps((const float *)(const void *)w);
    const __m128i h = _mm_loadu_si128((const __m128i *)(const void *)w);
    if (type == MP_TYPE_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

KX_INLINE float kx_tail_f(int type, const uint8_t *w, int64_t i) {
    if (type == MP_TYPE_F32) return mp_load_f32(w + 4 * i);
    const uint16_t h = mp_load_u16(w + 2 * i);
    return type == MP_TYPE_F16 ? _cvtsh_ss(h) : mp_bf16_to_f32(h);
}

/* Float weights: 1 row x up to 4 tokens per pass, so each weight vector is
 * loaded (and widened) once for the 4 tokens. */
KX_INLINE void kx_gemm_float(int type, int64_t n, const uint8_t *w, size_t ws, int64_t nr,
                             const uint8_t *a, size_t as, int64_t nt, float *y, int64_t ldy) {
    const size_t es = type == MP_TYPE_F32 ? 4 : 2;
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *wr = w + (size_t)r * ws;
        for (int64_t t0 = 0; t0 < nt; t0 += 4) {
            const int64_t T = nt - t0 < 4 ? nt - t0 : 4;
            const float *x[4];
            for (int64_t t = 0; t < 4; t++)
                x[t] = (const float *)(const void *)(a + (size_t)(t0 + (t < T ? t : 0)) * as);
            __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                             _mm256_setzero_ps()};
            int64_t i = 0;
            for (; i + 8 <= n; i += 8) {
                const __m256 wv = kx_load8(type, wr + (size_t)i * es);
                for (int64_t t = 0; t < 4; t++)
                    acc[t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[t] + i), acc[t]);
            }
            for (int64_t t = 0; t < T; t++) {
                float s = kx_hsum(acc[t]);
                for (int64_t j = i; j < n; j++) s += kx_tail_f(type, wr, j) * x[t][j];
                y[(t0 + t) * ldy + r] = s;
            }
        }
    }
}

#define KX_FLOAT_GEMM(name, type)                                                               \
    static void KX(name)(int64_t n, const uint8_t *w, size_t ws, int64_t nr, const uint8_t *a,  \
                         size_t as, int64_t nt, float *y, int64_t ldy) {                        \
        kx_gemm_float(type, n, w, ws, nr, a, as, nt, y, ldy);                                   \
    }
KX_FLOAT_GEMM(gemm_f32, MP_TYPE_F32)
KX_FLOAT_GEMM(gemm_f16, MP_TYPE_F16)
KX_FLOAT_GEMM(gemm_bf16, MP_TYPE_BF16)

/* ------------------------------------------------- 32-value block types */

/* 32 bytes -> 32 bytes 0x00/0xFF from the 32 bits of one qh word. */
KX_INLINE __m256i kx_bits_to_bytes(uint32_t bits) {
#ifdef KX_VNNI /* AVX-512 BW/VL: a mask register expands to bytes in one op */
    return _mm256_movm_epi8((__mmask32)bits);
#endif
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2,
                                          2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
    const __m256i bit = _mm256_set1_epi64x((long long)0x7fbfdfeff7fbfdfeULL);
    v = _mm256_or_si256(v, bit);
    return _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1));
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0..15) then high. */
KX_INLINE __m256i kx_nibbles(const uint8_t *qs) {
    const __m128i v = _mm_loadu_si128((const __m128i *)(const void *)qs);
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
    return _mm256_and_si256(both, _mm256_set1_epi8(15));
}

/* Offset types: their codes are stored unsigned and the offset is taken off
 * through the activation block sums, which costs nothing per weight row. */
#define KX_OFFSET(type) ((type) == MP_TYPE_Q4_0 ? 8 : (type) == MP_TYPE_Q5_0 ? 16 : 0)

/* Codes of one block (signed; unsigned before the offset for offset types),
 * and its scale. */
KX_INLINE __m256i kx_codes32(int type, const uint8_t *b, float *d) {
    switch (type) {
    case MP_TYPE_Q8_0:
        *d = kx_f16(b);
        return _mm256_loadu_si256((const __m256i *)(const void *)(b + MP_F16_BYTES));
    case MP_TYPE_Q4_0:
        *d = kx_f16(b);
        return kx_nibbles(b + MP_F16_BYTES);
    case MP_TYPE_Q5_0: {
        *d = kx_f16(b);
        const __m256i hb = _mm256_and_si256(kx_bits_to_bytes(mp_load_u32(b + MP_F16_BYTES)),
                                            _mm256_set1_epi8(16));
        return _mm256_or_si256(kx_nibbles(b + MP_F16_BYTES + 4), hb);
    }
    case MP_TYPE_IQ4_NL: {
        *d = kx_f16(b);
        const __m256i lut = _mm256_broadcastsi128_si256(
            _mm_loadu_si128((const __m128i *)(const void *)mp_kvalues_iq4nl));
        return _mm256_shuffle_epi8(lut, kx_nibbles(b + MP_F16_BYTES));
    }
    default: { /* MXFP4 */
        *d = mp_e8m0_to_f32_half(b[0]);
        const __m256i lut = _mm256_broadcastsi128_si256(
            _mm_loadu_si128((const __m128i *)(const void *)mp_kvalues_fp4));
        return _mm256_shuffle_epi8(lut, kx_nibbles(b + 1));
    }
    }
}

KX_INLINE void kx_tile32(int type, int R, int T, int64_t n, const uint8_t *w, size_t ws,
                         const uint8_t *a, size_t as, float *y, int64_t ldy) {
    const size_t bb = type == MP_TYPE_Q8_0   ? MP_Q8_0_BYTES
                      : type == MP_TYPE_Q4_0 ? MP_Q4_0_BYTES
                      : type == MP_TYPE_Q5_0 ? MP_Q5_0_BYTES
                      : type == MP_TYPE_IQ4_NL ? MP_IQ4_NL_BYTES
                                               : MP_MXFP4_BYTES;
    const int64_t nb = n / 32;
    __m256 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    const int off = KX_OFFSET(type);
    const float *da[4];
    const int16_t *sa[4];
    for (int t = 0; t < T; t++) {
        da[t] = mp_act_d(a + (size_t)t * as, n);
        sa[t] = mp_act_s(a + (size_t)t * as, n, 32);
    }
    for (int64_t b = 0; b < nb; b++) {
        __m256i wx[4], wq[4];
        __m256 dwv[4];
        for (int r = 0; r < R; r++) {
            if (b % 2 == 0) /* ~2 cache lines ahead of each row's stream */
                _mm_prefetch((const char *)(w + (size_t)r * ws + (size_t)(b + 8) * bb), _MM_HINT_T0);
            float dw;
            wq[r] = kx_codes32(type, w + (size_t)r * ws + (size_t)b * bb, &dw);
            dwv[r] = _mm256_set1_ps(dw);
            if (off) continue; /* unsigned codes: no correction, no sign trick */
#ifdef KX_VNNI
            /* activations go in as u8 = q + 128; start the sum at -128 sum(w) */
            wx[r] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                     _mm256_dpbusd_epi32(_mm256_setzero_si256(),
                                                         _mm256_set1_epi8((char)0x80), wq[r]));
#else
            wx[r] = _mm256_sign_epi8(wq[r], wq[r]); /* |w| as u8 */
#endif
        }
        for (int t = 0; t < T; t++) {
            const __m256i qa =
                _mm256_loadu_si256((const __m256i *)(const void *)(a + (size_t)t * as + 32 * b));
            const __m256 dtv = _mm256_set1_ps(da[t][b]);
            if (off) {
                /* sum(u q) - off sum(q): the start value carries -off sum(q) */
                const __m256i start = _mm256_setr_epi32(-off * sa[t][b], 0, 0, 0, 0, 0, 0, 0);
                for (int r = 0; r < R; r++) {
#ifdef KX_VNNI
                    const __m256i p = _mm256_dpbusd_epi32(start, wq[r], qa);
#else
                    const __m256i p = _mm256_add_epi32(kx_dot_u8s8(wq[r], qa), start);
#endif
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dwv[r], dtv),
                                                acc[r][t]);
                }
                continue;
            }
#ifdef KX_VNNI
            const __m256i qu = _mm256_xor_si256(qa, _mm256_set1_epi8((char)0x80));
#endif
            for (int r = 0; r < R; r++) {
#ifdef KX_VNNI
                const __m256i p = _mm256_dpbusd_epi32(wx[r], qu, wq[r]);
#else
                const __m256i p = kx_dot_u8s8(wx[r], _mm256_sign_epi8(qa, wq[r]));
#endif
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dwv[r], dtv),
                                            acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) y[t * ldy + r] = kx_hsum(acc[r][t]);
}

/* Walks the nr x nt output in R x T tiles; edge tiles get smaller
 * compile-time sizes through the switch (each case inlines kx_tile32). */
#define KX_TILE_WALK(tile, type, RMAX, TMAX)                                                    \
    for (int64_t r0 = 0; r0 < nr; r0 += RMAX) {                                                 \
        const int R = nr - r0 < RMAX ? (int)(nr - r0) : RMAX;                                   \
        for (int64_t t0 = 0; t0 < nt; t0 += TMAX) {                                             \
            const int T = nt - t0 < TMAX ? (int)(nt - t0) : TMAX;                               \
            const uint8_t *wt = w + (size_t)r0 * ws, *at = a + (size_t)t0 * as;                 \
            float *yt = y + t0 * ldy + r0;                                                      \
            switch (R * 8 + T) {                                                                \
            KX_CASES(tile, type)                                                                \
            default: break;                                                                     \
            }                                                                                   \
        }                                                                                       \
    }
#define KX_CASE(tile, type, R, T)                                                               \
    case R * 8 + T: tile(type, R, T, n, wt, ws, at, as, yt, ldy); break;
#define KX_CASES_T(tile, type, R)                                                               \
    KX_CASE(tile, type, R, 1) KX_CASE(tile, type, R, 2) KX_CASE(tile, type, R, 3)               \
    KX_CASE(tile, type, R, 4)
#define KX_CASES(tile, type)                                                                    \
    KX_CASES_T(tile, type, 1) KX_CASES_T(tile, type, 2) KX_CASES_T(tile, type, 3)               \
    KX_CASES_T(tile, type, 4)

#define KX_GEMM32(name, type)                                                                   \
    static void KX(name)(int64_t n, const uint8_t *w, size_t ws, int64_t nr, const uint8_t *a,  \
                         size_t as, int64_t nt, float *y, int64_t ldy) {                        \
        KX_TILE_WALK(kx_tile32, type, KX_ROWS_32, KX_TOKS_32)                                   \
    }
KX_GEMM32(gemm_q8_0, MP_TYPE_Q8_0)
KX_GEMM32(gemm_q4_0, MP_TYPE_Q4_0)
KX_GEMM32(gemm_q5_0, MP_TYPE_Q5_0)
KX_GEMM32(gemm_iq4_nl, MP_TYPE_IQ4_NL)
KX_GEMM32(gemm_mxfp4, MP_TYPE_MXFP4)

/* -------------------------------------------------------------- K-quants */

/* One super-block of one row, unpacked once and reused for T tokens.
 * The sixteen per-16 scales are kept as int16 pairs in two vectors (p0:
 * scales 0-3 | 8-11, p1: 4-7 | 12-15, each duplicated into an int32), so the
 * scale vector of values 32j..32j+31 (int16 lanes 0-7: scale 2j, 8-15:
 * scale 2j+1) is one permute; mn holds the per-16 mins (or Q6_K's 32 x
 * scale) for the activation sums. */
typedef struct kx_kblock {
    __m256i p0, p1;
    __m256i mn;
    float d, dmin;
} kx_kblock;

KX_INLINE __m256i kx_kscale(const kx_kblock *k, int j) {
    /* groups 2j, 2j+1: P0 holds groups 0-3 (lanes 0-3) and 8-11 (lanes 4-7) */
    const int g = 2 * j, src1 = (g / 4) % 2, lane = (g % 4) + 4 * (g / 8);
    const __m256i idx = _mm256_setr_epi32(lane, lane, lane, lane, lane + 1, lane + 1, lane + 1,
                                          lane + 1);
    return _mm256_permutevar8x32_epi32(src1 ? k->p1 : k->p0, idx);
}

/* From 16 int16 per-16 scales to the pair vectors. */
KX_INLINE void kx_kpairs(__m256i s16, kx_kblock *k) {
    k->p0 = _mm256_unpacklo_epi16(s16, s16);
    k->p1 = _mm256_unpackhi_epi16(s16, s16);
}

/* Unsigned codes of values 32j..32j+31 of a super-block. */
KX_INLINE __m256i kx_kcodes(int type, const uint8_t *b, int j) {
    const __m256i m4 = _mm256_set1_epi8(15);
    switch (type) {
    case MP_TYPE_Q4_K: {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(b + Q4K_QS + 32 * (j / 2)));
        return j % 2 ? _mm256_and_si256(_mm256_srli_epi16(v, 4), m4) : _mm256_and_si256(v, m4);
    }
    case MP_TYPE_Q5_K: {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(b + Q5K_QS + 32 * (j / 2)));
        const __m256i lo = j % 2 ? _mm256_and_si256(_mm256_srli_epi16(v, 4), m4)
                                 : _mm256_and_si256(v, m4);
        const __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)(b + Q5K_QH));
        /* bit j of each qh byte -> 16 */
        const __m256i hb = _mm256_and_si256(h, _mm256_set1_epi8((char)(1 << j)));
        const __m256i h16 = _mm256_and_si256(_mm256_cmpeq_epi8(hb, _mm256_set1_epi8((char)(1 << j))),
                                             _mm256_set1_epi8(16));
        return _mm256_or_si256(lo, h16);
    }
    default: { /* Q6_K: unsigned 0..63; the -32 goes into mn */
        const int h = j / 4, r = j % 4;
        const __m256i ql = _mm256_loadu_si256(
            (const __m256i *)(const void *)(b + 64 * h + 32 * (r % 2)));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(const void *)(b + Q6K_QH + 32 * h));
        const __m256i lo = r < 2 ? _mm256_and_si256(ql, m4)
                                 : _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4);
        /* bits 2r, 2r+1 of qh -> bits 4, 5 */
        __m256i hi;
        if (r == 0) hi = _mm256_slli_epi16(qh, 4);
        else if (r == 1) hi = _mm256_slli_epi16(qh, 2);
        else if (r == 2) hi = qh;
        else hi = _mm256_srli_epi16(qh, 2);
        return _mm256_or_si256(lo, _mm256_and_si256(hi, _mm256_set1_epi8(0x30)));
    }
    }
}

KX_INLINE void kx_kunpack(int type, const uint8_t *b, kx_kblock *k) {
    if (type == MP_TYPE_Q6_K) {
        k->d = kx_f16(b + Q6K_D);
        k->dmin = k->d;
        const __m256i s16 = _mm256_cvtepi8_epi16(
            _mm_loadu_si128((const __m128i *)(const void *)(b + Q6K_SCALES)));
        kx_kpairs(s16, k);
        k->mn = _mm256_slli_epi16(s16, 5); /* value = d sc (q - 32) */
        return;
    }
    k->d = kx_f16(b);
    k->dmin = kx_f16(b + MP_F16_BYTES);
    /* the 12 packed bytes -> 8 six-bit scales (bytes 0-7) and mins (8-15):
     * scales 0-3 and mins 0-3 are the low 6 bits of bytes 0-3 and 4-7;
     * scales/mins 4-7 take their low 4 bits from bytes 8-11 (low/high
     * nibble) and their top 2 bits from the top of bytes 0-3 / 4-7 */
    const uint8_t *s = b + Q45K_SCALES;
    const uint32_t w0 = mp_load_u32(s), w1 = mp_load_u32(s + 4), w2 = mp_load_u32(s + 8);
    const uint32_t m6 = 0x3f3f3f3fu, m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
    const uint32_t sc_lo = w0 & m6, sc_hi = (w2 & m4) | (((w0 >> 6) & m2) << 4);
    const uint32_t mn_lo = w1 & m6, mn_hi = ((w2 >> 4) & m4) | (((w1 >> 6) & m2) << 4);
    const __m128i sm = _mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)mn_lo, (int)mn_hi);
    const __m128i sc8 = _mm_cvtepu8_epi16(sm), mn8 = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
    /* per-16 values: each per-32 scale twice */
    const __m256i sc16 = _mm256_set_m128i(_mm_unpackhi_epi16(sc8, sc8), _mm_unpacklo_epi16(sc8, sc8));
    kx_kpairs(sc16, k);
    k->mn = _mm256_set_m128i(_mm_unpackhi_epi16(mn8, mn8), _mm_unpacklo_epi16(mn8, mn8));
}

KX_INLINE void kx_tilek(int type, int R, int T, int64_t n, const uint8_t *w, size_t ws,
                        const uint8_t *a, size_t as, float *y, int64_t ldy) {
    const size_t bb = type == MP_TYPE_Q4_K ? MP_Q4_K_BYTES
                      : type == MP_TYPE_Q5_K ? MP_Q5_K_BYTES
                                             : MP_Q6_K_BYTES;
    const int64_t nb = n / MP_QK_K;
    __m256 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    const float *da[4];
    const int16_t *sa[4];
    for (int t = 0; t < T; t++) {
        da[t] = mp_act_d(a + (size_t)t * as, n);
        sa[t] = mp_act_s(a + (size_t)t * as, n, MP_QK_K);
    }
    for (int64_t b = 0; b < nb; b++) {
        kx_kblock kb[4];
        const uint8_t *wb[4];
        for (int r = 0; r < R; r++) {
            wb[r] = w + (size_t)r * ws + (size_t)b * bb;
            /* two super-blocks ahead: the streams of R rows at once defeat
             * the hardware prefetcher at page ends */
            _mm_prefetch((const char *)(wb[r] + 2 * bb), _MM_HINT_T0);
            _mm_prefetch((const char *)(wb[r] + 2 * bb + 64), _MM_HINT_T0);
            _mm_prefetch((const char *)(wb[r] + 2 * bb + 128), _MM_HINT_T0);
            kx_kunpack(type, wb[r], &kb[r]);
        }
        __m256i isum[4][4];
        for (int r = 0; r < R; r++)
            for (int t = 0; t < T; t++) isum[r][t] = _mm256_setzero_si256();
        /* unrolled: the permute indices and the code extraction of each j
         * are compile-time constants */
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            __m256i q[4], sc[4];
            for (int r = 0; r < R; r++) {
                q[r] = kx_kcodes(type, wb[r], j);
                sc[r] = kx_kscale(&kb[r], j);
            }
            for (int t = 0; t < T; t++) {
                const __m256i qa = _mm256_loadu_si256(
                    (const __m256i *)(const void *)(a + (size_t)t * as + MP_QK_K * b + 32 * j));
                for (int r = 0; r < R; r++)
                    isum[r][t] = _mm256_add_epi32(
                        isum[r][t],
                        _mm256_madd_epi16(_mm256_maddubs_epi16(q[r], qa), sc[r]));
            }
        }
        for (int t = 0; t < T; t++) {
            const __m256i bs =
                _mm256_loadu_si256((const __m256i *)(const void *)(sa[t] + 16 * b));
            const float dt = da[t][b];
            for (int r = 0; r < R; r++) {
                const __m256i ms = _mm256_madd_epi16(bs, kb[r].mn);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r][t]),
                                            _mm256_set1_ps(kb[r].d * dt), acc[r][t]);
                acc[r][t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(ms),
                                             _mm256_set1_ps(kb[r].dmin * dt), acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) y[t * ldy + r] = kx_hsum(acc[r][t]);
}

#define KX_GEMMK(name, type)                                                                    \
    static void KX(name)(int64_t n, const uint8_t *w, size_t ws, int64_t nr, const uint8_t *a,  \
                         size_t as, int64_t nt, float *y, int64_t ldy) {                        \
        if (nt == 1) { /* a GEMV: more rows in flight instead of tokens */                   \
            KX_TILE_WALK(kx_tilek, type, 4, 1)                                                  \
        } else {                                                                                \
            KX_TILE_WALK(kx_tilek, type, KX_ROWS_K, KX_TOKS_K)                                  \
        }                                                                                       \
    }
KX_GEMMK(gemm_q4_k, MP_TYPE_Q4_K)
KX_GEMMK(gemm_q5_k, MP_TYPE_Q5_K)
KX_GEMMK(gemm_q6_k, MP_TYPE_Q6_K)

/* ----------------------------------------------------------------- table */

static void KX(fill_table)(mp_kernels *k) {
    k->quant[MP_ACT_Q8_32] = KX(quant_q8_32);
    k->quant[MP_ACT_Q8_K] = KX(quant_q8_k);
    k->dot_f32 = KX(dot_f32);
    k->dot_f16 = KX(dot_f16);
    k->wsum_f16 = KX(wsum_f16);
    k->wsum_f32 = KX(wsum_f32);
    k->glu = KX(glu);
    k->softcap = KX(softcap);
    k->gemm[MP_TYPE_F32] = KX(gemm_f32);
    k->gemm[MP_TYPE_F16] = KX(gemm_f16);
    k->gemm[MP_TYPE_BF16] = KX(gemm_bf16);
    k->gemm[MP_TYPE_Q8_0] = KX(gemm_q8_0);
    k->gemm[MP_TYPE_Q4_0] = KX(gemm_q4_0);
    k->gemm[MP_TYPE_Q5_0] = KX(gemm_q5_0);
    k->gemm[MP_TYPE_IQ4_NL] = KX(gemm_iq4_nl);
    k->gemm[MP_TYPE_MXFP4] = KX(gemm_mxfp4);
    k->gemm[MP_TYPE_Q4_K] = KX(gemm_q4_k);
    k->gemm[MP_TYPE_Q5_K] = KX(gemm_q5_k);
    k->gemm[MP_TYPE_Q6_K] = KX(gemm_q6_k);
}

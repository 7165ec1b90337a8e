/* kern_ref.c — the scalar reference kernels: activation quantizers, and for
 * each weight type a tile kernel built from an integer block decoder.
 *
 * A decoder turns one block of a weight row into small signed integer codes
 * plus the integer scales and float factors that multiply them, so that
 *     row . x = sum over blocks of  d * da * sum_j sc_j * (q_j . qa_j)
 *                                 - dmin * da * sum_j mn_j * sum(qa_j)
 * with q . qa a pure integer dot product. SIMD variants compute the same
 * integer sums and only differ in float rounding. Types without a decoder
 * here (IQ1/2/3, TQ, NVFP4, ...) use the dequantize-and-dot path in matmul.c.
 * Layouts: gemma4-gguf-spec.md sections 2.3-2.5. */
#include <math.h>
#include <string.h>

#include "engine/engine.h"
#include "util/util.h"

/* ------------------------------------------------------ activation rows */

size_t mp_act_row_bytes(mp_act_fmt fmt, int64_t n) {
    size_t b;
    switch (fmt) {
    case MP_ACT_Q8_32: b = (size_t)n + (size_t)(n / 32) * (sizeof(float) + sizeof(int16_t)); break;
    case MP_ACT_Q8_K:
        b = (size_t)n + (size_t)(n / MP_QK_K) * sizeof(float) + (size_t)(n / 16) * sizeof(int16_t);
        break;
    default: b = (size_t)n * sizeof(float); break;
    }
    return mp_align_up(b, MP_ACT_ROW_ALIGN);
}

/* Symmetric 8-bit blocks of `blk` values with one scale each, and sums of
 * the codes per `sblk` values. Rounding is to nearest even (lrintf), which
 * the SIMD quantizers reproduce exactly. */
static void quant_q8(const float *x, int64_t n, uint8_t *row, int64_t blk, int64_t sblk) {
    int8_t *q = (int8_t *)row;
    float *d = (float *)(void *)(row + n);
    int16_t *s = (int16_t *)(void *)(row + n + (size_t)(n / blk) * sizeof(float));
    for (int64_t b = 0; b < n / blk; b++) {
        const float *xb = x + b * blk;
        float amax = 0;
        for (int64_t i = 0; i < blk; i++) amax = fmaxf(amax, fabsf(xb[i]));
        const float db = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
        d[b] = db;
        for (int64_t i = 0; i < blk; i++) q[b * blk + i] = (int8_t)lrintf(xb[i] * id);
    }
    for (int64_t g = 0; g < n / sblk; g++) {
        int sum = 0;
        for (int64_t i = 0; i < sblk; i++) sum += q[g * sblk + i];
        s[g] = (int16_t)sum;
    }
}

static void quant_q8_32(const float *x, int64_t n, uint8_t *row) {
    quant_q8(x, n, row, 32, 32);
}

static void quant_q8_k(const float *x, int64_t n, uint8_t *row) {
    quant_q8(x, n, row, MP_QK_K, 16);
}

static void quant_f32(const float *x, int64_t n, uint8_t *row) {
    memcpy(row, x, (size_t)n * sizeof *x);
}

/* --------------------------------------------------------- float types */

#define DOT_LANES 8

/* Eight partial sums in a fixed order: deterministic, and a shape the
 * compiler vectorises without reassociating. */
float mp_dot_f32_ref(const float *a, const float *b, int64_t n) {
    float acc[DOT_LANES] = {0};
    int64_t i = 0;
    for (; i + DOT_LANES <= n; i += DOT_LANES)
        for (int k = 0; k < DOT_LANES; k++) acc[k] += a[i + k] * b[i + k];
    for (int k = 0; i < n; i++, k++) acc[k] += a[i] * b[i];
    float s01 = acc[0] + acc[1], s23 = acc[2] + acc[3];
    float s45 = acc[4] + acc[5], s67 = acc[6] + acc[7];
    return (s01 + s23) + (s45 + s67);
}

static float dot_f16_ref(const float *a, const uint16_t *h, int64_t n) {
    float acc[DOT_LANES] = {0};
    for (int64_t i = 0; i < n; i++) acc[i % DOT_LANES] += a[i] * mp_f16_to_f32(h[i]);
    float s01 = acc[0] + acc[1], s23 = acc[2] + acc[3];
    float s45 = acc[4] + acc[5], s67 = acc[6] + acc[7];
    return (s01 + s23) + (s45 + s67);
}

static void wsum_f16_ref(float *o, const float *w, const uint16_t *v, size_t stride, int64_t n,
                        int64_t d) {
    for (int64_t i = 0; i < d; i++) o[i] = 0;
    for (int64_t p = 0; p < n; p++)
        for (int64_t i = 0; i < d; i++) o[i] += w[p] * mp_f16_to_f32(v[(size_t)p * stride + (size_t)i]);
}

static void wsum_f32_ref(float *o, const float *w, const float *v, size_t stride, int64_t n,
                        int64_t d) {
    for (int64_t i = 0; i < d; i++) o[i] = 0;
    for (int64_t p = 0; p < n; p++)
        for (int64_t i = 0; i < d; i++) o[i] += w[p] * v[(size_t)p * stride + (size_t)i];
}

static void glu_ref(int act, float *a, const float *g, const float *u, int64_t n, float gs,
                    float us) {
    for (int64_t i = 0; i < n; i++) a[i] = mp_act_apply((mp_act)act, g[i] * gs) * (u[i] * us);
}

static void softcap_ref(float *x, int64_t n, float cap) {
    const float inv = 1.0f / cap;
    for (int64_t i = 0; i < n; i++) x[i] = tanhf(x[i] * inv) * cap;
}

/* F16/BF16 rows are widened 256 values at a time (no row-sized scratch). */
#define WIDEN_CHUNK 256

static float dot_half(int type, const uint8_t *w, const float *x, int64_t n) {
    float buf[WIDEN_CHUNK];
    float sum = 0;
    for (int64_t i0 = 0; i0 < n; i0 += WIDEN_CHUNK) {
        const int64_t m = n - i0 < WIDEN_CHUNK ? n - i0 : WIDEN_CHUNK;
        for (int64_t i = 0; i < m; i++) {
            const uint16_t h = mp_load_u16(w + 2 * (i0 + i));
            buf[i] = type == MP_TYPE_F16 ? mp_f16_to_f32(h) : mp_bf16_to_f32(h);
        }
        sum += mp_dot_f32_ref(buf, x + i0, m);
    }
    return sum;
}

static void gemm_float(int type, int64_t n, const uint8_t *w, size_t ws, int64_t nr,
                       const uint8_t *a, size_t as, int64_t nt, float *y, int64_t ldy) {
    for (int64_t r = 0; r < nr; r++)
        for (int64_t t = 0; t < nt; t++) {
            const float *x = (const float *)(const void *)(a + (size_t)t * as);
            const uint8_t *wr = w + (size_t)r * ws;
            y[t * ldy + r] = type == MP_TYPE_F32
                                 ? mp_dot_f32_ref((const float *)(const void *)wr, x, n)
                                 : dot_half(type, wr, x, n);
        }
}

static void gemm_f32(int64_t n, const uint8_t *w, size_t ws, int64_t nr, const uint8_t *a,
                     size_t as, int64_t nt, float *y, int64_t ldy) {
    gemm_float(MP_TYPE_F32, n, w, ws, nr, a, as, nt, y, ldy);
}
static void gemm_f16(int64_t n, const uint8_t *w, size_t ws, int64_t nr, const uint8_t *a,
                     size_t as, int64_t nt, float *y, int64_t ldy) {
    gemm_float(MP_TYPE_F16, n, w, ws, nr, a, as, nt, y, ldy);
}
static void gemm_bf16(int64_t n, const uint8_t *w, size_t ws, int64_t nr, const uint8_t *a,
                      size_t as, int64_t nt, float *y, int64_t ldy) {
    gemm_float(MP_TYPE_BF16, n, w, ws, nr, a, as, nt, y, ldy);
}

/* ------------------------------------------------ 32-value block types */

static float f16_at(const uint8_t *p) {
    return mp_f16_to_f32(mp_load_u16(p));
}

/* One 32-value block: q[i] codes, value i = d q[i] + m. */
static void codes32(int type, const uint8_t *b, int8_t q[32], float *d, float *m) {
    *m = 0;
    switch (type) {
    case MP_TYPE_Q8_0:
        *d = f16_at(b);
        memcpy(q, b + MP_F16_BYTES, 32);
        break;
    case MP_TYPE_Q4_0:
    case MP_TYPE_Q4_1: {
        const int off = type == MP_TYPE_Q4_0 ? 8 : 0;
        const uint8_t *qs = b + (type == MP_TYPE_Q4_0 ? 1 : 2) * MP_F16_BYTES;
        *d = f16_at(b);
        if (type == MP_TYPE_Q4_1) *m = f16_at(b + MP_F16_BYTES);
        for (int j = 0; j < 16; j++) {
            q[j] = (int8_t)((qs[j] & 15) - off);
            q[j + 16] = (int8_t)((qs[j] >> 4) - off);
        }
        break;
    }
    case MP_TYPE_Q5_0:
    case MP_TYPE_Q5_1: {
        const int off = type == MP_TYPE_Q5_0 ? 16 : 0;
        const uint8_t *qh = b + (type == MP_TYPE_Q5_0 ? 1 : 2) * MP_F16_BYTES, *qs = qh + 4;
        const uint32_t h = mp_load_u32(qh);
        *d = f16_at(b);
        if (type == MP_TYPE_Q5_1) *m = f16_at(b + MP_F16_BYTES);
        for (int j = 0; j < 16; j++) {
            q[j] = (int8_t)(((qs[j] & 15) | (((h >> j) & 1) << 4)) - off);
            q[j + 16] = (int8_t)(((qs[j] >> 4) | (((h >> (j + 16)) & 1) << 4)) - off);
        }
        break;
    }
    default: { /* IQ4_NL, MXFP4: a 16-entry table */
        const int8_t *lut = type == MP_TYPE_IQ4_NL ? mp_kvalues_iq4nl : mp_kvalues_fp4;
        const uint8_t *qs = b + (type == MP_TYPE_IQ4_NL ? MP_F16_BYTES : 1);
        *d = type == MP_TYPE_IQ4_NL ? f16_at(b) : mp_e8m0_to_f32_half(b[0]);
        for (int j = 0; j < 16; j++) {
            q[j] = lut[qs[j] & 15];
            q[j + 16] = lut[qs[j] >> 4];
        }
        break;
    }
    }
}

static void gemm32(int type, int64_t n, const uint8_t *w, size_t ws, int64_t nr,
                   const uint8_t *a, size_t as, int64_t nt, float *y, int64_t ldy) {
    const size_t bb = mp_type_info(type)->type_size;
    const int64_t nb = n / 32;
    for (int64_t r = 0; r < nr; r++) {
        for (int64_t t = 0; t < nt; t++) {
            const uint8_t *ar = a + (size_t)t * as;
            const int8_t *qa = (const int8_t *)ar;
            const float *da = mp_act_d(ar, n);
            const int16_t *sa = mp_act_s(ar, n, 32);
            float sum = 0;
            for (int64_t b = 0; b < nb; b++) {
                int8_t q[32];
                float d, m;
                codes32(type, w + (size_t)r * ws + (size_t)b * bb, q, &d, &m);
                int32_t is = 0;
                for (int i = 0; i < 32; i++) is += q[i] * qa[b * 32 + i];
                sum += d * da[b] * (float)is + m * da[b] * (float)sa[b];
            }
            y[t * ldy + r] = sum;
        }
    }
}

#define GEMM32(name, type)                                                                      \
    static void name(int64_t n, const uint8_t *w, size_t ws, int64_t nr, const uint8_t *a,      \
                     size_t as, int64_t nt, float *y, int64_t ldy) {                            \
        gemm32(type, n, w, ws, nr, a, as, nt, y, ldy);                                          \
    }
GEMM32(gemm_q8_0, MP_TYPE_Q8_0)
GEMM32(gemm_q4_0, MP_TYPE_Q4_0)
GEMM32(gemm_q4_1, MP_TYPE_Q4_1)
GEMM32(gemm_q5_0, MP_TYPE_Q5_0)
GEMM32(gemm_q5_1, MP_TYPE_Q5_1)
GEMM32(gemm_iq4_nl, MP_TYPE_IQ4_NL)
GEMM32(gemm_mxfp4, MP_TYPE_MXFP4)

/* --------------------------------------------------- 256-value K types */

typedef struct kcodes {
    int8_t q[MP_QK_K];
    int16_t sc[MP_QK_K / 16]; /* integer scale of each 16 values */
    int16_t mn[MP_QK_K / 16]; /* integer min of each 16 values (0: none) */
    float d, dmin;
} kcodes;

/* Q4_K/Q5_K 6-bit scale and min of sub-block k (0..7). */
static void k4_scale_min(const uint8_t s[12], int k, int *sc, int *mn) {
    if (k < 4) {
        *sc = s[k] & 63;
        *mn = s[k + 4] & 63;
    } else {
        *sc = (s[k + 4] & 15) | ((s[k - 4] >> 6) << 4);
        *mn = (s[k + 4] >> 4) | ((s[k] >> 6) << 4);
    }
}

static void codes_k(int type, const uint8_t *b, kcodes *k) {
    memset(k->mn, 0, sizeof k->mn);
    k->dmin = 0;
    switch (type) {
    case MP_TYPE_Q2_K: {
        const uint8_t *qs = b + Q2K_QS;
        k->d = f16_at(b + Q2K_D);
        k->dmin = f16_at(b + Q2K_D + MP_F16_BYTES);
        for (int i = 0; i < MP_QK_K; i++) {
            const int h = i / 128, j = (i % 128) / 32, l = i % 32;
            k->q[i] = (int8_t)((qs[32 * h + l] >> (2 * j)) & 3);
        }
        for (int g = 0; g < 16; g++) {
            k->sc[g] = b[g] & 15;
            k->mn[g] = b[g] >> 4;
        }
        break;
    }
    case MP_TYPE_Q3_K: {
        const uint8_t *hmask = b, *qs = b + Q3K_QS, *s = b + Q3K_SCALES;
        k->d = f16_at(b + Q3K_D);
        for (int i = 0; i < MP_QK_K; i++) {
            const int h = i / 128, j = (i % 128) / 32, l = i % 32;
            const int lo = (qs[32 * h + l] >> (2 * j)) & 3;
            const int high = (hmask[l] >> (4 * h + j)) & 1;
            k->q[i] = (int8_t)(lo - (high ? 0 : 4));
        }
        for (int g = 0; g < 16; g++) {
            const int low = g < 8 ? (s[g] & 15) : (s[g - 8] >> 4);
            const int high = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
            k->sc[g] = (int16_t)((low | (high << 4)) - 32);
        }
        break;
    }
    case MP_TYPE_Q4_K:
    case MP_TYPE_Q5_K: {
        const uint8_t *qh = type == MP_TYPE_Q5_K ? b + Q5K_QH : NULL;
        const uint8_t *qs = b + (type == MP_TYPE_Q5_K ? Q5K_QS : Q4K_QS);
        k->d = f16_at(b);
        k->dmin = f16_at(b + MP_F16_BYTES);
        for (int sb = 0; sb < 8; sb++) {
            int sc, mn;
            k4_scale_min(b + Q45K_SCALES, sb, &sc, &mn);
            k->sc[2 * sb] = k->sc[2 * sb + 1] = (int16_t)sc;
            k->mn[2 * sb] = k->mn[2 * sb + 1] = (int16_t)mn;
            for (int l = 0; l < 32; l++) {
                const uint8_t byte = qs[32 * (sb / 2) + l];
                int q = sb % 2 ? byte >> 4 : byte & 15;
                if (qh) q |= ((qh[l] >> sb) & 1) << 4;
                k->q[32 * sb + l] = (int8_t)q;
            }
        }
        break;
    }
    case MP_TYPE_Q6_K: {
        const uint8_t *ql = b, *qh = b + Q6K_QH;
        k->d = f16_at(b + Q6K_D);
        for (int g = 0; g < 16; g++) k->sc[g] = (int8_t)b[Q6K_SCALES + g];
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                const uint8_t A = ql[64 * h + l], B = ql[64 * h + 32 + l], H = qh[32 * h + l];
                const int q[4] = {(A & 15) | ((H & 3) << 4), (B & 15) | (((H >> 2) & 3) << 4),
                                  (A >> 4) | (((H >> 4) & 3) << 4),
                                  (B >> 4) | (((H >> 6) & 3) << 4)};
                for (int r = 0; r < 4; r++) k->q[128 * h + 32 * r + l] = (int8_t)(q[r] - 32);
            }
        break;
    }
    default: { /* IQ4_XS */
        const uint16_t sh = mp_load_u16(b + MP_F16_BYTES);
        const uint8_t *sl = b + IQ4XS_SCALES_L, *qs = b + IQ4XS_QS;
        k->d = f16_at(b);
        for (int g = 0; g < 8; g++) {
            const int ls = ((sl[g / 2] >> (4 * (g % 2))) & 15) | (((sh >> (2 * g)) & 3) << 4);
            k->sc[2 * g] = k->sc[2 * g + 1] = (int16_t)(ls - 32);
            for (int j = 0; j < 16; j++) {
                k->q[32 * g + j] = mp_kvalues_iq4nl[qs[16 * g + j] & 15];
                k->q[32 * g + j + 16] = mp_kvalues_iq4nl[qs[16 * g + j] >> 4];
            }
        }
        break;
    }
    }
}

static void gemm_k(int type, int64_t n, const uint8_t *w, size_t ws, int64_t nr,
                   const uint8_t *a, size_t as, int64_t nt, float *y, int64_t ldy) {
    const size_t bb = mp_type_info(type)->type_size;
    const int64_t nb = n / MP_QK_K;
    kcodes k;
    for (int64_t r = 0; r < nr; r++) {
        for (int64_t t = 0; t < nt; t++) {
            const uint8_t *ar = a + (size_t)t * as;
            const int8_t *qa = (const int8_t *)ar;
            const float *da = mp_act_d(ar, n);
            const int16_t *sa = mp_act_s(ar, n, MP_QK_K);
            float sum = 0;
            for (int64_t b = 0; b < nb; b++) {
                codes_k(type, w + (size_t)r * ws + (size_t)b * bb, &k);
                int32_t is = 0, ms = 0;
                for (int g = 0; g < 16; g++) {
                    int32_t gs = 0;
                    for (int i = 0; i < 16; i++) gs += k.q[16 * g + i] * qa[b * MP_QK_K + 16 * g + i];
                    is += k.sc[g] * gs;
                    ms += k.mn[g] * sa[b * 16 + g];
                }
                sum += k.d * da[b] * (float)is - k.dmin * da[b] * (float)ms;
            }
            y[t * ldy + r] = sum;
        }
    }
}

#define GEMMK(name, type)                                                                       \
    static void name(int64_t n, const uint8_t *w, size_t ws, int64_t nr, const uint8_t *a,      \
                     size_t as, int64_t nt, float *y, int64_t ldy) {                            \
        gemm_k(type, n, w, ws, nr, a, as, nt, y, ldy);                                          \
    }
GEMMK(gemm_q2_k, MP_TYPE_Q2_K)
GEMMK(gemm_q3_k, MP_TYPE_Q3_K)
GEMMK(gemm_q4_k, MP_TYPE_Q4_K)
GEMMK(gemm_q5_k, MP_TYPE_Q5_K)
GEMMK(gemm_q6_k, MP_TYPE_Q6_K)
GEMMK(gemm_iq4_xs, MP_TYPE_IQ4_XS)

/* -------------------------------------------------------------- table */

mp_act_fmt mp_kern_act_fmt(int type) {
    switch (type) {
    case MP_TYPE_Q8_0: case MP_TYPE_Q4_0: case MP_TYPE_Q4_1: case MP_TYPE_Q5_0:
    case MP_TYPE_Q5_1: case MP_TYPE_IQ4_NL: case MP_TYPE_MXFP4:
        return MP_ACT_Q8_32;
    case MP_TYPE_Q2_K: case MP_TYPE_Q3_K: case MP_TYPE_Q4_K: case MP_TYPE_Q5_K:
    case MP_TYPE_Q6_K: case MP_TYPE_IQ4_XS:
        return MP_ACT_Q8_K;
    default:
        return MP_ACT_F32;
    }
}

void mp_kern_ref_fill(mp_kernels *k) {
    memset(k, 0, sizeof *k);
    k->name = "ref";
    k->quant[MP_ACT_F32] = quant_f32;
    k->quant[MP_ACT_Q8_32] = quant_q8_32;
    k->quant[MP_ACT_Q8_K] = quant_q8_k;
    for (int t = 0; t < MP_TYPE_COUNT; t++) k->act[t] = mp_kern_act_fmt(t);
    k->gemm[MP_TYPE_F32] = gemm_f32;
    k->gemm[MP_TYPE_F16] = gemm_f16;
    k->gemm[MP_TYPE_BF16] = gemm_bf16;
    k->gemm[MP_TYPE_Q8_0] = gemm_q8_0;
    k->gemm[MP_TYPE_Q4_0] = gemm_q4_0;
    k->gemm[MP_TYPE_Q4_1] = gemm_q4_1;
    k->gemm[MP_TYPE_Q5_0] = gemm_q5_0;
    k->gemm[MP_TYPE_Q5_1] = gemm_q5_1;
    k->gemm[MP_TYPE_IQ4_NL] = gemm_iq4_nl;
    k->gemm[MP_TYPE_MXFP4] = gemm_mxfp4;
    k->gemm[MP_TYPE_Q2_K] = gemm_q2_k;
    k->gemm[MP_TYPE_Q3_K] = gemm_q3_k;
    k->gemm[MP_TYPE_Q4_K] = gemm_q4_k;
    k->gemm[MP_TYPE_Q5_K] = gemm_q5_k;
    k->gemm[MP_TYPE_Q6_K] = gemm_q6_k;
    k->gemm[MP_TYPE_IQ4_XS] = gemm_iq4_xs;
    k->dot_f32 = mp_dot_f32_ref;
    k->dot_f16 = dot_f16_ref;
    k->wsum_f16 = wsum_f16_ref;
    k->wsum_f32 = wsum_f32_ref;
    k->glu = glu_ref;
    k->softcap = softcap_ref;
}

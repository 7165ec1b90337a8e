/* dequant_ref.c — scalar reference dequantizers: one small function per block
 * type, each decoding one block into floats, plus the plain float/int types.
 * They are meant to be obviously correct, not fast; faster variants must match
 * them. Layouts and formulas: shared docs, gemma4-gguf-spec.md sections 2.2-2.8.
 * The IQ1/IQ2/IQ3 codebook families are not decoded (they need ggml's large
 * grid tables); mp_dequantize_row reports MP_ERR_UNSUPPORTED for them. */
#include <inttypes.h>
#include <math.h>

#include "quant/quant.h"
#include "util/util.h"

const int8_t mp_kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};
const int8_t mp_kvalues_fp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

float mp_e8m0_to_f32_half(uint8_t e) {
    /* ldexpf is exact here: every result is a power of two >= 2^-128, which
     * f32 represents (as a subnormal below 2^-126). */
    return ldexpf(1.0f, (int)e - 128);
}

/* UE4M3: unsigned, 4 exponent bits (bias 7), 3 mantissa bits, no inf; ggml
 * treats 0x7F (the NaN code) as 0. */
#define UE4M3_NAN 0x7F
#define UE4M3_BIAS 7
#define UE4M3_MANT_BITS 3
#define UE4M3_SUB_EXP (-9) /* subnormal: M * 2^(1 - 7 - 3) */

float mp_ue4m3_to_f32_half(uint8_t u) {
    if (u == 0 || u == UE4M3_NAN) return 0.0f;
    int exp = (u >> UE4M3_MANT_BITS) & 15;
    int mant = u & ((1 << UE4M3_MANT_BITS) - 1);
    float v = exp == 0 ? ldexpf((float)mant, UE4M3_SUB_EXP)
                       : ldexpf(1.0f + (float)mant / (1 << UE4M3_MANT_BITS), exp - UE4M3_BIAS);
    return 0.5f * v;
}

static float load_f16(const uint8_t *p) {
    return mp_f16_to_f32(mp_load_u16(p));
}

/* ---- shared block pieces ------------------------------------------------ */

/* The nibble layout shared by IQ4_NL, MXFP4, NVFP4 sub-blocks and IQ4_XS
 * groups (Q4_0 too, with an offset instead of a table): `half` bytes hold
 * elements j (low nibble) and j + half (high). */
static void nibbles_lut(const uint8_t *qs, int half, const int8_t lut[16], float d, float *y) {
    for (int j = 0; j < half; j++) {
        y[j] = d * (float)lut[qs[j] & 15];
        y[j + half] = d * (float)lut[qs[j] >> 4];
    }
}

#define Q5_QH_BYTES 4 /* the fifth bits of 32 elements */

/* Q5_0/Q5_1: 5-bit codes from the nibbles plus one bit of the 32-bit qh. */
static void q5_codes(const uint8_t *qh, const uint8_t *qs, uint8_t q[MP_QK4_0]) {
    uint32_t h = mp_load_u32(qh);
    for (int j = 0; j < MP_QK4_0 / 2; j++) {
        q[j] = (uint8_t)((qs[j] & 15) | (((h >> j) & 1) << 4));
        q[j + 16] = (uint8_t)((qs[j] >> 4) | (((h >> (j + 16)) & 1) << 4));
    }
}

/* Q2_K/Q3_K: 256 two-bit codes in output order. Output i = 128h + 32j + l
 * sits at bits 2j of qs[32h + l]. */
static void k_2bit_codes(const uint8_t *qs, uint8_t q[MP_QK_K]) {
    for (int i = 0; i < MP_QK_K; i++) {
        int h = i / 128, j = (i % 128) / 32, l = i % 32;
        q[i] = (qs[32 * h + l] >> (2 * j)) & 3;
    }
}

/* Q4_K/Q5_K: 6-bit scale and min of sub-block k (0..7) from the 12 packed
 * bytes (ggml get_scale_min_k4). */
static void k4_scale_min(const uint8_t s[12], int k, int *sc, int *mn) {
    if (k < 4) {
        *sc = s[k] & 63;
        *mn = s[k + 4] & 63;
    } else {
        *sc = (s[k + 4] & 15) | ((s[k - 4] >> 6) << 4);
        *mn = (s[k + 4] >> 4) | ((s[k] >> 6) << 4);
    }
}

/* Q3_K: 16 signed 6-bit scales from 12 bytes: low nibbles in bytes 0..7 (both
 * halves), top two bits in bytes 8..11. */
static void q3k_scales(const uint8_t s[12], int sc[16]) {
    for (int k = 0; k < 16; k++) {
        int low = k < 8 ? (s[k] & 15) : (s[k - 8] >> 4);
        int high = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
        sc[k] = (low | (high << 4)) - 32;
    }
}

static void i8_scaled(const uint8_t *qs, int n, float d, float *y) {
    for (int j = 0; j < n; j++) y[j] = d * (float)(int8_t)qs[j];
}

/* ---- legacy 32-element quants (spec 2.3) -------------------------------- */

static void dq_q4_0(const uint8_t *b, float *y) {
    float d = load_f16(b);
    const uint8_t *qs = b + MP_F16_BYTES;
    for (int j = 0; j < MP_QK4_0 / 2; j++) {
        y[j] = (float)((qs[j] & 15) - 8) * d;
        y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
    }
}

static void dq_q4_1(const uint8_t *b, float *y) {
    float d = load_f16(b), m = load_f16(b + MP_F16_BYTES);
    const uint8_t *qs = b + 2 * MP_F16_BYTES;
    for (int j = 0; j < MP_QK4_0 / 2; j++) {
        y[j] = (float)(qs[j] & 15) * d + m;
        y[j + 16] = (float)(qs[j] >> 4) * d + m;
    }
}

static void dq_q5_0(const uint8_t *b, float *y) {
    uint8_t q[MP_QK4_0];
    float d = load_f16(b);
    const uint8_t *qh = b + MP_F16_BYTES;
    q5_codes(qh, qh + Q5_QH_BYTES, q);
    for (int j = 0; j < MP_QK4_0; j++) y[j] = (float)(q[j] - 16) * d;
}

static void dq_q5_1(const uint8_t *b, float *y) {
    uint8_t q[MP_QK4_0];
    float d = load_f16(b), m = load_f16(b + MP_F16_BYTES);
    const uint8_t *qh = b + 2 * MP_F16_BYTES;
    q5_codes(qh, qh + Q5_QH_BYTES, q);
    for (int j = 0; j < MP_QK4_0; j++) y[j] = (float)q[j] * d + m;
}

static void dq_q8_0(const uint8_t *b, float *y) {
    i8_scaled(b + MP_F16_BYTES, MP_QK4_0, load_f16(b), y);
}

static void dq_q8_1(const uint8_t *b, float *y) {
    /* the second f16 (s = d * sum(qs)) only serves dot products */
    i8_scaled(b + 2 * MP_F16_BYTES, MP_QK4_0, load_f16(b), y);
}

static void dq_iq4_nl(const uint8_t *b, float *y) {
    nibbles_lut(b + MP_F16_BYTES, MP_QK4_NL / 2, mp_kvalues_iq4nl, load_f16(b), y);
}

/* ---- FP4 (spec 2.4) ------------------------------------------------------ */

static void dq_mxfp4(const uint8_t *b, float *y) {
    /* one exponent byte, then the nibbles */
    nibbles_lut(b + 1, MP_QK_MXFP4 / 2, mp_kvalues_fp4, mp_e8m0_to_f32_half(b[0]), y);
}

static void dq_nvfp4(const uint8_t *b, float *y) {
    enum { N_SUB = MP_QK_NVFP4 / MP_QK_NVFP4_SUB, SUB_BYTES = MP_QK_NVFP4_SUB / 2 };
    const uint8_t *qs = b + N_SUB;
    for (int s = 0; s < N_SUB; s++)
        nibbles_lut(qs + s * SUB_BYTES, SUB_BYTES, mp_kvalues_fp4, mp_ue4m3_to_f32_half(b[s]),
                    y + s * MP_QK_NVFP4_SUB);
}

/* ---- K-quants (spec 2.5) ------------------------------------------------- */


static void dq_q2_k(const uint8_t *b, float *y) {
    const uint8_t *scales = b, *qs = b + Q2K_QS;
    float d = load_f16(b + Q2K_D), dmin = load_f16(b + Q2K_D + MP_F16_BYTES);
    uint8_t q[MP_QK_K];
    k_2bit_codes(qs, q);
    for (int i = 0; i < MP_QK_K; i++) {
        uint8_t sc = scales[i / 16];
        y[i] = d * (float)(sc & 15) * (float)q[i] - dmin * (float)(sc >> 4);
    }
}

static void dq_q3_k(const uint8_t *b, float *y) {
    const uint8_t *hmask = b, *qs = b + Q3K_QS, *scales = b + Q3K_SCALES;
    float d = load_f16(b + Q3K_D);
    uint8_t q[MP_QK_K];
    int sc[16];
    k_2bit_codes(qs, q);
    q3k_scales(scales, sc);
    for (int i = 0; i < MP_QK_K; i++) {
        int h = i / 128, j = (i % 128) / 32, l = i % 32;
        /* a clear hmask bit means the code is offset by -4 */
        int high = (hmask[l] >> (4 * h + j)) & 1;
        y[i] = d * (float)sc[i / 16] * (float)(q[i] - (high ? 0 : 4));
    }
}

/* Q4_K and Q5_K differ only in the fifth bit from qh (NULL for Q4_K). */
static void dq_q45_k(const uint8_t *b, const uint8_t *qh, const uint8_t *qs, float *y) {
    float d = load_f16(b), dmin = load_f16(b + MP_F16_BYTES);
    const uint8_t *scales = b + Q45K_SCALES;
    for (int c = 0; c < 4; c++) {
        for (int half = 0; half < 2; half++) {
            int k = 2 * c + half, sc, mn;
            k4_scale_min(scales, k, &sc, &mn);
            float ds = d * (float)sc, dm = dmin * (float)mn;
            for (int l = 0; l < 32; l++) {
                int q = half ? qs[32 * c + l] >> 4 : qs[32 * c + l] & 15;
                if (qh) q += ((qh[l] >> k) & 1) << 4;
                y[32 * k + l] = ds * (float)q - dm;
            }
        }
    }
}

static void dq_q4_k(const uint8_t *b, float *y) {
    dq_q45_k(b, NULL, b + Q4K_QS, y);
}

static void dq_q5_k(const uint8_t *b, float *y) {
    dq_q45_k(b, b + Q5K_QH, b + Q5K_QS, y);
}

static void dq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + Q6K_QH;
    const int8_t *scales = (const int8_t *)(b + Q6K_SCALES);
    float d = load_f16(b + Q6K_D);
    for (int h = 0; h < 2; h++) {
        for (int l = 0; l < 32; l++) {
            uint8_t A = ql[64 * h + l], B = ql[64 * h + 32 + l], H = qh[32 * h + l];
            int q[4] = {(A & 15) | ((H & 3) << 4), (B & 15) | (((H >> 2) & 3) << 4),
                        (A >> 4) | (((H >> 4) & 3) << 4), (B >> 4) | (((H >> 6) & 3) << 4)};
            for (int r = 0; r < 4; r++) {
                int i = 128 * h + 32 * r + l;
                y[i] = d * (float)scales[i / 16] * (float)(q[r] - 32);
            }
        }
    }
}

static void dq_q8_k(const uint8_t *b, float *y) {
    /* the trailing bsums only serve dot products */
    i8_scaled(b + Q8K_QS, MP_QK_K, mp_load_f32(b), y);
}

static void dq_iq4_xs(const uint8_t *b, float *y) {
    float d = load_f16(b);
    uint16_t scales_h = mp_load_u16(b + MP_F16_BYTES);
    const uint8_t *scales_l = b + IQ4XS_SCALES_L, *qs = b + IQ4XS_QS;
    for (int g = 0; g < MP_QK_K / 32; g++) {
        int ls = ((scales_l[g / 2] >> (4 * (g % 2))) & 15) | (((scales_h >> (2 * g)) & 3) << 4);
        nibbles_lut(qs + 16 * g, 16, mp_kvalues_iq4nl, d * (float)(ls - 32), y + 32 * g);
    }
}

/* ---- ternary and 1/2-bit types (spec 2.6, 2.7) --------------------------- */

/* Trit n (0..4) of a base-3 packed byte: multiplying by 3^n moves trit n to
 * the top of the byte's fixed-point fraction, and *3 >> 8 reads it (0..2). */
static int trit(uint8_t byte, int n) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    uint8_t shifted = (uint8_t)(byte * pow3[n]);
    return (shifted * 3) >> 8;
}

/* `nbytes` bytes each holding `ntrits` trits: output 32n + m style order,
 * trit index outer, byte inner. */
static float *tq1_run(const uint8_t *bytes, int nbytes, int ntrits, float d, float *y) {
    for (int n = 0; n < ntrits; n++)
        for (int m = 0; m < nbytes; m++) *y++ = (float)(trit(bytes[m], n) - 1) * d;
    return y;
}

static void dq_tq1_0(const uint8_t *b, float *y) {
    /* qs[48]: a run of 32 bytes then one of 16, 5 trits each; qh[4]: 4 trits each */
    enum { RUN0 = 32, RUN1 = 16, QH = RUN0 + RUN1, QH_BYTES = 4, D = QH + QH_BYTES };
    const uint8_t *qs = b, *qh = b + QH;
    float d = load_f16(b + D);
    y = tq1_run(qs, RUN0, 5, d, y);
    y = tq1_run(qs + RUN0, RUN1, 5, d, y);
    tq1_run(qh, QH_BYTES, 4, d, y);
}

static void dq_tq2_0(const uint8_t *b, float *y) {
    float d = load_f16(b + MP_QK_K / 4);
    for (int i = 0; i < MP_QK_K; i++) {
        int g = i / 128, l = (i % 128) / 32, m = i % 32;
        y[i] = (float)(((b[32 * g + m] >> (2 * l)) & 3) - 1) * d;
    }
}

static void dq_q1_0(const uint8_t *b, float *y) {
    float d = load_f16(b);
    const uint8_t *qs = b + MP_F16_BYTES;
    for (int j = 0; j < MP_QK1_0; j++) y[j] = ((qs[j / 8] >> (j % 8)) & 1) ? d : -d;
}

static void dq_q2_0(const uint8_t *b, float *y) {
    float d = load_f16(b);
    const uint8_t *qs = b + MP_F16_BYTES;
    for (int j = 0; j < MP_QK2_0; j++) y[j] = (float)(((qs[j / 4] >> (2 * (j % 4))) & 3) - 1) * d;
}

/* ---- plain types (spec 2.2), one element per "block" ---------------------- */

static void dq_f32(const uint8_t *b, float *y) { *y = mp_load_f32(b); }
static void dq_f16(const uint8_t *b, float *y) { *y = load_f16(b); }
static void dq_bf16(const uint8_t *b, float *y) { *y = mp_bf16_to_f32(mp_load_u16(b)); }
static void dq_i8(const uint8_t *b, float *y) { *y = (float)(int8_t)b[0]; }
static void dq_i16(const uint8_t *b, float *y) { *y = (float)(int16_t)mp_load_u16(b); }
static void dq_i32(const uint8_t *b, float *y) { *y = (float)(int32_t)mp_load_u32(b); }
static void dq_i64(const uint8_t *b, float *y) { *y = (float)(int64_t)mp_load_u64(b); }

static void dq_f64(const uint8_t *b, float *y) {
    uint64_t u = mp_load_u64(b);
    double v;
    memcpy(&v, &u, sizeof v);
    *y = (float)v; /* out of f32 range becomes +-inf (IEEE conversion) */
}

typedef void (*block_decoder)(const uint8_t *block, float *y);

/* NULL where the type has no decoder; must agree with can_dequant in types.c. */
static block_decoder decoder_for(int type) {
    switch (type) {
    case MP_TYPE_F32: return dq_f32;
    case MP_TYPE_F16: return dq_f16;
    case MP_TYPE_BF16: return dq_bf16;
    case MP_TYPE_F64: return dq_f64;
    case MP_TYPE_I8: return dq_i8;
    case MP_TYPE_I16: return dq_i16;
    case MP_TYPE_I32: return dq_i32;
    case MP_TYPE_I64: return dq_i64;
    case MP_TYPE_Q4_0: return dq_q4_0;
    case MP_TYPE_Q4_1: return dq_q4_1;
    case MP_TYPE_Q5_0: return dq_q5_0;
    case MP_TYPE_Q5_1: return dq_q5_1;
    case MP_TYPE_Q8_0: return dq_q8_0;
    case MP_TYPE_Q8_1: return dq_q8_1;
    case MP_TYPE_Q2_K: return dq_q2_k;
    case MP_TYPE_Q3_K: return dq_q3_k;
    case MP_TYPE_Q4_K: return dq_q4_k;
    case MP_TYPE_Q5_K: return dq_q5_k;
    case MP_TYPE_Q6_K: return dq_q6_k;
    case MP_TYPE_Q8_K: return dq_q8_k;
    case MP_TYPE_IQ4_NL: return dq_iq4_nl;
    case MP_TYPE_IQ4_XS: return dq_iq4_xs;
    case MP_TYPE_MXFP4: return dq_mxfp4;
    case MP_TYPE_NVFP4: return dq_nvfp4;
    case MP_TYPE_TQ1_0: return dq_tq1_0;
    case MP_TYPE_TQ2_0: return dq_tq2_0;
    case MP_TYPE_Q1_0: return dq_q1_0;
    case MP_TYPE_Q2_0: return dq_q2_0;
    default: return NULL;
    }
}

mp_status mp_dequantize_row(int type, const void *src, float *dst, int64_t n, mp_err *err) {
    const mp_type_traits *t = mp_type_info(type);
    if (!t) return mp_err_set(err, MP_ERR_ARG, "tensor type id %d is not a valid ggml type", type);
    block_decoder decode = decoder_for(type);
    if (!decode)
        return mp_err_set(err, MP_ERR_UNSUPPORTED,
                          "tensor type %s (id %d): dequantization not supported yet "
                          "(IQ1/IQ2/IQ3 families)", t->name, type);
    if (n < 0 || n % t->blck_size != 0)
        return mp_err_set(err, MP_ERR_ARG,
                          "dequantize %s: %" PRId64 " elements is not a non-negative multiple "
                          "of the block size %" PRId64, t->name, n, t->blck_size);
    if (n > 0 && (!src || !dst))
        return mp_err_set(err, MP_ERR_ARG, "dequantize %s: NULL %s buffer", t->name,
                          src ? "destination" : "source");
    const uint8_t *b = src;
    for (int64_t i = 0, nb = n / t->blck_size; i < nb; i++) {
        decode(b, dst);
        b += t->type_size;
        dst += t->blck_size;
    }
    return MP_OK;
}

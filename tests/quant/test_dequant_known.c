/* test_dequant_known.c — hand-built blocks for every type mp_dequantize_row
 * supports. Each test writes the bytes field by field from the layouts in
 * gemma4-gguf-spec.md section 2 (scales chosen as exact binary16 patterns, so
 * every expected value is exact), computes the expected floats here (walking
 * the storage where the library walks the outputs), and spot-checks a few
 * values worked out by hand. Also: block stride on multi-block rows, the
 * unsupported IQ families and argument errors. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "testutil.h"

#define QK_K 256 /* K-quant super-block */

/* binary16 bit patterns of the scales used below */
#define H_1 0x3C00
#define H_2 0x4000
#define H_3 0x4200
#define H_0_5 0x3800
#define H_0_25 0x3400
#define H_0_75 0x3A00
#define H_1_5 0x3E00
#define H_M0_5 0xB800
#define H_M1 0xBC00
#define H_M2 0xC000
#define H_INF 0x7C00

/* Spec tables, transcribed independently of the library. */
static const int K4NL[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                             1,    13,   25,  38,  53,  69,  89,  113};
static const int KFP4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static int lo(int x) { return x & 15; }
static int hi(int x) { return x >> 4; }
static int bit(uint32_t x, int k) { return (int)((x >> k) & 1); }

/* Decodes n elements of `type` and compares with want exactly. */
static void expect_row(int type, const uint8_t *src, const float *want, int n, int line) {
    float got[4 * QK_K];
    mp_err err = {0};
    mp_status st = mp_dequantize_row(type, src, got, n, &err);
    CHECK_MSG(st == MP_OK, "line %d: %s: %s", line, mp_type_name(type), err.msg);
    if (st != MP_OK) return;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            if (bad++ < 4)
                fprintf(stderr, "line %d: %s: y[%d] = %.9g, expected %.9g\n", line,
                        mp_type_name(type), i, got[i], want[i]);
        }
    }
    CHECK_MSG(bad == 0, "line %d: %s: %d of %d values differ", line, mp_type_name(type), bad, n);
}

/* Decodes and checks single elements worked out by hand. */
static float one(int type, const uint8_t *src, int n, int i) {
    float got[4 * QK_K];
    if (mp_dequantize_row(type, src, got, n, NULL) != MP_OK) return NAN;
    return got[i];
}

#define EXPECT_ROW(type, src, want, n) expect_row((type), (src), (want), (n), __LINE__)

static void test_plain(void) {
    uint8_t b[32];
    float w[4];
    put32(b, 0x3FC00000u); /* 1.5f */
    put32(b + 4, 0x80000000u);
    w[0] = 1.5f, w[1] = -0.0f;
    EXPECT_ROW(MP_TYPE_F32, b, w, 2);

    put16(b, H_1), put16(b + 2, H_M2), put16(b + 4, 0x0001);
    w[0] = 1.0f, w[1] = -2.0f, w[2] = 0x1p-24f;
    EXPECT_ROW(MP_TYPE_F16, b, w, 3);

    put16(b, 0x3F80), put16(b + 2, 0xC040);
    w[0] = 1.0f, w[1] = -3.0f;
    EXPECT_ROW(MP_TYPE_BF16, b, w, 2);

    put64(b, 0x3FF8000000000000ull); /* 1.5 */
    put64(b + 8, 0x7E37E43C8800759Cull); /* 1e300: beyond f32 */
    put64(b + 16, 0x3FB999999999999Aull); /* 0.1 */
    w[0] = 1.5f, w[1] = INFINITY, w[2] = 0.1f;
    EXPECT_ROW(MP_TYPE_F64, b, w, 3);

    b[0] = 0x80, b[1] = 0x7F, b[2] = 0xFF;
    w[0] = -128.0f, w[1] = 127.0f, w[2] = -1.0f;
    EXPECT_ROW(MP_TYPE_I8, b, w, 3);

    put16(b, 0x8000), put16(b + 2, 0x7FFF), put16(b + 4, 0xFFFE);
    w[0] = -32768.0f, w[1] = 32767.0f, w[2] = -2.0f;
    EXPECT_ROW(MP_TYPE_I16, b, w, 3);

    put32(b, 0x80000000u), put32(b + 4, 1000000u);
    w[0] = -2147483648.0f, w[1] = 1e6f;
    EXPECT_ROW(MP_TYPE_I32, b, w, 2);

    put64(b, UINT64_MAX), put64(b + 8, 1ull << 40);
    w[0] = -1.0f, w[1] = 0x1p40f;
    EXPECT_ROW(MP_TYPE_I64, b, w, 2);
}

/* ---- 32-element legacy quants -------------------------------------------- */

static void test_q4_0(void) {
    uint8_t b[2 * 18];
    float w[64];
    put16(b, H_0_5);
    put16(b + 18, H_M2);
    for (int j = 0; j < 16; j++) {
        b[2 + j] = (uint8_t)(j | ((15 - j) << 4));
        b[20 + j] = (uint8_t)((j * 5 % 16) | ((j * 3 % 16) << 4));
        w[j] = (float)(j - 8) * 0.5f;
        w[j + 16] = (float)(15 - j - 8) * 0.5f;
        w[32 + j] = (float)(j * 5 % 16 - 8) * -2.0f;
        w[48 + j] = (float)(j * 3 % 16 - 8) * -2.0f;
    }
    EXPECT_ROW(MP_TYPE_Q4_0, b, w, 64);
    CHECK(one(MP_TYPE_Q4_0, b, 32, 0) == -4.0f); /* code 0: (0 - 8) * 0.5 */
    CHECK(one(MP_TYPE_Q4_0, b, 32, 16) == 3.5f); /* code 15 in the high nibble */
}

static void test_q4_1(void) {
    uint8_t b[20];
    float w[32];
    put16(b, H_0_25);
    put16(b + 2, H_M1);
    for (int j = 0; j < 16; j++) {
        b[4 + j] = (uint8_t)(j | ((15 - j) << 4));
        w[j] = (float)j * 0.25f - 1.0f;
        w[j + 16] = (float)(15 - j) * 0.25f - 1.0f;
    }
    EXPECT_ROW(MP_TYPE_Q4_1, b, w, 32);
    CHECK(one(MP_TYPE_Q4_1, b, 32, 0) == -1.0f);
    CHECK(one(MP_TYPE_Q4_1, b, 32, 16) == 2.75f);
}

static const uint8_t Q5_QH[4] = {0x71, 0x0F, 0xC3, 0xA5}; /* h = 0xA5C30F71 */

static void fill_q5(uint8_t *qh, uint8_t *qs, int q[32]) {
    uint32_t h = 0xA5C30F71u;
    memcpy(qh, Q5_QH, 4);
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)(((j * 7) & 15) | (((j * 11) & 15) << 4));
        q[j] = lo(qs[j]) + 16 * bit(h, j);
        q[j + 16] = hi(qs[j]) + 16 * bit(h, j + 16);
    }
}

static void test_q5(void) {
    uint8_t b0[22], b1[24];
    int q[32];
    float w[32];
    put16(b0, H_1);
    fill_q5(b0 + 2, b0 + 6, q);
    for (int j = 0; j < 32; j++) w[j] = (float)(q[j] - 16);
    EXPECT_ROW(MP_TYPE_Q5_0, b0, w, 32);
    /* element 1: low nibble 7, bit 1 of 0x71 clear -> 7 - 16 */
    CHECK(one(MP_TYPE_Q5_0, b0, 32, 1) == -9.0f);
    /* element 17: high nibble 11, bit 17 (bit 1 of 0xC3) set -> 27 - 16 */
    CHECK(one(MP_TYPE_Q5_0, b0, 32, 17) == 11.0f);

    put16(b1, H_0_5);
    put16(b1 + 2, H_3);
    fill_q5(b1 + 4, b1 + 8, q);
    for (int j = 0; j < 32; j++) w[j] = (float)q[j] * 0.5f + 3.0f;
    EXPECT_ROW(MP_TYPE_Q5_1, b1, w, 32);
    CHECK(one(MP_TYPE_Q5_1, b1, 32, 17) == 16.5f); /* 27 * 0.5 + 3 */
}

static void test_q8(void) {
    uint8_t b0[34], b1[36];
    float w0[32], w1[32];
    put16(b0, H_0_25);
    put16(b1, H_0_5);
    put16(b1 + 2, H_INF); /* s is not used for decoding */
    for (int j = 0; j < 32; j++) {
        int8_t v0 = (int8_t)(j * 8 - 128), v1 = (int8_t)(j * 9 - 100);
        b0[2 + j] = (uint8_t)v0;
        b1[4 + j] = (uint8_t)v1;
        w0[j] = (float)v0 * 0.25f;
        w1[j] = (float)v1 * 0.5f;
    }
    EXPECT_ROW(MP_TYPE_Q8_0, b0, w0, 32);
    EXPECT_ROW(MP_TYPE_Q8_1, b1, w1, 32);
    CHECK(one(MP_TYPE_Q8_0, b0, 32, 0) == -32.0f);
    CHECK(one(MP_TYPE_Q8_0, b0, 32, 31) == 30.0f);
}

static void test_iq4_nl(void) {
    uint8_t b[18];
    float w[32];
    put16(b, H_2);
    for (int j = 0; j < 16; j++) {
        b[2 + j] = (uint8_t)(j | ((15 - j) << 4));
        w[j] = 2.0f * (float)K4NL[j];
        w[j + 16] = 2.0f * (float)K4NL[15 - j];
    }
    EXPECT_ROW(MP_TYPE_IQ4_NL, b, w, 32);
    CHECK(one(MP_TYPE_IQ4_NL, b, 32, 0) == -254.0f);
    CHECK(one(MP_TYPE_IQ4_NL, b, 32, 16) == 226.0f);
}

/* ---- FP4 ------------------------------------------------------------------ */

static void test_mxfp4(void) {
    enum { NB = 5 };
    static const uint8_t e[NB] = {128, 130, 1, 0, 254};
    const float scale[NB] = {1.0f, 4.0f, 0x1p-127f, 0x1p-128f, 0x1p126f}; /* 2^(e-128) */
    uint8_t b[NB * 17];
    float w[NB * 32];
    for (int k = 0; k < NB; k++) {
        b[17 * k] = e[k];
        for (int j = 0; j < 16; j++) {
            int c0 = (j + 3 * k) & 15, c1 = 15 - j;
            b[17 * k + 1 + j] = (uint8_t)(c0 | (c1 << 4));
            w[32 * k + j] = (float)KFP4[c0] * scale[k];
            w[32 * k + 16 + j] = (float)KFP4[c1] * scale[k];
        }
    }
    EXPECT_ROW(MP_TYPE_MXFP4, b, w, NB * 32);
    CHECK(one(MP_TYPE_MXFP4, b, 32, 7) == 12.0f);   /* code 7 = E2M1 6.0, doubled */
    CHECK(one(MP_TYPE_MXFP4, b, 32, 16) == -12.0f); /* code 15 */
    CHECK(one(MP_TYPE_MXFP4, b + 17, 32, 2) == 24.0f); /* code 5 (6) * 2^2 */
}

static void test_nvfp4(void) {
    /* UE4M3 codes and half their value: 0x38 = 1.0, 0x3C = 1.5, 0x01 = 2^-9
     * (subnormal), 0x7F = NaN code -> 0, 0x00 -> 0, 0x7E = 448 (largest),
     * 0x40 = 2.0, 0x07 = 7 * 2^-9. */
    static const uint8_t dcode[8] = {0x38, 0x3C, 0x01, 0x7F, 0x00, 0x7E, 0x40, 0x07};
    const float half[8] = {0.5f, 0.75f, 0x1p-10f, 0.0f, 0.0f, 224.0f, 1.0f, 7 * 0x1p-10f};
    uint8_t b[2 * 36];
    float w[128];
    for (int k = 0; k < 2; k++) {
        uint8_t *blk = b + 36 * k;
        for (int s = 0; s < 4; s++) blk[s] = dcode[4 * k + s];
        for (int i = 0; i < 32; i++) blk[4 + i] = (uint8_t)(i * 13 + 2 + k);
        for (int s = 0; s < 4; s++) {
            for (int j = 0; j < 8; j++) {
                int byte = blk[4 + 8 * s + j];
                w[64 * k + 16 * s + j] = (float)KFP4[lo(byte)] * half[4 * k + s];
                w[64 * k + 16 * s + 8 + j] = (float)KFP4[hi(byte)] * half[4 * k + s];
            }
        }
    }
    EXPECT_ROW(MP_TYPE_NVFP4, b, w, 128);
    CHECK(one(MP_TYPE_NVFP4, b, 64, 0) == 1.0f);   /* code 2 (1.0, doubled) * 0.5 */
    CHECK(one(MP_TYPE_NVFP4, b, 64, 8) == 0.0f);   /* high nibble of 0x02 */
    CHECK(one(MP_TYPE_NVFP4, b, 64, 16) == -1.5f); /* qs[8] = 0x6A: code 10 (-2) * 0.75 */
}

/* ---- K-quants --------------------------------------------------------------- */

/* Output index of the 2-bit field at shift 2s of byte b of Q2_K/Q3_K qs. */
static int k2_index(int b, int s) {
    return 128 * (b / 32) + 32 * s + b % 32;
}

static void test_q2_k(void) {
    uint8_t b[84];
    float w[QK_K];
    for (int k = 0; k < 16; k++) b[k] = (uint8_t)((k & 15) | (((k * 3) & 15) << 4));
    for (int i = 0; i < 64; i++) b[16 + i] = (uint8_t)(i * 37 + 11);
    put16(b + 80, H_0_5);
    put16(b + 82, H_0_25);
    for (int byte = 0; byte < 64; byte++) {
        for (int s = 0; s < 4; s++) {
            int i = k2_index(byte, s), k = i / 16;
            int code = (b[16 + byte] >> (2 * s)) & 3;
            w[i] = 0.5f * (float)(k & 15) * (float)code - 0.25f * (float)((k * 3) & 15);
        }
    }
    EXPECT_ROW(MP_TYPE_Q2_K, b, w, QK_K);
    /* y[32]: qs[0] = 11, bits 2-3 = 2; sub-block 2: scale 2, min 6 */
    CHECK(one(MP_TYPE_Q2_K, b, QK_K, 32) == 0.5f * 2 * 2 - 0.25f * 6);
}

static void test_q3_k(void) {
    static const int sc[16] = {-32, 31, -1, 0, 5, -17, 16, 15, 1, -2, 30, -31, 7, -8, 12, -13};
    uint8_t b[110] = {0};
    float w[QK_K];
    uint8_t *hmask = b, *qs = b + 32, *S = b + 96;
    for (int l = 0; l < 32; l++) hmask[l] = (uint8_t)(l * 29 + 3);
    for (int i = 0; i < 64; i++) qs[i] = (uint8_t)(i * 53 + 7);
    /* pack the 6-bit raw scales (sc + 32): low nibbles of 0..7 then 8..15 in
     * S[0..7], top two bits in S[8..11] */
    for (int k = 0; k < 16; k++) {
        int raw = sc[k] + 32;
        if (k < 8) S[k] |= (uint8_t)(raw & 15);
        else S[k - 8] |= (uint8_t)((raw & 15) << 4);
        S[8 + k % 4] |= (uint8_t)((raw >> 4) << (2 * (k / 4)));
    }
    put16(b + 108, H_0_5);
    for (int byte = 0; byte < 64; byte++) {
        for (int s = 0; s < 4; s++) {
            int i = k2_index(byte, s);
            int code = (qs[byte] >> (2 * s)) & 3;
            int hb = bit(hmask[byte % 32], 4 * (byte / 32) + s);
            w[i] = 0.5f * (float)sc[i / 16] * (float)(code - (hb ? 0 : 4));
        }
    }
    EXPECT_ROW(MP_TYPE_Q3_K, b, w, QK_K);
    /* y[0]: code 3 (qs[0] = 7), hmask[0] bit 0 set -> 3; scale -32 */
    CHECK(one(MP_TYPE_Q3_K, b, QK_K, 0) == -48.0f);
    /* y[32]: code 1, hmask[0] = 3 bit 1 set -> 1; scale sc[2] = -1 */
    CHECK(one(MP_TYPE_Q3_K, b, QK_K, 32) == -0.5f);
    /* y[64]: code 0, hmask bit 2 clear -> -4; scale sc[4] = 5 */
    CHECK(one(MP_TYPE_Q3_K, b, QK_K, 64) == -10.0f);
}

static const int K4_SC[8] = {1, 63, 17, 32, 48, 5, 33, 62};
static const int K4_MN[8] = {0, 7, 63, 20, 16, 45, 2, 31};

/* Q4_K/Q5_K scale packing: 6-bit scales/mins of sub-blocks 0..3 in the low
 * bits of S[0..3] / S[4..7], sub-blocks 4..7 split into nibbles in S[8..11]
 * and their top two bits in bits 6-7 of S[0..7]. */
static void pack_k4_scales(uint8_t S[12]) {
    for (int k = 0; k < 4; k++) {
        S[k] = (uint8_t)(K4_SC[k] | ((K4_SC[k + 4] >> 4) << 6));
        S[k + 4] = (uint8_t)(K4_MN[k] | ((K4_MN[k + 4] >> 4) << 6));
        S[k + 8] = (uint8_t)((K4_SC[k + 4] & 15) | ((K4_MN[k + 4] & 15) << 4));
    }
}

static void test_q4_k_q5_k(void) {
    uint8_t b4[144], b5[176];
    float w4[QK_K], w5[QK_K];
    put16(b4, H_0_5), put16(b4 + 2, H_0_25);
    put16(b5, H_0_5), put16(b5 + 2, H_0_25);
    pack_k4_scales(b4 + 4);
    pack_k4_scales(b5 + 4);
    uint8_t *qs4 = b4 + 16, *qh5 = b5 + 16, *qs5 = b5 + 48;
    for (int i = 0; i < 128; i++) {
        qs4[i] = (uint8_t)(i * 7 + 3);
        qs5[i] = (uint8_t)(i * 19 + 5);
    }
    for (int l = 0; l < 32; l++) qh5[l] = (uint8_t)(l * 13 + 5);
    for (int c = 0; c < 4; c++) {
        for (int l = 0; l < 32; l++) {
            for (int h = 0; h < 2; h++) {
                int k = 2 * c + h, i = 64 * c + 32 * h + l;
                int q4 = h ? hi(qs4[32 * c + l]) : lo(qs4[32 * c + l]);
                int q5 = (h ? hi(qs5[32 * c + l]) : lo(qs5[32 * c + l])) + 16 * bit(qh5[l], k);
                w4[i] = 0.5f * (float)K4_SC[k] * (float)q4 - 0.25f * (float)K4_MN[k];
                w5[i] = 0.5f * (float)K4_SC[k] * (float)q5 - 0.25f * (float)K4_MN[k];
            }
        }
    }
    EXPECT_ROW(MP_TYPE_Q4_K, b4, w4, QK_K);
    EXPECT_ROW(MP_TYPE_Q5_K, b5, w5, QK_K);
    CHECK(one(MP_TYPE_Q4_K, b4, QK_K, 0) == 1.5f);    /* lo(3) * 0.5 * 1 - 0 */
    CHECK(one(MP_TYPE_Q4_K, b4, QK_K, 32) == -1.75f); /* hi(3) = 0; min 7 * 0.25 */
    /* y[133]: sub-block 4, qs[69] = 0xE6 -> 6; scale 48, min 16 */
    CHECK(one(MP_TYPE_Q4_K, b4, QK_K, 133) == 140.0f);
    /* Q5_K y[0]: qs[0] = 5, qh[0] = 5 bit 0 set -> 21; scale 1, min 0 */
    CHECK(one(MP_TYPE_Q5_K, b5, QK_K, 0) == 10.5f);
}

static void test_q6_k(void) {
    static const int8_t sc[16] = {-128, 127, -1, 1, 2, -3, 50, -60, 7, 8, -9, 10, 64, -64, 3, -5};
    uint8_t b[210];
    float w[QK_K];
    uint8_t *ql = b, *qh = b + 128;
    for (int i = 0; i < 128; i++) ql[i] = (uint8_t)(i * 11 + 1);
    for (int i = 0; i < 64; i++) qh[i] = (uint8_t)(i * 23 + 9);
    memcpy(b + 192, sc, 16);
    put16(b + 208, H_0_25);
    for (int h = 0; h < 2; h++) {
        for (int l = 0; l < 32; l++) {
            int A = ql[64 * h + l], B = ql[64 * h + 32 + l], H = qh[32 * h + l];
            int q[4] = {lo(A) | (H & 3) << 4, lo(B) | ((H >> 2) & 3) << 4,
                        hi(A) | ((H >> 4) & 3) << 4, hi(B) | ((H >> 6) & 3) << 4};
            for (int r = 0; r < 4; r++) {
                int i = 128 * h + 32 * r + l;
                w[i] = 0.25f * (float)sc[i / 16] * (float)(q[r] - 32);
            }
        }
    }
    EXPECT_ROW(MP_TYPE_Q6_K, b, w, QK_K);
    /* y[0]: lo(ql[0] = 1) | (qh[0] = 9) & 3 = 1 -> 17 - 32 = -15; scale -128 */
    CHECK(one(MP_TYPE_Q6_K, b, QK_K, 0) == 480.0f);
}

static void test_q8_k(void) {
    uint8_t b[292];
    float w[QK_K];
    put32(b, 0x3E000000u); /* f32 0.125 */
    for (int i = 0; i < QK_K; i++) {
        b[4 + i] = (uint8_t)(int8_t)(i - 128);
        w[i] = (float)(i - 128) * 0.125f;
    }
    memset(b + 4 + QK_K, 0xFF, 32); /* bsums are not used for decoding */
    EXPECT_ROW(MP_TYPE_Q8_K, b, w, QK_K);
}

static void test_iq4_xs(void) {
    static const int ls[8] = {0, 63, 32, 31, 17, 48, 1, 40};
    uint8_t b[136] = {0};
    float w[QK_K];
    put16(b, H_0_5);
    uint16_t scales_h = 0;
    for (int g = 0; g < 8; g++) {
        scales_h |= (uint16_t)((ls[g] >> 4) << (2 * g));
        b[4 + g / 2] |= (uint8_t)((ls[g] & 15) << (4 * (g % 2)));
    }
    put16(b + 2, scales_h);
    for (int i = 0; i < 128; i++) b[8 + i] = (uint8_t)(i * 7 + 1);
    for (int g = 0; g < 8; g++) {
        float dl = 0.5f * (float)(ls[g] - 32);
        for (int j = 0; j < 16; j++) {
            w[32 * g + j] = dl * (float)K4NL[lo(b[8 + 16 * g + j])];
            w[32 * g + 16 + j] = dl * (float)K4NL[hi(b[8 + 16 * g + j])];
        }
    }
    EXPECT_ROW(MP_TYPE_IQ4_XS, b, w, QK_K);
    /* y[0]: qs[0] = 1 -> K4NL[1] = -104; ls 0 -> 0.5 * -32 */
    CHECK(one(MP_TYPE_IQ4_XS, b, QK_K, 0) == 1664.0f);
}

/* ---- ternary, Q1_0, Q2_0 ---------------------------------------------------- */

/* Base-3 packing as ggml's TQ1_0 quantizer does it: trits t0..t4 as the digits
 * of v = t0*81 + t1*27 + t2*9 + t3*3 + t4, stored as ceil(v * 256 / 243). */
static uint8_t pack_trits(const int t[5]) {
    int v = 0;
    for (int n = 0; n < 5; n++) v = v * 3 + t[n];
    return (uint8_t)((v * 256 + 242) / 243);
}

static int tq_trit(int i) {
    return (i * 7 + i / 3) % 3;
}

static void test_tq1_0(void) {
    uint8_t b[54] = {0};
    float w[QK_K];
    /* qs[0..31]: trit n of byte m is output 32n + m; qs[32..47]: output
     * 160 + 16n + m; qh[0..3]: 4 trits, output 240 + 4n + m (5th trit 0) */
    for (int m = 0; m < 48; m++) {
        int t[5];
        for (int n = 0; n < 5; n++) t[n] = tq_trit(m < 32 ? 32 * n + m : 160 + 16 * n + (m - 32));
        b[m] = pack_trits(t);
    }
    for (int m = 0; m < 4; m++) {
        int t[5] = {0};
        for (int n = 0; n < 4; n++) t[n] = tq_trit(240 + 4 * n + m);
        b[48 + m] = pack_trits(t);
    }
    put16(b + 52, H_0_5);
    for (int i = 0; i < QK_K; i++) w[i] = (float)(tq_trit(i) - 1) * 0.5f;
    EXPECT_ROW(MP_TYPE_TQ1_0, b, w, QK_K);

    /* byte 0 is five zero trits (-d each); 0xFF five twos (+d each) */
    memset(b, 0, 52);
    b[0] = 0xFF;
    CHECK(one(MP_TYPE_TQ1_0, b, QK_K, 1) == -0.5f);
    for (int n = 0; n < 5; n++) CHECK(one(MP_TYPE_TQ1_0, b, QK_K, 32 * n) == 0.5f);
}

static void test_tq2_0(void) {
    uint8_t b[66];
    float w[QK_K];
    for (int i = 0; i < 64; i++) b[i] = (uint8_t)(i * 45 + 17);
    put16(b + 64, H_M0_5);
    for (int byte = 0; byte < 64; byte++)
        for (int s = 0; s < 4; s++)
            w[k2_index(byte, s)] = (float)(((b[byte] >> (2 * s)) & 3) - 1) * -0.5f;
    EXPECT_ROW(MP_TYPE_TQ2_0, b, w, QK_K);
    /* y[0]: b[0] = 17 = 0b00010001, code 1 -> 0; y[64]: code 1 -> 0; y[32]: 0 -> +0.5 */
    CHECK(one(MP_TYPE_TQ2_0, b, QK_K, 32) == 0.5f);
}

static void test_q1_0_q2_0(void) {
    uint8_t b1[18], b2[18];
    float w1[128], w2[64];
    put16(b1, H_0_75);
    put16(b2, H_1_5);
    for (int i = 0; i < 16; i++) {
        b1[2 + i] = (uint8_t)(i * 29 + 101);
        b2[2 + i] = (uint8_t)(i * 61 + 7);
    }
    for (int j = 0; j < 128; j++) w1[j] = bit(b1[2 + j / 8], j % 8) ? 0.75f : -0.75f;
    for (int j = 0; j < 64; j++)
        w2[j] = (float)(((b2[2 + j / 4] >> (2 * (j % 4))) & 3) - 1) * 1.5f;
    EXPECT_ROW(MP_TYPE_Q1_0, b1, w1, 128);
    EXPECT_ROW(MP_TYPE_Q2_0, b2, w2, 64);
    CHECK(one(MP_TYPE_Q1_0, b1, 128, 0) == 0.75f);  /* 101 = 0b1100101: bit 0 set */
    CHECK(one(MP_TYPE_Q1_0, b1, 128, 1) == -0.75f); /* bit 1 clear */
    CHECK(one(MP_TYPE_Q2_0, b2, 64, 0) == 3.0f);    /* 7: code 3 -> +2d */
    CHECK(one(MP_TYPE_Q2_0, b2, 64, 1) == 0.0f);    /* code 1 -> 0 */
}

/* ---- table-wide checks ------------------------------------------------------- */

/* Several blocks decoded in one call equal each block decoded alone (catches
 * a wrong stride), and the table's can_dequant matches what the call does. */
static void test_all_types(void) {
    enum { NB = 3 };
    static uint8_t src[NB * 300];
    static float whole[NB * QK_K], part[QK_K];
    uint64_t rng = 12345;
    for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)(mp_test_rand(&rng) >> 56);
    for (int id = 0; id < MP_TYPE_COUNT; id++) {
        const mp_type_traits *t = mp_type_info(id);
        if (!t) continue;
        mp_err err = {0};
        mp_status st = mp_dequantize_row(id, src, whole, NB * t->blck_size, &err);
        if (!t->can_dequant) {
            CHECK_STATUS(MP_ERR_UNSUPPORTED, st, &err);
            CHECK_MSG(strstr(err.msg, t->name) != NULL, "%s", err.msg);
            continue;
        }
        CHECK_STATUS(MP_OK, st, &err);
        int bad = 0;
        for (int k = 0; k < NB; k++) {
            CHECK_STATUS(MP_OK, mp_dequantize_row(id, src + k * t->type_size, part,
                                                  t->blck_size, &err), &err);
            /* memcmp: random f16 fields may decode to NaN */
            bad += memcmp(part, whole + k * t->blck_size, (size_t)t->blck_size * 4) != 0;
        }
        CHECK_MSG(bad == 0, "%s: multi-block row differs from single blocks", t->name);
    }
}

static void test_errors(void) {
    uint8_t src[300] = {0};
    float dst[QK_K];
    mp_err err = {0};
    CHECK_STATUS(MP_ERR_UNSUPPORTED, mp_dequantize_row(MP_TYPE_IQ2_XXS, src, dst, QK_K, &err),
                 &err);
    CHECK(strstr(err.msg, "IQ2_XXS") && strstr(err.msg, "16"));
    CHECK_STATUS(MP_ERR_UNSUPPORTED, mp_dequantize_row(MP_TYPE_IQ1_M, src, dst, QK_K, &err),
                 &err);
    CHECK_STATUS(MP_ERR_ARG, mp_dequantize_row(4, src, dst, 32, &err), &err);
    CHECK(strstr(err.msg, "4") != NULL);
    CHECK_STATUS(MP_ERR_ARG, mp_dequantize_row(-1, src, dst, 32, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_dequantize_row(MP_TYPE_COUNT, src, dst, 32, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_dequantize_row(38, src, dst, 32, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_dequantize_row(MP_TYPE_Q4_K, src, dst, 100, &err), &err);
    CHECK(strstr(err.msg, "Q4_K") && strstr(err.msg, "100"));
    CHECK_STATUS(MP_ERR_ARG, mp_dequantize_row(MP_TYPE_Q8_0, src, dst, -32, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_dequantize_row(MP_TYPE_Q8_0, NULL, dst, 32, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_dequantize_row(MP_TYPE_Q8_0, src, NULL, 32, &err), &err);
    CHECK_STATUS(MP_OK, mp_dequantize_row(MP_TYPE_Q8_0, NULL, NULL, 0, &err), &err);
    CHECK_INT(MP_ERR_ARG, mp_dequantize_row(4, src, dst, 32, NULL)); /* err optional */
}

int main(void) {
    test_plain();
    test_q4_0();
    test_q4_1();
    test_q5();
    test_q8();
    test_iq4_nl();
    test_mxfp4();
    test_nvfp4();
    test_q2_k();
    test_q3_k();
    test_q4_k_q5_k();
    test_q6_k();
    test_q8_k();
    test_iq4_xs();
    test_tq1_0();
    test_tq2_0();
    test_q1_0_q2_0();
    test_all_types();
    test_errors();
    return mp_test_end("test_dequant_known");
}

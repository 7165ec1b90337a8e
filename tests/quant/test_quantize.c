/* test_quantize.c — mp_quantize_row: F32/F16/BF16/Q8_0 round trips on random
 * data within their error bounds, Q8_0 codes against round(x/d) computed in
 * double, hand-worked Q8_0 blocks (ties away from zero), all-zero blocks, and
 * the errors (unsupported types, bad sizes, non-finite input).
 * Pass a seed as argv[1] to repeat a run. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define QK8_0 32        /* Q8_0 block: elements */
#define Q8_0_BYTES 34   /* f16 d + 32 int8 codes */
#define MAX_N (32 * 37) /* largest row tested: 37 blocks, a prime count */
#define F16_REL_ERR 0x1p-11 /* half an ulp of an 11-bit significand */
#define BF16_REL_ERR 0x1p-8 /* half an ulp of an 8-bit significand */

static uint8_t qbuf[MAX_N * 8];
static float xs[MAX_N], ys[MAX_N];

static void random_row(uint64_t *rng, float *x, int n, float scale) {
    for (int i = 0; i < n; i++) x[i] = mp_test_randf(rng) * scale;
}

static bool roundtrip(int type, const float *x, float *y, int n) {
    mp_err err = {0};
    mp_status st = mp_quantize_row(type, x, qbuf, n, &err);
    CHECK_STATUS(MP_OK, st, &err);
    if (st != MP_OK) return false;
    st = mp_dequantize_row(type, qbuf, y, n, &err);
    CHECK_STATUS(MP_OK, st, &err);
    return st == MP_OK;
}

/* F32 is exact; F16/BF16 within half an ulp of the value (relative), or half
 * the smallest subnormal step for F16 values below its normal range. */
static void check_float_types(uint64_t *rng, int n) {
    random_row(rng, xs, n, 100.0f);
    xs[0] = 1e-6f; /* an f16 subnormal */
    if (roundtrip(MP_TYPE_F32, xs, ys, n)) CHECK(memcmp(xs, ys, (size_t)n * 4) == 0);

    if (roundtrip(MP_TYPE_F16, xs, ys, n)) {
        int bad = 0;
        for (int i = 0; i < n; i++) {
            double a = fabs((double)xs[i]);
            double tol = a >= 0x1p-14 ? a * F16_REL_ERR : 0x1p-25;
            if (fabs((double)ys[i] - xs[i]) > tol) bad++;
            if ((qbuf[2 * i] | qbuf[2 * i + 1] << 8) != mp_f32_to_f16(xs[i])) bad++; /* LE bits */
        }
        CHECK_MSG(bad == 0, "F16 n=%d: %d elements off", n, bad);
    }
    if (roundtrip(MP_TYPE_BF16, xs, ys, n)) {
        int bad = 0;
        for (int i = 0; i < n; i++)
            if (fabs((double)ys[i] - xs[i]) > fabs((double)xs[i]) * BF16_REL_ERR) bad++;
        CHECK_MSG(bad == 0, "BF16 n=%d: %d elements off", n, bad);
    }
}

/* Q8_0: per block, the stored d is amax/127 rounded to f16, every code is
 * round(x/d) (to within the float reciprocal), and so |y - x| is at most half
 * a step plus the f16 error of d times the largest code. */
static void check_q8_0(uint64_t *rng, int n, float scale) {
    random_row(rng, xs, n, scale);
    if (!roundtrip(MP_TYPE_Q8_0, xs, ys, n)) return;
    int bad_d = 0, bad_q = 0, bad_y = 0;
    double worst = 0;
    for (int b = 0; b < n / QK8_0; b++) {
        const float *x = xs + b * QK8_0;
        const uint8_t *blk = qbuf + b * Q8_0_BYTES;
        float amax = 0;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        double d = (double)amax / 127;
        uint16_t dbits = (uint16_t)(blk[0] | blk[1] << 8);
        if (dbits != mp_f32_to_f16(amax / 127.0f)) bad_d++;
        double d16 = mp_f16_to_f32(dbits);
        double bound = d * (0.5 + 1e-5) + 127 * fabs(d16 - d); /* 1e-5: x * (1/d) vs x / d */
        for (int j = 0; j < QK8_0; j++) {
            int q = (int8_t)blk[2 + j];
            if (fabs(q - x[j] / d) > 0.5 + 1e-5) bad_q++;
            double e = fabs((double)ys[b * QK8_0 + j] - x[j]);
            if (e > bound) bad_y++;
            if (e / d > worst) worst = e / d;
        }
    }
    CHECK_MSG(bad_d == 0 && bad_q == 0 && bad_y == 0,
              "Q8_0 n=%d scale=%g: %d scales, %d codes, %d values off", n, scale, bad_d, bad_q,
              bad_y);
    /* the bound is not vacuous: on random data some element is near d/2 */
    if (n >= MAX_N) CHECK_MSG(worst > 0.4, "Q8_0 worst error %.3f d", worst);
}

static void check_q8_0_known(void) {
    float x[QK8_0] = {0};
    /* amax 127 gives d = 1 exactly: codes are x rounded half away from zero */
    x[0] = 127.0f, x[1] = 2.5f, x[2] = -2.5f, x[3] = 0.5f, x[4] = -0.5f;
    x[5] = 1.49f, x[6] = -127.0f, x[7] = 3.5f;
    static const int8_t want[8] = {127, 3, -3, 1, -1, 1, -127, 4};
    mp_err err = {0};
    CHECK_STATUS(MP_OK, mp_quantize_row(MP_TYPE_Q8_0, x, qbuf, QK8_0, &err), &err);
    CHECK_INT(0x00, qbuf[0]); /* d = 1.0: f16 0x3C00, little-endian */
    CHECK_INT(0x3C, qbuf[1]);
    for (int j = 0; j < 8; j++) CHECK_INT(want[j], (int8_t)qbuf[2 + j]);
    for (int j = 8; j < QK8_0; j++) CHECK_INT(0, qbuf[2 + j]);

    /* x = j - 16: amax 16, d = 16/127 -> f16 0x3008 (0.1259765625); codes
     * round((j - 16) * 127 / 16) */
    for (int j = 0; j < QK8_0; j++) x[j] = (float)(j - 16);
    CHECK_STATUS(MP_OK, mp_quantize_row(MP_TYPE_Q8_0, x, qbuf, QK8_0, &err), &err);
    CHECK_INT(0x08, qbuf[0]);
    CHECK_INT(0x30, qbuf[1]);
    CHECK_INT(-127, (int8_t)qbuf[2 + 0]);  /* -16 * 7.9375 */
    CHECK_INT(-119, (int8_t)qbuf[2 + 1]);  /* -15 * 7.9375 = -119.06 */
    CHECK_INT(-8, (int8_t)qbuf[2 + 15]);   /* -7.9375 */
    CHECK_INT(0, (int8_t)qbuf[2 + 16]);
    CHECK_INT(119, (int8_t)qbuf[2 + 31]);
    CHECK_STATUS(MP_OK, mp_dequantize_row(MP_TYPE_Q8_0, qbuf, ys, QK8_0, &err), &err);
    CHECK(ys[17] == 8 * 0.1259765625f);
}

static void check_zero_blocks(uint64_t *rng) {
    mp_err err = {0};
    int n = 3 * QK8_0;
    random_row(rng, xs, n, 1.0f);
    memset(xs + QK8_0, 0, QK8_0 * sizeof xs[0]); /* middle block all zero */
    memset(qbuf, 0xAB, sizeof qbuf);
    CHECK_STATUS(MP_OK, mp_quantize_row(MP_TYPE_Q8_0, xs, qbuf, n, &err), &err);
    int nonzero = 0;
    for (int i = 0; i < Q8_0_BYTES; i++) nonzero += qbuf[Q8_0_BYTES + i] != 0;
    CHECK_INT(0, nonzero); /* d = +0 and every code 0 */
    CHECK_STATUS(MP_OK, mp_dequantize_row(MP_TYPE_Q8_0, qbuf, ys, n, &err), &err);
    int bad = 0;
    for (int i = QK8_0; i < 2 * QK8_0; i++) bad += ys[i] != 0.0f;
    CHECK_INT(0, bad);
    CHECK(qbuf[3 * Q8_0_BYTES] == 0xAB); /* nothing written past the row */
    /* -0.0 everywhere is a zero block too */
    for (int i = 0; i < QK8_0; i++) xs[i] = -0.0f;
    CHECK_STATUS(MP_OK, mp_quantize_row(MP_TYPE_Q8_0, xs, qbuf, QK8_0, &err), &err);
    CHECK_INT(0, qbuf[0] | qbuf[1]);
}

/* Types the table says it can encode succeed; the others are refused. */
static void check_table_agrees(void) {
    memset(xs, 0, sizeof xs);
    for (int id = 0; id < MP_TYPE_COUNT; id++) {
        const mp_type_traits *t = mp_type_info(id);
        if (!t) continue;
        mp_err err = {0};
        mp_status st = mp_quantize_row(id, xs, qbuf, t->blck_size, &err);
        if (t->can_quant) {
            CHECK_STATUS(MP_OK, st, &err);
        } else {
            CHECK_STATUS(MP_ERR_UNSUPPORTED, st, &err);
            CHECK_MSG(strstr(err.msg, t->name) != NULL, "%s", err.msg);
        }
    }
}

static void check_errors(void) {
    mp_err err = {0};
    float x[QK8_0] = {0};
    CHECK_STATUS(MP_ERR_UNSUPPORTED, mp_quantize_row(MP_TYPE_Q4_K, x, qbuf, 256, &err), &err);
    CHECK(strstr(err.msg, "Q4_K") != NULL);
    CHECK_STATUS(MP_ERR_ARG, mp_quantize_row(5, x, qbuf, 32, &err), &err);
    CHECK(strstr(err.msg, "5") != NULL);
    CHECK_STATUS(MP_ERR_ARG, mp_quantize_row(-3, x, qbuf, 32, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_quantize_row(MP_TYPE_Q8_0, x, qbuf, 33, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_quantize_row(MP_TYPE_Q8_0, x, qbuf, -32, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_quantize_row(MP_TYPE_F16, x, qbuf, -1, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_quantize_row(MP_TYPE_Q8_0, NULL, qbuf, 32, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_quantize_row(MP_TYPE_Q8_0, x, NULL, 32, &err), &err);
    CHECK_STATUS(MP_OK, mp_quantize_row(MP_TYPE_Q8_0, NULL, NULL, 0, &err), &err);

    /* Q8_0 refuses inf/NaN and writes nothing */
    memset(qbuf, 0xAB, Q8_0_BYTES);
    x[31] = NAN;
    CHECK_STATUS(MP_ERR_ARG, mp_quantize_row(MP_TYPE_Q8_0, x, qbuf, 32, &err), &err);
    CHECK(strstr(err.msg, "31") != NULL);
    x[31] = -INFINITY;
    CHECK_STATUS(MP_ERR_ARG, mp_quantize_row(MP_TYPE_Q8_0, x, qbuf, 32, &err), &err);
    int touched = 0;
    for (int i = 0; i < Q8_0_BYTES; i++) touched += qbuf[i] != 0xAB;
    CHECK_INT(0, touched);

    /* plain float types carry inf and NaN */
    x[0] = INFINITY, x[1] = NAN;
    CHECK_STATUS(MP_OK, mp_quantize_row(MP_TYPE_F16, x, qbuf, 2, &err), &err);
    CHECK_INT(0x00, qbuf[0]);
    CHECK_INT(0x7C, qbuf[1]);
    CHECK((qbuf[3] & 0x7C) == 0x7C && ((qbuf[3] & 3) | qbuf[2]) != 0);
    CHECK_STATUS(MP_OK, mp_quantize_row(MP_TYPE_BF16, x, qbuf, 2, &err), &err);
    CHECK_INT(0x80, qbuf[0]);
    CHECK_INT(0x7F, qbuf[1]);
}

int main(int argc, char **argv) {
    uint64_t rng = mp_test_seed(argc, argv);
    static const int sizes[] = {32, 64, MAX_N};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        check_float_types(&rng, sizes[i]);
        check_q8_0(&rng, sizes[i], 1.0f);
        check_q8_0(&rng, sizes[i], 300.0f);
    }
    check_q8_0_known();
    check_zero_blocks(&rng);
    check_table_agrees();
    check_errors();
    return mp_test_end("test_quantize");
}

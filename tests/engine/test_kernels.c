/* test_kernels.c — the matmul kernels on random data of awkward sizes.
 *
 * 1. The scalar reference's integer kernels against a float computation:
 *    dequantized weights dotted (in double) with the dequantized 8-bit
 *    activations must match to float rounding, so the integer decoding of
 *    every block type is right.
 * 2. Every SIMD level this CPU runs against the reference: activation rows
 *    bit-identical, tile kernels equal up to float summation order, on row
 *    and token counts that leave every edge tile size, and with ldy > nr so
 *    that writes outside the tile show up. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "testutil.h"
#include "util/util.h"

static uint64_t rng;

static void store_f16(uint8_t *p, float v) {
    mp_store_u16(p, mp_f32_to_f16(v));
}

/* A scale field between 2^-7 and 2^-5, either sign when `sign`. */
static float rand_scale(bool sign) {
    float v = ldexpf(1.0f + 0.5f * mp_test_randf(&rng), -6);
    return sign && mp_test_randf(&rng) < 0 ? -v : v;
}

/* Random but valid blocks: random code bytes, finite scales. */
static void rand_row(int type, uint8_t *row, int64_t n) {
    const mp_type_traits *tt = mp_type_info(type);
    const size_t bytes = (size_t)(n / tt->blck_size) * tt->type_size;
    for (size_t i = 0; i < bytes; i++) row[i] = (uint8_t)mp_test_rand(&rng);
    if (type == MP_TYPE_F32) {
        for (int64_t i = 0; i < n; i++) {
            float v = mp_test_randf(&rng);
            memcpy(row + 4 * i, &v, 4);
        }
        return;
    }
    if (type == MP_TYPE_F16 || type == MP_TYPE_BF16) {
        for (int64_t i = 0; i < n; i++) {
            float v = mp_test_randf(&rng);
            mp_store_u16(row + 2 * i, type == MP_TYPE_F16 ? mp_f32_to_f16(v) : mp_f32_to_bf16(v));
        }
        return;
    }
    for (int64_t b = 0; b < n / tt->blck_size; b++) {
        uint8_t *p = row + (size_t)b * tt->type_size;
        switch (type) {
        case MP_TYPE_Q4_1: case MP_TYPE_Q5_1:
            store_f16(p, rand_scale(true));
            store_f16(p + 2, rand_scale(true));
            break;
        case MP_TYPE_MXFP4: p[0] = (uint8_t)(120 + mp_test_rand(&rng) % 8); break;
        case MP_TYPE_Q2_K:
            store_f16(p + Q2K_D, rand_scale(false));
            store_f16(p + Q2K_D + 2, rand_scale(false));
            break;
        case MP_TYPE_Q3_K: store_f16(p + Q3K_D, rand_scale(true)); break;
        case MP_TYPE_Q4_K: case MP_TYPE_Q5_K:
            store_f16(p, rand_scale(false));
            store_f16(p + 2, rand_scale(false));
            break;
        case MP_TYPE_Q6_K: store_f16(p + Q6K_D, rand_scale(true)); break;
        default: store_f16(p, rand_scale(true)); break; /* d first */
        }
    }
}

/* Activations with a spread of magnitudes per block, and some zero blocks
 * (scale 0). */
static void rand_x(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const int64_t blk = i / 32;
        const float mag = blk % 7 == 5 ? 0.0f : ldexpf(1.0f, (int)(blk % 5) - 2);
        x[i] = mag * mp_test_randf(&rng);
    }
}

/* Dequantized activation value i of one converted row. */
static double act_value(mp_act_fmt f, const uint8_t *row, int64_t n, int64_t i) {
    if (f == MP_ACT_F32) return ((const float *)(const void *)row)[i];
    const int64_t blk = f == MP_ACT_Q8_32 ? 32 : MP_QK_K;
    return (double)mp_act_d(row, n)[i / blk] * (double)((const int8_t *)row)[i];
}

typedef struct shape {
    int64_t n, nr, nt;
} shape;

static void check_type(int type, const mp_kernels *ref, const mp_kernels *const *lv, int nlv) {
    const mp_type_traits *tt = mp_type_info(type);
    const mp_act_fmt f = ref->act[type];
    const int64_t blk = tt->blck_size > 1 ? tt->blck_size : 1;
    const shape shapes[] = {
        {blk == 1 ? 7 : blk, 1, 1},         {blk == 1 ? 33 : 3 * blk, 5, 3},
        {blk == 1 ? 1000 : 5 * blk, 17, 7}, {blk == 1 ? 129 : 37 * blk / (blk > 32 ? 8 : 1), 9, 6},
        {blk == 1 ? 64 : 2 * blk, 4, 9},
    };
    for (size_t si = 0; si < MP_ARRAY_LEN(shapes); si++) {
        const int64_t n = shapes[si].n - shapes[si].n % (f == MP_ACT_Q8_K ? MP_QK_K : f == MP_ACT_Q8_32 ? 32 : 1);
        const int64_t nr = shapes[si].nr, nt = shapes[si].nt, ldy = nr + 3;
        const size_t ws = (size_t)(n / blk) * tt->type_size, as = mp_act_row_bytes(f, n);
        uint8_t *w = malloc(ws * (size_t)nr), *a = malloc(as * (size_t)nt), *a2 = malloc(as * (size_t)nt);
        float *x = malloc(sizeof(float) * (size_t)(n * nt)), *wf = malloc(sizeof(float) * (size_t)n);
        float *yr = malloc(sizeof(float) * (size_t)(ldy * nt)), *ys = malloc(sizeof(float) * (size_t)(ldy * nt));
        for (int64_t r = 0; r < nr; r++) rand_row(type, w + (size_t)r * ws, n);
        rand_x(x, n * nt);
        memset(a, 0, as * (size_t)nt);
        for (int64_t t = 0; t < nt; t++) ref->quant[f](x + t * n, n, a + (size_t)t * as);
        for (int64_t i = 0; i < ldy * nt; i++) yr[i] = -7.0f;
        ref->gemm[type](n, w, ws, nr, a, as, nt, yr, ldy);
        /* 1: the reference against dequantized weights x dequantized codes */
        double worst = 0;
        for (int64_t r = 0; r < nr; r++) {
            CHECK(mp_dequantize_row(type, w + (size_t)r * ws, wf, n, NULL) == MP_OK);
            for (int64_t t = 0; t < nt; t++) {
                double s = 0, mag = 0;
                for (int64_t i = 0; i < n; i++) {
                    const double av = act_value(f, a + (size_t)t * as, n, i);
                    s += (double)wf[i] * av;
                    mag += fabs((double)wf[i] * av);
                }
                const double e = fabs(s - yr[t * ldy + r]) / (mag > 0 ? mag : 1);
                worst = e > worst ? e : worst;
            }
        }
        CHECK_MSG(worst < 2e-6, "%s n=%lld: reference vs dequantized dot: rel err %.3g",
                  tt->name, (long long)n, worst);
        for (int64_t t = 0; t < nt; t++)
            for (int64_t r = nr; r < ldy; r++) CHECK(yr[t * ldy + r] == -7.0f);
        /* 2: every level against the reference */
        for (int l = 0; l < nlv; l++) {
            memset(a2, 0, as * (size_t)nt);
            for (int64_t t = 0; t < nt; t++) lv[l]->quant[f](x + t * n, n, a2 + (size_t)t * as);
            CHECK_MSG(memcmp(a, a2, as * (size_t)nt) == 0, "%s: %s activation rows differ (n=%lld)",
                      lv[l]->name, tt->name, (long long)n);
            if (!lv[l]->gemm[type]) continue;
            for (int64_t i = 0; i < ldy * nt; i++) ys[i] = -7.0f;
            lv[l]->gemm[type](n, w, ws, nr, a, as, nt, ys, ldy);
            double wl = 0;
            for (int64_t t = 0; t < nt; t++) {
                for (int64_t r = 0; r < nr; r++) {
                    double mag = 0;
                    CHECK(mp_dequantize_row(type, w + (size_t)r * ws, wf, n, NULL) == MP_OK);
                    for (int64_t i = 0; i < n; i++)
                        mag += fabs((double)wf[i] * act_value(f, a + (size_t)t * as, n, i));
                    const double e = fabs((double)ys[t * ldy + r] - yr[t * ldy + r]) / (mag > 0 ? mag : 1);
                    wl = e > wl ? e : wl;
                }
                for (int64_t r = nr; r < ldy; r++) CHECK(ys[t * ldy + r] == -7.0f);
            }
            CHECK_MSG(wl < 2e-6, "%s %s n=%lld nr=%lld nt=%lld: rel diff %.3g", lv[l]->name,
                      tt->name, (long long)n, (long long)nr, (long long)nt, wl);
        }
        free(w);
        free(a);
        free(a2);
        free(x);
        free(wf);
        free(yr);
        free(ys);
    }
}

/* The float dot product of each level on lengths around the vector width. */
static void check_dot(const mp_kernels *ref, const mp_kernels *const *lv, int nlv) {
    float a[300], b[300];
    for (int i = 0; i < 300; i++) {
        a[i] = mp_test_randf(&rng);
        b[i] = mp_test_randf(&rng);
    }
    for (int n = 0; n < 300; n += n < 40 ? 1 : 37) {
        double exact = 0, mag = 0;
        for (int i = 0; i < n; i++) {
            exact += (double)a[i] * b[i];
            mag += fabs((double)a[i] * b[i]);
        }
        CHECK(fabs(ref->dot_f32(a, b, n) - exact) <= 1e-6 * (mag + 1e-30));
        for (int l = 0; l < nlv; l++)
            CHECK_MSG(fabs(lv[l]->dot_f32(a, b, n) - exact) <= 1e-6 * (mag + 1e-30),
                      "%s dot_f32 n=%d", lv[l]->name, n);
    }
}

/* The gated activations (GELU, SiLU) of each level against the reference's
 * libm versions, over inputs from -30 to 30 and odd lengths. */
static void check_glu(const mp_kernels *ref, const mp_kernels *const *lv, int nlv) {
    enum { N = 1003 };
    static float g[N], u[N], a0[N], a1[N];
    for (int i = 0; i < N; i++) {
        g[i] = 30.0f * mp_test_randf(&rng) * (i % 3 ? 0.1f : 1.0f);
        u[i] = mp_test_randf(&rng);
    }
    for (int act = 0; act < MP_ACT_COUNT; act++) {
        ref->glu(act, a0, g, u, N, 1.25f, 0.5f);
        for (int l = 0; l < nlv; l++) {
            double worst = 0;
            for (int n = N - 2; n <= N; n++) {
                lv[l]->glu(act, a1, g, u, n, 1.25f, 0.5f);
                for (int i = 0; i < n; i++) {
                    const double e = fabs((double)a1[i] - a0[i]) / (1.0 + fabs((double)a0[i]));
                    worst = e > worst ? e : worst;
                }
            }
            CHECK_MSG(worst < 1e-6, "%s glu %s: error %.3g", lv[l]->name, mp_act_name(act), worst);
            printf("%-7s %s: max error %.2e\n", lv[l]->name, mp_act_name(act), worst);
        }
    }
}

/* The attention kernels (dot with F16 keys, weighted sums of F16/F32 value
 * rows) of each level against the reference, on head sizes around the
 * 64-wide blocks and strided rows. */
static void check_attention(const mp_kernels *ref, const mp_kernels *const *lv, int nlv) {
    enum { P = 37, STRIDE = 200 };
    static uint16_t vh[P * STRIDE];
    static float vf[P * STRIDE], w[P], q[STRIDE], o0[STRIDE], o1[STRIDE];
    for (int i = 0; i < P * STRIDE; i++) {
        vf[i] = mp_test_randf(&rng);
        vh[i] = mp_f32_to_f16(vf[i]);
    }
    for (int p = 0; p < P; p++) w[p] = 0.5f * (mp_test_randf(&rng) + 1.0f);
    for (int i = 0; i < STRIDE; i++) q[i] = mp_test_randf(&rng);
    const int64_t dims[] = {1, 8, 63, 64, 72, 129, 192};
    for (int l = 0; l < nlv; l++)
        for (size_t di = 0; di < MP_ARRAY_LEN(dims); di++) {
            const int64_t d = dims[di];
            for (int f16 = 0; f16 < 2; f16++) {
                if (f16) {
                    ref->wsum_f16(o0, w, vh + 3, STRIDE, P, d);
                    lv[l]->wsum_f16(o1, w, vh + 3, STRIDE, P, d);
                } else {
                    ref->wsum_f32(o0, w, vf + 3, STRIDE, P, d);
                    lv[l]->wsum_f32(o1, w, vf + 3, STRIDE, P, d);
                }
                double worst = 0;
                for (int64_t i = 0; i < d; i++) worst = fmax(worst, fabs((double)o1[i] - o0[i]));
                CHECK_MSG(worst < 1e-5, "%s wsum_%s d=%lld: error %.3g", lv[l]->name,
                          f16 ? "f16" : "f32", (long long)d, worst);
            }
            const double e = fabs((double)lv[l]->dot_f16(q, vh + 5, d) - ref->dot_f16(q, vh + 5, d));
            CHECK_MSG(e < 1e-5, "%s dot_f16 d=%lld: error %.3g", lv[l]->name, (long long)d, e);
        }
}

/* Soft-capping of each level against tanhf, around and far beyond the cap. */
static void check_softcap(const mp_kernels *ref, const mp_kernels *const *lv, int nlv) {
    enum { N = 517 };
    static float x0[N], x1[N];
    for (int l = 0; l < nlv; l++) {
        for (int i = 0; i < N; i++) x0[i] = x1[i] = 80.0f * mp_test_randf(&rng) * (i % 2 ? 0.05f : 1.0f);
        ref->softcap(x0, N, 30.0f);
        lv[l]->softcap(x1, N, 30.0f);
        double worst = 0;
        for (int i = 0; i < N; i++) worst = fmax(worst, fabs((double)x1[i] - x0[i]));
        CHECK_MSG(worst < 1e-5, "%s softcap: error %.3g", lv[l]->name, worst);
    }
}

int main(int argc, char **argv) {
    rng = mp_test_seed(argc, argv);
    const mp_kernels *ref = mp_kernels_by_name("ref");
    CHECK(ref != NULL);
    if (!ref) return mp_test_end("test_kernels");
    const char *names[] = {"avx2", "avx512", "neon"};
    const mp_kernels *lv[3];
    int nlv = 0;
    for (int i = 0; i < 3; i++) {
        const mp_kernels *k = mp_kernels_by_name(names[i]);
        printf("level %-7s %s\n", names[i], k ? "tested" : "not on this CPU/build");
        if (k) lv[nlv++] = k;
    }
    printf("selected: %s\n", mp_kernels_select()->name);
    check_dot(ref, lv, nlv);
    check_glu(ref, lv, nlv);
    check_softcap(ref, lv, nlv);
    check_attention(ref, lv, nlv);
    for (int type = 0; type < MP_TYPE_COUNT; type++) {
        if (!ref->gemm[type]) continue;
        check_type(type, ref, lv, nlv);
        printf("%-7s checked (%s activations)\n", mp_type_name(type),
               ref->act[type] == MP_ACT_F32 ? "float" : ref->act[type] == MP_ACT_Q8_32 ? "q8/32" : "q8/256");
    }
    return mp_test_end("test_kernels");
}

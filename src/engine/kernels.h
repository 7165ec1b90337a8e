/* kernels.h — the engine's compute kernels: activation formats, the per-type
 * matmul tile kernels, and the instruction-set variants chosen at run time.
 *
 * A matmul y = W x runs in two steps. First the activations x are converted
 * once into the format the weight type wants (mp_act_fmt): 8-bit blocks for
 * quantized weights, so that the inner loops are integer dot products, or
 * plain floats for F32/F16/BF16 weights. Then a tile kernel (mp_gemm_fn)
 * computes a block of rows x tokens straight from the weights in the mmap.
 *
 * Every kernel has a scalar reference in kern_ref.c (the obvious-correct
 * one, checked against float dequantization in tests/engine/test_kernels.c);
 * kern_avx2.c, kern_avx512.c and kern_neon.c hold the SIMD variants, each
 * checked against the reference on random data of awkward sizes. A SIMD
 * variant must give the reference's integer dot products exactly; only the
 * float scaling and the order of float sums may differ. */
#ifndef MP_KERNELS_H
#define MP_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "moeprune.h"
#include "quant/quant.h"

/* Activation formats. Each row of n values is stored on its own, rows
 * mp_act_row_bytes apart:
 *   F32:   float x[n]
 *   Q8_32: int8 q[n]; float d[n/32]; int16 s[n/32]   x[i] ~ d[i/32] q[i],
 *          s = the block's sum of q (for the offset and min terms)
 *   Q8_K:  int8 q[n]; float d[n/256]; int16 s[n/16]  one scale per 256,
 *          s = sums of q per 16
 * q is symmetric: d = max|x| / 127, q = round(x / d), so |q| <= 127. */
typedef enum mp_act_fmt {
    MP_ACT_F32 = 0,
    MP_ACT_Q8_32,
    MP_ACT_Q8_K,
    MP_ACT_FMT_COUNT
} mp_act_fmt;

#define MP_ACT_ROW_ALIGN 64

/* Bytes of one activation row of n values (n a multiple of the format's
 * block for the quantized ones), rounded up to MP_ACT_ROW_ALIGN. */
size_t mp_act_row_bytes(mp_act_fmt fmt, int64_t n);

/* Pointers into one quantized activation row of n values with one scale
 * per `blk` values (32 or MP_QK_K). */
static inline const float *mp_act_d(const uint8_t *row, int64_t n) {
    return (const float *)(const void *)(row + n);
}
static inline const int16_t *mp_act_s(const uint8_t *row, int64_t n, int64_t blk) {
    return (const int16_t *)(const void *)(row + n + (size_t)(n / blk) * sizeof(float));
}

/* Converts one row of n floats into `fmt` (F32: a copy). */
typedef void (*mp_act_quant_fn)(const float *x, int64_t n, uint8_t *row);

/* The tile kernel of one weight type: for r < nr and t < nt,
 *     y[t * ldy + r] = dot(row r of w, activation row t)
 * w: nr rows of n values, w_stride bytes apart (the type's row bytes);
 * a: nt rows in the type's activation format, a_stride bytes apart. */
typedef void (*mp_gemm_fn)(int64_t n, const uint8_t *w, size_t w_stride, int64_t nr,
                           const uint8_t *a, size_t a_stride, int64_t nt, float *y,
                           int64_t ldy);

/* One instruction-set level's kernels. A type with gemm[type] NULL has no
 * direct kernel here; the engine then dequantizes each weight row to floats
 * and uses dot_f32 (the reference path, always correct). */
typedef struct mp_kernels {
    const char *name; /* "ref", "avx2", "avx512", "neon" */
    mp_act_quant_fn quant[MP_ACT_FMT_COUNT];
    mp_act_fmt act[MP_TYPE_COUNT];
    mp_gemm_fn gemm[MP_TYPE_COUNT];
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    /* attention over an F16 KV cache: a . h */
    float (*dot_f16)(const float *a, const uint16_t *h, int64_t n);
    /* o[i] = sum over p < n of w[p] v[p * stride + i], i < d: the weighted
     * sum of n cached value rows (F16 or F32), stride in elements */
    void (*wsum_f16)(float *o, const float *w, const uint16_t *v, size_t stride, int64_t n,
                     int64_t d);
    void (*wsum_f32)(float *o, const float *w, const float *v, size_t stride, int64_t n,
                     int64_t d);
    /* gated activation: a[i] = act(g[i] * gs) * (u[i] * us), act an mp_act */
    void (*glu)(int act, float *a, const float *g, const float *u, int64_t n, float gs, float us);
    /* soft-capping in place: x[i] = tanh(x[i] / cap) * cap */
    void (*softcap)(float *x, int64_t n, float cap);
} mp_kernels;

/* The scalar reference, always available. */
const mp_kernels *mp_kernels_ref(void);
/* The best level this CPU runs, or the one MOEPRUNE_CPU names
 * (exact | ref | avx2 | avx512 | neon; a level the CPU lacks falls back to
 * the best it has, with a warning on stderr once). "exact" keeps float
 * activations and dequantizes weight rows: no 8-bit activation rounding. */
const mp_kernels *mp_kernels_select(void);
/* Level `name` if this build has it and this CPU runs it, else NULL (tests
 * walk every level this way). */
const mp_kernels *mp_kernels_by_name(const char *name);

/* Levels, each filled in by its file: start from the reference table
 * (mp_kern_ref_fill) and replace what the level speeds up. Each returns
 * false when this build or this CPU lacks the level. */
bool mp_kern_avx2_fill(mp_kernels *k);
bool mp_kern_avx512_fill(mp_kernels *k);
bool mp_kern_neon_fill(mp_kernels *k);

/* The reference pieces the SIMD levels fall back to. */
void mp_kern_ref_fill(mp_kernels *k);
float mp_dot_f32_ref(const float *a, const float *b, int64_t n);

/* Which weight types have an integer kernel, and the activation format
 * they use (MP_ACT_F32 for float and unsupported types). */
mp_act_fmt mp_kern_act_fmt(int type);

#endif

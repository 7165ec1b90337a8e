/* quant.h — internal facts of the ggml tensor types shared by the quant
 * component: block sizes and byte counts, and the fixed code tables used by
 * more than one decoder (and, later, by encoders and SIMD variants).
 * The public entry points (mp_type_info, mp_dequantize_row, ...) are declared
 * in moeprune.h. Layouts follow the shared docs, gemma4-gguf-spec.md section 2. */
#ifndef MP_QUANT_H
#define MP_QUANT_H

#include <stdint.h>

#include "moeprune.h"

/* Elements per block (ggml's QK* constants). */
#define MP_QK_K 256    /* super-block of the K-quants, IQ types, TQ types */
#define MP_QK4_0 32    /* Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 all use 32 */
#define MP_QK4_NL 32   /* IQ4_NL */
#define MP_QK_MXFP4 32 /* one E8M0 exponent per 32 elements */
#define MP_QK_NVFP4 64 /* four UE4M3 scales per 64 elements ... */
#define MP_QK_NVFP4_SUB 16 /* ... one per 16-element sub-block */
#define MP_QK1_0 128   /* Q1_0: one sign bit per element */
#define MP_QK2_0 64    /* Q2_0: two bits per element */

/* Bytes of a binary16 field (d, dmin, m, s) inside a block. */
#define MP_F16_BYTES 2

/* Bytes per block, from the packed layouts of spec section 2 (field sums). */
#define MP_Q4_0_BYTES (MP_F16_BYTES + MP_QK4_0 / 2)                 /* 18 */
#define MP_Q4_1_BYTES (2 * MP_F16_BYTES + MP_QK4_0 / 2)             /* 20 */
#define MP_Q5_0_BYTES (MP_F16_BYTES + 4 + MP_QK4_0 / 2)             /* 22 */
#define MP_Q5_1_BYTES (2 * MP_F16_BYTES + 4 + MP_QK4_0 / 2)         /* 24 */
#define MP_Q8_0_BYTES (MP_F16_BYTES + MP_QK4_0)                     /* 34 */
#define MP_Q8_1_BYTES (2 * MP_F16_BYTES + MP_QK4_0)                 /* 36 */
#define MP_Q2_K_BYTES (MP_QK_K / 16 + MP_QK_K / 4 + 2 * MP_F16_BYTES) /* 84 */
#define MP_Q3_K_BYTES (MP_QK_K / 8 + MP_QK_K / 4 + 12 + MP_F16_BYTES) /* 110 */
#define MP_Q4_K_BYTES (2 * MP_F16_BYTES + 12 + MP_QK_K / 2)         /* 144 */
#define MP_Q5_K_BYTES (2 * MP_F16_BYTES + 12 + MP_QK_K / 8 + MP_QK_K / 2) /* 176 */
#define MP_Q6_K_BYTES (MP_QK_K / 2 + MP_QK_K / 4 + MP_QK_K / 16 + MP_F16_BYTES) /* 210 */
#define MP_Q8_K_BYTES (4 + MP_QK_K + 2 * (MP_QK_K / 16))            /* 292 */
#define MP_IQ2_XXS_BYTES (MP_F16_BYTES + MP_QK_K / 4)               /* 66 */
#define MP_IQ2_XS_BYTES (MP_F16_BYTES + MP_QK_K / 4 + MP_QK_K / 32) /* 74 */
#define MP_IQ3_XXS_BYTES (MP_F16_BYTES + 3 * (MP_QK_K / 8))         /* 98 */
#define MP_IQ1_S_BYTES (MP_F16_BYTES + MP_QK_K / 8 + MP_QK_K / 16)  /* 50 */
#define MP_IQ4_NL_BYTES (MP_F16_BYTES + MP_QK4_NL / 2)              /* 18 */
#define MP_IQ3_S_BYTES (MP_F16_BYTES + MP_QK_K / 4 + MP_QK_K / 32 + MP_QK_K / 8 + \
                        MP_QK_K / 64)                                /* 110 */
#define MP_IQ2_S_BYTES (MP_F16_BYTES + MP_QK_K / 4 + MP_QK_K / 32 + MP_QK_K / 32) /* 82 */
#define MP_IQ4_XS_BYTES (MP_F16_BYTES + 2 + MP_QK_K / 64 + MP_QK_K / 2) /* 136 */
#define MP_IQ1_M_BYTES (MP_QK_K / 8 + MP_QK_K / 16 + MP_QK_K / 32)  /* 56 */
/* TQ1_0 packs 5 trits per qs byte (240 elements) and 4 per qh byte (the last 16). */
#define MP_TQ1_0_BYTES ((MP_QK_K - 16) / 5 + 16 / 4 + MP_F16_BYTES) /* 54 */
#define MP_TQ2_0_BYTES (MP_QK_K / 4 + MP_F16_BYTES)                 /* 66 */
#define MP_MXFP4_BYTES (1 + MP_QK_MXFP4 / 2)                        /* 17 */
#define MP_NVFP4_BYTES (MP_QK_NVFP4 / MP_QK_NVFP4_SUB + MP_QK_NVFP4 / 2) /* 36 */
#define MP_Q1_0_BYTES (MP_F16_BYTES + MP_QK1_0 / 8)                 /* 18 */
#define MP_Q2_0_BYTES (MP_F16_BYTES + MP_QK2_0 / 4)                 /* 18 */

/* Byte offsets of the K-quant fields, in on-disk order (spec 2.5). */
enum {
    Q2K_QS = MP_QK_K / 16, /* after scales[16] */
    Q2K_D = Q2K_QS + MP_QK_K / 4,
    Q3K_QS = MP_QK_K / 8, /* after hmask[32] */
    Q3K_SCALES = Q3K_QS + MP_QK_K / 4,
    Q3K_D = Q3K_SCALES + 12,
    Q45K_SCALES = 2 * MP_F16_BYTES, /* after d, dmin */
    Q4K_QS = Q45K_SCALES + 12,
    Q5K_QH = Q45K_SCALES + 12,
    Q5K_QS = Q5K_QH + MP_QK_K / 8,
    Q6K_QH = MP_QK_K / 2, /* after ql[128] */
    Q6K_SCALES = Q6K_QH + MP_QK_K / 4,
    Q6K_D = Q6K_SCALES + MP_QK_K / 16,
    Q8K_QS = 4, /* after the f32 d */
    IQ4XS_SCALES_L = 2 * MP_F16_BYTES, /* after d, scales_h */
    IQ4XS_QS = IQ4XS_SCALES_L + MP_QK_K / 64,
};

/* MP_OK when the n elements of a float type (F32, F16, BF16; any other type
 * passes) stored at data are all finite; else MP_ERR_CHECK naming the file,
 * the tensor, the first bad element and its value. Float tensors that are
 * sliced (router rows, expert scales) must be finite: a NaN there would
 * silently poison routing in every engine. */
mp_status mp_check_finite(int type, const void *data, int64_t n, const char *path,
                          const char *tensor, mp_err *err);

/* IQ4_NL / IQ4_XS non-linear 4-bit codebook (ggml kvalues_iq4nl). */
extern const int8_t mp_kvalues_iq4nl[16];
/* E2M1 (FP4) values doubled so they are integers, index = 4-bit code, bit 3 the
 * sign (ggml kvalues_fp4); shared by MXFP4 and NVFP4. */
extern const int8_t mp_kvalues_fp4[16];

/* MXFP4 block scale: 2^(e - 128), i.e. half the E8M0 value, which compensates
 * the doubled mp_kvalues_fp4 table. Exact for every e (subnormal for e < 2). */
float mp_e8m0_to_f32_half(uint8_t e);
/* NVFP4 sub-block scale: half the UE4M3 value (0 for the codes 0 and 0x7F). */
float mp_ue4m3_to_f32_half(uint8_t u);

#endif

/* quant_ref.c — scalar reference quantizers: f32 rows into F32, F16, BF16 and
 * Q8_0 (spec 2.2 and 2.3 in the shared docs, gemma4-gguf-spec.md). Other types
 * (the K-quants, IQ and FP4 families) are not encoded yet: they report
 * MP_ERR_UNSUPPORTED. Q8_0 follows ggml's quantize_row_q8_0_ref step by step
 * (scale by the f32 reciprocal of d, then roundf) so that our Q8_0 rows equal
 * llama-quantize's byte for byte. */
#include <inttypes.h>
#include <math.h>

#include "quant/quant.h"
#include "util/util.h"

#define Q8_0_QMAX 127 /* largest |code| of a signed 8-bit quant; -128 unused */

static void q_f32(const float *x, uint8_t *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        mp_store_u32(y + 4 * i, u);
    }
}

static void q_f16(const float *x, uint8_t *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) mp_store_u16(y + 2 * i, mp_f32_to_f16(x[i]));
}

static void q_bf16(const float *x, uint8_t *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) mp_store_u16(y + 2 * i, mp_f32_to_bf16(x[i]));
}

/* d = amax/127, codes round(x * (1/d)) half away from zero. Inputs are finite
 * (checked by the caller), so every code lies in -127..127 up to rounding of
 * 1/d; the clamp guards that last ulp. */
static void q8_0_block(const float *x, uint8_t *y) {
    float amax = 0.0f;
    for (int j = 0; j < MP_QK4_0; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / (float)Q8_0_QMAX;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    mp_store_u16(y, mp_f32_to_f16(d));
    for (int j = 0; j < MP_QK4_0; j++) {
        float q = fminf(fmaxf(roundf(x[j] * id), -(float)Q8_0_QMAX), (float)Q8_0_QMAX);
        y[MP_F16_BYTES + j] = (uint8_t)(int8_t)q;
    }
}

static void q_q8_0(const float *x, uint8_t *y, int64_t n) {
    for (int64_t i = 0; i < n / MP_QK4_0; i++) q8_0_block(x + i * MP_QK4_0, y + i * MP_Q8_0_BYTES);
}

typedef void (*row_encoder)(const float *x, uint8_t *y, int64_t n);

/* NULL where the type has no encoder; must agree with can_quant in types.c. */
static row_encoder encoder_for(int type) {
    switch (type) {
    case MP_TYPE_F32: return q_f32;
    case MP_TYPE_F16: return q_f16;
    case MP_TYPE_BF16: return q_bf16;
    case MP_TYPE_Q8_0: return q_q8_0;
    default: return NULL;
    }
}

mp_status mp_quantize_row(int type, const float *src, void *dst, int64_t n, mp_err *err) {
    const mp_type_traits *t = mp_type_info(type);
    if (!t) return mp_err_set(err, MP_ERR_ARG, "tensor type id %d is not a valid ggml type", type);
    row_encoder encode = encoder_for(type);
    if (!encode)
        return mp_err_set(err, MP_ERR_UNSUPPORTED,
                          "tensor type %s (id %d): quantization not supported "
                          "(supported: F32, F16, BF16, Q8_0)", t->name, type);
    if (n < 0 || n % t->blck_size != 0)
        return mp_err_set(err, MP_ERR_ARG,
                          "quantize %s: %" PRId64 " elements is not a non-negative multiple "
                          "of the block size %" PRId64, t->name, n, t->blck_size);
    if (n > 0 && (!src || !dst))
        return mp_err_set(err, MP_ERR_ARG, "quantize %s: NULL %s buffer", t->name,
                          src ? "destination" : "source");
    if (t->blck_size > 1) {
        /* A block scale cannot represent inf or NaN; refuse before writing
         * anything. Plain float types carry them through unchanged. */
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(src[i]))
                return mp_err_set(err, MP_ERR_ARG,
                                  "quantize %s: element %" PRId64 " is %g, not finite",
                                  t->name, i, (double)src[i]);
    }
    encode(src, dst, n);
    return MP_OK;
}

/* ops.c — the small per-vector operations of the forward pass: RMSNorm,
 * activations, softmax, RoPE. Scalar and plain on purpose; the time goes in
 * the matmuls (matmul.c). Formulas: gemma4-gguf-spec.md section 4; the
 * accumulation choices (double sums for norms and softmax) follow ggml's CPU
 * backend so that float results stay close to llama.cpp's. */
#include <math.h>

#include "engine/engine.h"

void mp_rms_norm(const float *x, const float *w, float *y, int64_t n, float eps) {
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (double)x[i] * (double)x[i];
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    if (w)
        for (int64_t i = 0; i < n; i++) y[i] = (x[i] * scale) * w[i];
    else
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * scale;
}

/* sqrt(2/pi) and the cubic coefficient of the tanh form of GELU. */
#define GELU_SQRT_2_OVER_PI 0.7978845608028654f
#define GELU_COEF_A 0.044715f

float mp_act_apply(mp_act act, float x) {
    switch (act) {
    case MP_ACT_SILU: return x / (1.0f + expf(-x));
    case MP_ACT_GELU_TANH:
    default:
        return 0.5f * x * (1.0f + tanhf(GELU_SQRT_2_OVER_PI * x * (1.0f + GELU_COEF_A * x * x)));
    }
}

void mp_softmax(float *x, int64_t n) {
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > max) max = x[i];
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        float e = x[i] == -INFINITY ? 0.0f : expf(x[i] - max);
        x[i] = e;
        sum += e;
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void mp_rope_apply(float *h, int64_t n_rot, mp_rope_style style, const float *cs,
                   const float *sn) {
    const int64_t half = n_rot / 2;
    /* NEOX pairs element j with j + n_rot/2; NORM pairs 2j with 2j + 1 */
    const int64_t step = style == MP_ROPE_NEOX ? 1 : 2;
    const int64_t other = style == MP_ROPE_NEOX ? half : 1;
    for (int64_t j = 0; j < half; j++) {
        float *a = h + j * step, *b = a + other;
        const float x0 = *a, x1 = *b;
        *a = x0 * cs[j] - x1 * sn[j];
        *b = x0 * sn[j] + x1 * cs[j];
    }
}

/* test_dequant_fixtures.c — every tensor of every quantized fixture variant
 * (made by llama-quantize from the F32 file) dequantizes close to the F32
 * variant's weights, within that format's error.
 *
 * The bound is on the relative RMS error, RMS(deq - f32) / RMS(f32), per
 * tensor. Expected values for roughly Gaussian weights follow from the step
 * size of each format (e.g. Q4_0: 16 levels over +-absmax of a 32-block,
 * absmax ~ 2.2 sigma, step/sqrt(12) ~ 0.085 sigma); the limits below are
 * about 1.5x what the formats give on these weights, so a decoder with a
 * wrong nibble order, scale or sign lands far above them (a shuffled or
 * mis-scaled decode gives ~1.0 or more). Every lossy tensor must also show
 * some error: a test comparing the F32 file with itself would pass silently. */
#include <math.h>
#include <stdlib.h>

#include "testutil.h"

typedef struct limit {
    int type;
    double max_rel_rms; /* relative RMS error allowed */
} limit;

static const limit limits[] = {
    {MP_TYPE_F16, 0.001},   {MP_TYPE_BF16, 0.005},  {MP_TYPE_Q8_0, 0.01},
    {MP_TYPE_Q6_K, 0.03},   {MP_TYPE_Q5_0, 0.06},   {MP_TYPE_Q5_1, 0.05},
    {MP_TYPE_Q5_K, 0.05},   {MP_TYPE_Q4_0, 0.13},   {MP_TYPE_Q4_1, 0.10},
    {MP_TYPE_Q4_K, 0.10},   {MP_TYPE_IQ4_NL, 0.12}, {MP_TYPE_IQ4_XS, 0.12},
    {MP_TYPE_Q3_K, 0.22},   {MP_TYPE_Q2_K, 0.45},   {MP_TYPE_MXFP4, 0.20},
};

static double limit_for(int type) {
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++)
        if (limits[i].type == type) return limits[i].max_rel_rms;
    return -1;
}

/* Dequantizes a whole tensor, row by row. */
static float *dequant_all(const mp_gguf_tensor *t, mp_err *err) {
    int64_t n = mp_tensor_nelements(t), rows = n / t->ne[0];
    size_t row_bytes;
    if (mp_type_row_bytes(t->type, t->ne[0], &row_bytes, err)) return NULL;
    float *out = malloc((size_t)n * sizeof *out);
    if (!out) return NULL;
    for (int64_t r = 0; r < rows; r++) {
        if (mp_dequantize_row(t->type, (const uint8_t *)t->data + (size_t)r * row_bytes,
                              out + r * t->ne[0], t->ne[0], err)) {
            free(out);
            return NULL;
        }
    }
    return out;
}

int main(void) {
    char buf[512];
    mp_err err = {0};
    mp_gguf *ref = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_open(&ref, mp_test_data(buf, sizeof buf,
                        "gemma4-tiny-a/tiny-a-f32.gguf"), &err), &err);
    if (!ref) return mp_test_end("test_dequant_fixtures");
    double worst[MP_TYPE_COUNT] = {0};
    int seen[MP_TYPE_COUNT] = {0};
    for (int v = 0; mp_test_tiny_variants[v]; v++) {
        char rel[128];
        snprintf(rel, sizeof rel, "gemma4-tiny-a/tiny-a-%s.gguf", mp_test_tiny_variants[v]);
        mp_gguf *g = NULL;
        CHECK_STATUS(MP_OK, mp_gguf_open(&g, mp_test_data(buf, sizeof buf, rel), &err), &err);
        if (!g) continue;
        for (int64_t i = 0; i < mp_gguf_n_tensors(g); i++) {
            const mp_gguf_tensor *t = mp_gguf_tensor_at(g, i);
            const mp_gguf_tensor *r = mp_gguf_find_tensor(ref, t->name);
            CHECK_MSG(r && r->type == MP_TYPE_F32, "%s: no F32 twin", t->name);
            if (!r || t->type == MP_TYPE_F32) continue;
            CHECK_INT(mp_tensor_nelements(r), mp_tensor_nelements(t));
            float *d = dequant_all(t, &err);
            CHECK_MSG(d != NULL, "%s %s: %s", rel, t->name, err.msg);
            if (!d) continue;
            const float *w = r->data;
            double se = 0, ss = 0;
            int64_t n = mp_tensor_nelements(t);
            for (int64_t k = 0; k < n; k++) {
                double e = (double)d[k] - w[k];
                se += e * e;
                ss += (double)w[k] * w[k];
            }
            free(d);
            double rel_rms = sqrt(se / (ss > 0 ? ss : 1));
            double lim = limit_for(t->type);
            CHECK_MSG(lim > 0, "%s: no limit for type %s", t->name, mp_type_name(t->type));
            CHECK_MSG(rel_rms <= lim, "%s %s (%s): relative RMS error %.4f > %.4f", rel,
                      t->name, mp_type_name(t->type), rel_rms, lim);
            CHECK_MSG(rel_rms > 0 || ss == 0, "%s %s (%s): no error at all", rel, t->name,
                      mp_type_name(t->type));
            if (rel_rms > worst[t->type]) worst[t->type] = rel_rms;
            seen[t->type]++;
        }
        mp_gguf_free(g);
    }
    printf("%-8s %8s %12s %8s\n", "type", "tensors", "worst relRMS", "limit");
    for (int ty = 0; ty < MP_TYPE_COUNT; ty++)
        if (seen[ty])
            printf("%-8s %8d %12.5f %8.3f\n", mp_type_name(ty), seen[ty], worst[ty], limit_for(ty));
    /* every lossy format the brief lists appears in the fixtures */
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++)
        CHECK_MSG(seen[limits[i].type] > 0, "no fixture tensor of type %s",
                  mp_type_name(limits[i].type));
    mp_gguf_free(ref);
    return mp_test_end("test_dequant_fixtures");
}

/* test_prune_engine.c — the pruned file runs exactly like its base model with
 * the same experts masked in the engine, for every fixture variant (every
 * tensor type): logits of all positions are bit-identical. Also: a zero-mode
 * file with its recorded mask equals real removal, while the same file run
 * as other engines run it (zeroed experts still routable) does not; a map
 * for another model is refused when applied to a context. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "testutil.h"

/* Layer l keeps 8 of 16 experts: ids (l + 3j) mod 16, j < 8. */
static mp_dropmap *make_map(void) {
    char json[4096];
    int o = snprintf(json, sizeof json,
                     "{\"format\":\"moeprune.dropmap/1\",\"model\":{\"arch\":"
                     "\"gemma4\",\"n_layer\":4,\"n_expert\":16,\"n_expert_used\":4},\"layers\":[");
    for (int l = 0; l < 4; l++) {
        bool on[16] = {0};
        for (int j = 0; j < 8; j++) on[(l + 3 * j) % 16] = true;
        o += snprintf(json + o, sizeof json - (size_t)o, "%s{\"layer\":%d,\"keep\":[", l ? "," : "",
                      l);
        for (int e = 0, first = 1; e < 16; e++)
            if (on[e]) {
                o += snprintf(json + o, sizeof json - (size_t)o, "%s%d", first ? "" : ",", e);
                first = 0;
            }
        o += snprintf(json + o, sizeof json - (size_t)o, "]}");
    }
    snprintf(json + o, sizeof json - (size_t)o, "]}");
    mp_dropmap *m = NULL;
    mp_err err;
    if (mp_dropmap_parse(&m, json, strlen(json), "gen", &err)) fprintf(stderr, "%s\n", err.msg);
    return m;
}

/* KL(p || q) of the softmaxes of two logit rows, in nats. */
static double kl_div(const float *p_logits, const float *q_logits, int64_t V) {
    double mp = -INFINITY, mq = -INFINITY, zp = 0, zq = 0, kl = 0;
    for (int64_t i = 0; i < V; i++) {
        if (p_logits[i] > mp) mp = p_logits[i];
        if (q_logits[i] > mq) mq = q_logits[i];
    }
    for (int64_t i = 0; i < V; i++) {
        zp += exp(p_logits[i] - mp);
        zq += exp(q_logits[i] - mq);
    }
    for (int64_t i = 0; i < V; i++) {
        double lp = p_logits[i] - mp - log(zp), lq = q_logits[i] - mq - log(zq);
        kl += exp(lp) * (lp - lq);
    }
    return kl;
}

/* All-position logits of `path`, with the map masked (mask) or not; the
 * file's own zero-mode mask applied when `file_mask`. */
static float *run(const char *path, const mp_dropmap *mask, bool file_mask, const mp_token *ids,
                  int64_t n, int64_t *n_vocab) {
    mp_err err = {0};
    mp_model *m = NULL;
    mp_context *c = NULL;
    float *out = NULL;
    mp_context_params p = mp_context_default_params();
    p.n_ctx = n;
    p.n_threads = 2;
    p.kv_type = MP_KV_F32;
    if (mp_model_load(&m, path, &err) || mp_context_init(&c, m, p, &err) ||
        (file_mask && mp_context_apply_file_mask(c, m, &err)) ||
        (mask && mp_context_apply_dropmap(c, m, mask, &err)))
        goto done;
    *n_vocab = mp_model_n_vocab(m);
    out = malloc((size_t)(n * *n_vocab) * sizeof *out);
    if (out && mp_context_eval(c, ids, n, MP_LOGITS_ALL, out, &err)) {
        free(out);
        out = NULL;
    }
done:
    CHECK_MSG(out != NULL, "%s: %s", path, err.msg);
    mp_context_free(c);
    mp_model_free(m);
    return out;
}

int main(void) {
    char dir[256], in[512], pruned[512], zeroed[512];
    mp_err err = {0};
    CHECK(mp_test_tmpdir(dir, sizeof dir, "prune-engine") != NULL);
    snprintf(pruned, sizeof pruned, "%s/p.gguf", dir);
    snprintf(zeroed, sizeof zeroed, "%s/z.gguf", dir);
    mp_dropmap *map = make_map();
    mp_token ids[256];
    /* 40 tokens: longer than the 16-token sliding window, short enough for ASan */
    mp_test_data(in, sizeof in, "gemma4-tiny-a/tiny-a-f32.ref/prompt1.tokens.txt");
    int64_t n = mp_test_read_ids(in, ids, 40), V = 0, V2 = 0;
    CHECK(map != NULL && n > 16);
    for (int v = 0; map && mp_test_tiny_variants[v]; v++) {
        char rel[128];
        snprintf(rel, sizeof rel, "gemma4-tiny-a/tiny-a-%s.gguf", mp_test_tiny_variants[v]);
        mp_test_data(in, sizeof in, rel);
        mp_prune_params pp = {.overwrite = true};
        CHECK_STATUS(MP_OK, mp_prune_gguf(in, map, pruned, &pp, &err), &err);
        float *a = run(in, map, false, ids, n, &V);
        float *b = run(pruned, NULL, true, ids, n, &V2);
        CHECK_INT(V, V2);
        double maxd = 0;
        for (int64_t i = 0; a && b && i < n * V; i++) {
            double d = fabs((double)a[i] - b[i]);
            if (d > maxd) maxd = d;
        }
        CHECK_MSG(a && b && !memcmp(a, b, (size_t)(n * V) * sizeof *a),
                  "%s: pruned file differs from the masked base (max |diff| %g)", rel, maxd);
        if (v < 3) {
            /* zero mode: with the recorded mask equal to removal; run the way
             * other engines run it (no mask) it is not */
            pp.mode = MP_PRUNE_ZERO;
            CHECK_STATUS(MP_OK, mp_prune_gguf(in, map, zeroed, &pp, &err), &err);
            float *z = run(zeroed, NULL, true, ids, n, &V2);
            float *zu = run(zeroed, NULL, false, ids, n, &V2);
            CHECK_MSG(z && b && !memcmp(z, b, (size_t)(n * V) * sizeof *z),
                      "%s: masked zero-mode file differs from removal", rel);
            double rms = 0, kld = 0;
            for (int64_t i = 0; zu && b && i < n * V; i++)
                rms += ((double)zu[i] - b[i]) * ((double)zu[i] - b[i]);
            rms = sqrt(rms / (double)(n * V));
            for (int64_t t = 0; zu && b && t < n; t++) kld += kl_div(b + t * V, zu + t * V, V);
            kld /= (double)n;
            CHECK_MSG(rms > 1e-3 && kld > 1e-5,
                      "%s: unmasked zero-mode file should differ (rms %g,"
                      " KLD %g)",
                      rel, rms, kld);
            printf("%-10s zero mode run without its mask (as other engines run it) vs removal: "
                   "logits RMS diff %.4f, mean KLD %.5f nats\n",
                   mp_test_tiny_variants[v], rms, kld);
            free(z);
            free(zu);
            unlink(zeroed);
        }
        printf("%-10s pruned vs masked: max |diff| %g\n", mp_test_tiny_variants[v], maxd);
        free(a);
        free(b);
        unlink(pruned);
    }
    /* a map made for the 16-expert base does not fit the 8-expert pruned file */
    mp_test_data(in, sizeof in, "gemma4-tiny-a/tiny-a-q8_0.gguf");
    mp_prune_params pp = {.overwrite = true};
    if (map) CHECK_STATUS(MP_OK, mp_prune_gguf(in, map, pruned, &pp, &err), &err);
    mp_model *m = NULL;
    mp_context *c = NULL;
    CHECK_STATUS(MP_OK, mp_model_load(&m, pruned, &err), &err);
    if (m) CHECK_STATUS(MP_OK, mp_context_init(&c, m, mp_context_default_params(), &err), &err);
    if (c && map) {
        CHECK_STATUS(MP_ERR_CHECK, mp_context_apply_dropmap(c, m, map, &err), &err);
        CHECK(strstr(err.msg, "covers 16") && strstr(err.msg, "p.gguf"));
    }
    mp_context_free(c);
    mp_model_free(m);
    unlink(pruned);
    rmdir(dir);
    mp_dropmap_free(map);
    return mp_test_end("test_prune_engine");
}

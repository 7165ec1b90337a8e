/* test_profile_brute.c — every statistic the profiler records, against a
 * brute-force computation: a float64 reference forward pass that evaluates
 * all experts of every MoE layer densely (tests/common/ref_gemma4.c, no code
 * shared with the engine or the profiler) on the tiny F32 fixture, for the
 * tokens of its prompts. The reference is first checked against llama.cpp's
 * logits for the same tokens, so it is known to be right.
 *   selections per rank and expert: exactly equal
 *   router weight sums, contributions ||g * E(x)||, their squares: relative
 *   1e-4 (float32 engine vs float64 reference; the engine's own agreement
 *   with llama.cpp is ~1e-5 relative on these activations)
 *   REAP saliency, as plan derives it from the stats (contribution /
 *   selections), against its definition: the mean over the tokens routed
 *   to the expert of g * ||E(x)||, relative 1e-4 */
#include <math.h>
#include <stdlib.h>

#include "ref_gemma4.h"
#include "testutil.h"

#define MAX_TOK 32
#define MAX_LAYER  64
#define MAX_EXPERT 1024

typedef struct brute {
    mp_stats *s;      /* same layout as the profiler's, one class */
    double *reap_sum; /* [layer][MAX_EXPERT]: sum over routed tokens of g * ||E(x)|| */
    double *reap_n;   /* [layer][MAX_EXPERT]: tokens routed to the expert */
} brute;

static void on_moe(const ref_g4_moe *d, void *user) {
    brute *b = user;
    const mp_stats_cell *c = mp_stats_cell_at(b->s, d->layer, 0);
    for (int64_t r = 0; r < d->k; r++) {
        int32_t e = d->chosen[r];
        c->count[r * d->n_expert + e] += 1;
        c->weight_sum[r * d->n_expert + e] += d->weight[r];
        double ss = 0;
        for (int64_t i = 0; i < d->n_embd; i++) {
            double y = d->weight[r] * d->out[e * d->n_embd + i];
            ss += y * y;
        }
        c->contrib[e] += sqrt(ss);
        c->contrib_sq[e] += ss;
        /* REAP as its paper defines it: gate weight times the norm of the
         * unweighted expert output, averaged over the tokens routed there */
        double uu = 0;
        for (int64_t i = 0; i < d->n_embd; i++)
            uu += d->out[e * d->n_embd + i] * d->out[e * d->n_embd + i];
        b->reap_sum[d->layer * MAX_EXPERT + e] += d->weight[r] * sqrt(uu);
        b->reap_n[d->layer * MAX_EXPERT + e] += 1;
    }
}

static bool near(double a, double b, double rel) {
    return fabs(a - b) <= rel * (fabs(a) + fabs(b)) / 2 + 1e-12;
}

int main(void) {
    char path[512];
    mp_err err = {0};
    mp_test_data(path, sizeof path, "gemma4-tiny-a/tiny-a-f32.gguf");
    ref_g4 *ref = ref_g4_load(path, MAX_TOK);
    mp_model *m = NULL;
    mp_context *c = NULL;
    mp_profiler *prof = NULL;
    CHECK(ref != NULL);
    CHECK_STATUS(MP_OK, mp_model_load(&m, path, &err), &err);
    if (!ref || !m) return mp_test_end("test_profile_brute");
    mp_context_params cp = mp_context_default_params();
    cp.n_ctx = MAX_TOK;
    cp.kv_type = MP_KV_F32;
    const char *cls[1] = {"all"};
    CHECK_STATUS(MP_OK, mp_context_init(&c, m, cp, &err), &err);
    CHECK_STATUS(MP_OK, mp_profiler_init(&prof, m, cls, 1, &err), &err);
    CHECK_STATUS(MP_OK, mp_profiler_attach(prof, c, &err), &err);
    mp_stats *bs = NULL;
    int64_t ne[MAX_LAYER];
    CHECK(mp_model_n_layer(m) <= MAX_LAYER);
    for (int64_t l = 0; l < mp_model_n_layer(m) && l < MAX_LAYER; l++) {
        ne[l] = mp_model_n_expert(m, l);
        CHECK(ne[l] <= MAX_EXPERT);
    }
    CHECK_STATUS(MP_OK,
                 mp_stats_create(&bs, "gemma4", mp_model_n_layer(m), ne, mp_model_n_expert_used(m),
                                 cls, 1, &err),
                 &err);
    brute b = {bs, calloc(MAX_LAYER * MAX_EXPERT, sizeof(double)),
               calloc(MAX_LAYER * MAX_EXPERT, sizeof(double))};
    CHECK(b.reap_sum && b.reap_n);
    const int64_t V = ref_g4_n_vocab(ref);
    double *rl = malloc((size_t)(MAX_TOK * V) * sizeof *rl);
    for (int pr = 0; pr < 3 && c && prof && bs && b.reap_sum && b.reap_n; pr++) {
        char rel[128];
        mp_token ids[MAX_TOK];
        snprintf(rel, sizeof rel, "gemma4-tiny-a/tiny-a-f32.ref/prompt%d.tokens.txt", pr);
        int64_t n = mp_test_read_ids(mp_test_data(path, sizeof path, rel), ids, MAX_TOK);
        CHECK(n > 4);
        ref_g4_opts ro = {.moe_fn = on_moe, .user = &b};
        CHECK(ref_g4_forward(ref, ids, n, &ro, rl));
        /* the reference agrees with llama.cpp (the fixture's own logits) */
        snprintf(rel, sizeof rel, "gemma4-tiny-a/tiny-a-f32.ref/prompt%d.logits.f32", pr);
        size_t len;
        float *want = mp_test_read_file(mp_test_data(path, sizeof path, rel), &len);
        double se = 0;
        int64_t cnt = 0;
        for (int64_t i = 0; want && i < n * V && (size_t)(i * 4) < len; i++, cnt++)
            se += (rl[i] - want[i]) * (rl[i] - want[i]);
        CHECK_MSG(cnt > 0 && sqrt(se / (double)cnt) < 2e-3,
                  "prompt %d: reference vs llama.cpp "
                  "RMS %g",
                  pr, cnt ? sqrt(se / (double)cnt) : -1.0);
        free(want);
        mp_context_truncate(c, 0);
        CHECK_STATUS(MP_OK, mp_context_eval(c, ids, n, MP_LOGITS_NONE, NULL, &err), &err);
        mp_profiler_add_tokens(prof, n);
        bs->class_tokens[0] += (double)n;
    }
    const mp_stats *ps = prof ? mp_profiler_stats(prof) : NULL;
    int64_t compared = 0;
    double worst_w = 0, worst_c = 0, worst_r = 0;
    int64_t n_reap = 0;
    for (int64_t l = 0; ps && l < ps->n_layer; l++) {
        int64_t x = ps->n_expert[l], k = ps->n_expert_used;
        const mp_stats_cell *p = mp_stats_cell_at(ps, l, 0), *q = mp_stats_cell_at(bs, l, 0);
        for (int64_t i = 0; i < x * k; i++) {
            CHECK_MSG(p->count[i] == q->count[i],
                      "layer %lld rank %lld expert %lld: %g selections"
                      ", brute force %g",
                      (long long)l, (long long)(i / x), (long long)(i % x), p->count[i],
                      q->count[i]);
            CHECK_MSG(near(p->weight_sum[i], q->weight_sum[i], 1e-4),
                      "layer %lld [%lld]: weight"
                      " sum %.9g vs %.9g",
                      (long long)l, (long long)i, p->weight_sum[i], q->weight_sum[i]);
            double rw =
                fabs(p->weight_sum[i] - q->weight_sum[i]) / (fabs(q->weight_sum[i]) + 1e-12);
            if (q->weight_sum[i] > 0 && rw > worst_w) worst_w = rw;
            compared++;
        }
        for (int64_t e = 0; e < x; e++) {
            CHECK_MSG(near(p->contrib[e], q->contrib[e], 1e-4),
                      "layer %lld expert %lld: "
                      "contribution %.9g vs %.9g",
                      (long long)l, (long long)e, p->contrib[e], q->contrib[e]);
            CHECK(near(p->contrib_sq[e], q->contrib_sq[e], 2e-4));
            double rc = fabs(p->contrib[e] - q->contrib[e]) / (fabs(q->contrib[e]) + 1e-12);
            if (q->contrib[e] > 0 && rc > worst_c) worst_c = rc;
        }
        /* REAP saliency as plan derives it from the stats file (contribution /
         * selections) against its definition, computed token by token */
        double score[MAX_EXPERT];
        mp_plan_params pp = {.method = MP_PLAN_REAP};
        if (x == 0) continue;
        CHECK_STATUS(MP_OK, mp_plan_scores(ps, &pp, l, score, &err), &err);
        for (int64_t e = 0; e < x; e++) {
            double n_routed = b.reap_n[l * MAX_EXPERT + e];
            double want = n_routed > 0 ? b.reap_sum[l * MAX_EXPERT + e] / n_routed : 0;
            double sel = 0;
            for (int64_t r = 0; r < k; r++) sel += p->count[r * x + e];
            CHECK(sel == n_routed);
            CHECK_MSG(near(score[e], want, 1e-4), "layer %lld expert %lld: REAP %.9g vs %.9g",
                      (long long)l, (long long)e, score[e], want);
            double rr = fabs(score[e] - want) / (fabs(want) + 1e-12);
            if (want > 0 && rr > worst_r) worst_r = rr;
            n_reap += n_routed > 0;
        }
    }
    CHECK(ps && ps->class_tokens[0] == bs->class_tokens[0]);
    printf("%lld rank/expert cells compared; worst relative difference: weight sums %.2e, "
           "contributions %.2e, REAP %.2e (%lld routed experts)\n",
           (long long)compared, worst_w, worst_c, worst_r, (long long)n_reap);
    CHECK(n_reap > 0);
    free(rl);
    free(b.reap_sum);
    free(b.reap_n);
    mp_stats_free(bs);
    mp_profiler_free(prof);
    mp_context_free(c);
    mp_model_free(m);
    ref_g4_free(ref);
    return mp_test_end("test_profile_brute");
}

/* test_plan.c — every plan method and budget on hand-built statistics whose
 * right answer is worked out in the comments, ties included (broken by the
 * lower expert id, as the docs state); the --retain rule against a brute-force
 * search on random stats; impossible requests refused. */
#include <math.h>
#include <stdlib.h>

#include "testutil.h"

/* Expected keep-set of one layer, as a bit mask over expert ids. */
static unsigned keep_mask(const mp_dropmap *m, int64_t layer) {
    const mp_dropmap_layer *L = mp_dropmap_find(m, layer);
    unsigned mask = 0;
    for (int64_t i = 0; L && i < L->n_keep; i++) mask |= 1u << L->keep[i];
    return mask;
}

#define BIT(e) (1u << (e))

static mp_dropmap *plan(const mp_stats *s, mp_plan_params p) {
    mp_dropmap *m = NULL;
    mp_err err = {0};
    mp_status st = mp_plan_make(s, &p, &m, &err);
    CHECK_MSG(st == MP_OK, "plan failed: %s", err.msg);
    return m;
}

/* rank-0 / rank-1 selections and weight sums for a k = 2 layer of 6 experts */
static void set_counts(mp_stats *s, int64_t l, int64_t c, const double *c0, const double *w0,
                       const double *c1, const double *w1) {
    const mp_stats_cell *cell = mp_stats_cell_at(s, l, c);
    int64_t x = s->n_expert[l];
    for (int64_t e = 0; e < x; e++) {
        cell->count[e] = c0[e];
        cell->weight_sum[e] = w0[e];
        cell->count[x + e] = c1[e];
        cell->weight_sum[x + e] = w1[e];
    }
}

static void test_frequency_utility_reap(void) {
    const int64_t ne[1] = {6};
    const char *all[1] = {"all"};
    mp_stats *s = NULL;
    mp_err err = {0};
    CHECK_STATUS(MP_OK, mp_stats_create(&s, "gemma4", 1, ne, 2, all, 1, &err), &err);
    if (!s) return;
    s->class_tokens[0] = 100;
    /* utility with N = 100:
     *   e0: r0 10 sel, mean .9           -> .10*.9           = .09
     *   e1: r0 20, mean .2; r1 30, .1    -> .2*.2 + .3*.1    = .07
     *   e2: r1 50, mean .5               -> .5*.5            = .25
     *   e3: r0 30, mean .9               -> .3*.9            = .27
     *   e4: never                        -> 0
     *   e5: r0 40, .3; r1 20, .2         -> .4*.3 + .2*.2    = .16
     * frequency: e5 60, e1 50, e2 50, e3 30, e0 10, e4 0 */
    const double c0[6] = {10, 20, 0, 30, 0, 40}, w0[6] = {9, 4, 0, 27, 0, 12};
    const double c1[6] = {0, 30, 50, 0, 0, 20}, w1[6] = {0, 3, 25, 0, 0, 4};
    set_counts(s, 0, 0, c0, w0, c1, w1);
    /* reap = contrib / selections: e0 10/10=1, e1 150/50=3, e2 250/50=5,
     * e3 0/30=0, e4 0 (never chosen), e5 120/60=2 */
    const double contrib[6] = {10, 150, 250, 0, 0, 120};
    memcpy(mp_stats_cell_at(s, 0, 0)->contrib, contrib, sizeof contrib);

    mp_plan_params p = {.method = MP_PLAN_UTILITY, .keep = 3};
    double score[6];
    CHECK_STATUS(MP_OK, mp_plan_scores(s, &p, 0, score, &err), &err);
    const double want[6] = {.09, .07, .25, .27, 0, .16};
    for (int e = 0; e < 6; e++) CHECK_NEAR(want[e], score[e], 1e-12);
    mp_dropmap *m = plan(s, p);
    if (m) CHECK_INT(BIT(2) | BIT(3) | BIT(5), keep_mask(m, 0));
    if (m) CHECK_NEAR((.25 + .27 + .16) / .84, m->layers[0].retained, 1e-12);
    mp_dropmap_free(m);

    /* frequency keep 3: e5 60, then e1 and e2 tie at 50: both fit */
    p.method = MP_PLAN_FREQUENCY;
    m = plan(s, p);
    if (m) CHECK_INT(BIT(5) | BIT(1) | BIT(2), keep_mask(m, 0));
    mp_dropmap_free(m);
    /* frequency keep 2: the tie between e1 and e2 at the boundary goes to e1 */
    p.keep = 2;
    m = plan(s, p);
    if (m) CHECK_INT(BIT(5) | BIT(1), keep_mask(m, 0));
    mp_dropmap_free(m);

    p.method = MP_PLAN_REAP;
    p.keep = 3;
    m = plan(s, p);
    if (m) CHECK_INT(BIT(2) | BIT(1) | BIT(5), keep_mask(m, 0));
    mp_dropmap_free(m);

    /* impossible requests */
    mp_dropmap *none = NULL;
    p.keep = 7;
    CHECK_STATUS(MP_ERR_ARG, mp_plan_make(s, &p, &none, &err), &err);
    CHECK(strstr(err.msg, "has 6") != NULL);
    p.keep = 1;
    CHECK_STATUS(MP_ERR_ARG, mp_plan_make(s, &p, &none, &err), &err);
    CHECK(strstr(err.msg, "used per token") != NULL);
    p.keep = 3;
    const char *nope[1] = {"poetry"};
    p.classes = nope;
    p.n_classes = 1;
    CHECK_STATUS(MP_ERR_ARG, mp_plan_make(s, &p, &none, &err), &err);
    CHECK(strstr(err.msg, "unknown class 'poetry'") && strstr(err.msg, "all"));
    p.classes = NULL;
    p.n_classes = 0;
    p.whitelist = true; /* only for utility */
    CHECK_STATUS(MP_ERR_ARG, mp_plan_make(s, &p, &none, &err), &err);
    p.whitelist = false;
    p.budget = MP_BUDGET_RETAIN;
    p.retain = 1.5;
    CHECK_STATUS(MP_ERR_ARG, mp_plan_make(s, &p, &none, &err), &err);
    CHECK(none == NULL);
    mp_stats_free(s);
}

static void test_whitelist(void) {
    /* 8 experts, top-4, N = 1000; utility = count/N * mean weight:
     *   e0 r1 200 sel, mean .3  -> .06    (avg rank 1: whitelisted)
     *   e1 r2 300, .15          -> .045   (avg rank 2: not below 2)
     *   e2 r1 150, .3           -> .045   (ties e1, goes after it; whitelisted)
     *   e3 r3 400, .1           -> .04
     *   e4 r3 100, .1           -> .01
     *   e5 r3 300, .1           -> .03
     *   e6 r0 9,   .9           -> .0081  (9 selections: too few)
     *   e7 r0 12,  .1           -> .0012  (rank 0, 12 selections: whitelisted)
     * keep 4 by utility: {0, 1, 2, 3}; the whitelist swaps e7 in for the
     * lowest-utility kept expert that is not itself whitelisted: e3. */
    const int64_t ne[1] = {8};
    const char *all[1] = {"all"};
    mp_stats *s = NULL;
    mp_err err = {0};
    CHECK_STATUS(MP_OK, mp_stats_create(&s, "gemma4", 1, ne, 4, all, 1, &err), &err);
    if (!s) return;
    s->class_tokens[0] = 1000;
    const mp_stats_cell *c = mp_stats_cell_at(s, 0, 0);
    const struct {
        int e, rank;
        double n, mean;
    } sel[8] = {{0, 1, 200, .3}, {1, 2, 300, .15}, {2, 1, 150, .3}, {3, 3, 400, .1},
                {4, 3, 100, .1}, {5, 3, 300, .1},  {6, 0, 9, .9},   {7, 0, 12, .1}};
    for (int i = 0; i < 8; i++) {
        c->count[sel[i].rank * 8 + sel[i].e] = sel[i].n;
        c->weight_sum[sel[i].rank * 8 + sel[i].e] = sel[i].n * sel[i].mean;
    }
    mp_plan_params p = {.method = MP_PLAN_UTILITY, .keep = 4};
    mp_dropmap *m = plan(s, p);
    if (m) CHECK_INT(BIT(0) | BIT(1) | BIT(2) | BIT(3), keep_mask(m, 0));
    mp_dropmap_free(m);
    p.whitelist = true;
    m = plan(s, p);
    if (m) CHECK_INT(BIT(0) | BIT(1) | BIT(2) | BIT(7), keep_mask(m, 0));
    mp_dropmap_free(m);
    mp_stats_free(s);
}

static void test_reasoning(void) {
    /* 6 experts, top-2, rank-0 selections with mean weight .5, two classes:
     *   general (1000 tokens): e0 400, e1 300, e2 200, e3 100
     *   math    (1000 tokens): e5 180, e4 140, e0 100
     * overall utility (N = 2000): e0 .125, e1 .075, e2 .05, e5 .045, e4 .035, e3 .025
     * keep 3 -> {0, 1, 2}. Math alone (N = 1000): e5 .09, e4 .07, e0 .05.
     * one swap: e5 in for e2 -> {0, 1, 5};
     * three: e5 for e2, e4 for e1, e0 already kept -> {0, 4, 5}. */
    const int64_t ne[1] = {6};
    const char *classes[2] = {"general", "math"};
    mp_stats *s = NULL;
    mp_err err = {0};
    CHECK_STATUS(MP_OK, mp_stats_create(&s, "gemma4", 1, ne, 2, classes, 2, &err), &err);
    if (!s) return;
    s->class_tokens[0] = s->class_tokens[1] = 1000;
    const double g[6] = {400, 300, 200, 100, 0, 0}, mth[6] = {100, 0, 0, 0, 140, 180};
    for (int e = 0; e < 6; e++) {
        mp_stats_cell_at(s, 0, 0)->count[e] = g[e];
        mp_stats_cell_at(s, 0, 0)->weight_sum[e] = g[e] * .5;
        mp_stats_cell_at(s, 0, 1)->count[e] = mth[e];
        mp_stats_cell_at(s, 0, 1)->weight_sum[e] = mth[e] * .5;
    }
    mp_plan_params p = {.method = MP_PLAN_UTILITY, .keep = 3};
    mp_dropmap *m = plan(s, p);
    if (m) CHECK_INT(BIT(0) | BIT(1) | BIT(2), keep_mask(m, 0));
    mp_dropmap_free(m);
    p.reasoning_class = "math";
    p.max_swaps = 1;
    m = plan(s, p);
    if (m) CHECK_INT(BIT(0) | BIT(1) | BIT(5), keep_mask(m, 0));
    mp_dropmap_free(m);
    p.max_swaps = 3;
    m = plan(s, p);
    if (m) CHECK_INT(BIT(0) | BIT(4) | BIT(5), keep_mask(m, 0));
    if (m) CHECK(strstr(m->method_params, "\"reasoning_class\":\"math\"") != NULL);
    mp_dropmap_free(m);
    /* restricted to the math class, utility keeps math's own top 3 */
    const char *only[1] = {"math"};
    p = (mp_plan_params){.method = MP_PLAN_UTILITY, .keep = 3, .classes = only, .n_classes = 1};
    m = plan(s, p);
    if (m) CHECK_INT(BIT(0) | BIT(4) | BIT(5), keep_mask(m, 0));
    mp_dropmap_free(m);
    mp_dropmap *none = NULL;
    p = (mp_plan_params){
        .method = MP_PLAN_UTILITY, .keep = 3, .reasoning_class = "poetry", .max_swaps = 3};
    CHECK_STATUS(MP_ERR_ARG, mp_plan_make(s, &p, &none, &err), &err);
    mp_stats_free(s);
}

static void test_contribution_multiclass_global(void) {
    /* layer 0: contributions 50 30 10 5 3 2 (shares .5 .8 .9 .95 .98 1 cumulative)
     * layer 1: 60 35 3 1 1 0 (.6 .95 .98 .99 1)
     * retain .89: layer 0 needs 3, layer 1 needs 2 -> uniform K = 3;
     * per layer: 3 and 2. retain .94: 4 and 2 -> 4. */
    const int64_t ne[2] = {6, 6};
    const char *classes[2] = {"a", "b"};
    mp_stats *s = NULL;
    mp_err err = {0};
    CHECK_STATUS(MP_OK, mp_stats_create(&s, "gemma4", 2, ne, 2, classes, 2, &err), &err);
    if (!s) return;
    const double l0[6] = {50, 30, 10, 5, 3, 2}, l1[6] = {60, 35, 3, 1, 1, 0};
    memcpy(mp_stats_cell_at(s, 0, 0)->contrib, l0, sizeof l0);
    memcpy(mp_stats_cell_at(s, 1, 0)->contrib, l1, sizeof l1);
    mp_plan_params p = {.method = MP_PLAN_CONTRIBUTION, .budget = MP_BUDGET_RETAIN, .retain = .89};
    mp_dropmap *m = plan(s, p);
    if (m) {
        CHECK_INT(BIT(0) | BIT(1) | BIT(2), keep_mask(m, 0));
        CHECK_INT(BIT(0) | BIT(1) | BIT(2), keep_mask(m, 1));
        CHECK_NEAR(.9, m->layers[0].retained, 1e-12);
        CHECK_NEAR(.98, m->layers[1].retained, 1e-12);
    }
    mp_dropmap_free(m);
    p.budget = MP_BUDGET_RETAIN_LAYER;
    m = plan(s, p);
    if (m) CHECK_INT(BIT(0) | BIT(1), keep_mask(m, 1));
    mp_dropmap_free(m);
    p.budget = MP_BUDGET_RETAIN;
    p.retain = .94;
    m = plan(s, p);
    if (m) CHECK_INT(4, m->layers[1].n_keep);
    mp_dropmap_free(m);

    /* global budget, 3 per layer on average = 6: each layer first gets its 2
     * used experts; the next candidates are layer 0's e2 (share .1) against
     * layer 1's e2 (.03): layer 0 wins, then its e3 (.05) beats .03 again. */
    p = (mp_plan_params){.method = MP_PLAN_CONTRIBUTION, .budget = MP_BUDGET_GLOBAL, .keep = 3};
    m = plan(s, p);
    if (m) {
        CHECK_INT(4, m->layers[0].n_keep);
        CHECK_INT(2, m->layers[1].n_keep);
    }
    mp_dropmap_free(m);

    /* multiclass, layer 0 only differs: class a 10 5 5 0 0 0 (.5 .25 .25),
     * class b 0 0 0 300 300 400 (.3 .3 .4). Summed contribution keeps the
     * big class's {3, 4, 5}; max-over-normalised keeps e0 (.5), e5 (.4) and
     * e3 (.3, tied with e4: lower id). */
    const double a[6] = {10, 5, 5, 0, 0, 0}, b[6] = {0, 0, 0, 300, 300, 400};
    memcpy(mp_stats_cell_at(s, 0, 0)->contrib, a, sizeof a);
    memcpy(mp_stats_cell_at(s, 0, 1)->contrib, b, sizeof b);
    p = (mp_plan_params){.method = MP_PLAN_CONTRIBUTION, .keep = 3};
    m = plan(s, p);
    if (m) CHECK_INT(BIT(3) | BIT(4) | BIT(5), keep_mask(m, 0));
    mp_dropmap_free(m);
    p.method = MP_PLAN_MULTICLASS;
    m = plan(s, p);
    if (m) CHECK_INT(BIT(0) | BIT(3) | BIT(5), keep_mask(m, 0));
    mp_dropmap_free(m);
    mp_stats_free(s);
}

/* --retain T keeps the smallest uniform K such that every layer's top-K share
 * is at least T: checked against a brute-force search over K. */
static void test_retain_rule(uint64_t *rng) {
    for (int trial = 0; trial < 20; trial++) {
        int64_t ne[5];
        for (int l = 0; l < 5; l++) ne[l] = l == 2 ? 0 : 16 + (int64_t)(mp_test_rand(rng) % 3) * 8;
        const char *all[1] = {"all"};
        mp_stats *s = NULL;
        mp_err err = {0};
        if (mp_stats_create(&s, "gemma4", 5, ne, 4, all, 1, &err)) continue;
        for (int l = 0; l < 5; l++)
            for (int64_t e = 0; e < ne[l]; e++) {
                double u = (1 + mp_test_randf(rng)) / 2;
                mp_stats_cell_at(s, l, 0)->contrib[e] = pow(u, 4) * 100;
            }
        double t = trial % 2 ? 0.99 : 0.9 + 0.09 * (1 + mp_test_randf(rng)) / 2;
        int64_t want = -1, min_x = 1 << 30;
        for (int l = 0; l < 5; l++)
            if (ne[l] && ne[l] < min_x) min_x = ne[l];
        for (int64_t k = 4; k <= 32 && want < 0; k++) {
            bool ok = true;
            for (int l = 0; l < 5 && ok; l++) {
                if (!ne[l]) continue;
                double v[32], total = 0, top = 0;
                memcpy(v, mp_stats_cell_at(s, l, 0)->contrib, (size_t)ne[l] * sizeof *v);
                for (int64_t i = 0; i < ne[l]; i++) total += v[i];
                for (int64_t j = 0; j < k && j < ne[l]; j++) { /* take the j-th largest */
                    int64_t best = 0;
                    for (int64_t i = 1; i < ne[l]; i++)
                        if (v[i] > v[best]) best = i;
                    top += v[best];
                    v[best] = -1;
                }
                ok = top / total >= t;
            }
            if (ok) want = k;
        }
        mp_plan_params p = {
            .method = MP_PLAN_CONTRIBUTION, .budget = MP_BUDGET_RETAIN, .retain = t};
        mp_dropmap *m = plan(s, p);
        for (int64_t i = 0; m && i < m->n_layers; i++) {
            int64_t x = ne[m->layers[i].layer];
            CHECK_MSG(m->layers[i].n_keep == (want < x ? want : x),
                      "trial %d layer %lld: kept %lld,"
                      " brute force says %lld",
                      trial, (long long)m->layers[i].layer, (long long)m->layers[i].n_keep,
                      (long long)want);
            CHECK(m->layers[i].retained >= t || m->layers[i].n_keep == x);
        }
        mp_dropmap_free(m);
        mp_stats_free(s);
    }
}

int main(int argc, char **argv) {
    uint64_t rng = mp_test_seed(argc, argv);
    test_frequency_utility_reap();
    test_whitelist();
    test_reasoning();
    test_contribution_multiclass_global();
    test_retain_rule(&rng);
    return mp_test_end("test_plan");
}

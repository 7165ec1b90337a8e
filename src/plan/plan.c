/* plan.c — drop maps from expert statistics, by the published recipes.
 *
 * Scores (per layer, over the selected classes; N = their token count):
 *   frequency     f[e]    = sum_k count[k][e]
 *   utility       u[e]    = sum_k (count[k][e] / N) * (weight_sum[k][e] / max(count[k][e], 1))
 *   contribution  c[e]    = sum of ||g * E(x)||_2 over the tokens routed to e
 *   multiclass    m[e]    = max over classes of c_class[e] / sum_e' c_class[e']
 *   reap          r[e]    = c[e] / f[e] (mean gate-weighted output norm; 0 if never chosen)
 * Ranking: higher score first, ties by lower expert id (a stable, documented
 * order, so that two runs and two machines produce the same map).
 * Budgets: a uniform K; the smallest uniform K with every layer keeping at
 * least `retain` of its total score (the 128 -> 109 Gemma 4 recipe uses the
 * contribution score with 0.99); per-layer K reaching `retain`; or a global
 * budget spread over layers by score normalised per layer. No layer keeps
 * fewer than the experts used per token.
 * Utility passes: the whitelist swaps experts with an average rank below 2 and
 * at least 10 selections in for the lowest-utility kept ones; the reasoning
 * pass swaps in, at most max_swaps per layer, experts in the reasoning class's
 * own top K that the keep-set lacks, in place of the lowest-utility kept
 * experts that neither pass put there. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "util/util.h"

/* whitelist rule constants (the published utility recipe) */
#define WHITELIST_MAX_AVG_RANK   2.0
#define WHITELIST_MIN_SELECTIONS 10.0

static const char *const method_names[MP_PLAN_METHOD_COUNT] = {
    "frequency", "utility", "contribution", "multiclass", "reap"};

const char *mp_plan_method_name(int m) {
    return m >= 0 && m < MP_PLAN_METHOD_COUNT ? method_names[m] : "?";
}

int mp_plan_method_from_name(const char *name) {
    for (int m = 0; m < MP_PLAN_METHOD_COUNT; m++)
        if (!strcmp(name, method_names[m])) return m;
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Scores                                                                   */
/* ------------------------------------------------------------------------ */

/* Resolves the class selection into indices; all classes when none given. */
static mp_status select_classes(const mp_stats *s, const char *const *names, int64_t n,
                                int64_t *idx, int64_t *n_idx, mp_err *err) {
    if (!names || n == 0) {
        for (int64_t c = 0; c < s->n_class; c++) idx[c] = c;
        *n_idx = s->n_class;
        return MP_OK;
    }
    if (n > s->n_class)
        return mp_err_set(err, MP_ERR_ARG, "%" PRId64 " classes asked, the stats have %" PRId64, n,
                          s->n_class);
    for (int64_t i = 0; i < n; i++) {
        idx[i] = mp_stats_find_class(s, names[i]);
        if (idx[i] < 0) {
            char have[256] = "";
            for (int64_t c = 0; c < s->n_class; c++)
                snprintf(have + strlen(have), sizeof have - strlen(have), "%s%s", c ? ", " : "",
                         s->classes[c]);
            return mp_err_set(err, MP_ERR_ARG, "unknown class '%s' (the stats have: %s)", names[i],
                              have);
        }
    }
    *n_idx = n;
    return MP_OK;
}

/* Score of one method from one set of classes, written into score[x]. */
static void class_scores(const mp_stats *s, mp_plan_method m, int64_t layer, const int64_t *cls,
                         int64_t n_cls, double *score) {
    int64_t x = s->n_expert[layer], k = s->n_expert_used;
    double n_tok = 0;
    for (int64_t i = 0; i < n_cls; i++) n_tok += s->class_tokens[cls[i]];
    for (int64_t e = 0; e < x; e++) {
        double freq = 0, util = 0, contrib = 0;
        for (int64_t r = 0; r < k; r++) {
            double cnt = 0, wsum = 0;
            for (int64_t i = 0; i < n_cls; i++) {
                const mp_stats_cell *c = mp_stats_cell_at(s, layer, cls[i]);
                cnt += c->count[r * x + e];
                wsum += c->weight_sum[r * x + e];
            }
            freq += cnt;
            if (n_tok > 0) util += (cnt / n_tok) * (wsum / (cnt > 1 ? cnt : 1));
        }
        for (int64_t i = 0; i < n_cls; i++)
            contrib += mp_stats_cell_at(s, layer, cls[i])->contrib[e];
        switch (m) {
        case MP_PLAN_FREQUENCY: score[e] = freq; break;
        case MP_PLAN_UTILITY: score[e] = util; break;
        case MP_PLAN_REAP: score[e] = freq > 0 ? contrib / freq : 0; break;
        default: score[e] = contrib; break;
        }
    }
}

mp_status mp_plan_scores(const mp_stats *s, const mp_plan_params *p, int64_t layer, double *score,
                         mp_err *err) {
    if (layer < 0 || layer >= s->n_layer || s->n_expert[layer] == 0)
        return mp_err_set(err, MP_ERR_ARG, "layer %" PRId64 " is not a MoE layer", layer);
    if ((int)p->method < 0 || p->method >= MP_PLAN_METHOD_COUNT)
        return mp_err_set(err, MP_ERR_ARG, "unknown plan method %d", (int)p->method);
    int64_t *cls = mp_calloc((size_t)s->n_class, sizeof *cls), n_cls = 0;
    if (!cls) return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    mp_status st = select_classes(s, p->classes, p->n_classes, cls, &n_cls, err);
    if (st) {
        mp_free(cls);
        return st;
    }
    int64_t x = s->n_expert[layer];
    if (p->method != MP_PLAN_MULTICLASS) {
        class_scores(s, p->method, layer, cls, n_cls, score);
    } else {
        double *one = mp_calloc((size_t)x, sizeof *one);
        if (!one) {
            mp_free(cls);
            return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
        }
        for (int64_t e = 0; e < x; e++) score[e] = 0;
        for (int64_t i = 0; i < n_cls; i++) {
            class_scores(s, MP_PLAN_CONTRIBUTION, layer, &cls[i], 1, one);
            double sum = 0;
            for (int64_t e = 0; e < x; e++) sum += one[e];
            for (int64_t e = 0; e < x && sum > 0; e++)
                if (one[e] / sum > score[e]) score[e] = one[e] / sum;
        }
        mp_free(one);
    }
    mp_free(cls);
    return MP_OK;
}

/* ------------------------------------------------------------------------ */
/* Ranking and budgets                                                      */
/* ------------------------------------------------------------------------ */

typedef struct ranked {
    double score;
    int32_t id;
} ranked;

static int cmp_ranked(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* order[] = expert ids by descending score, ties by id. */
static void rank_experts(const double *score, int64_t x, ranked *order) {
    for (int64_t e = 0; e < x; e++) order[e] = (ranked){score[e], (int32_t)e};
    qsort(order, (size_t)x, sizeof *order, cmp_ranked);
}

/* Smallest k whose top-k share of the total reaches `retain` (all if the
 * total is 0: nothing tells experts apart). */
static int64_t k_for_share(const ranked *order, int64_t x, double retain) {
    double total = 0, cum = 0;
    for (int64_t e = 0; e < x; e++) total += order[e].score;
    if (total <= 0) return x;
    for (int64_t k = 0; k < x; k++) {
        cum += order[k].score;
        if (cum / total >= retain) return k + 1;
    }
    return x;
}

typedef struct layer_plan {
    int64_t x;     /* experts in the layer (0: dense) */
    double *score; /* [x] */
    ranked *order; /* [x] */
    int64_t k;     /* experts to keep */
    bool *keep;    /* [x] */
} layer_plan;

/* Spreads keep * n_moe budget over layers by per-layer-normalised score. */
static void global_budget(layer_plan *lp, int64_t n_layer, int64_t used, int64_t keep) {
    int64_t n_moe = 0, total = 0, budget;
    for (int64_t l = 0; l < n_layer; l++)
        if (lp[l].x) {
            n_moe++;
            lp[l].k = used < lp[l].x ? used : lp[l].x;
            total += lp[l].k;
        }
    budget = keep * n_moe - total;
    while (budget > 0) {
        int64_t best = -1;
        double best_v = -1;
        for (int64_t l = 0; l < n_layer; l++) {
            if (!lp[l].x || lp[l].k >= lp[l].x) continue;
            double sum = 0;
            for (int64_t e = 0; e < lp[l].x; e++) sum += lp[l].order[e].score;
            double v = sum > 0 ? lp[l].order[lp[l].k].score / sum : 0;
            if (v > best_v) { /* ties: the lower layer, scanned first */
                best_v = v;
                best = l;
            }
        }
        if (best < 0) break;
        lp[best].k++;
        budget--;
    }
}

/* The lowest-scored kept expert that no pass fixed in place, or -1. */
static int64_t lowest_free(const layer_plan *L, const bool *fixed) {
    for (int64_t i = L->x - 1; i >= 0; i--) {
        int32_t id = L->order[i].id;
        if (L->keep[id] && !fixed[id]) return id;
    }
    return -1;
}

/* Utility passes: whitelist, then reasoning swaps (see the file comment). */
static mp_status utility_passes(const mp_stats *s, const mp_plan_params *p, int64_t layer,
                                layer_plan *L, mp_err *err) {
    int64_t x = L->x, k = s->n_expert_used;
    bool *fixed = mp_calloc((size_t)x, sizeof *fixed);
    double *rscore = mp_calloc((size_t)x, sizeof *rscore);
    ranked *rorder = mp_calloc((size_t)x, sizeof *rorder);
    mp_status st = MP_OK;
    if (!fixed || !rscore || !rorder) {
        st = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (p->whitelist) {
        for (int64_t i = 0; i < x; i++) {
            int32_t e = L->order[i].id;
            double sel = 0, rank_sum = 0;
            for (int64_t c = 0; c < s->n_class; c++)
                for (int64_t r = 0; r < k; r++) {
                    double cnt = mp_stats_cell_at(s, layer, c)->count[r * x + e];
                    sel += cnt;
                    rank_sum += (double)r * cnt;
                }
            if (sel < WHITELIST_MIN_SELECTIONS || rank_sum / sel >= WHITELIST_MAX_AVG_RANK)
                continue;
            if (!L->keep[e]) {
                int64_t out = lowest_free(L, fixed);
                if (out < 0) break; /* the whole keep-set is whitelisted already */
                L->keep[out] = false;
                L->keep[e] = true;
            }
            fixed[e] = true;
        }
    }
    if (p->reasoning_class && p->max_swaps > 0) {
        mp_plan_params rp = *p;
        const char *one[1] = {p->reasoning_class};
        rp.classes = one;
        rp.n_classes = 1;
        if ((st = mp_plan_scores(s, &rp, layer, rscore, err))) goto done;
        rank_experts(rscore, x, rorder);
        int64_t swaps = 0;
        for (int64_t i = 0; i < L->k && swaps < p->max_swaps; i++) {
            int32_t e = rorder[i].id;
            if (L->keep[e] || rorder[i].score <= 0) continue;
            int64_t out = lowest_free(L, fixed);
            if (out < 0) break;
            L->keep[out] = false;
            L->keep[e] = true;
            fixed[e] = true;
            swaps++;
        }
    }
done:
    mp_free(fixed);
    mp_free(rscore);
    mp_free(rorder);
    return st;
}

static void free_plans(layer_plan *lp, int64_t n) {
    for (int64_t l = 0; lp && l < n; l++) {
        mp_free(lp[l].score);
        mp_free(lp[l].order);
        mp_free(lp[l].keep);
    }
    mp_free(lp);
}

static mp_status check_params(const mp_stats *s, const mp_plan_params *p, int64_t min_x,
                              int64_t max_x, mp_err *err) {
    if ((int)p->budget < 0 || p->budget >= MP_BUDGET_COUNT)
        return mp_err_set(err, MP_ERR_ARG, "unknown budget %d", (int)p->budget);
    if (p->budget == MP_BUDGET_UNIFORM || p->budget == MP_BUDGET_GLOBAL) {
        if (p->keep > max_x || (p->budget == MP_BUDGET_UNIFORM && p->keep > min_x))
            return mp_err_set(err, MP_ERR_ARG,
                              "cannot keep %" PRId64 " experts: the model has %" PRId64
                              " per layer",
                              p->keep, min_x);
        if (p->keep < s->n_expert_used)
            return mp_err_set(err, MP_ERR_ARG,
                              "cannot keep %" PRId64 " experts: fewer than the %" PRId64
                              " used per token",
                              p->keep, s->n_expert_used);
    } else if (!(p->retain > 0 && p->retain <= 1)) {
        return mp_err_set(err, MP_ERR_ARG, "retain share %g is not in (0, 1]", p->retain);
    }
    bool passes = p->whitelist || p->reasoning_class;
    if (passes && p->method != MP_PLAN_UTILITY)
        return mp_err_set(err, MP_ERR_ARG,
                          "--whitelist and --reasoning-class apply to the utility "
                          "method, not %s",
                          mp_plan_method_name(p->method));
    if (p->reasoning_class && mp_stats_find_class(s, p->reasoning_class) < 0)
        return mp_err_set(err, MP_ERR_ARG, "unknown reasoning class '%s'", p->reasoning_class);
    return MP_OK;
}

static mp_status to_dropmap(const mp_stats *s, const mp_plan_params *p, layer_plan *lp,
                            mp_dropmap **out, mp_err *err) {
    mp_dropmap *m = mp_calloc(1, sizeof *m);
    if (!m) return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    m->arch = mp_strdup(s->arch);
    m->n_layer = s->n_layer;
    m->n_expert_used = s->n_expert_used;
    m->sha256 = s->model_sha256[0] ? mp_strdup(s->model_sha256) : NULL;
    m->method = mp_strdup(mp_plan_method_name(p->method));
    char params[512];
    int o = snprintf(params, sizeof params, "{\"budget\":\"%s\"",
                     p->budget == MP_BUDGET_UNIFORM  ? "uniform"
                     : p->budget == MP_BUDGET_RETAIN ? "retain"
                     : p->budget == MP_BUDGET_GLOBAL ? "global"
                                                     : "retain-per-layer");
    if (p->budget == MP_BUDGET_UNIFORM || p->budget == MP_BUDGET_GLOBAL)
        o += snprintf(params + o, sizeof params - (size_t)o, ",\"keep\":%" PRId64, p->keep);
    else
        o += snprintf(params + o, sizeof params - (size_t)o, ",\"retain\":%.10g", p->retain);
    if (p->whitelist) o += snprintf(params + o, sizeof params - (size_t)o, ",\"whitelist\":true");
    if (p->reasoning_class)
        o += snprintf(params + o, sizeof params - (size_t)o,
                      ",\"reasoning_class\":\"%s\",\"max_swaps\":%" PRId64, p->reasoning_class,
                      p->max_swaps);
    snprintf(params + o, sizeof params - (size_t)o, "}");
    m->method_params = mp_strdup(params);
    int64_t n_moe = 0;
    for (int64_t l = 0; l < s->n_layer; l++) {
        n_moe += lp[l].x > 0;
        if (lp[l].x > m->n_expert) m->n_expert = lp[l].x;
    }
    m->layers = mp_calloc((size_t)(n_moe ? n_moe : 1), sizeof *m->layers);
    if (!m->arch || !m->method || !m->method_params || !m->layers) goto nomem;
    for (int64_t l = 0; l < s->n_layer; l++) {
        layer_plan *L = &lp[l];
        if (!L->x) continue;
        mp_dropmap_layer *D = &m->layers[m->n_layers++];
        D->layer = l;
        D->keep = mp_calloc((size_t)L->x, sizeof *D->keep);
        D->drop = mp_calloc((size_t)L->x, sizeof *D->drop);
        if (!D->keep || !D->drop) goto nomem;
        double kept = 0, total = 0;
        for (int64_t e = 0; e < L->x; e++) {
            total += L->score[e];
            if (L->keep[e]) {
                D->keep[D->n_keep++] = (int32_t)e;
                kept += L->score[e];
            } else {
                D->drop[D->n_drop++] = (int32_t)e;
            }
        }
        D->retained = total > 0 ? kept / total : 1.0;
    }
    *out = m;
    return MP_OK;
nomem:
    mp_dropmap_free(m);
    return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
}

mp_status mp_plan_make(const mp_stats *s, const mp_plan_params *p, mp_dropmap **out, mp_err *err) {
    int64_t min_x = INT64_MAX, max_x = 0;
    for (int64_t l = 0; l < s->n_layer; l++)
        if (s->n_expert[l]) {
            if (s->n_expert[l] < min_x) min_x = s->n_expert[l];
            if (s->n_expert[l] > max_x) max_x = s->n_expert[l];
        }
    if (max_x == 0) return mp_err_set(err, MP_ERR_ARG, "the stats have no MoE layers");
    mp_status st = check_params(s, p, min_x, max_x, err);
    if (st) return st;
    layer_plan *lp = mp_calloc((size_t)s->n_layer, sizeof *lp);
    if (!lp) return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    int64_t uniform_k = 0;
    for (int64_t l = 0; l < s->n_layer && !st; l++) {
        layer_plan *L = &lp[l];
        L->x = s->n_expert[l];
        if (!L->x) continue;
        L->score = mp_calloc((size_t)L->x, sizeof *L->score);
        L->order = mp_calloc((size_t)L->x, sizeof *L->order);
        L->keep = mp_calloc((size_t)L->x, sizeof *L->keep);
        if (!L->score || !L->order || !L->keep) {
            st = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
            break;
        }
        if ((st = mp_plan_scores(s, p, l, L->score, err))) break;
        rank_experts(L->score, L->x, L->order);
        if (p->budget == MP_BUDGET_UNIFORM) L->k = p->keep;
        if (p->budget == MP_BUDGET_RETAIN || p->budget == MP_BUDGET_RETAIN_LAYER)
            L->k = k_for_share(L->order, L->x, p->retain);
        if (L->k > uniform_k) uniform_k = L->k;
    }
    if (!st) {
        if (p->budget == MP_BUDGET_GLOBAL) global_budget(lp, s->n_layer, s->n_expert_used, p->keep);
        for (int64_t l = 0; l < s->n_layer && !st; l++) {
            layer_plan *L = &lp[l];
            if (!L->x) continue;
            if (p->budget == MP_BUDGET_RETAIN) L->k = uniform_k < L->x ? uniform_k : L->x;
            if (L->k < s->n_expert_used) L->k = s->n_expert_used;
            for (int64_t i = 0; i < L->k; i++) L->keep[L->order[i].id] = true;
            if (p->method == MP_PLAN_UTILITY) st = utility_passes(s, p, l, L, err);
        }
    }
    if (!st) st = to_dropmap(s, p, lp, out, err);
    free_plans(lp, s->n_layer);
    return st;
}

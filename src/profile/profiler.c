/* profiler.c — accumulates expert statistics from the engine's MoE hook.
 *
 * For every token routed in a MoE layer and every rank r of its top-k
 * (expert e, gate weight g, weighted output y = g * E(x)):
 *   count[r][e] += 1, weight_sum[r][e] += g,
 *   contrib[e] += ||y||_2, contrib_sq[e] += ||y||_2^2.
 * REAP saliency is contrib / selections, derived later (stats.c). Tokens at
 * positions below `min_pos` are skipped (two-phase profiling counts only what
 * the model routes for the response). The hook asks the engine for the expert
 * outputs, which costs one vector copy per routed token; nothing else. */
#include <math.h>

#include "profile/profile.h"

struct mp_profiler {
    mp_stats *stats;
    int64_t cls;     /* class the current text belongs to */
    int64_t min_pos; /* tokens before this position are not counted */
};

static mp_status on_moe(const mp_moe_hook_data *d, void *user) {
    mp_profiler *p = user;
    mp_stats *s = p->stats;
    if (d->layer < 0 || d->layer >= s->n_layer || s->n_expert[d->layer] != d->n_expert ||
        d->n_used > s->n_expert_used)
        return MP_ERR_CHECK; /* the model changed under us: never expected */
    const mp_stats_cell *c = mp_stats_cell_at(s, d->layer, p->cls);
    int64_t x = d->n_expert;
    for (int64_t t = 0; t < d->n_tokens; t++) {
        if (d->pos0 + t < p->min_pos) continue;
        for (int64_t r = 0; r < d->n_used; r++) {
            int32_t e = d->experts[t * d->n_used + r];
            if (e < 0 || e >= x) return MP_ERR_CHECK;
            c->count[r * x + e] += 1;
            c->weight_sum[r * x + e] += d->weights[t * d->n_used + r];
            if (!d->expert_out) continue;
            const float *y = d->expert_out + (t * d->n_used + r) * d->n_embd;
            double ss = 0;
            for (int64_t i = 0; i < d->n_embd; i++) ss += (double)y[i] * y[i];
            c->contrib[e] += sqrt(ss);
            c->contrib_sq[e] += ss;
        }
    }
    return MP_OK;
}

mp_status mp_profiler_init(mp_profiler **out, const mp_model *m, const char *const *classes,
                           int64_t n_class, mp_err *err) {
    int64_t n_layer = mp_model_n_layer(m);
    int64_t *ne = mp_calloc((size_t)n_layer, sizeof *ne);
    mp_profiler *p = mp_calloc(1, sizeof *p);
    if (!ne || !p) {
        mp_free(ne);
        mp_free(p);
        return mp_err_set(err, MP_ERR_NOMEM, "profile: out of memory");
    }
    for (int64_t l = 0; l < n_layer; l++) ne[l] = mp_model_n_expert(m, l);
    mp_status st = mp_stats_create(&p->stats, mp_model_arch(m), n_layer, ne,
                                   mp_model_n_expert_used(m), classes, n_class, err);
    mp_free(ne);
    if (st) {
        mp_free(p);
        return st;
    }
    *out = p;
    return MP_OK;
}

void mp_profiler_free(mp_profiler *p) {
    if (!p) return;
    mp_stats_free(p->stats);
    mp_free(p);
}

mp_status mp_profiler_attach(mp_profiler *p, mp_context *c, mp_err *err) {
    mp_moe_hook h = {.fn = on_moe, .user = p, .want_expert_out = true};
    return mp_context_set_moe_hook(c, &h, err);
}

mp_status mp_profiler_set_class(mp_profiler *p, int64_t cls, mp_err *err) {
    if (cls < 0 || cls >= p->stats->n_class)
        return mp_err_set(err, MP_ERR_ARG, "profile: class %lld out of range", (long long)cls);
    p->cls = cls;
    return MP_OK;
}

void mp_profiler_set_min_pos(mp_profiler *p, int64_t pos) {
    p->min_pos = pos;
}

void mp_profiler_add_tokens(mp_profiler *p, int64_t n) {
    p->stats->class_tokens[p->cls] += (double)n;
}

mp_stats *mp_profiler_stats(mp_profiler *p) {
    return p->stats;
}

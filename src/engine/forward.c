/* forward.c — one forward step of the engine over a batch of tokens: the
 * embedding, per layer attention and FFN (dense branch, router, experts), the
 * final norm, output projection and soft-cap.
 *
 * The order of operations is gemma4-gguf-spec.md section 4, read through the
 * family switches of mp_hparams (arch.h): optional norms are skipped when the
 * file has no weight for them, so a pre-norm family without post norms runs
 * through the same code. Batched: each matmul covers every token of the step,
 * and the experts run grouped, one job per expert over all the tokens routed
 * to it, so each expert's weights are read once per step. Per-token work that
 * the pool splits (Q/K/V preparation, attention) is split by token or by
 * (token, head), never by thread, so results do not depend on -t.
 * Not here: KV-cache allocation and masks (context.c), kernels (matmul.c). */
#include <inttypes.h>
#include <math.h>

#include "engine/engine.h"

/* ggml clamps the sum of the chosen experts' probabilities to the smallest
 * normal f16 before renormalising (llama-graph.cpp, build_moe_ffn). */
#define MOE_WEIGHT_SUM_MIN 6.103515625e-5f

typedef struct step {
    mp_context *c;
    const mp_model *m;
    const mp_hparams *hp;
    int64_t n;    /* tokens in this step */
    int64_t pos0; /* position of the first */
    int64_t l;    /* current layer */
    bool hook_tail; /* last layer, no logits, only the MoE hook wants it:
                       route, run the experts, call the hook, stop */
} step;

/* Calls the matmul hook for each job, then runs them. */
static mp_status run_jobs(step *s, mp_mm_job *jobs, int64_t n_jobs, mp_err *err) {
    mp_context *c = s->c;
    for (int64_t j = 0; c->mm_hook && j < n_jobs; j++) {
        if (jobs[j].n_tok == 0) continue;
        const mp_weight *w = &jobs[j].w;
        mp_matmul_hook_data d = {.tensor = w->name, .slab = jobs[j].slab,
                                 .n_slab = jobs[j].n_slab,
                                 .n_in = w->ne[0], .n_tokens = jobs[j].n_tok, .x = jobs[j].x,
                                 .ldx = jobs[j].ldx};
        mp_status st = c->mm_hook(&d, c->mm_hook_user);
        if (st)
            return mp_err_set(err, st, "eval: the matmul hook stopped the run at '%s' (status %s)",
                              w->name ? w->name : "?", mp_status_name(st));
    }
    mp_matmul(c->pool, c->kern, jobs, n_jobs, &c->mm);
    return MP_OK;
}

static mp_mm_job job(const mp_weight *w, const float *x, int64_t ldx, float *y, int64_t ldy,
                     int64_t n_tok) {
    mp_mm_job j = {.w = *w, .x = x, .ldx = ldx, .y = y, .ldy = ldy, .n_tok = n_tok, .n_slab = 1};
    return j;
}

/* y[t] = rms_norm(x[t]) * w for each token (rows of n_embd). */
static void norm_rows(const step *s, const float *x, const float *w, float *y) {
    const int64_t E = s->hp->n_embd;
    for (int64_t t = 0; t < s->n; t++) mp_rms_norm(x + t * E, w, y + t * E, E, s->hp->eps);
}

static void kv_store(const mp_context *c, void *cache, int64_t pos, const float *src,
                     int64_t n) {
    if (c->p.kv_type == MP_KV_F16) {
        uint16_t *d = (uint16_t *)cache + pos * n;
        for (int64_t i = 0; i < n; i++) d[i] = mp_f32_to_f16(src[i]);
    } else {
        memcpy((float *)cache + pos * n, src, (size_t)n * sizeof *src);
    }
}

/* ------------------------------------------------------------- attention */

/* Per token: per-head Q norm and RoPE; for layers that own K/V also V = K
 * (raw, when there is no attn_v), K norm and RoPE, V RMS, into the cache. */
static void qkv_task(void *arg, int64_t t, int thread) {
    const step *s = arg;
    mp_context *c = s->c;
    const mp_layer_hparams *lh = &s->hp->layers[s->l];
    const mp_layer_weights *w = &s->m->am->layers[s->l];
    const int64_t d = lh->head_dim, H = lh->n_head, Hkv = lh->n_head_kv, half = lh->n_rot / 2;
    const int64_t pos = s->pos0 + t;
    const float eps = s->hp->eps;
    float *cs = c->thr_att + (size_t)thread * (size_t)c->thr_att_stride + c->p.n_ctx;
    float *sn = cs + half;
    const double *f = s->m->inv_freq + s->m->inv_freq_off[s->l];
    for (int64_t j = 0; j < half; j++) {
        const double theta = (double)pos * f[j];
        cs[j] = (float)cos(theta);
        sn[j] = (float)sin(theta);
    }
    float *q = c->q + t * H * d;
    for (int64_t h = 0; h < H; h++) {
        mp_rms_norm(q + h * d, w->q_norm, q + h * d, d, eps);
        mp_rope_apply(q + h * d, lh->n_rot, s->hp->rope, cs, sn);
    }
    if (!lh->has_kv) return;
    float *k = c->k + t * Hkv * d, *v = c->v + t * Hkv * d;
    if (!mp_weight_present(&w->wv)) memcpy(v, k, (size_t)(Hkv * d) * sizeof *v);
    for (int64_t g = 0; g < Hkv; g++) {
        mp_rms_norm(k + g * d, w->k_norm, k + g * d, d, eps);
        mp_rope_apply(k + g * d, lh->n_rot, s->hp->rope, cs, sn);
        if (s->hp->v_rms) mp_rms_norm(v + g * d, NULL, v + g * d, d, eps);
    }
    kv_store(c, c->k_cache[s->l], pos, k, Hkv * d);
    kv_store(c, c->v_cache[s->l], pos, v, Hkv * d);
}

/* One (token, query head): scores against the cached keys the mask lets it
 * see (causal; sliding layers also drop keys with p_q - p_k >= n_swa),
 * softmax in f32, weighted sum of the values. */
static void attn_task(void *arg, int64_t task, int thread) {
    const step *s = arg;
    const mp_context *c = s->c;
    const mp_layer_hparams *lh = &s->hp->layers[s->l];
    const int64_t H = lh->n_head, d = lh->head_dim, row = lh->n_head_kv * d;
    const int64_t t = task / H, h = task % H, g = h / (H / lh->n_head_kv);
    const int64_t pos = s->pos0 + t;
    const int64_t lo = lh->is_swa && pos - s->hp->n_swa + 1 > 0 ? pos - s->hp->n_swa + 1 : 0;
    const void *kc = c->k_cache[lh->kv_source], *vc = c->v_cache[lh->kv_source];
    float *sc = c->thr_att + (size_t)thread * (size_t)c->thr_att_stride;
    const float *q = c->q + t * H * d + h * d;
    float *o = c->att + t * H * d + h * d;
    const mp_kernels *k = c->kern;
    const bool f16 = c->p.kv_type == MP_KV_F16;
    const size_t off = (size_t)(g * d);
    for (int64_t p = lo; p <= pos; p++) {
        const size_t at = (size_t)(p * row) + off;
        const float dot = f16 ? k->dot_f16(q, (const uint16_t *)kc + at, d)
                              : k->dot_f32(q, (const float *)kc + at, d);
        sc[p - lo] = dot * s->hp->attn_scale;
    }
    mp_softmax(sc, pos - lo + 1);
    const size_t at = (size_t)(lo * row) + off;
    if (f16) k->wsum_f16(o, sc, (const uint16_t *)vc + at, (size_t)row, pos - lo + 1, d);
    else k->wsum_f32(o, sc, (const float *)vc + at, (size_t)row, pos - lo + 1, d);
}

static mp_status attention(step *s, mp_err *err) {
    mp_status st;
    mp_context *c = s->c;
    const mp_layer_hparams *lh = &s->hp->layers[s->l];
    const mp_layer_weights *w = &s->m->am->layers[s->l];
    const int64_t E = s->hp->n_embd, n = s->n;
    const int64_t qd = lh->n_head * lh->head_dim, kvd = lh->n_head_kv * lh->head_dim;
    norm_rows(s, c->x, w->attn_norm, c->xn);
    mp_mm_job *jobs = c->jobs;
    int64_t nj = 0;
    jobs[nj++] = job(&w->wq, c->xn, E, c->q, qd, n);
    if (lh->has_kv) {
        jobs[nj++] = job(&w->wk, c->xn, E, c->k, kvd, n);
        if (mp_weight_present(&w->wv)) jobs[nj++] = job(&w->wv, c->xn, E, c->v, kvd, n);
    }
    st = run_jobs(s, jobs, nj, err);
    if (st) return st;
    mp_pool_run(c->pool, n, qkv_task, s);
    mp_pool_run(c->pool, n * lh->n_head, attn_task, s);
    jobs[0] = job(&w->wo, c->att, qd, c->t1, E, n);
    st = run_jobs(s, jobs, 1, err);
    if (st) return st;
    if (w->post_attn_norm) norm_rows(s, c->t1, w->post_attn_norm, c->t1);
    for (int64_t i = 0; i < n * E; i++) c->x[i] += c->t1[i];
    return MP_OK;
}

/* ------------------------------------------------------------------- FFN */

/* a[r] = act(g[r] * gs) * (u[r] * us) for n rows of F values, one pool task
 * per row; gs and us are the row's expert scales when `experts`. */
typedef struct glu_run {
    const step *s;
    float *a;
    const float *g, *u;
    int64_t ldg, ldu, F;
    bool experts;
} glu_run;

static void glu_task(void *arg, int64_t r, int thread) {
    (void)thread;
    const glu_run *g = arg;
    const mp_context *c = g->s->c;
    const mp_layer_weights *w = &g->s->m->am->layers[g->s->l];
    float gs = 1.0f, us = 1.0f;
    if (g->experts) {
        const int32_t e = c->row_expert[r];
        if (w->gate_exps_scale) gs = w->gate_exps_scale[e];
        if (w->up_exps_scale) us = w->up_exps_scale[e];
    }
    c->kern->glu(g->s->hp->act, g->a + r * g->F, g->g + r * g->ldg, g->u + r * g->ldu, g->F, gs,
                 us);
}

static void glu_rows(const step *s, float *a, const float *g, int64_t ldg, const float *u,
                     int64_t ldu, int64_t F, int64_t n, bool experts) {
    glu_run run = {.s = s, .a = a, .g = g, .u = u, .ldg = ldg, .ldu = ldu, .F = F,
                   .experts = experts};
    mp_pool_run(s->c->pool, n, glu_task, &run);
}

/* Dense gated FFN of the normalised input xn into t1. */
static mp_status dense_ffn(step *s, mp_err *err) {
    mp_status st;
    mp_context *c = s->c;
    const mp_layer_weights *w = &s->m->am->layers[s->l];
    const int64_t E = s->hp->n_embd, F = s->hp->layers[s->l].n_ff, n = s->n;
    mp_mm_job *jobs = c->jobs;
    jobs[0] = job(&w->ffn_gate, c->xn, E, c->fa, F, n);
    jobs[1] = job(&w->ffn_up, c->xn, E, c->fb, F, n);
    st = run_jobs(s, jobs, 2, err);
    if (st) return st;
    glu_rows(s, c->fa, c->fa, F, c->fb, F, F, n, false);
    jobs[0] = job(&w->ffn_down, c->fa, F, c->t1, E, n);
    return run_jobs(s, jobs, 1, err);
}

/* Router logits into rlog, then per token: mask, softmax over the layer's
 * experts, top-k by probability (lower id first on ties), renormalised
 * weights (spec 4, "Router"). */
static mp_status route(step *s, mp_err *err) {
    mp_status st;
    mp_context *c = s->c;
    const mp_hparams *hp = s->hp;
    const mp_layer_weights *w = &s->m->am->layers[s->l];
    const int64_t E = hp->n_embd, X = hp->layers[s->l].n_expert, K = c->k_used, n = s->n;
    const float *rin = c->u;
    if (hp->router_input == MP_ROUTER_RMS_SCALED) {
        const float inv_sqrt_e = 1.0f / sqrtf((float)E);
        for (int64_t t = 0; t < n; t++) {
            float *r = c->r + t * E;
            mp_rms_norm(c->x + t * E, NULL, r, E, hp->eps);
            for (int64_t i = 0; i < E; i++) r[i] = r[i] * inv_sqrt_e;
            if (w->router_scale)
                for (int64_t i = 0; i < E; i++) r[i] = r[i] * w->router_scale[i];
        }
        rin = c->r;
    }
    c->jobs[0] = job(&w->router, rin, E, c->rlog, X, n);
    st = run_jobs(s, c->jobs, 1, err);
    if (st) return st;
    const bool *keep = c->keep + c->keep_off[s->l];
    for (int64_t t = 0; t < n; t++) {
        float *p = c->prob + t * X;
        for (int64_t e = 0; e < X; e++) p[e] = keep[e] ? c->rlog[t * X + e] : -INFINITY;
        mp_softmax(p, X);
        int32_t *sel = c->sel + t * c->K;
        float *ws = c->wsel + t * c->K;
        float sum = 0;
        for (int64_t j = 0; j < K; j++) {
            int64_t best = -1;
            for (int64_t e = 0; e < X; e++) {
                bool taken = false;
                for (int64_t i = 0; i < j && !taken; i++) taken = sel[i] == e;
                if (!taken && keep[e] && (best < 0 || p[e] > p[best])) best = e;
            }
            sel[j] = (int32_t)best;
            ws[j] = p[best];
            sum += p[best];
        }
        if (hp->norm_topk) {
            const float div = sum > MOE_WEIGHT_SUM_MIN ? sum : MOE_WEIGHT_SUM_MIN;
            for (int64_t j = 0; j < K; j++) ws[j] = ws[j] / div;
        }
    }
    return MP_OK;
}

/* Groups (token, slot) pairs by expert, in token order, and gathers the
 * experts' inputs: expert e's rows are xe[off[e] .. off[e] + cnt[e]). */
static void group_by_expert(step *s) {
    mp_context *c = s->c;
    const int64_t E = s->hp->n_embd, X = s->hp->layers[s->l].n_expert, K = c->k_used;
    for (int64_t e = 0; e <= X; e++) c->cnt[e] = 0;
    for (int64_t t = 0; t < s->n; t++)
        for (int64_t j = 0; j < K; j++) c->cnt[c->sel[t * c->K + j]]++;
    c->off[0] = 0;
    for (int64_t e = 0; e < X; e++) c->off[e + 1] = c->off[e] + c->cnt[e];
    for (int64_t e = 0; e < X; e++) c->cnt[e] = c->off[e]; /* next free row */
    for (int64_t t = 0; t < s->n; t++) {
        for (int64_t j = 0; j < K; j++) {
            const int32_t e = c->sel[t * c->K + j];
            const int64_t r = c->cnt[e]++;
            c->row_slot[r] = (int32_t)(t * K + j);
            c->slot_row[t * K + j] = (int32_t)r;
            c->row_expert[r] = e;
            memcpy(c->xe + r * E, c->u + t * E, (size_t)E * sizeof *c->xe);
        }
    }
}

/* Gate/up then down products of every expert that got tokens. */
static mp_status run_experts(step *s, mp_err *err) {
    mp_status st;
    mp_context *c = s->c;
    const mp_layer_weights *w = &s->m->am->layers[s->l];
    const int64_t E = s->hp->n_embd, X = s->hp->layers[s->l].n_expert;
    const int64_t F = s->hp->layers[s->l].n_ff_exp, rows = s->n * c->k_used;
    const bool fused = mp_weight_present(&w->gate_up_exps);
    mp_mm_job *jobs = c->jobs;
    int64_t nj = 0;
    for (int64_t e = 0; e < X; e++) {
        const int64_t m = c->off[e + 1] - c->off[e];
        if (m == 0) continue;
        const float *xe = c->xe + c->off[e] * E;
        float *gu = c->gu + c->off[e] * 2 * F;
        if (fused) {
            mp_weight we = mp_weight_slab(&w->gate_up_exps, e);
            jobs[nj] = job(&we, xe, E, gu, 2 * F, m);
            jobs[nj].slab = e;
            jobs[nj++].n_slab = X;
        } else {
            mp_weight wg = mp_weight_slab(&w->gate_exps, e), wu = mp_weight_slab(&w->up_exps, e);
            jobs[nj] = job(&wg, xe, E, gu, 2 * F, m);
            jobs[nj].slab = e;
            jobs[nj++].n_slab = X;
            jobs[nj] = job(&wu, xe, E, gu + F, 2 * F, m);
            jobs[nj].slab = e;
            jobs[nj++].n_slab = X;
        }
    }
    st = run_jobs(s, jobs, nj, err);
    if (st) return st;
    glu_rows(s, c->ea, c->gu, 2 * F, c->gu + F, 2 * F, F, rows, true);
    nj = 0;
    for (int64_t e = 0; e < X; e++) {
        const int64_t m = c->off[e + 1] - c->off[e];
        if (m == 0) continue;
        mp_weight wd = mp_weight_slab(&w->down_exps, e);
        jobs[nj] = job(&wd, c->ea + c->off[e] * F, F, c->ye + c->off[e] * E, E, m);
        jobs[nj].slab = e;
        jobs[nj++].n_slab = X;
    }
    return run_jobs(s, jobs, nj, err);
}

/* moe[t] = sum over slots j (in rank order) of (y_e * scale_e) * w_j; the
 * hook's expert_out gets each term. */
static void combine_experts(step *s) {
    mp_context *c = s->c;
    const mp_layer_weights *w = &s->m->am->layers[s->l];
    const int64_t E = s->hp->n_embd, K = c->k_used;
    float *hook_out = c->hook.fn && c->hook.want_expert_out ? c->hook_out : NULL;
    for (int64_t t = 0; t < s->n; t++) {
        float *o = c->moe + t * E;
        for (int64_t j = 0; j < K; j++) {
            const int32_t e = c->sel[t * c->K + j];
            const float sc = w->down_exps_scale ? w->down_exps_scale[e] : 1.0f;
            const float wt = c->wsel[t * c->K + j];
            const float *y = c->ye + (int64_t)c->slot_row[t * K + j] * E;
            float *ho = hook_out ? hook_out + (t * K + j) * E : NULL;
            for (int64_t i = 0; i < E; i++) {
                const float term = (y[i] * sc) * wt;
                o[i] = j == 0 ? term : o[i] + term;
                if (ho) ho[i] = term;
            }
        }
    }
}

/* Packs sel/wsel rows to the k in use (scratch rows are K wide) and calls
 * the hook. */
static mp_status call_hook(step *s, mp_err *err) {
    mp_context *c = s->c;
    const int64_t K = c->k_used;
    if (K != c->K)
        for (int64_t t = 0; t < s->n; t++)
            for (int64_t j = 0; j < K; j++) {
                c->sel[t * K + j] = c->sel[t * c->K + j];
                c->wsel[t * K + j] = c->wsel[t * c->K + j];
            }
    mp_moe_hook_data d = {
        .layer = s->l,
        .n_tokens = s->n,
        .pos0 = s->pos0,
        .n_expert = s->hp->layers[s->l].n_expert,
        .n_used = K,
        .n_embd = s->hp->n_embd,
        .router_logits = c->rlog,
        .experts = c->sel,
        .weights = c->wsel,
        .expert_out = c->hook.want_expert_out ? c->hook_out : NULL,
    };
    mp_status st = c->hook.fn(&d, c->hook.user);
    if (st != MP_OK)
        return mp_err_set(err, st, "eval: the MoE hook stopped the run at layer %" PRId64
                          " (status %s)", s->l, mp_status_name(st));
    return MP_OK;
}

/* The experts' mixture of layer l into moe (post_ffw_norm_2 applied). */
static mp_status moe_ffn(step *s, mp_err *err) {
    mp_context *c = s->c;
    const mp_layer_weights *w = &s->m->am->layers[s->l];
    if (w->pre_ffw_norm_2) norm_rows(s, c->x, w->pre_ffw_norm_2, c->u);
    else memcpy(c->u, c->xn, (size_t)(s->n * s->hp->n_embd) * sizeof *c->u);
    mp_status st = route(s, err);
    if (st) return st;
    group_by_expert(s);
    if ((st = run_experts(s, err))) return st;
    combine_experts(s);
    if (c->hook.fn && (st = call_hook(s, err))) return st;
    if (s->hook_tail) return MP_OK;
    if (w->post_ffw_norm_2) norm_rows(s, c->moe, w->post_ffw_norm_2, c->moe);
    return MP_OK;
}

static mp_status ffn(step *s, mp_err *err) {
    mp_context *c = s->c;
    const mp_layer_hparams *lh = &s->hp->layers[s->l];
    const mp_layer_weights *w = &s->m->am->layers[s->l];
    const int64_t ne = s->n * s->hp->n_embd;
    const bool dense = lh->n_ff > 0, moe = lh->n_expert > 0;
    norm_rows(s, c->x, w->ffn_norm, c->xn);
    if (s->hook_tail) return moe ? moe_ffn(s, err) : MP_OK;
    float *f = c->t1;
    if (dense) {
        mp_status st = dense_ffn(s, err);
        if (st) return st;
        if (moe && w->post_ffw_norm_1) norm_rows(s, c->t1, w->post_ffw_norm_1, c->t1);
    }
    if (moe) {
        mp_status st = moe_ffn(s, err);
        if (st) return st;
        if (dense)
            for (int64_t i = 0; i < ne; i++) c->t1[i] = c->t1[i] + c->moe[i];
        else
            f = c->moe;
    }
    if (w->post_ffw_norm) norm_rows(s, f, w->post_ffw_norm, f);
    for (int64_t i = 0; i < ne; i++) c->x[i] = c->x[i] + f[i];
    if (w->out_scale != 1.0f)
        for (int64_t i = 0; i < ne; i++) c->x[i] = c->x[i] * w->out_scale;
    return MP_OK;
}

/* ---------------------------------------------------------------- output */

static mp_status output(step *s, mp_logits_mode mode, float *out, mp_err *err) {
    mp_status st;
    mp_context *c = s->c;
    const mp_hparams *hp = s->hp;
    const int64_t E = hp->n_embd, V = hp->n_vocab;
    const int64_t t0 = mode == MP_LOGITS_ALL ? 0 : s->n - 1, nt = s->n - t0;
    for (int64_t t = t0; t < s->n; t++)
        mp_rms_norm(c->x + t * E, s->m->am->output_norm, c->xn + t * E, E, hp->eps);
    c->jobs[0] = job(&s->m->am->output, c->xn + t0 * E, E, out, V, nt);
    st = run_jobs(s, c->jobs, 1, err);
    if (st) return st;
    if (hp->softcap > 0) c->kern->softcap(out, nt * V, hp->softcap);
    return MP_OK;
}

mp_status mp_forward(mp_context *c, const mp_token *tokens, int64_t n, int64_t pos0,
                     mp_logits_mode mode, float *out, mp_err *err) {
    const mp_model *m = c->model;
    const mp_hparams *hp = m->hp;
    const int64_t E = hp->n_embd;
    step s = {.c = c, .m = m, .hp = hp, .n = n, .pos0 = pos0};
    const mp_weight *emb = &m->am->tok_embd;
    for (int64_t t = 0; t < n; t++) {
        float *x = c->x + t * E;
        (void)mp_dequantize_row(emb->type, emb->data + (size_t)tokens[t] * emb->row_bytes, x, E,
                                NULL);
        for (int64_t i = 0; i < E; i++) x[i] = x[i] * hp->embd_scale;
    }
    for (s.l = 0; s.l < hp->n_layer; s.l++) {
        mp_status st = attention(&s, err);
        if (st) return st;
        /* After the last layer's attention the cache is complete; its FFN
         * only feeds the logits, so rows nobody asked logits for are
         * dropped (all of them for MP_LOGITS_NONE) -- unless a hook wants
         * to see every token's routing. */
        if (s.l == hp->n_layer - 1 && mode != MP_LOGITS_ALL && !c->hook.fn && !c->mm_hook) {
            if (mode == MP_LOGITS_NONE) return MP_OK;
            memmove(c->x, c->x + (s.n - 1) * E, (size_t)E * sizeof *c->x);
            s.pos0 += s.n - 1;
            s.n = 1;
        }
        /* With a MoE hook and no logits asked for, the last layer runs only
         * as far as the hook sees: router and experts, not the dense MLP nor
         * the residual update nobody reads (profiling's case). */
        s.hook_tail = s.l == hp->n_layer - 1 && mode == MP_LOGITS_NONE && c->hook.fn && !c->mm_hook;
        if ((st = ffn(&s, err))) return st;
    }
    return mode != MP_LOGITS_NONE ? output(&s, mode, out, err) : MP_OK;
}

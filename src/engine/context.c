/* context.c — mp_context: the KV cache, the scratch block, the thread pool,
 * expert masks, the experts-used override and the MoE hook; and
 * mp_context_eval, which splits a token run into forward steps of at most
 * n_batch tokens (forward.c does the arithmetic).
 *
 * Everything a forward step touches is allocated here, once: the step itself
 * allocates nothing. Sliding-window layers keep n_ctx positions like the
 * others (a ring of n_swa positions is a later memory saving). */
#include <inttypes.h>
#include <math.h>
#include <unistd.h>

#include "engine/engine.h"

/* Defaults: a context long enough for evaluation windows, steps that bound
 * scratch (the expert buffers grow with n_batch * top-k * n_embd). */
#define CTX_DEFAULT_N_CTX 4096
#define CTX_DEFAULT_N_BATCH 256
#define CTX_MAX_N_CTX (1 << 24)
#define CTX_MAX_N_BATCH (1 << 16)

const char *mp_kv_type_name(int t) {
    static const char *const names[MP_KV_TYPE_COUNT] = {"f32", "f16"};
    return t >= 0 && t < MP_KV_TYPE_COUNT ? names[t] : "?";
}

const char *mp_logits_mode_name(int mode) {
    static const char *const names[MP_LOGITS_MODE_COUNT] = {"none", "last", "all"};
    return mode >= 0 && mode < MP_LOGITS_MODE_COUNT ? names[mode] : "?";
}

mp_context_params mp_context_default_params(void) {
    mp_context_params p = {.n_ctx = CTX_DEFAULT_N_CTX, .n_batch = CTX_DEFAULT_N_BATCH,
                           .n_threads = 0, .kv_type = MP_KV_F16};
    return p;
}

static int online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

/* Carves every scratch buffer; with a->base NULL it only measures. */
static void layout(mp_context *c, mp_arena *a) {
    const mp_model *m = c->model;
    const size_t B = (size_t)c->B, K = (size_t)c->K, E = (size_t)m->hp->n_embd;
    const size_t X = (size_t)m->max_expert, nt = (size_t)mp_pool_n_threads(c->pool);
    const size_t f = sizeof(float);
    c->x = mp_arena_take(a, B * E, f);
    c->xn = mp_arena_take(a, B * E, f);
    c->q = mp_arena_take(a, B * (size_t)m->max_q, f);
    c->k = mp_arena_take(a, B * (size_t)m->max_kv, f);
    c->v = mp_arena_take(a, B * (size_t)m->max_kv, f);
    c->att = mp_arena_take(a, B * (size_t)m->max_q, f);
    c->t1 = mp_arena_take(a, B * E, f);
    c->fa = mp_arena_take(a, B * (size_t)m->max_ff, f);
    c->fb = mp_arena_take(a, B * (size_t)m->max_ff, f);
    c->moe = mp_arena_take(a, B * E, f);
    c->u = mp_arena_take(a, B * E, f);
    c->r = mp_arena_take(a, B * E, f);
    c->rlog = mp_arena_take(a, B * X, f);
    c->prob = mp_arena_take(a, B * X, f);
    c->sel = mp_arena_take(a, B * K, sizeof *c->sel);
    c->wsel = mp_arena_take(a, B * K, f);
    c->cnt = mp_arena_take(a, X + 1, sizeof *c->cnt);
    c->off = mp_arena_take(a, X + 1, sizeof *c->off);
    c->row_slot = mp_arena_take(a, B * K, sizeof *c->row_slot);
    c->slot_row = mp_arena_take(a, B * K, sizeof *c->slot_row);
    c->row_expert = mp_arena_take(a, B * K, sizeof *c->row_expert);
    c->xe = mp_arena_take(a, B * K * E, f);
    c->gu = mp_arena_take(a, B * K * 2 * (size_t)m->max_ff_exp, f);
    c->ea = mp_arena_take(a, B * K * (size_t)m->max_ff_exp, f);
    c->ye = mp_arena_take(a, B * K * E, f);
    c->jobs = mp_arena_take(a, 2 * X + 3, sizeof *c->jobs);
    c->thr_row = mp_arena_take(a, nt * (size_t)m->max_n_in, f);
    /* converted activations: two formats of every expert row at most */
    const size_t act_row = mp_act_row_bytes(MP_ACT_Q8_32, m->max_n_in);
    const size_t max_jobs = 2 * X + 3;
    c->mm = (mp_mm_scratch){
        .row = c->thr_row,
        .row_stride = m->max_n_in,
        .act = mp_arena_take(a, 2 * B * K + 2 * B, act_row),
        .act_bytes = (2 * B * K + 2 * B) * act_row,
        .in = mp_arena_take(a, max_jobs, mp_mm_input_size()),
        .job_in = mp_arena_take(a, max_jobs, sizeof(int)),
        .max_jobs = (int64_t)max_jobs,
    };
    c->thr_att_stride = c->p.n_ctx + m->max_rot + m->max_kv;
    c->thr_att = mp_arena_take(a, nt * (size_t)c->thr_att_stride, f);
}

static mp_status alloc_kv(mp_context *c, mp_err *err) {
    const mp_hparams *hp = c->model->hp;
    c->kv_elem = c->p.kv_type == MP_KV_F16 ? sizeof(uint16_t) : sizeof(float);
    c->k_cache = mp_calloc((size_t)hp->n_layer, sizeof *c->k_cache);
    c->v_cache = mp_calloc((size_t)hp->n_layer, sizeof *c->v_cache);
    if (!c->k_cache || !c->v_cache) return mp_err_set(err, MP_ERR_NOMEM, "engine: out of memory");
    mp_arena a = {0};
    for (int pass = 0; pass < 2; pass++) {
        for (int64_t l = 0; l < hp->n_layer; l++) {
            const mp_layer_hparams *lh = &hp->layers[l];
            if (!lh->has_kv) continue;
            size_t row = (size_t)(lh->n_head_kv * lh->head_dim) * c->kv_elem;
            c->k_cache[l] = mp_arena_take(&a, (size_t)c->p.n_ctx, row);
            c->v_cache[l] = mp_arena_take(&a, (size_t)c->p.n_ctx, row);
        }
        if (a.overflow)
            return mp_err_set(err, MP_ERR_NOMEM, "engine: KV cache for %" PRId64
                              " positions does not fit in memory", c->p.n_ctx);
        if (pass == 0) {
            if (!(c->kv_block = mp_malloc(a.used ? a.used : 1)))
                return mp_err_set(err, MP_ERR_NOMEM, "engine: cannot allocate the KV cache "
                                  "(%zu bytes for %" PRId64 " positions)", a.used, c->p.n_ctx);
            a = (mp_arena){.base = c->kv_block};
        }
    }
    return MP_OK;
}

static mp_status alloc_masks(mp_context *c, mp_err *err) {
    const mp_hparams *hp = c->model->hp;
    const size_t L = (size_t)hp->n_layer;
    int64_t total = 0;
    c->keep_off = mp_calloc(L, sizeof *c->keep_off);
    c->n_kept = mp_calloc(L, sizeof *c->n_kept);
    if (!c->keep_off || !c->n_kept)
        return mp_err_set(err, MP_ERR_NOMEM, "engine: out of memory");
    for (size_t l = 0; l < L; l++) {
        c->keep_off[l] = total;
        c->n_kept[l] = hp->layers[l].n_expert;
        total += hp->layers[l].n_expert;
    }
    if (!(c->keep = mp_malloc(total > 0 ? (size_t)total : 1)))
        return mp_err_set(err, MP_ERR_NOMEM, "engine: out of memory");
    for (int64_t i = 0; i < total; i++) c->keep[i] = true;
    return MP_OK;
}

static mp_status check_params(const mp_model *m, mp_context_params *p, mp_err *err) {
    if (p->n_threads == 0) p->n_threads = online_cpus();
    if (p->n_ctx < 1 || p->n_ctx > CTX_MAX_N_CTX)
        return mp_err_set(err, MP_ERR_ARG, "context: n_ctx %" PRId64 " is not in 1..%d",
                          p->n_ctx, CTX_MAX_N_CTX);
    if (p->n_batch < 1 || p->n_batch > CTX_MAX_N_BATCH)
        return mp_err_set(err, MP_ERR_ARG, "context: n_batch %" PRId64 " is not in 1..%d",
                          p->n_batch, CTX_MAX_N_BATCH);
    if (p->kv_type < 0 || p->kv_type >= MP_KV_TYPE_COUNT)
        return mp_err_set(err, MP_ERR_ARG, "context: KV cache type %d is not f32 or f16",
                          (int)p->kv_type);
    if (p->n_batch > p->n_ctx) p->n_batch = p->n_ctx;
    (void)m;
    return MP_OK;
}

mp_status mp_context_init(mp_context **out, const mp_model *m, mp_context_params p,
                          mp_err *err) {
    mp_status s = check_params(m, &p, err);
    if (s) return s;
    mp_context *c = mp_calloc(1, sizeof *c);
    if (!c) return mp_err_set(err, MP_ERR_NOMEM, "engine: out of memory");
    c->model = m;
    c->p = p;
    c->kern = mp_kernels_select();
    c->B = p.n_batch;
    c->K = m->hp->n_expert_used > 0 ? m->hp->n_expert_used : 1;
    c->k_used = m->hp->n_expert_used;
    if ((s = mp_pool_init(&c->pool, p.n_threads, err)) || (s = alloc_kv(c, err)) ||
        (s = alloc_masks(c, err)))
        goto fail;
    mp_arena a = {0};
    layout(c, &a);
    if (a.overflow || !(c->block = mp_malloc(a.used))) {
        s = mp_err_set(err, MP_ERR_NOMEM, "engine: cannot allocate %zu bytes of scratch for "
                       "batches of %" PRId64 " tokens", a.used, c->B);
        goto fail;
    }
    a = (mp_arena){.base = c->block};
    layout(c, &a);
    *out = c;
    return MP_OK;
fail:
    mp_context_free(c);
    return s;
}

void mp_context_free(mp_context *c) {
    if (!c) return;
    mp_pool_free(c->pool);
    mp_free(c->kv_block);
    mp_free(c->k_cache);
    mp_free(c->v_cache);
    mp_free(c->keep);
    mp_free(c->keep_off);
    mp_free(c->n_kept);
    mp_free(c->hook_out);
    mp_free(c->block);
    mp_free(c);
}

int64_t mp_context_n_past(const mp_context *c) {
    return c->n_past;
}

void mp_context_truncate(mp_context *c, int64_t n) {
    if (n >= 0 && n < c->n_past) c->n_past = n;
}

const mp_context_params *mp_context_params_of(const mp_context *c) {
    return &c->p;
}

mp_status mp_context_eval(mp_context *c, const mp_token *tokens, int64_t n, mp_logits_mode mode,
                          float *logits, mp_err *err) {
    const int64_t n_vocab = c->model->hp->n_vocab;
    if (n < 1 || !tokens)
        return mp_err_set(err, MP_ERR_ARG, "eval: %" PRId64 " tokens, need at least one", n);
    if (mode < 0 || mode >= MP_LOGITS_MODE_COUNT || (mode != MP_LOGITS_NONE && !logits))
        return mp_err_set(err, MP_ERR_ARG, "eval: logits mode %d (%s) needs an output buffer",
                          (int)mode, mp_logits_mode_name(mode));
    if (n > c->p.n_ctx - c->n_past)
        return mp_err_set(err, MP_ERR_ARG, "eval: %" PRId64 " tokens after %" PRId64
                          " cached positions exceed the context of %" PRId64, n, c->n_past,
                          c->p.n_ctx);
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return mp_err_set(err, MP_ERR_ARG, "eval: token %" PRId64 " has id %" PRId32
                              ", outside the vocabulary (0..%" PRId64 ")", i, tokens[i],
                              n_vocab - 1);
    for (int64_t start = 0; start < n; start += c->B) {
        const int64_t nb = n - start < c->B ? n - start : c->B;
        const bool last = start + nb == n;
        mp_logits_mode sm = mode == MP_LOGITS_ALL ? MP_LOGITS_ALL
                            : mode == MP_LOGITS_LAST && last ? MP_LOGITS_LAST : MP_LOGITS_NONE;
        float *out = mode == MP_LOGITS_ALL ? logits + start * n_vocab : logits;
        mp_status s = mp_forward(c, tokens + start, nb, c->n_past + start, sm, out, err);
        if (s) return s;
    }
    c->n_past += n;
    return MP_OK;
}

/* ------------------------------------------------------- masks and top-k */

mp_status mp_context_set_expert_mask(mp_context *c, int64_t layer, const bool *keep, int64_t n,
                                     mp_err *err) {
    const mp_hparams *hp = c->model->hp;
    if (layer < 0 || layer >= hp->n_layer || hp->layers[layer].n_expert == 0)
        return mp_err_set(err, MP_ERR_ARG, "expert mask: layer %" PRId64 " is not a MoE layer "
                          "of this model", layer);
    const int64_t X = hp->layers[layer].n_expert;
    bool *dst = c->keep + c->keep_off[layer];
    if (!keep) {
        for (int64_t e = 0; e < X; e++) dst[e] = true;
        c->n_kept[layer] = X;
        return MP_OK;
    }
    if (n != X)
        return mp_err_set(err, MP_ERR_ARG, "expert mask: layer %" PRId64 " has %" PRId64
                          " experts, the mask %" PRId64, layer, X, n);
    int64_t kept = 0;
    for (int64_t e = 0; e < X; e++) kept += keep[e];
    if (kept < c->k_used)
        return mp_err_set(err, MP_ERR_ARG, "expert mask: layer %" PRId64 " would keep %" PRId64
                          " experts, fewer than the %" PRId64 " used per token", layer, kept,
                          c->k_used);
    for (int64_t e = 0; e < X; e++) dst[e] = keep[e];
    c->n_kept[layer] = kept;
    return MP_OK;
}

mp_status mp_context_set_experts_used(mp_context *c, int64_t k, mp_err *err) {
    const mp_hparams *hp = c->model->hp;
    if (k == 0) k = hp->n_expert_used;
    if (k < 1 || k > hp->n_expert_used)
        return mp_err_set(err, MP_ERR_ARG, "experts used: %" PRId64 " is not in 1..%" PRId64
                          " (the file's count)", k, hp->n_expert_used);
    for (int64_t l = 0; l < hp->n_layer; l++)
        if (hp->layers[l].n_expert > 0 && c->n_kept[l] < k)
            return mp_err_set(err, MP_ERR_ARG, "experts used: layer %" PRId64 " keeps only %"
                              PRId64 " experts, fewer than %" PRId64, l, c->n_kept[l], k);
    c->k_used = k;
    return MP_OK;
}

int64_t mp_context_experts_used(const mp_context *c) {
    return c->k_used;
}

mp_status mp_context_set_moe_hook(mp_context *c, const mp_moe_hook *hook, mp_err *err) {
    if (!hook || !hook->fn) {
        c->hook = (mp_moe_hook){0};
        mp_free(c->hook_out);
        c->hook_out = NULL;
        return MP_OK;
    }
    if (hook->want_expert_out && !c->hook_out) {
        size_t n;
        if (!mp_mul_size((size_t)(c->B * c->K), (size_t)c->model->hp->n_embd, &n) ||
            !mp_mul_size(n, sizeof(float), &n) || !(c->hook_out = mp_malloc(n)))
            return mp_err_set(err, MP_ERR_NOMEM, "MoE hook: cannot allocate the expert output "
                              "buffer");
    }
    c->hook = *hook;
    return MP_OK;
}

mp_status mp_context_set_matmul_hook(mp_context *c, mp_matmul_hook_fn fn, void *user,
                                     mp_err *err) {
    (void)err;
    c->mm_hook = fn;
    c->mm_hook_user = fn ? user : NULL;
    return MP_OK;
}

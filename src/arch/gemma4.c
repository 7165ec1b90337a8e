/* gemma4.c — the Gemma 4 (MoE and dense) descriptor: metadata keys and
 * defaults, tensor names and shapes, and the family's feature switches.
 *
 * Follows the shared gemma4-gguf-spec.md, sections 3.1 (keys; scalar-or-array
 * keys accepted either way, llama.cpp's defaults when absent) and 3.2
 * (tensors). Per-layer expert counts and expert widths come from the layer's
 * own tensors; metadata that disagrees with them is an error. Not handled:
 * the per-layer-embedding block of E2B/E4B (embedding_length_per_layer_input
 * > 0 is refused) and vision/audio towers (they live in mmproj files). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#include "arch/arch.h"

/* llama.cpp's defaults for keys a Gemma 4 file may omit (spec 3.1). */
#define GEMMA4_ROPE_BASE_DEFAULT 10000.0
#define GEMMA4_ROPE_BASE_SWA_DEFAULT 10000.0

typedef struct gemma4_keys {
    int64_t n_embd, n_layer, n_ctx_train;
    int64_t head_dim, head_dim_v, head_dim_swa, head_dim_v_swa;
    int64_t n_rot, n_rot_swa;
    int64_t n_expert, n_expert_used, n_ff_exp;
    int64_t n_embd_per_layer;
    float rope_base, rope_base_swa;
} gemma4_keys;

/* Scratch for the per-layer arrays of the metadata. */
typedef struct gemma4_layer_keys {
    int64_t *n_head, *n_head_kv, *n_ff;
    bool *is_swa;
} gemma4_layer_keys;

static mp_status read_scalars(mp_arch_loader *L, gemma4_keys *k) {
    mp_hparams *hp = &L->m->hp;
    mp_status s;
    if ((s = mp_arch_get_int(L, "embedding_length", true, 0, &k->n_embd)) ||
        (s = mp_arch_get_int(L, "block_count", true, 0, &k->n_layer)) ||
        (s = mp_arch_get_int(L, "context_length", false, 0, &k->n_ctx_train)) ||
        (s = mp_arch_get_int(L, "attention.key_length_swa", true, 0, &k->head_dim_swa)) ||
        (s = mp_arch_get_int(L, "attention.value_length_swa", true, 0, &k->head_dim_v_swa)) ||
        (s = mp_arch_get_int(L, "attention.sliding_window", true, 0, &hp->n_swa)) ||
        (s = mp_arch_get_int(L, "attention.shared_kv_layers", false, 0, &hp->n_kv_shared)) ||
        (s = mp_arch_get_int(L, "embedding_length_per_layer_input", false, 0,
                             &k->n_embd_per_layer)) ||
        (s = mp_arch_get_int(L, "expert_count", false, 0, &k->n_expert)) ||
        (s = mp_arch_get_int(L, "expert_used_count", false, 0, &k->n_expert_used)) ||
        (s = mp_arch_get_int(L, "expert_feed_forward_length", false, 0, &k->n_ff_exp)) ||
        (s = mp_arch_get_float(L, "attention.layer_norm_rms_epsilon", true, 0, &hp->eps)) ||
        (s = mp_arch_get_float(L, "final_logit_softcapping", false, 0, &hp->softcap)) ||
        (s = mp_arch_get_float(L, "rope.freq_base", false, GEMMA4_ROPE_BASE_DEFAULT,
                               &k->rope_base)) ||
        (s = mp_arch_get_float(L, "rope.freq_base_swa", false, GEMMA4_ROPE_BASE_SWA_DEFAULT,
                               &k->rope_base_swa)))
        return s;
    if (k->n_embd <= 0 || k->n_embd > (1 << 20))
        return mp_err_set(L->err, MP_ERR_FORMAT, "%s: gemma4.embedding_length = %" PRId64
                          " is not in 1..%d", L->path, k->n_embd, 1 << 20);
    if (k->n_embd_per_layer != 0)
        return mp_err_set(L->err, MP_ERR_UNSUPPORTED, "%s: gemma4.embedding_length_per_layer_"
                          "input = %" PRId64 ": per-layer embeddings (Gemma 4 E2B/E4B) are "
                          "not supported", L->path, k->n_embd_per_layer);
    if (hp->eps <= 0 || hp->softcap < 0)
        return mp_err_set(L->err, MP_ERR_FORMAT, "%s: rms epsilon %g must be > 0 and the logit "
                          "soft-cap %g >= 0", L->path, hp->eps, hp->softcap);
    return mp_arch_alloc_layers(L, k->n_layer);
}

/* Head sizes: key_length defaults to n_embd / n_head (of layer 0), the swa
 * values are required; K and V lengths must agree (spec 3.1). */
static mp_status read_head_dims(mp_arch_loader *L, gemma4_keys *k, int64_t n_head0) {
    mp_status s;
    int64_t def = n_head0 > 0 ? k->n_embd / n_head0 : 0;
    if ((s = mp_arch_get_int(L, "attention.key_length", false, def, &k->head_dim)) ||
        (s = mp_arch_get_int(L, "attention.value_length", false, def, &k->head_dim_v)) ||
        (s = mp_arch_get_int(L, "rope.dimension_count", false, k->head_dim, &k->n_rot)) ||
        (s = mp_arch_get_int(L, "rope.dimension_count_swa", false, k->n_rot, &k->n_rot_swa)))
        return s;
    if (k->head_dim != k->head_dim_v || k->head_dim_swa != k->head_dim_v_swa)
        return mp_err_set(L->err, MP_ERR_FORMAT, "%s: Gemma 4 needs equal K and V head sizes; "
                          "key_length %" PRId64 ", value_length %" PRId64 ", key_length_swa %"
                          PRId64 ", value_length_swa %" PRId64, L->path, k->head_dim,
                          k->head_dim_v, k->head_dim_swa, k->head_dim_v_swa);
    return MP_OK;
}

static void free_layer_keys(gemma4_layer_keys *lk) {
    mp_free(lk->n_head);
    mp_free(lk->n_head_kv);
    mp_free(lk->n_ff);
    mp_free(lk->is_swa);
}

static mp_status read_layer_keys(mp_arch_loader *L, gemma4_layer_keys *lk) {
    size_t n = (size_t)L->m->hp.n_layer;
    lk->n_head = mp_calloc(n, sizeof *lk->n_head);
    lk->n_head_kv = mp_calloc(n, sizeof *lk->n_head_kv);
    lk->n_ff = mp_calloc(n, sizeof *lk->n_ff);
    lk->is_swa = mp_calloc(n, sizeof *lk->is_swa);
    if (!lk->n_head || !lk->n_head_kv || !lk->n_ff || !lk->is_swa)
        return mp_err_set(L->err, MP_ERR_NOMEM, "%s: out of memory", L->path);
    mp_status s;
    if ((s = mp_arch_get_layers_int(L, "attention.head_count", true, 0, lk->n_head)) ||
        (s = mp_arch_get_layers_int(L, "feed_forward_length", true, 0, lk->n_ff)) ||
        (s = mp_arch_get_layers_bool(L, "attention.sliding_window_pattern", true, false,
                                     lk->is_swa)))
        return s;
    /* head_count_kv defaults to head_count, layer by layer */
    char key[96];
    snprintf(key, sizeof key, "%s.attention.head_count_kv", L->m->desc->name);
    if (mp_gguf_find_key(L->g, key) < 0) {
        memcpy(lk->n_head_kv, lk->n_head, n * sizeof *lk->n_head);
        return MP_OK;
    }
    return mp_arch_get_layers_int(L, "attention.head_count_kv", true, 0, lk->n_head_kv);
}

/* ------------------------------------------------------------------ layers */

typedef struct name_buf {
    char s[MP_GGUF_MAX_NAME + 1];
} name_buf;

static const char *tname(name_buf *b, int64_t l, const char *rest) {
    snprintf(b->s, sizeof b->s, "blk.%" PRId64 ".%s", l, rest);
    return b->s;
}

static mp_status bind_attention(mp_arch_loader *L, int64_t l) {
    const mp_layer_hparams *lh = &L->m->hp.layers[l];
    mp_layer_weights *w = &L->m->layers[l];
    const int64_t E = L->m->hp.n_embd, d = lh->head_dim;
    const int64_t q_ne[2] = {E, lh->n_head * d}, kv_ne[2] = {E, lh->n_head_kv * d};
    const int64_t o_ne[2] = {lh->n_head * d, E};
    name_buf b;
    mp_status s;
    if ((s = mp_arch_bind_vec(L, tname(&b, l, "attn_norm.weight"), E, "{n_embd}", true,
                              &w->attn_norm)) ||
        (s = mp_arch_bind(L, tname(&b, l, "attn_q.weight"), 2, q_ne,
                          "{n_embd, n_head*head_dim}", true, &w->wq)) ||
        (s = mp_arch_bind_vec(L, tname(&b, l, "attn_q_norm.weight"), d, "{head_dim}", true,
                              &w->q_norm)) ||
        (s = mp_arch_bind(L, tname(&b, l, "attn_output.weight"), 2, o_ne,
                          "{n_head*head_dim, n_embd}", true, &w->wo)) ||
        (s = mp_arch_bind_vec(L, tname(&b, l, "post_attention_norm.weight"), E, "{n_embd}",
                              true, &w->post_attn_norm)))
        return s;
    if (lh->has_kv &&
        ((s = mp_arch_bind(L, tname(&b, l, "attn_k.weight"), 2, kv_ne,
                           "{n_embd, n_head_kv*head_dim}", true, &w->wk)) ||
         (s = mp_arch_bind(L, tname(&b, l, "attn_v.weight"), 2, kv_ne,
                           "{n_embd, n_head_kv*head_dim}", false, &w->wv)) ||
         (s = mp_arch_bind_vec(L, tname(&b, l, "attn_k_norm.weight"), d, "{head_dim}", true,
                               &w->k_norm))))
        return s;
    if ((s = mp_arch_bind_scale(L, &w->wq)) || (s = mp_arch_bind_scale(L, &w->wk)) ||
        (s = mp_arch_bind_scale(L, &w->wv)) || (s = mp_arch_bind_scale(L, &w->wo)))
        return s;
    return MP_OK;
}

static mp_status bind_dense(mp_arch_loader *L, int64_t l) {
    mp_layer_hparams *lh = &L->m->hp.layers[l];
    mp_layer_weights *w = &L->m->layers[l];
    const int64_t E = L->m->hp.n_embd;
    const int64_t in_ne[2] = {E, lh->n_ff}, down_ne[2] = {lh->n_ff, E};
    name_buf b;
    mp_status s;
    if ((s = mp_arch_bind_vec(L, tname(&b, l, "ffn_norm.weight"), E, "{n_embd}", true,
                              &w->ffn_norm)) ||
        (s = mp_arch_bind(L, tname(&b, l, "ffn_gate.weight"), 2, in_ne,
                          "{n_embd, feed_forward_length}", true, &w->ffn_gate)) ||
        (s = mp_arch_bind(L, tname(&b, l, "ffn_up.weight"), 2, in_ne,
                          "{n_embd, feed_forward_length}", true, &w->ffn_up)) ||
        (s = mp_arch_bind(L, tname(&b, l, "ffn_down.weight"), 2, down_ne,
                          "{feed_forward_length, n_embd}", true, &w->ffn_down)) ||
        (s = mp_arch_bind_vec(L, tname(&b, l, "post_ffw_norm.weight"), E, "{n_embd}", true,
                              &w->post_ffw_norm)) ||
        (s = mp_arch_bind_scale(L, &w->ffn_gate)) || (s = mp_arch_bind_scale(L, &w->ffn_up)) ||
        (s = mp_arch_bind_scale(L, &w->ffn_down)))
        return s;
    return MP_OK;
}

/* The MoE part of layer l, present when the router is. The expert count is
 * the router's row count; the expert width comes from ffn_down_exps. */
static mp_status bind_moe(mp_arch_loader *L, int64_t l, int64_t meta_n_ff_exp) {
    mp_layer_hparams *lh = &L->m->hp.layers[l];
    mp_layer_weights *w = &L->m->layers[l];
    const int64_t E = L->m->hp.n_embd;
    name_buf b;
    const int64_t router_ne[2] = {E, -1};
    mp_status s = mp_arch_bind(L, tname(&b, l, "ffn_gate_inp.weight"), 2, router_ne,
                               "{n_embd, n_expert}", false, &w->router);
    if (s || !mp_weight_present(&w->router)) return s;
    const int64_t X = lh->n_expert = w->router.ne[1];
    if (X <= 0 || X > 65536)
        return mp_err_set(L->err, MP_ERR_FORMAT, "%s: tensor '%s' has %" PRId64 " experts, "
                          "expected 1..65536", L->path, w->router.name, X);
    const int64_t down_ne[3] = {-1, E, X};
    if ((s = mp_arch_bind(L, tname(&b, l, "ffn_down_exps.weight"), 3, down_ne,
                          "{n_ff_exp, n_embd, n_expert}", true, &w->down_exps)))
        return s;
    const int64_t F = lh->n_ff_exp = w->down_exps.ne[0];
    if (meta_n_ff_exp > 0 && meta_n_ff_exp != F)
        return mp_err_set(L->err, MP_ERR_FORMAT, "%s: tensor '%s' has expert width %" PRId64
                          " but gemma4.expert_feed_forward_length is %" PRId64, L->path,
                          w->down_exps.name, F, meta_n_ff_exp);
    const int64_t fused_ne[3] = {E, 2 * F, X}, split_ne[3] = {E, F, X};
    if ((s = mp_arch_bind(L, tname(&b, l, "ffn_gate_up_exps.weight"), 3, fused_ne,
                          "{n_embd, 2*n_ff_exp, n_expert}", false, &w->gate_up_exps)))
        return s;
    bool fused = mp_weight_present(&w->gate_up_exps);
    if (!fused &&
        ((s = mp_arch_bind(L, tname(&b, l, "ffn_gate_exps.weight"), 3, split_ne,
                           "{n_embd, n_ff_exp, n_expert} (or a fused ffn_gate_up_exps)", true,
                           &w->gate_exps)) ||
         (s = mp_arch_bind(L, tname(&b, l, "ffn_up_exps.weight"), 3, split_ne,
                           "{n_embd, n_ff_exp, n_expert}", true, &w->up_exps))))
        return s;
    if ((s = mp_arch_bind_vec(L, tname(&b, l, "ffn_gate_inp.scale"), E, "{n_embd}", true,
                              &w->router_scale)) ||
        (s = mp_arch_bind_vec(L, tname(&b, l, "pre_ffw_norm_2.weight"), E, "{n_embd}", true,
                              &w->pre_ffw_norm_2)) ||
        (s = mp_arch_bind_vec(L, tname(&b, l, "post_ffw_norm_1.weight"), E, "{n_embd}", true,
                              &w->post_ffw_norm_1)) ||
        (s = mp_arch_bind_vec(L, tname(&b, l, "post_ffw_norm_2.weight"), E, "{n_embd}", true,
                              &w->post_ffw_norm_2)) ||
        (s = mp_arch_bind_vec(L, tname(&b, l, "ffn_down_exps.scale"), X, "{n_expert}", false,
                              &w->down_exps_scale)) ||
        (s = mp_arch_bind_vec(L, tname(&b, l, "ffn_gate_exps.scale"), X, "{n_expert}", false,
                              &w->gate_exps_scale)) ||
        (s = mp_arch_bind_vec(L, tname(&b, l, "ffn_up_exps.scale"), X, "{n_expert}", false,
                              &w->up_exps_scale)))
        return s;
    return MP_OK;
}

static mp_status bind_layer(mp_arch_loader *L, int64_t l, const gemma4_keys *k) {
    mp_status s;
    name_buf b;
    mp_layer_weights *w = &L->m->layers[l];
    if ((s = bind_attention(L, l)) || (s = bind_dense(L, l)) ||
        (s = bind_moe(L, l, k->n_ff_exp)))
        return s;
    const float *os;
    if ((s = mp_arch_bind_vec(L, tname(&b, l, "layer_output_scale.weight"), 1, "{1}", false,
                              &os)))
        return s;
    if (os) w->out_scale = os[0];
    return MP_OK;
}

/* -------------------------------------------------------------------- load */

/* Layer hyper-parameters from the metadata (spec 3.1 and section 4: head
 * size, rotation and base by layer kind; KV sharing). */
static mp_status fill_layers(mp_arch_loader *L, const gemma4_keys *k,
                             const gemma4_layer_keys *lk) {
    mp_hparams *hp = &L->m->hp;
    const int64_t n_layer = hp->n_layer, N = hp->n_kv_shared;
    if (N < 0 || N >= n_layer)
        return mp_err_set(L->err, MP_ERR_FORMAT, "%s: gemma4.attention.shared_kv_layers = %"
                          PRId64 " is not in 0..%" PRId64, L->path, N, n_layer - 1);
    for (int64_t l = 0; l < n_layer; l++) {
        mp_layer_hparams *lh = &hp->layers[l];
        lh->is_swa = lk->is_swa[l];
        lh->n_head = lk->n_head[l];
        lh->n_head_kv = lk->n_head_kv[l];
        lh->head_dim = lh->is_swa ? k->head_dim_swa : k->head_dim;
        lh->n_rot = lh->is_swa ? k->n_rot_swa : k->n_rot;
        lh->rope_base = lh->is_swa ? k->rope_base_swa : k->rope_base;
        lh->n_ff = lk->n_ff[l];
        /* spec 4, KV sharing: the last N layers read the cache of the last
         * sliding (n_layer-N-2) or global (n_layer-N-1) layer that has one */
        lh->has_kv = l < n_layer - N;
        lh->kv_source = lh->has_kv ? l : n_layer - N - (lh->is_swa ? 2 : 1);
        if (lh->n_ff <= 0 || lh->n_head <= 0 || lh->n_head_kv <= 0)
            return mp_err_set(L->err, MP_ERR_FORMAT, "%s: layer %" PRId64 ": feed_forward_"
                              "length %" PRId64 ", head_count %" PRId64 ", head_count_kv %"
                              PRId64 ": all must be positive", L->path, l, lh->n_ff,
                              lh->n_head, lh->n_head_kv);
    }
    return MP_OK;
}

/* Global tensors: embeddings (n_vocab from their row count), the output
 * projection (tied when output.weight is absent), the final norm, and
 * rope_freqs, shared by every global layer. */
static mp_status bind_globals(mp_arch_loader *L, const gemma4_keys *k) {
    mp_arch_model *m = L->m;
    const int64_t E = m->hp.n_embd;
    const int64_t emb_ne[2] = {E, -1};
    mp_status s;
    if ((s = mp_arch_bind(L, "token_embd.weight", 2, emb_ne, "{n_embd, n_vocab}", true,
                          &m->tok_embd)))
        return s;
    m->hp.n_vocab = m->tok_embd.ne[1];
    const int64_t out_ne[2] = {E, m->hp.n_vocab};
    if ((s = mp_arch_bind(L, "output.weight", 2, out_ne, "{n_embd, n_vocab}", false,
                          &m->output)) ||
        (s = mp_arch_bind_vec(L, "output_norm.weight", E, "{n_embd}", true, &m->output_norm)))
        return s;
    if (!mp_weight_present(&m->output)) m->output = m->tok_embd;
    else if ((s = mp_arch_bind_scale(L, &m->output))) return s;
    const float *rope_freqs = NULL;
    if ((s = mp_arch_bind_vec(L, "rope_freqs.weight", k->head_dim / 2, "{key_length/2}", false,
                              &rope_freqs)))
        return s;
    for (int64_t l = 0; l < m->hp.n_layer; l++)
        if (!m->hp.layers[l].is_swa) m->layers[l].rope_freqs = rope_freqs;
    return MP_OK;
}

static mp_status gemma4_load(mp_arch_loader *L) {
    mp_hparams *hp = &L->m->hp;
    gemma4_keys k = {0};
    gemma4_layer_keys lk = {0};
    mp_status s;
    if ((s = read_scalars(L, &k)) || (s = read_layer_keys(L, &lk)) ||
        (s = read_head_dims(L, &k, lk.n_head[0])) || (s = fill_layers(L, &k, &lk)))
        goto done;
    hp->n_embd = k.n_embd;
    hp->n_ctx_train = k.n_ctx_train;
    hp->n_expert = k.n_expert;
    hp->n_expert_used = k.n_expert_used;
    /* family features (spec 4): embeddings times sqrt(n_embd) in f32, score
     * scale 1 (Q and K are normalised), V rms-normed, NEOX RoPE, GELU (tanh),
     * router on rms(h) / sqrt(n_embd) * scale, softmax then top-k then
     * renormalised weights */
    hp->embd_scale = sqrtf((float)k.n_embd);
    hp->attn_scale = 1.0f;
    hp->v_rms = true;
    hp->act = MP_ACT_GELU_TANH;
    hp->rope = MP_ROPE_NEOX;
    hp->router_input = MP_ROUTER_RMS_SCALED;
    hp->norm_topk = true;
    if ((s = bind_globals(L, &k))) goto done;
    for (int64_t l = 0; l < hp->n_layer; l++)
        if ((s = bind_layer(L, l, &k))) goto done;
done:
    free_layer_keys(&lk);
    return s;
}

const mp_arch_desc mp_arch_gemma4 = {.name = "gemma4", .load = gemma4_load};

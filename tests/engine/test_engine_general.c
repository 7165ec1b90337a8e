/* test_engine_general.c — the engine beyond the one fixture.
 *
 * Builds small random Gemma-4-layout models in a temp dir (mp_gguf_writer)
 * with dimensions, head counts, layer patterns, per-layer expert counts,
 * split or fused experts, V on every layer or not, tied or separate output,
 * KV sharing and several weight types, and checks:
 *  1. engine logits (batched prompt, several steps) against the deliberately
 *     naive float64 reference of tests/common/ref_gemma4.c (straight from
 *     gemma4-gguf-spec.md section 4, one token at a time), whose hyper-
 *     parameters, read from the file by its own reader, must equal the
 *     test's own config;
 *  2. bit-identical logits for 1, 2 and 3 threads;
 *  3. the batched prompt against token-by-token evaluation on the KV cache;
 *  4. masking experts in the engine == the same model with those experts
 *     physically removed (router rows and expert slabs sliced out, per-layer
 *     counts from the tensors): bit-identical; and masked experts never show
 *     up in the hook's choices;
 *  5. the MoE hook against the reference's routing (experts, weights and
 *     weighted expert outputs), --experts-used K < top-k;
 *  6. clear errors: bad shapes, missing tensors, bad tokens, full context,
 *     masks keeping too few experts, a hook that stops the run.
 * Takes a seed as argv[1] (weights and prompts are functions of it). */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "ref_gemma4.h"
#include "testutil.h"

#define MAXL 8
#define MAX_TOK 24

/* ------------------------------------------------------------ the models */

typedef struct tcfg {
    const char *name;
    int64_t n_embd, n_vocab, n_layer;
    const char *pattern;             /* 'S' sliding / 'G' global, per layer */
    int64_t n_head_swa, n_head;      /* query heads by layer kind */
    int64_t n_head_kv_swa, n_head_kv;
    int64_t head_dim_swa, head_dim;
    int64_t n_rot_pairs;             /* global pairs that rotate (the rest: rope_freqs 1e30);
                                        0: no rope_freqs tensor */
    int64_t n_swa;
    int64_t n_ff;
    int64_t n_expert[MAXL];          /* per layer; 0 = dense-only layer */
    int64_t n_expert_used, n_ff_exp;
    bool split, v_every, untied, no_out_scale;
    bool synth;                      /* written by mp_synth_write (preset gemma4-tiny) */
    int64_t n_kv_shared;
    int type;                        /* weight matrices */
    float softcap, eps;
    float rope_base, rope_base_swa;
} tcfg;

static const tcfg configs[] = {
    {/* the fixture's layout at other sizes: fused experts, V on sliding layers,
        tied output, partial rotation on the global layer, window < prompt */
     .name = "fused-f32", .n_embd = 64, .n_vocab = 97, .n_layer = 4, .pattern = "SSSG",
     .n_head_swa = 4, .n_head = 4, .n_head_kv_swa = 2, .n_head_kv = 1, .head_dim_swa = 16,
     .head_dim = 32, .n_rot_pairs = 4, .n_swa = 5, .n_ff = 48,
     .n_expert = {8, 8, 8, 8}, .n_expert_used = 3, .n_ff_exp = 24, .type = MP_TYPE_F32,
     .softcap = 30, .eps = 1e-6f, .rope_base = 1e6f, .rope_base_swa = 1e4f},
    {/* split gate/up experts, V on every layer, separate output.weight, head
        counts that differ by layer kind, non-uniform experts with a dense
        layer, no soft-cap, F16 weights */
     .name = "split-vall-f16", .n_embd = 96, .n_vocab = 130, .n_layer = 5,
     .pattern = "GSSGS", .n_head_swa = 6, .n_head = 4, .n_head_kv_swa = 3, .n_head_kv = 2,
     .head_dim_swa = 16, .head_dim = 24, .n_rot_pairs = 12, .n_swa = 3, .n_ff = 40,
     .n_expert = {6, 0, 10, 7, 5}, .n_expert_used = 2, .n_ff_exp = 20, .split = true,
     .v_every = true, .untied = true, .type = MP_TYPE_F16, .softcap = 0, .eps = 1e-5f,
     .rope_base = 5e5f, .rope_base_swa = 1e4f},
    {/* Q8_0 weights, KV sharing on the last two layers, full rotation without
        rope_freqs, no layer output scale */
     .name = "q8-sharedkv", .n_embd = 64, .n_vocab = 64, .n_layer = 6, .pattern = "SGSGSG",
     .n_head_swa = 2, .n_head = 2, .n_head_kv_swa = 1, .n_head_kv = 1, .head_dim_swa = 32,
     .head_dim = 32, .n_rot_pairs = 0, .n_swa = 4, .n_ff = 64,
     .n_expert = {4, 4, 4, 4, 4, 4}, .n_expert_used = 2, .n_ff_exp = 32,
     .n_kv_shared = 2, .no_out_scale = true, .type = MP_TYPE_Q8_0, .softcap = 20,
     .eps = 1e-6f, .rope_base = 1e4f, .rope_base_swa = 1e4f},
    {/* the synth library's gemma4-tiny preset (the fixture's dimensions) with
        split experts and V on every layer; the reference still takes its
        hyper-parameters from this table, so a synth/engine disagreement shows */
     .name = "synth-tiny", .synth = true, .n_embd = 256, .n_vocab = 1024, .n_layer = 4,
     .pattern = "SSSG", .n_head_swa = 4, .n_head = 4, .n_head_kv_swa = 2, .n_head_kv = 1,
     .head_dim_swa = 64, .head_dim = 128, .n_swa = 16, .n_ff = 320,
     .n_expert = {16, 16, 16, 16}, .n_expert_used = 4, .n_ff_exp = 64, .split = true,
     .v_every = true, .type = MP_TYPE_F16, .softcap = 30, .eps = 1e-6f, .rope_base = 1e6f,
     .rope_base_swa = 1e4f},
};

static bool layer_swa(const tcfg *c, int64_t l) {
    return c->pattern[l] == 'S';
}

/* How a tensor's values are drawn. */
typedef enum vkind {
    V_MATRIX, V_EMBD, V_NORM, V_QKNORM, V_ROUTER, V_RSCALE, V_ESCALE, V_OSCALE, V_ROPE
} vkind;

typedef struct tspec {
    char name[64];
    int type;
    uint32_t n_dims;
    int64_t ne[3];
    vkind kind;
    const int64_t *ids; /* expert tensors of a pruned model: original id of each slab */
    int64_t n_ids;
    uint64_t key;
} tspec;

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t name_key(uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    return mix64(h ^ mix64(seed));
}

/* Uniform in [-1, 1), a pure function of (key, index). */
static double uval(uint64_t key, uint64_t i) {
    return (double)(mix64(key + 0x9e3779b97f4a7c15ull * (i + 1)) >> 11) * 0x1p-52 - 1.0;
}

#define SQRT3 1.7320508075688772

/* Element i (original index) of a tensor of kind k. */
static float value(const tspec *t, uint64_t i) {
    double u = uval(t->key, i);
    switch (t->kind) {
    case V_MATRIX: return (float)(u * SQRT3 / sqrt((double)t->ne[0]));
    case V_EMBD: return (float)(u * SQRT3 * 2.0 / sqrt((double)t->ne[0]));
    case V_NORM: return (float)(1.0 + 0.1 * u);
    case V_QKNORM: return (float)(pow((double)t->ne[0], -0.25) * (1.0 + 0.1 * u));
    case V_ROUTER: return (float)(u * SQRT3 * 4.2);
    case V_RSCALE: return (float)(1.0 + 0.2 * u);
    case V_ESCALE: return (float)(1.0 + 0.5 * u);
    case V_OSCALE: return (float)(0.8 + 0.1 * u);
    case V_ROPE: return 0;
    }
    return 0;
}

typedef struct builder {
    tspec *t;
    int n, cap;
    uint64_t seed;
} builder;

static tspec *add(builder *b, const char *name, int type, uint32_t n_dims, int64_t ne0,
                  int64_t ne1, int64_t ne2, vkind kind) {
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        b->t = realloc(b->t, (size_t)b->cap * sizeof *b->t);
    }
    tspec *t = &b->t[b->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = n_dims == 1 ? MP_TYPE_F32 : type;
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->kind = kind;
    t->key = name_key(b->seed, name);
    return t;
}

static const char *lname(char *buf, int64_t l, const char *rest) {
    snprintf(buf, 64, "blk.%lld.%s", (long long)l, rest);
    return buf;
}

/* keep[l]: original ids of the experts layer l keeps (NULL: all). */
typedef struct prune_set {
    int64_t n_keep[MAXL];
    int64_t keep[MAXL][16];
    bool active[MAXL];
} prune_set;

/* The tensor list of cfg c (pruned per ps when non-NULL). */
static void plan(builder *b, const tcfg *c, const prune_set *ps) {
    char nb[64];
    const int64_t E = c->n_embd, T = c->type;
    add(b, "token_embd.weight", (int)T, 2, E, c->n_vocab, 1, V_EMBD);
    if (c->untied) add(b, "output.weight", (int)T, 2, E, c->n_vocab, 1, V_MATRIX);
    add(b, "output_norm.weight", 0, 1, E, 1, 1, V_NORM);
    if (c->n_rot_pairs) add(b, "rope_freqs.weight", 0, 1, c->head_dim / 2, 1, 1, V_ROPE);
    for (int64_t l = 0; l < c->n_layer; l++) {
        const bool swa = layer_swa(c, l);
        const int64_t H = swa ? c->n_head_swa : c->n_head;
        const int64_t Hkv = swa ? c->n_head_kv_swa : c->n_head_kv;
        const int64_t d = swa ? c->head_dim_swa : c->head_dim;
        const bool has_kv = l < c->n_layer - c->n_kv_shared;
        add(b, lname(nb, l, "attn_norm.weight"), 0, 1, E, 1, 1, V_NORM);
        add(b, lname(nb, l, "attn_q.weight"), (int)T, 2, E, H * d, 1, V_MATRIX);
        if (has_kv) {
            add(b, lname(nb, l, "attn_k.weight"), (int)T, 2, E, Hkv * d, 1, V_MATRIX);
            if (swa || c->v_every)
                add(b, lname(nb, l, "attn_v.weight"), (int)T, 2, E, Hkv * d, 1, V_MATRIX);
            add(b, lname(nb, l, "attn_k_norm.weight"), 0, 1, d, 1, 1, V_QKNORM);
        }
        add(b, lname(nb, l, "attn_q_norm.weight"), 0, 1, d, 1, 1, V_QKNORM);
        add(b, lname(nb, l, "attn_output.weight"), (int)T, 2, H * d, E, 1, V_MATRIX);
        add(b, lname(nb, l, "post_attention_norm.weight"), 0, 1, E, 1, 1, V_NORM);
        add(b, lname(nb, l, "ffn_norm.weight"), 0, 1, E, 1, 1, V_NORM);
        add(b, lname(nb, l, "ffn_gate.weight"), (int)T, 2, E, c->n_ff, 1, V_MATRIX);
        add(b, lname(nb, l, "ffn_up.weight"), (int)T, 2, E, c->n_ff, 1, V_MATRIX);
        add(b, lname(nb, l, "ffn_down.weight"), (int)T, 2, c->n_ff, E, 1, V_MATRIX);
        add(b, lname(nb, l, "post_ffw_norm.weight"), 0, 1, E, 1, 1, V_NORM);
        if (c->n_expert[l]) {
            const bool pr = ps && ps->active[l];
            const int64_t X = pr ? ps->n_keep[l] : c->n_expert[l], F = c->n_ff_exp;
            const int64_t *ids = pr ? ps->keep[l] : NULL;
            tspec *t;
            add(b, lname(nb, l, "post_ffw_norm_1.weight"), 0, 1, E, 1, 1, V_NORM);
            add(b, lname(nb, l, "pre_ffw_norm_2.weight"), 0, 1, E, 1, 1, V_NORM);
            add(b, lname(nb, l, "post_ffw_norm_2.weight"), 0, 1, E, 1, 1, V_NORM);
            t = add(b, lname(nb, l, "ffn_gate_inp.weight"), MP_TYPE_F32, 2, E, X, 1, V_ROUTER);
            t->ids = ids, t->n_ids = X;
            add(b, lname(nb, l, "ffn_gate_inp.scale"), 0, 1, E, 1, 1, V_RSCALE);
            if (c->split) {
                t = add(b, lname(nb, l, "ffn_gate_exps.weight"), (int)T, 3, E, F, X, V_MATRIX);
                t->ids = ids, t->n_ids = X;
                t = add(b, lname(nb, l, "ffn_up_exps.weight"), (int)T, 3, E, F, X, V_MATRIX);
                t->ids = ids, t->n_ids = X;
            } else {
                t = add(b, lname(nb, l, "ffn_gate_up_exps.weight"), (int)T, 3, E, 2 * F, X,
                        V_MATRIX);
                t->ids = ids, t->n_ids = X;
            }
            t = add(b, lname(nb, l, "ffn_down_exps.weight"), (int)T, 3, F, E, X, V_MATRIX);
            t->ids = ids, t->n_ids = X;
            t = add(b, lname(nb, l, "ffn_down_exps.scale"), 0, 1, X, 1, 1, V_ESCALE);
            t->ids = ids, t->n_ids = X;
        }
        if (!c->no_out_scale)
            add(b, lname(nb, l, "layer_output_scale.weight"), 0, 1, 1, 1, 1, V_OSCALE);
    }
}

/* The values of tensor t in ggml order, expert slabs mapped to their
 * original ids so a pruned file holds the same numbers as the full one. */
static void fill(const tcfg *c, const tspec *t, float *dst) {
    const int64_t n_slab = t->n_dims == 3 ? t->ne[2] : t->n_dims == 2 ? t->ne[1] : t->ne[0];
    const int64_t per = t->ne[0] * t->ne[1] * t->ne[2] / n_slab;
    for (int64_t s = 0; s < n_slab; s++) {
        const int64_t orig = t->ids ? t->ids[s] : s;
        for (int64_t i = 0; i < per; i++) {
            float v = value(t, (uint64_t)(orig * per + i));
            if (t->kind == V_ROPE) v = s * per + i < c->n_rot_pairs ? 1.0f : 1e30f;
            dst[s * per + i] = v;
        }
    }
}

static void kv_u32_layers(mp_gguf_writer *w, const char *key, const tcfg *c, int64_t swa_v,
                          int64_t glob_v, mp_err *err) {
    if (swa_v == glob_v) {
        CHECK_STATUS(MP_OK, mp_gguf_writer_kv_u32(w, key, (uint32_t)glob_v, err), err);
        return;
    }
    uint8_t buf[MAXL * 4];
    for (int64_t l = 0; l < c->n_layer && l < MAXL; l++)
        for (int k = 0; k < 4; k++)
            buf[l * 4 + k] = (uint8_t)((uint32_t)(layer_swa(c, l) ? swa_v : glob_v) >> (8 * k));
    CHECK_STATUS(MP_OK, mp_gguf_writer_kv_arr(w, key, MP_GGUF_UINT32, buf, (uint64_t)c->n_layer,
                                              err), err);
}

static bool write_model(const tcfg *c, const prune_set *ps, const char *path,
                        const char *break_tensor, uint64_t seed) {
    builder b = {.seed = seed};
    plan(&b, c, ps);
    mp_err err = {0};
    mp_gguf_writer *w = NULL;
    mp_status s = mp_gguf_writer_open(&w, path, true, &err);
    CHECK_STATUS(MP_OK, s, &err);
    if (s) return false;
    int64_t X = 0;
    for (int64_t l = 0; l < c->n_layer; l++) X = c->n_expert[l] > X ? c->n_expert[l] : X;
    uint8_t pattern[MAXL];
    for (int64_t l = 0; l < c->n_layer; l++) pattern[l] = layer_swa(c, l);
    mp_gguf_writer_kv_str(w, "general.architecture", "gemma4", &err);
    mp_gguf_writer_kv_u32(w, "gemma4.context_length", 4096, &err);
    mp_gguf_writer_kv_u32(w, "gemma4.embedding_length", (uint32_t)c->n_embd, &err);
    mp_gguf_writer_kv_u32(w, "gemma4.block_count", (uint32_t)c->n_layer, &err);
    mp_gguf_writer_kv_u32(w, "gemma4.feed_forward_length", (uint32_t)c->n_ff, &err);
    kv_u32_layers(w, "gemma4.attention.head_count", c, c->n_head_swa, c->n_head, &err);
    kv_u32_layers(w, "gemma4.attention.head_count_kv", c, c->n_head_kv_swa, c->n_head_kv, &err);
    mp_gguf_writer_kv_f32(w, "gemma4.attention.layer_norm_rms_epsilon", c->eps, &err);
    mp_gguf_writer_kv_u32(w, "gemma4.attention.key_length", (uint32_t)c->head_dim, &err);
    mp_gguf_writer_kv_u32(w, "gemma4.attention.value_length", (uint32_t)c->head_dim, &err);
    mp_gguf_writer_kv_u32(w, "gemma4.attention.key_length_swa", (uint32_t)c->head_dim_swa, &err);
    mp_gguf_writer_kv_u32(w, "gemma4.attention.value_length_swa", (uint32_t)c->head_dim_swa,
                          &err);
    mp_gguf_writer_kv_f32(w, "gemma4.rope.freq_base", c->rope_base, &err);
    mp_gguf_writer_kv_f32(w, "gemma4.rope.freq_base_swa", c->rope_base_swa, &err);
    mp_gguf_writer_kv_u32(w, "gemma4.rope.dimension_count", (uint32_t)c->head_dim, &err);
    mp_gguf_writer_kv_u32(w, "gemma4.rope.dimension_count_swa", (uint32_t)c->head_dim_swa, &err);
    mp_gguf_writer_kv_u32(w, "gemma4.attention.sliding_window", (uint32_t)c->n_swa, &err);
    mp_gguf_writer_kv_arr(w, "gemma4.attention.sliding_window_pattern", MP_GGUF_BOOL, pattern,
                          (uint64_t)c->n_layer, &err);
    mp_gguf_writer_kv_u32(w, "gemma4.attention.shared_kv_layers", (uint32_t)c->n_kv_shared,
                          &err);
    mp_gguf_writer_kv_u32(w, "gemma4.embedding_length_per_layer_input", 0, &err);
    mp_gguf_writer_kv_u32(w, "gemma4.expert_count", (uint32_t)X, &err);
    mp_gguf_writer_kv_u32(w, "gemma4.expert_used_count", (uint32_t)c->n_expert_used, &err);
    mp_gguf_writer_kv_u32(w, "gemma4.expert_feed_forward_length", (uint32_t)c->n_ff_exp, &err);
    if (c->softcap > 0)
        mp_gguf_writer_kv_f32(w, "gemma4.final_logit_softcapping", c->softcap, &err);
    for (int i = 0; i < b.n; i++) {
        tspec *t = &b.t[i];
        if (break_tensor && !strcmp(t->name, break_tensor)) t->ne[1] += 1;
        s = mp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, &err);
        CHECK_STATUS(MP_OK, s, &err);
    }
    for (int i = 0; i < b.n && !s; i++) {
        const tspec *t = &b.t[i];
        const int64_t n = t->ne[0] * t->ne[1] * t->ne[2], rows = n / t->ne[0];
        float *v = malloc((size_t)n * sizeof *v);
        size_t rb;
        mp_type_row_bytes(t->type, t->ne[0], &rb, &err);
        uint8_t *q = malloc(rb);
        fill(c, t, v);
        for (int64_t r = 0; r < rows && !s; r++) {
            s = mp_quantize_row(t->type, v + r * t->ne[0], q, t->ne[0], &err);
            if (!s) s = mp_gguf_writer_write_data(w, q, rb, &err);
        }
        CHECK_STATUS(MP_OK, s, &err);
        free(q);
        free(v);
    }
    if (!s) s = mp_gguf_writer_finish(w, &err);
    CHECK_STATUS(MP_OK, s, &err);
    mp_gguf_writer_free(w);
    free(b.t);
    return s == MP_OK;
}

/* -------------------------------------------- the float64 reference model */

/* The reference is tests/common/ref_gemma4.c. It reads the hyper-parameters
 * from the file's metadata with its own reader; here they are held to this
 * test's config, so a writer (or the synth preset) that drifts from the table
 * fails even where the engine would read the drift the same way. */
static void check_hp(const tcfg *c, int64_t l, const char *what, int64_t want, int64_t got) {
    char where[32] = "";
    if (l >= 0) snprintf(where, sizeof where, "layer %lld ", (long long)l);
    CHECK_MSG(want == got, "%s: %s%s is %lld in the reference, %lld in the config", c->name,
              where, what, (long long)got, (long long)want);
}

static void check_ref_hparams(const tcfg *c, const ref_g4 *r) {
    const ref_g4_hparams *hp = ref_g4_hparams_of(r);
    check_hp(c, -1, "n_embd", c->n_embd, hp->n_embd);
    check_hp(c, -1, "n_vocab", c->n_vocab, hp->n_vocab);
    check_hp(c, -1, "n_layer", c->n_layer, hp->n_layer);
    check_hp(c, -1, "n_expert_used", c->n_expert_used, hp->n_expert_used);
    check_hp(c, -1, "n_ff_exp", c->n_ff_exp, hp->n_ff_exp);
    check_hp(c, -1, "n_swa", c->n_swa, hp->n_swa);
    check_hp(c, -1, "n_kv_shared", c->n_kv_shared, hp->n_kv_shared);
    /* written as f32 from these floats: equal exactly */
    CHECK_MSG(hp->eps == c->eps && hp->softcap == c->softcap && hp->rope_base == c->rope_base &&
              hp->rope_base_swa == c->rope_base_swa,
              "%s: eps %g, soft-cap %g, RoPE bases %g/%g in the reference; the config says "
              "%g, %g, %g/%g", c->name, hp->eps, hp->softcap, hp->rope_base, hp->rope_base_swa,
              c->eps, c->softcap, c->rope_base, c->rope_base_swa);
    for (int64_t l = 0; l < c->n_layer && l < hp->n_layer; l++) {
        const ref_g4_layer_hp *lh = &hp->layer[l];
        const bool swa = layer_swa(c, l);
        check_hp(c, l, "sliding", swa, lh->swa);
        check_hp(c, l, "n_head", swa ? c->n_head_swa : c->n_head, lh->n_head);
        check_hp(c, l, "n_head_kv", swa ? c->n_head_kv_swa : c->n_head_kv, lh->n_head_kv);
        check_hp(c, l, "head_dim", swa ? c->head_dim_swa : c->head_dim, lh->head_dim);
        check_hp(c, l, "n_ff", c->n_ff, lh->n_ff);
        check_hp(c, l, "n_expert", c->n_expert[l], lh->n_expert);
    }
}

#define ROUTE_K 8 /* top-k the record holds */

/* What the reference routed: per layer and token, experts (in the file's
 * numbering), weights and weighted outputs, for the hook checks. */
typedef struct ref_route {
    int32_t e[MAXL][MAX_TOK][ROUTE_K];
    double w[MAXL][MAX_TOK][ROUTE_K];
    double *y[MAXL]; /* [MAX_TOK][k][n_embd] */
} ref_route;

static void record_route(const ref_g4_moe *d, void *user) {
    ref_route *rt = user;
    if (d->k > ROUTE_K || d->layer >= MAXL || d->pos >= MAX_TOK) {
        CHECK_MSG(false, "layer %lld, position %lld, top-%lld: beyond the route record",
                  (long long)d->layer, (long long)d->pos, (long long)d->k);
        return;
    }
    for (int64_t j = 0; j < d->k; j++) {
        const int32_t e = d->chosen[j];
        rt->e[d->layer][d->pos][j] = e;
        rt->w[d->layer][d->pos][j] = d->weight[j];
        for (int64_t i = 0; rt->y[d->layer] && i < d->n_embd; i++)
            rt->y[d->layer][(d->pos * d->k + j) * d->n_embd + i] =
                d->weight[j] * d->out[e * d->n_embd + i];
    }
}

/* ------------------------------------------------------------ engine runs */

typedef struct run_opts {
    int threads;
    int64_t n_batch;
    mp_kv_type kv;
    int64_t k;                 /* 0: the file's */
    const bool *keep[MAXL];    /* masks, NULL: none */
    bool one_by_one;           /* eval token by token */
    bool last_only;            /* tok[0..n-2] with no logits, then tok[n-1] and all n
                                  again on a cleared cache with MP_LOGITS_LAST: both
                                  must be the last row (logits holds one row) */
    const mp_moe_hook *hook;
} run_opts;

static bool run_engine(const char *path, const mp_token *tok, int64_t n, const run_opts *o,
                       float *logits) {
    mp_err err = {0};
    mp_model *m = NULL;
    mp_context *ctx = NULL;
    mp_status s = mp_model_load(&m, path, &err);
    CHECK_STATUS(MP_OK, s, &err);
    if (s) return false;
    mp_context_params p = mp_context_default_params();
    p.n_ctx = MAX_TOK;
    p.n_threads = o->threads;
    p.kv_type = o->kv;
    if (o->n_batch) p.n_batch = o->n_batch;
    s = mp_context_init(&ctx, m, p, &err);
    for (int64_t l = 0; !s && l < mp_model_n_layer(m); l++)
        if (o->keep[l])
            s = mp_context_set_expert_mask(ctx, l, o->keep[l], mp_model_n_expert(m, l), &err);
    if (!s && o->k) s = mp_context_set_experts_used(ctx, o->k, &err);
    if (!s && o->hook) s = mp_context_set_moe_hook(ctx, o->hook, &err);
    const int64_t V = mp_model_n_vocab(m);
    if (o->one_by_one) {
        for (int64_t t = 0; !s && t < n; t++)
            s = mp_context_eval(ctx, tok + t, 1, MP_LOGITS_LAST, logits + t * V, &err);
    } else if (o->last_only && !s) {
        /* the forward pass drops the last layer's FFN for rows without
         * logits: the cache must still be complete, the last row exact */
        s = mp_context_eval(ctx, tok, n - 1, MP_LOGITS_NONE, NULL, &err);
        if (!s) s = mp_context_eval(ctx, tok + n - 1, 1, MP_LOGITS_LAST, logits, &err);
        float *again = malloc((size_t)V * sizeof *again);
        mp_context_truncate(ctx, 0);
        if (!s) s = mp_context_eval(ctx, tok, n, MP_LOGITS_LAST, again, &err);
        CHECK(!s && !memcmp(logits, again, (size_t)V * sizeof *again));
        free(again);
    } else if (!s)
        s = mp_context_eval(ctx, tok, n, MP_LOGITS_ALL, logits, &err);
    CHECK_STATUS(MP_OK, s, &err);
    mp_context_free(ctx);
    mp_model_free(m);
    return s == MP_OK;
}

/* max |a - b| / max(1, max |b|) */
static double rel_diff(const float *a, const double *b, int64_t n) {
    double md = 0, mb = 1;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md) md = d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / mb;
}

/* RMS of a - b over the largest |b|: unlike the maximum, not dominated by the
 * rare position where rounding flips a near-tie in routing (fixtures/README). */
static double rms_rel_diff(const float *a, const double *b, int64_t n) {
    double ss = 0, mb = 1;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        ss += d * d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return sqrt(ss / (double)(n ? n : 1)) / mb;
}

static double max_abs_ff(const float *a, const float *b, int64_t n) {
    double md = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > md) md = d;
    }
    return md;
}

/* Engine vs float64 reference. Float activations with f32 accumulation over
 * a few layers of width <= 130 land at 1e-6 relative or below; 1e-5 leaves
 * a 10x margin and still catches small slips (an eps 10x too large in the
 * reference moves them by 4e-5; a wrong norm, rotation or routing >= 1e-2). */
#define REF_REL_TOL 1e-5
/* Batched vs one-by-one: same arithmetic per token; allow float noise. */
#define BATCH_TOL 1e-5
/* F16 vs F32 KV cache: f16 rounding of K/V (2^-11 relative) through a few
 * layers; loose on purpose, it only guards against garbage. */
#define KV_F16_TOL 0.05

/* ------------------------------------------------------------------ hooks */

typedef struct hook_rec {
    int calls;
    int bad_mask;              /* choices of a masked expert */
    const bool *keep[MAXL];
    const ref_route *ref;      /* compare with the reference's routing */
    int64_t n_embd;
    double max_w_diff, max_y_diff;
    int route_mismatch;
    int sum_bad;
    mp_status ret;             /* what to return */
} hook_rec;

static mp_status hook_fn(const mp_moe_hook_data *d, void *user) {
    hook_rec *h = user;
    h->calls++;
    for (int64_t t = 0; t < d->n_tokens; t++) {
        const int64_t p = d->pos0 + t;
        double ws = 0;
        for (int64_t j = 0; j < d->n_used; j++) {
            const int32_t e = d->experts[t * d->n_used + j];
            const float w = d->weights[t * d->n_used + j];
            ws += w;
            if (h->keep[d->layer] && !h->keep[d->layer][e]) h->bad_mask++;
            if (!h->ref) continue;
            if (h->ref->e[d->layer][p][j] != e) h->route_mismatch++;
            double wd = fabs(w - h->ref->w[d->layer][p][j]);
            if (wd > h->max_w_diff) h->max_w_diff = wd;
            for (int64_t i = 0; d->expert_out && i < d->n_embd; i++) {
                double yd = fabs(d->expert_out[(t * d->n_used + j) * d->n_embd + i] -
                                 h->ref->y[d->layer][(p * d->n_used + j) * h->n_embd + i]);
                if (yd > h->max_y_diff) h->max_y_diff = yd;
            }
        }
        if (fabs(ws - 1.0) > 1e-5) h->sum_bad++;
    }
    return h->ret;
}

/* ------------------------------------------------------------------ tests */

static void random_tokens(uint64_t *rng, int64_t V, mp_token *tok, int64_t n) {
    for (int64_t i = 0; i < n; i++) tok[i] = (mp_token)(mp_test_rand(rng) % (uint64_t)V);
}

/* The gemma4-tiny preset through the synth library, split experts and V on
 * every layer. */
static bool write_synth(const char *path, uint64_t seed) {
    mp_synth_params sp = {.preset = "gemma4-tiny", .seed = seed, .type = MP_TYPE_F16,
                          .split_experts = true, .v_every_layer = true, .overwrite = true};
    mp_err err = {0};
    mp_status s = mp_synth_write(path, &sp, &err);
    CHECK_STATUS(MP_OK, s, &err);
    return s == MP_OK;
}

/* 1-3 and 5 for one config. */
static void test_config(const tcfg *c, const char *dir, uint64_t seed) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.gguf", dir, c->name);
    if (!(c->synth ? write_synth(path, seed) : write_model(c, NULL, path, NULL, seed))) return;
    uint64_t rng = seed ^ 0x5eed;
    const int64_t n = 17, V = c->n_vocab;
    mp_token tok[MAX_TOK];
    random_tokens(&rng, V, tok, n);
    ref_g4 *rm = ref_g4_load(path, MAX_TOK);
    CHECK(rm != NULL);
    if (!rm) {
        unlink(path);
        return;
    }
    check_ref_hparams(c, rm);
    ref_route route = {0};
    for (int64_t l = 0; l < c->n_layer; l++)
        route.y[l] = calloc((size_t)(MAX_TOK * c->n_expert_used * c->n_embd), sizeof(double));
    double *ref = malloc((size_t)(n * V) * sizeof *ref);
    ref_g4_opts ro = {.n_expert_used = c->n_expert_used, .moe_fn = record_route, .user = &route};
    CHECK(ref_g4_forward(rm, tok, n, &ro, ref));

    float *a = malloc((size_t)(n * V) * sizeof *a), *b = malloc((size_t)(n * V) * sizeof *b);
    hook_rec hr = {.ref = &route, .n_embd = c->n_embd};
    mp_moe_hook hook = {.fn = hook_fn, .user = &hr, .want_expert_out = true};
    run_opts o = {.threads = 2, .n_batch = 5, .kv = MP_KV_F32, .hook = &hook};
    run_engine(path, tok, n, &o, a);
    double rd = rel_diff(a, ref, n * V);
    int n_moe = 0;
    for (int64_t l = 0; l < c->n_layer; l++) n_moe += c->n_expert[l] > 0;
    printf("%-16s engine vs float64 reference: max rel diff %.2e (tol %.0e)\n", c->name, rd,
           REF_REL_TOL);
    CHECK_MSG(rd <= REF_REL_TOL, "%s: engine vs reference %.3g", c->name, rd);
    CHECK_INT(n_moe * 4, hr.calls); /* 17 tokens in steps of 5: 4 steps */
    CHECK_INT(0, hr.route_mismatch);
    CHECK_INT(0, hr.sum_bad);
    CHECK_MSG(hr.max_w_diff < 1e-5 && hr.max_y_diff < 1e-4,
              "%s: hook weights off by %.3g, expert outputs by %.3g", c->name, hr.max_w_diff,
              hr.max_y_diff);

    /* 2: thread counts (and a different step size) do not change a bit */
    for (int th = 1; th <= 3; th++) {
        run_opts ot = {.threads = th, .n_batch = 5, .kv = MP_KV_F32};
        run_engine(path, tok, n, &ot, b);
        CHECK_MSG(!memcmp(a, b, (size_t)(n * V) * sizeof *a),
                  "%s: %d threads differ from 2 (max %.3g)", c->name, th,
                  max_abs_ff(a, b, n * V));
    }
    /* 3: one prompt batch vs one eval per token on the cache */
    run_opts ob = {.threads = 2, .kv = MP_KV_F32, .one_by_one = true};
    run_engine(path, tok, n, &ob, b);
    double bd = max_abs_ff(a, b, n * V);
    printf("%-16s batched vs token-by-token: max abs diff %.2e\n", c->name, bd);
    CHECK_MSG(bd <= BATCH_TOL, "%s: batched vs one by one %.3g", c->name, bd);
    /* 3b: logits of the last row only, and a prefix with none */
    run_opts ol = {.threads = 2, .kv = MP_KV_F32, .n_batch = 32, .last_only = true};
    run_engine(path, tok, n, &ol, b);
    CHECK_MSG(!memcmp(a + (n - 1) * V, b, (size_t)V * sizeof *a),
              "%s: last-row logits differ from the full run's last row (max %.3g)", c->name,
              max_abs_ff(a + (n - 1) * V, b, V));
    run_opts of = {.threads = 2, .kv = MP_KV_F16};
    run_engine(path, tok, n, &of, b);
    /* f16 rounding of K and V can flip a routing near-tie at some position
     * (seed 1795475289 does: max 5.1e-2 there, RMS 4.9e-3), so the check is on
     * the RMS; a wrong cache is off by O(1) everywhere */
    double fd = rms_rel_diff(b, ref, n * V);
    printf("%-16s F16 KV cache vs reference: max rel diff %.2e, RMS rel diff %.2e\n", c->name,
           rel_diff(b, ref, n * V), fd);
    CHECK_MSG(fd <= KV_F16_TOL, "%s: F16 cache RMS %.3g", c->name, fd);

    /* 5: fewer experts per token, against the reference with the same k */
    if (c->n_expert_used > 1) {
        ref_g4_opts rk = {.n_expert_used = c->n_expert_used - 1};
        CHECK(ref_g4_forward(rm, tok, n, &rk, ref));
        run_opts ok = {.threads = 2, .kv = MP_KV_F32, .k = c->n_expert_used - 1};
        run_engine(path, tok, n, &ok, b);
        double kd = rel_diff(b, ref, n * V);
        printf("%-16s experts used %lld: max rel diff %.2e\n", c->name,
               (long long)c->n_expert_used - 1, kd);
        CHECK_MSG(kd <= REF_REL_TOL, "%s: k-1 experts %.3g", c->name, kd);
    }
    for (int64_t l = 0; l < c->n_layer; l++) free(route.y[l]);
    ref_g4_free(rm);
    free(ref);
    free(a);
    free(b);
    unlink(path);
}

/* 4: masked engine == experts removed from the file; masked experts are
 * never chosen; and the mask actually changed the routing. */
static void test_mask_vs_removed(const tcfg *c, const char *dir, uint64_t seed) {
    char full[1024], cut[1024];
    snprintf(full, sizeof full, "%s/%s-full.gguf", dir, c->name);
    snprintf(cut, sizeof cut, "%s/%s-cut.gguf", dir, c->name);
    uint64_t rng = seed ^ 0xfeed;
    prune_set ps = {0};
    bool keep[MAXL][16];
    run_opts om = {.threads = 2, .kv = MP_KV_F32};
    /* drop a different number of experts per layer (never below top-k) */
    for (int64_t l = 0; l < c->n_layer; l++) {
        const int64_t X = c->n_expert[l];
        if (!X) continue;
        int64_t n_drop = 1 + l % 2;
        if (X - n_drop < c->n_expert_used) n_drop = X - c->n_expert_used;
        for (int64_t e = 0; e < X; e++) keep[l][e] = true;
        for (int64_t i = 0; i < n_drop;) {
            int64_t e = (int64_t)(mp_test_rand(&rng) % (uint64_t)X);
            if (keep[l][e]) keep[l][e] = false, i++;
        }
        ps.active[l] = n_drop > 0;
        for (int64_t e = 0; e < X; e++)
            if (keep[l][e]) ps.keep[l][ps.n_keep[l]++] = e;
        if (n_drop) om.keep[l] = keep[l];
    }
    if (!write_model(c, NULL, full, NULL, seed) || !write_model(c, &ps, cut, NULL, seed)) return;
    const int64_t n = 19, V = c->n_vocab;
    mp_token tok[MAX_TOK];
    random_tokens(&rng, V, tok, n);
    float *a = malloc((size_t)(n * V) * sizeof *a), *b = malloc((size_t)(n * V) * sizeof *b);
    hook_rec hm = {.ret = MP_OK};
    memcpy(hm.keep, om.keep, sizeof hm.keep);
    mp_moe_hook hook = {.fn = hook_fn, .user = &hm};
    om.hook = &hook;
    run_engine(full, tok, n, &om, a);
    run_opts oc = {.threads = 2, .kv = MP_KV_F32};
    run_engine(cut, tok, n, &oc, b);
    double d = max_abs_ff(a, b, n * V);
    printf("%-16s masked vs experts removed: max abs diff %.2e (must be 0)\n", c->name, d);
    CHECK_MSG(!memcmp(a, b, (size_t)(n * V) * sizeof *a), "%s: masked != removed (%.3g)",
              c->name, d);
    CHECK_INT(0, hm.bad_mask);
    /* the same mask against the float64 reference: the mask means "removed" */
    ref_g4 *rm = ref_g4_load(full, MAX_TOK);
    double *ref = malloc((size_t)(n * V) * sizeof *ref);
    ref_g4_opts ro = {.n_expert_used = c->n_expert_used, .keep = om.keep};
    CHECK(rm && ref_g4_forward(rm, tok, n, &ro, ref));
    double rd = rm ? rel_diff(a, ref, n * V) : INFINITY;
    printf("%-16s masked engine vs masked reference: max rel diff %.2e (tol %.0e)\n", c->name,
           rd, REF_REL_TOL);
    CHECK_MSG(rd <= REF_REL_TOL, "%s: masked engine vs masked reference %.3g", c->name, rd);
    /* without the mask, masked experts are chosen and the logits differ */
    hook_rec hu = {0};
    memcpy(hu.keep, om.keep, sizeof hu.keep);
    mp_moe_hook hook_u = {.fn = hook_fn, .user = &hu};
    run_opts ou = {.threads = 2, .kv = MP_KV_F32, .hook = &hook_u};
    run_engine(full, tok, n, &ou, b);
    CHECK_MSG(hu.bad_mask > 0, "%s: the dropped experts were never chosen unmasked: the test "
              "proves nothing", c->name);
    CHECK_MSG(max_abs_ff(a, b, n * V) > 1e-3, "%s: masking changed nothing", c->name);
    ref_g4_free(rm);
    free(ref);
    free(a);
    free(b);
    unlink(full);
    unlink(cut);
}

/* 6: errors name what is wrong. */
static void test_errors(const tcfg *c, const char *dir, uint64_t seed) {
    char path[1024];
    snprintf(path, sizeof path, "%s/bad.gguf", dir);
    mp_err err = {0};
    mp_model *m = NULL;
    /* a tensor with the wrong shape */
    if (write_model(c, NULL, path, "blk.2.attn_q.weight", seed)) {
        mp_status s = mp_model_load(&m, path, &err);
        CHECK_STATUS(MP_ERR_FORMAT, s, &err);
        CHECK_MSG(strstr(err.msg, "blk.2.attn_q.weight") && strstr(err.msg, "expected"),
                  "message: %s", err.msg);
        printf("bad shape: %s\n", err.msg);
        if (!s) mp_model_free(m);
    }
    /* an expert tensor with the wrong n_embd axis */
    if (write_model(c, NULL, path, "blk.1.ffn_down_exps.weight", seed)) {
        mp_status s = mp_model_load(&m, path, &err);
        CHECK_STATUS(MP_ERR_FORMAT, s, &err);
        CHECK_MSG(strstr(err.msg, "blk.1.ffn_down_exps.weight") != NULL, "message: %s", err.msg);
        printf("bad expert shape: %s\n", err.msg);
        if (!s) mp_model_free(m);
    }
    if (!write_model(c, NULL, path, NULL, seed)) return;
    mp_status s = mp_model_load(&m, path, &err);
    CHECK_STATUS(MP_OK, s, &err);
    if (s) return;
    mp_context_params p = mp_context_default_params();
    p.n_ctx = 8;
    p.n_threads = 2;
    mp_context *ctx = NULL;
    s = mp_context_init(&ctx, m, p, &err);
    CHECK_STATUS(MP_OK, s, &err);
    if (s) {
        mp_model_free(m);
        return;
    }
    const int64_t V = mp_model_n_vocab(m);
    float *lg = malloc((size_t)(8 * V) * sizeof *lg);
    mp_token bad = (mp_token)V, ok[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    CHECK_STATUS(MP_ERR_ARG, mp_context_eval(ctx, &bad, 1, MP_LOGITS_LAST, lg, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_context_eval(ctx, ok, 9, MP_LOGITS_LAST, lg, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_context_eval(ctx, ok, 2, MP_LOGITS_LAST, NULL, &err), &err);
    CHECK_INT(0, mp_context_n_past(ctx));
    /* masks: wrong size, too few kept, not a MoE layer; experts used range */
    bool keep[16];
    for (int e = 0; e < 16; e++) keep[e] = e == 0; /* one kept: fewer than top-k */
    CHECK_STATUS(MP_ERR_ARG, mp_context_set_expert_mask(ctx, 0, keep, 3, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_context_set_expert_mask(ctx, 0, keep, c->n_expert[0], &err),
                 &err);
    CHECK_STATUS(MP_ERR_ARG, mp_context_set_expert_mask(ctx, 99, NULL, 0, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_context_set_experts_used(ctx, c->n_expert_used + 1, &err),
                 &err);
    CHECK_STATUS(MP_OK, mp_context_set_experts_used(ctx, 1, &err), &err);
    CHECK_STATUS(MP_OK, mp_context_set_expert_mask(ctx, 0, keep, c->n_expert[0], &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_context_set_experts_used(ctx, 2, &err), &err);
    CHECK_STATUS(MP_OK, mp_context_set_expert_mask(ctx, 0, NULL, 0, &err), &err);
    CHECK_STATUS(MP_OK, mp_context_set_experts_used(ctx, 0, &err), &err);
    CHECK_INT(c->n_expert_used, mp_context_experts_used(ctx));
    /* a hook that stops the run: error out, cache unchanged */
    hook_rec h = {.ret = MP_ERR_CHECK};
    mp_moe_hook hk = {.fn = hook_fn, .user = &h};
    CHECK_STATUS(MP_OK, mp_context_set_moe_hook(ctx, &hk, &err), &err);
    CHECK_STATUS(MP_ERR_CHECK, mp_context_eval(ctx, ok, 3, MP_LOGITS_ALL, lg, &err), &err);
    CHECK_INT(1, h.calls);
    CHECK_INT(0, mp_context_n_past(ctx));
    CHECK_STATUS(MP_OK, mp_context_set_moe_hook(ctx, NULL, &err), &err);
    CHECK_STATUS(MP_OK, mp_context_eval(ctx, ok, 8, MP_LOGITS_ALL, lg, &err), &err);
    CHECK_INT(8, mp_context_n_past(ctx));
    mp_context_truncate(ctx, 3);
    CHECK_INT(3, mp_context_n_past(ctx));
    free(lg);
    mp_context_free(ctx);
    mp_model_free(m);
    /* bad context parameters */
    CHECK_STATUS(MP_OK, mp_model_load(&m, path, &err), &err);
    p.n_ctx = 0;
    CHECK_STATUS(MP_ERR_ARG, mp_context_init(&ctx, m, p, &err), &err);
    mp_model_free(m);
    unlink(path);
}

/* Every allocation of load, context init and hook setup fails in turn: each
 * failure is MP_ERR_NOMEM, nothing crashes, and (under ASan) nothing leaks. */
static void test_alloc_failures(const tcfg *c, const char *dir, uint64_t seed) {
    char path[1024];
    snprintf(path, sizeof path, "%s/alloc.gguf", dir);
    if (!write_model(c, NULL, path, NULL, seed)) return;
    mp_token tok[3] = {1, 2, 3};
    float *lg = malloc((size_t)c->n_vocab * sizeof *lg);
    hook_rec hr = {0};
    mp_moe_hook hook = {.fn = hook_fn, .user = &hr, .want_expert_out = true};
    int n_fail = 0;
    for (long n = 1;; n++) {
        mp_err err = {0};
        mp_model *m = NULL;
        mp_context *ctx = NULL;
        mp_context_params p = mp_context_default_params();
        p.n_ctx = 8;
        p.n_threads = 2;
        mp_malloc_fail_at(n);
        mp_status s = mp_model_load(&m, path, &err);
        if (!s) s = mp_context_init(&ctx, m, p, &err);
        if (!s) s = mp_context_set_moe_hook(ctx, &hook, &err);
        mp_malloc_fail_at(0);
        if (!s) CHECK_STATUS(MP_OK, mp_context_eval(ctx, tok, 3, MP_LOGITS_LAST, lg, &err), &err);
        mp_context_free(ctx);
        mp_model_free(m);
        if (!s) break;
        n_fail++;
        CHECK_STATUS(MP_ERR_NOMEM, s, &err);
        if (n > 10000) break;
    }
    printf("allocation failures: %d points, each MP_ERR_NOMEM\n", n_fail);
    CHECK(n_fail > 10);
    free(lg);
    unlink(path);
}

int main(int argc, char **argv) {
    uint64_t seed = mp_test_seed(argc, argv);
    /* The forward pass is checked against float64 with float activations;
     * the 8-bit activation kernels are checked in test_kernels (against the
     * dequantized dot) and test_fixture_logits (against llama.cpp). */
    setenv("MOEPRUNE_CPU", "exact", 1);
    char dir[512];
    if (!mp_test_tmpdir(dir, sizeof dir, "engine")) {
        fprintf(stderr, "cannot make a temp dir\n");
        return 1;
    }
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++)
        test_config(&configs[i], dir, seed);
    test_mask_vs_removed(&configs[0], dir, seed);
    test_mask_vs_removed(&configs[1], dir, seed);
    test_errors(&configs[0], dir, seed);
    test_alloc_failures(&configs[1], dir, seed);
    rmdir(dir);
    return mp_test_end("test_engine_general");
}

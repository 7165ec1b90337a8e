/* ref_gemma4.c — see ref_gemma4.h. Spec: gemma4-gguf-spec.md section 4
 * (forward pass) and 3.1 (keys, llama.cpp's defaults when absent). */
#include "ref_gemma4.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* llama.cpp's floor on the sum of the top-k probabilities (spec 4, router). */
#define REF_G4_WSUM_MIN 6.103515625e-5

/* ----------------------------------------------------------------- model */

typedef struct ref_layer {
    double *attn_norm, *wq, *wk, *wv, *q_norm, *k_norm, *wo, *post_attn;
    double *ffn_norm, *gate, *up, *down, *post_ffw, *post1, *pre2, *post2;
    double *router, *rscale, *gate_up, *gate_e, *up_e, *down_e, *escale;
    double out_scale;
    double *kc, *vc; /* [max_tokens][n_head_kv * head_dim]; NULL on KV-sharing layers */
} ref_layer;

struct ref_g4 {
    mp_gguf *g;
    ref_g4_hparams hp;
    int64_t max_tokens;
    double *emb, *out, *out_norm, *rope_freqs;
    ref_layer L[REF_G4_MAX_LAYER];
};

/* Which layers must have a tensor; the rest are optional (checked by hand). */
typedef enum need_kind { NEED_ALL, NEED_KV, NEED_MOE, NEED_NONE } need_kind;

static const struct layer_tensor {
    const char *name; /* after "blk.N." */
    size_t off;       /* of the double * in ref_layer */
    need_kind need;
} LAYER_TENSORS[] = {
    {"attn_norm.weight", offsetof(ref_layer, attn_norm), NEED_ALL},
    {"attn_q.weight", offsetof(ref_layer, wq), NEED_ALL},
    {"attn_k.weight", offsetof(ref_layer, wk), NEED_KV},
    {"attn_v.weight", offsetof(ref_layer, wv), NEED_NONE}, /* absent: V = K */
    {"attn_q_norm.weight", offsetof(ref_layer, q_norm), NEED_ALL},
    {"attn_k_norm.weight", offsetof(ref_layer, k_norm), NEED_KV},
    {"attn_output.weight", offsetof(ref_layer, wo), NEED_ALL},
    {"post_attention_norm.weight", offsetof(ref_layer, post_attn), NEED_ALL},
    {"ffn_norm.weight", offsetof(ref_layer, ffn_norm), NEED_ALL},
    {"ffn_gate.weight", offsetof(ref_layer, gate), NEED_ALL},
    {"ffn_up.weight", offsetof(ref_layer, up), NEED_ALL},
    {"ffn_down.weight", offsetof(ref_layer, down), NEED_ALL},
    {"post_ffw_norm.weight", offsetof(ref_layer, post_ffw), NEED_ALL},
    {"post_ffw_norm_1.weight", offsetof(ref_layer, post1), NEED_MOE},
    {"pre_ffw_norm_2.weight", offsetof(ref_layer, pre2), NEED_MOE},
    {"post_ffw_norm_2.weight", offsetof(ref_layer, post2), NEED_MOE},
    {"ffn_gate_inp.weight", offsetof(ref_layer, router), NEED_MOE},
    {"ffn_gate_inp.scale", offsetof(ref_layer, rscale), NEED_MOE},
    {"ffn_gate_up_exps.weight", offsetof(ref_layer, gate_up), NEED_NONE}, /* or split: */
    {"ffn_gate_exps.weight", offsetof(ref_layer, gate_e), NEED_NONE},
    {"ffn_up_exps.weight", offsetof(ref_layer, up_e), NEED_NONE},
    {"ffn_down_exps.weight", offsetof(ref_layer, down_e), NEED_MOE},
    {"ffn_down_exps.scale", offsetof(ref_layer, escale), NEED_NONE},
};
#define N_LAYER_TENSORS (sizeof LAYER_TENSORS / sizeof LAYER_TENSORS[0])

static double **tensor_slot(ref_layer *L, size_t i) {
    return (double **)((char *)L + LAYER_TENSORS[i].off);
}

/* The whole tensor as doubles, or NULL when absent. */
static double *load(const mp_gguf *g, const char *name) {
    const mp_gguf_tensor *t = mp_gguf_find_tensor(g, name);
    if (!t) return NULL;
    int64_t n = mp_tensor_nelements(t), ne0 = t->ne[0];
    size_t rb;
    float *f = malloc((size_t)ne0 * sizeof *f);
    double *d = malloc((size_t)n * sizeof *d);
    mp_type_row_bytes(t->type, ne0, &rb, NULL);
    for (int64_t r = 0; r < n / ne0; r++) {
        mp_dequantize_row(t->type, (const uint8_t *)t->data + r * rb, f, ne0, NULL);
        for (int64_t i = 0; i < ne0; i++) d[r * ne0 + i] = f[i];
    }
    free(f);
    return d;
}

static const char *blk_name(char *buf, size_t n, int64_t l, const char *rest) {
    snprintf(buf, n, "blk.%lld.%s", (long long)l, rest);
    return buf;
}

/* A "scalar or per-layer array" integer key. */
static int64_t key_at(const mp_gguf *g, const char *key, int64_t l, int64_t dflt) {
    int64_t i = mp_gguf_find_key(g, key), v = dflt;
    if (i < 0) return dflt;
    bool arr = mp_gguf_kv_type(g, i) == MP_GGUF_ARRAY;
    if (arr && mp_gguf_arr_type(g, i) == MP_GGUF_BOOL) {
        bool b = false;
        mp_gguf_get_bool(g, i, (uint64_t)l, &b, NULL);
        return b;
    }
    mp_gguf_get_int(g, i, arr ? (uint64_t)l : 0, &v, NULL);
    return v;
}

static double key_f(const mp_gguf *g, const char *key, double dflt) {
    double v = dflt;
    if (mp_gguf_key_float(g, key, &v, NULL) != MP_OK) return dflt;
    return v;
}

/* Metadata; the per-layer part except n_expert, which load_layer reads off
 * the router. */
static bool read_hparams(ref_g4 *r, const char *path) {
    const mp_gguf *g = r->g;
    ref_g4_hparams *hp = &r->hp;
    hp->n_embd = key_at(g, "gemma4.embedding_length", 0, 0);
    hp->n_layer = key_at(g, "gemma4.block_count", 0, 0);
    hp->n_expert_used = key_at(g, "gemma4.expert_used_count", 0, 0);
    hp->n_swa = key_at(g, "gemma4.attention.sliding_window", 0, 0);
    hp->n_ff_exp = key_at(g, "gemma4.expert_feed_forward_length", 0, 0);
    hp->n_kv_shared = key_at(g, "gemma4.attention.shared_kv_layers", 0, 0);
    hp->eps = key_f(g, "gemma4.attention.layer_norm_rms_epsilon", 1e-6);
    hp->softcap = key_f(g, "gemma4.final_logit_softcapping", 0);
    hp->rope_base = key_f(g, "gemma4.rope.freq_base", 10000);
    hp->rope_base_swa = key_f(g, "gemma4.rope.freq_base_swa", 10000);
    const int64_t N = hp->n_kv_shared, n_layer = hp->n_layer;
    if (n_layer < 1 || n_layer > REF_G4_MAX_LAYER || N < 0 || N >= n_layer ||
        key_at(g, "gemma4.embedding_length_per_layer_input", 0, 0) != 0) {
        fprintf(stderr, "ref_g4: %s: %lld layers, %lld sharing KV, or per-layer embeddings: "
                "not handled by the reference\n", path, (long long)n_layer, (long long)N);
        return false;
    }
    int64_t d_glob = key_at(g, "gemma4.attention.key_length", 0, 0);
    int64_t d_swa = key_at(g, "gemma4.attention.key_length_swa", 0, d_glob);
    for (int64_t l = 0; l < n_layer; l++) {
        ref_g4_layer_hp *lh = &hp->layer[l];
        lh->swa = key_at(g, "gemma4.attention.sliding_window_pattern", l, 0) != 0;
        lh->n_head = key_at(g, "gemma4.attention.head_count", l, 0);
        lh->n_head_kv = key_at(g, "gemma4.attention.head_count_kv", l, lh->n_head);
        lh->head_dim = lh->swa ? d_swa : d_glob;
        lh->n_ff = key_at(g, "gemma4.feed_forward_length", l, 0);
        /* spec 4, KV sharing: the last N layers read the cache of the last
         * sliding (n_layer-N-2) or global (n_layer-N-1) layer that has one */
        lh->kv_source = l < n_layer - N ? l : n_layer - N - (lh->swa ? 2 : 1);
        const ref_g4_layer_hp *src = lh->kv_source >= 0 ? &hp->layer[lh->kv_source] : NULL;
        if (!src || src->swa != lh->swa || lh->n_head_kv < 1 ||
            lh->n_head % src->n_head_kv != 0) {
            fprintf(stderr, "ref_g4: %s: layer %lld (%s, %lld heads, %lld KV heads) reads "
                    "the KV of layer %lld: not handled by the reference\n", path, (long long)l,
                    lh->swa ? "sliding" : "global", (long long)lh->n_head,
                    (long long)lh->n_head_kv, (long long)lh->kv_source);
            return false;
        }
    }
    return true;
}

static bool load_layer(ref_g4 *r, int64_t l, const char *path) {
    ref_layer *L = &r->L[l];
    ref_g4_layer_hp *lh = &r->hp.layer[l];
    const bool has_kv = lh->kv_source == l;
    char name[96];
    blk_name(name, sizeof name, l, "ffn_gate_inp.weight");
    const mp_gguf_tensor *rt = mp_gguf_find_tensor(r->g, name);
    lh->n_expert = rt ? rt->ne[1] : 0;
    bool ok = true;
    for (size_t i = 0; i < N_LAYER_TENSORS; i++) {
        const struct layer_tensor *lt = &LAYER_TENSORS[i];
        double *d = *tensor_slot(L, i) = load(r->g, blk_name(name, sizeof name, l, lt->name));
        if (!d && (lt->need == NEED_ALL || (lt->need == NEED_KV && has_kv) ||
                   (lt->need == NEED_MOE && lh->n_expert))) {
            fprintf(stderr, "ref_g4: %s: tensor '%s' missing\n", path, name);
            ok = false;
        }
    }
    if (lh->n_expert && !L->gate_up && !(L->gate_e && L->up_e)) {
        fprintf(stderr, "ref_g4: %s: layer %lld has neither ffn_gate_up_exps nor "
                "ffn_gate_exps and ffn_up_exps\n", path, (long long)l);
        ok = false;
    }
    double *os = load(r->g, blk_name(name, sizeof name, l, "layer_output_scale.weight"));
    L->out_scale = os ? os[0] : 1.0;
    free(os);
    if (has_kv) {
        size_t n = (size_t)(r->max_tokens * lh->n_head_kv * lh->head_dim);
        L->kc = calloc(n, sizeof(double));
        L->vc = calloc(n, sizeof(double));
    }
    return ok;
}

ref_g4 *ref_g4_load(const char *path, int64_t max_tokens) {
    ref_g4 *r = calloc(1, sizeof *r);
    mp_err err = {0};
    if (mp_gguf_open(&r->g, path, &err)) {
        fprintf(stderr, "ref_g4: %s\n", err.msg);
        free(r);
        return NULL;
    }
    r->max_tokens = max_tokens;
    if (!read_hparams(r, path)) {
        r->hp.n_layer = 0; /* nothing per layer loaded yet */
        ref_g4_free(r);
        return NULL;
    }
    const mp_gguf *g = r->g;
    r->emb = load(g, "token_embd.weight");
    r->out = load(g, "output.weight");
    if (!r->out) r->out = r->emb; /* tied */
    r->out_norm = load(g, "output_norm.weight");
    r->rope_freqs = load(g, "rope_freqs.weight");
    bool ok = r->emb && r->out_norm;
    if (!ok) fprintf(stderr, "ref_g4: %s: token_embd or output_norm missing\n", path);
    r->hp.n_vocab = ok ? mp_gguf_find_tensor(g, "token_embd.weight")->ne[1] : 0;
    for (int64_t l = 0; l < r->hp.n_layer; l++) ok &= load_layer(r, l, path);
    if (!ok) {
        ref_g4_free(r);
        return NULL;
    }
    return r;
}

void ref_g4_free(ref_g4 *r) {
    if (!r) return;
    if (r->out != r->emb) free(r->out);
    free(r->emb);
    free(r->out_norm);
    free(r->rope_freqs);
    for (int64_t l = 0; l < r->hp.n_layer; l++) {
        ref_layer *L = &r->L[l];
        for (size_t i = 0; i < N_LAYER_TENSORS; i++) free(*tensor_slot(L, i));
        free(L->kc);
        free(L->vc);
    }
    mp_gguf_free(r->g);
    free(r);
}

int64_t ref_g4_n_vocab(const ref_g4 *r) {
    return r->hp.n_vocab;
}

const ref_g4_hparams *ref_g4_hparams_of(const ref_g4 *r) {
    return &r->hp;
}

/* --------------------------------------------------------------- kernels */

static void rmsn(const double *x, const double *w, double *y, int64_t n, double eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
    double s = 1.0 / sqrt(ss / (double)n + eps);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * s * (w ? w[i] : 1.0);
}

/* y[n_out] = W x, W stored {n_in, n_out} (row o = output o). */
static void mv(const double *W, const double *x, double *y, int64_t n_in, int64_t n_out) {
    for (int64_t o = 0; o < n_out; o++) {
        double s = 0;
        for (int64_t i = 0; i < n_in; i++) s += W[o * n_in + i] * x[i];
        y[o] = s;
    }
}

/* The tanh approximation, as Gemma's gelu_pytorch_tanh and llama.cpp. */
static double gelu(double x) {
    return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}

/* NEOX RoPE over the whole head: pairs (j, j + d/2), frequency j divided by
 * ff[j] (rope_freqs: 1e30 stops a pair, which is how partial rotation is
 * stored). */
static void rope(double *h, int64_t d, int64_t pos, double base, const double *ff) {
    for (int64_t j = 0; j < d / 2; j++) {
        double th = (double)pos * pow(base, -2.0 * (double)j / (double)d) / (ff ? ff[j] : 1.0);
        double a = h[j], b = h[j + d / 2];
        h[j] = a * cos(th) - b * sin(th);
        h[j + d / 2] = a * sin(th) + b * cos(th);
    }
}

/* ------------------------------------------------------------- the layers */

/* a[n_embd] = attention of layer l at position p over x (already normed).
 * A layer with its own KV writes position p of its cache first; a sharing
 * layer reads its source's. Scale 1.0 (q_norm/k_norm carry it). */
static void attention(ref_g4 *r, int64_t l, const double *x, int64_t p, double *a) {
    const ref_g4_layer_hp *lh = &r->hp.layer[l], *sh = &r->hp.layer[lh->kv_source];
    const ref_layer *L = &r->L[l], *S = &r->L[lh->kv_source];
    const int64_t H = lh->n_head, Hkv = sh->n_head_kv, d = lh->head_dim, E = r->hp.n_embd;
    const double eps = r->hp.eps;
    const double base = lh->swa ? r->hp.rope_base_swa : r->hp.rope_base;
    const double *ff = lh->swa ? NULL : r->rope_freqs;
    double *q = malloc((size_t)(H * d) * sizeof *q), *o = malloc((size_t)(H * d) * sizeof *o);
    double *s = malloc((size_t)(p + 1) * sizeof *s);
    mv(L->wq, x, q, E, H * d);
    for (int64_t h = 0; h < H; h++) {
        rmsn(q + h * d, L->q_norm, q + h * d, d, eps);
        rope(q + h * d, d, p, base, ff);
    }
    if (lh->kv_source == l) {
        double *k = L->kc + p * Hkv * d, *v = L->vc + p * Hkv * d;
        mv(L->wk, x, k, E, Hkv * d);
        if (L->wv)
            mv(L->wv, x, v, E, Hkv * d);
        else
            memcpy(v, k, (size_t)(Hkv * d) * sizeof *v); /* V = the raw K projection */
        for (int64_t gi = 0; gi < Hkv; gi++) {
            rmsn(k + gi * d, L->k_norm, k + gi * d, d, eps);
            rope(k + gi * d, d, p, base, ff);
            rmsn(v + gi * d, NULL, v + gi * d, d, eps);
        }
    }
    for (int64_t h = 0; h < H; h++) {
        const int64_t gi = h / (H / Hkv);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= p; j++) {
            double sc = 0;
            for (int64_t i = 0; i < d; i++) sc += q[h * d + i] * S->kc[(j * Hkv + gi) * d + i];
            s[j] = !lh->swa || p - j < r->hp.n_swa ? sc : -INFINITY;
            if (s[j] > mx) mx = s[j];
        }
        for (int64_t j = 0; j <= p; j++) sum += (s[j] = exp(s[j] - mx));
        for (int64_t i = 0; i < d; i++) {
            double acc = 0;
            for (int64_t j = 0; j <= p; j++) acc += s[j] / sum * S->vc[(j * Hkv + gi) * d + i];
            o[h * d + i] = acc;
        }
    }
    mv(L->wo, o, a, H * d, E);
    free(q);
    free(o);
    free(s);
}

/* Softmax over the kept experts' logits (masked ones: probability 0, as if
 * cut from the file), then the top K by probability (ties: lowest id) and
 * their weights renormalised, the sum floored as llama.cpp does. */
static void route(const double *lg, const bool *keep, int64_t X, int64_t K, double *pr,
                  int32_t *sel, double *w) {
    double mx = -INFINITY, sum = 0, wsum = 0;
    for (int64_t e = 0; e < X; e++)
        if ((!keep || keep[e]) && lg[e] > mx) mx = lg[e];
    for (int64_t e = 0; e < X; e++) sum += (pr[e] = !keep || keep[e] ? exp(lg[e] - mx) : 0);
    for (int64_t e = 0; e < X; e++) pr[e] /= sum;
    for (int64_t j = 0; j < K; j++) {
        int32_t best = -1;
        for (int32_t e = 0; e < X; e++) {
            bool taken = false;
            for (int64_t i = 0; i < j; i++) taken |= sel[i] == e;
            if (!taken && (!keep || keep[e]) && (best < 0 || pr[e] > pr[best])) best = e;
        }
        sel[j] = best;
        wsum += pr[best];
    }
    for (int64_t j = 0; j < K; j++)
        w[j] = pr[sel[j]] / (wsum > REF_G4_WSUM_MIN ? wsum : REF_G4_WSUM_MIN);
}

/* mix[n_embd] = the MoE branch of layer l on h1 (the residual after
 * attention). Every expert is evaluated, masked or not, so the callback can
 * see them all; only the chosen K are mixed. */
static void moe(ref_g4 *r, int64_t l, const double *h1, int64_t p, const ref_g4_opts *o,
                int64_t K, double *mix) {
    const ref_layer *L = &r->L[l];
    const bool *keep = o && o->keep ? o->keep[l] : NULL;
    const int64_t E = r->hp.n_embd, X = r->hp.layer[l].n_expert, F = r->hp.n_ff_exp;
    const double eps = r->hp.eps;
    double *rin = malloc((size_t)E * sizeof *rin), *u = malloc((size_t)E * sizeof *u);
    double *lg = malloc((size_t)X * sizeof *lg), *pr = malloc((size_t)X * sizeof *pr);
    double *g = malloc((size_t)F * sizeof *g), *t = malloc((size_t)F * sizeof *t);
    double *out = malloc((size_t)(X * E) * sizeof *out), w[REF_G4_MAX_USED];
    int32_t sel[REF_G4_MAX_USED];
    rmsn(h1, NULL, rin, E, eps);
    for (int64_t i = 0; i < E; i++) rin[i] = rin[i] / sqrt((double)E) * L->rscale[i];
    mv(L->router, rin, lg, E, X);
    route(lg, keep, X, K, pr, sel, w);
    rmsn(h1, L->pre2, u, E, eps);
    for (int64_t e = 0; e < X; e++) {
        if (L->gate_up) {
            mv(L->gate_up + e * 2 * F * E, u, g, E, F); /* gate rows first, then up */
            mv(L->gate_up + e * 2 * F * E + F * E, u, t, E, F);
        } else {
            mv(L->gate_e + e * F * E, u, g, E, F);
            mv(L->up_e + e * F * E, u, t, E, F);
        }
        for (int64_t i = 0; i < F; i++) g[i] = gelu(g[i]) * t[i];
        mv(L->down_e + e * E * F, g, out + e * E, F, E);
        for (int64_t i = 0; i < E; i++) out[e * E + i] *= L->escale ? L->escale[e] : 1.0;
    }
    for (int64_t i = 0; i < E; i++) mix[i] = 0;
    for (int64_t j = 0; j < K; j++)
        for (int64_t i = 0; i < E; i++) mix[i] += w[j] * out[sel[j] * E + i];
    if (o && o->moe_fn) {
        ref_g4_moe d = {.layer = l,
                        .pos = p,
                        .n_expert = X,
                        .k = K,
                        .n_embd = E,
                        .prob = pr,
                        .chosen = sel,
                        .weight = w,
                        .out = out};
        o->moe_fn(&d, o->user);
    }
    free(rin);
    free(u);
    free(lg);
    free(pr);
    free(g);
    free(t);
    free(out);
}

/* -------------------------------------------------------------- forward */

/* The caller's request is one the reference can honour (see the header). */
static bool check_request(const ref_g4 *r, const mp_token *tok, int64_t n, const ref_g4_opts *o,
                          int64_t K) {
    if (n > r->max_tokens) {
        fprintf(stderr, "ref_g4: %lld tokens, loaded for %lld\n", (long long)n,
                (long long)r->max_tokens);
        return false;
    }
    for (int64_t p = 0; p < n; p++)
        if (tok[p] < 0 || tok[p] >= r->hp.n_vocab) {
            fprintf(stderr, "ref_g4: token %lld at %lld not in 0..%lld\n", (long long)tok[p],
                    (long long)p, (long long)r->hp.n_vocab - 1);
            return false;
        }
    for (int64_t l = 0; l < r->hp.n_layer; l++) {
        const int64_t X = r->hp.layer[l].n_expert;
        const bool *keep = o && o->keep ? o->keep[l] : NULL;
        int64_t kept = X;
        for (int64_t e = 0; keep && e < X; e++) kept -= !keep[e];
        if ((keep && !X) || (X && (K < 1 || K > REF_G4_MAX_USED || K > kept))) {
            fprintf(stderr, "ref_g4: layer %lld: %lld experts, %lld kept, top-%lld%s\n",
                    (long long)l, (long long)X, (long long)kept, (long long)K,
                    keep && !X ? ": a mask on a dense layer" : "");
            return false;
        }
    }
    return true;
}

bool ref_g4_forward(ref_g4 *r, const mp_token *tok, int64_t n, const ref_g4_opts *o,
                    double *logits) {
    const ref_g4_hparams *hp = &r->hp;
    const int64_t E = hp->n_embd, V = hp->n_vocab;
    const int64_t K = o && o->n_expert_used ? o->n_expert_used : hp->n_expert_used;
    if (!check_request(r, tok, n, o, K)) return false;
    const double eps = hp->eps;
    double *h = malloc((size_t)E * sizeof *h), *x = malloc((size_t)E * sizeof *x);
    double *a = malloc((size_t)E * sizeof *a), *f = malloc((size_t)E * sizeof *f);
    double *mx = malloc((size_t)E * sizeof *mx);
    int64_t max_ff = 1;
    for (int64_t l = 0; l < hp->n_layer; l++)
        max_ff = hp->layer[l].n_ff > max_ff ? hp->layer[l].n_ff : max_ff;
    double *gg = malloc((size_t)max_ff * sizeof *gg), *tt = malloc((size_t)max_ff * sizeof *tt);
    for (int64_t p = 0; p < n; p++) {
        for (int64_t i = 0; i < E; i++) h[i] = r->emb[tok[p] * E + i] * sqrt((double)E);
        for (int64_t l = 0; l < hp->n_layer; l++) {
            const ref_layer *L = &r->L[l];
            const int64_t ff = hp->layer[l].n_ff;
            rmsn(h, L->attn_norm, x, E, eps);
            attention(r, l, x, p, a);
            rmsn(a, L->post_attn, a, E, eps);
            for (int64_t i = 0; i < E; i++) h[i] += a[i];
            rmsn(h, L->ffn_norm, x, E, eps);
            mv(L->gate, x, gg, E, ff);
            mv(L->up, x, tt, E, ff);
            for (int64_t i = 0; i < ff; i++) gg[i] = gelu(gg[i]) * tt[i];
            mv(L->down, gg, f, ff, E);
            if (hp->layer[l].n_expert) {
                rmsn(f, L->post1, f, E, eps);
                moe(r, l, h, p, o, K, mx);
                rmsn(mx, L->post2, mx, E, eps);
                for (int64_t i = 0; i < E; i++) f[i] += mx[i];
            }
            rmsn(f, L->post_ffw, f, E, eps);
            for (int64_t i = 0; i < E; i++) h[i] = (h[i] + f[i]) * L->out_scale;
        }
        rmsn(h, r->out_norm, x, E, eps);
        mv(r->out, x, logits + p * V, E, V);
        if (hp->softcap > 0)
            for (int64_t i = 0; i < V; i++)
                logits[p * V + i] = hp->softcap * tanh(logits[p * V + i] / hp->softcap);
    }
    free(h);
    free(x);
    free(a);
    free(f);
    free(mx);
    free(gg);
    free(tt);
    return true;
}

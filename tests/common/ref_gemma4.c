/* ref_gemma4.c — see ref_gemma4.h. Spec: gemma4-gguf-spec.md section 4. */
#include "ref_gemma4.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REF_MAXL 64

typedef struct ref_layer {
    bool swa;
    int64_t H, Hkv, d, X, ff;
    double *attn_norm, *wq, *wk, *wv, *q_norm, *k_norm, *wo, *post_attn;
    double *ffn_norm, *gate, *up, *down, *post_ffw, *post1, *pre2, *post2;
    double *router, *rscale, *gate_up, *gate_e, *up_e, *down_e, *escale;
    double out_scale;
    double *kc, *vc; /* [max_tokens][Hkv * d] */
} ref_layer;

struct ref_g4 {
    mp_gguf *g;
    int64_t E, V, n_layer, k, n_swa, ff_exp, max_tokens;
    double eps, softcap, base, base_swa;
    double *emb, *out, *out_norm, *rope_freqs;
    ref_layer L[REF_MAXL];
};

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

static double *lload(const mp_gguf *g, int64_t l, const char *rest) {
    char name[96];
    snprintf(name, sizeof name, "blk.%lld.%s", (long long)l, rest);
    return load(g, name);
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

ref_g4 *ref_g4_load(const char *path, int64_t max_tokens) {
    ref_g4 *r = calloc(1, sizeof *r);
    mp_err err = {0};
    if (mp_gguf_open(&r->g, path, &err)) {
        fprintf(stderr, "ref_g4: %s\n", err.msg);
        free(r);
        return NULL;
    }
    const mp_gguf *g = r->g;
    r->max_tokens = max_tokens;
    r->E = key_at(g, "gemma4.embedding_length", 0, 0);
    r->n_layer = key_at(g, "gemma4.block_count", 0, 0);
    r->k = key_at(g, "gemma4.expert_used_count", 0, 0);
    r->n_swa = key_at(g, "gemma4.attention.sliding_window", 0, 0);
    r->ff_exp = key_at(g, "gemma4.expert_feed_forward_length", 0, 0);
    r->eps = key_f(g, "gemma4.attention.layer_norm_rms_epsilon", 1e-6);
    r->softcap = key_f(g, "gemma4.final_logit_softcapping", 0);
    r->base = key_f(g, "gemma4.rope.freq_base", 10000);
    r->base_swa = key_f(g, "gemma4.rope.freq_base_swa", 10000);
    if (r->n_layer > REF_MAXL || key_at(g, "gemma4.attention.shared_kv_layers", 0, 0) != 0 ||
        key_at(g, "gemma4.embedding_length_per_layer_input", 0, 0) != 0) {
        fprintf(stderr, "ref_g4: %s: not handled by the reference\n", path);
        ref_g4_free(r);
        return NULL;
    }
    r->emb = load(g, "token_embd.weight");
    r->out = load(g, "output.weight");
    if (!r->out) r->out = r->emb;
    r->out_norm = load(g, "output_norm.weight");
    r->rope_freqs = load(g, "rope_freqs.weight");
    r->V = mp_gguf_find_tensor(g, "token_embd.weight")->ne[1];
    int64_t d_glob = key_at(g, "gemma4.attention.key_length", 0, 0);
    int64_t d_swa = key_at(g, "gemma4.attention.key_length_swa", 0, d_glob);
    for (int64_t l = 0; l < r->n_layer; l++) {
        ref_layer *L = &r->L[l];
        L->swa = key_at(g, "gemma4.attention.sliding_window_pattern", l, 0) != 0;
        L->H = key_at(g, "gemma4.attention.head_count", l, 0);
        L->Hkv = key_at(g, "gemma4.attention.head_count_kv", l, L->H);
        L->d = L->swa ? d_swa : d_glob;
        L->ff = key_at(g, "gemma4.feed_forward_length", l, 0);
        L->attn_norm = lload(g, l, "attn_norm.weight");
        L->wq = lload(g, l, "attn_q.weight");
        L->wk = lload(g, l, "attn_k.weight");
        L->wv = lload(g, l, "attn_v.weight");
        L->q_norm = lload(g, l, "attn_q_norm.weight");
        L->k_norm = lload(g, l, "attn_k_norm.weight");
        L->wo = lload(g, l, "attn_output.weight");
        L->post_attn = lload(g, l, "post_attention_norm.weight");
        L->ffn_norm = lload(g, l, "ffn_norm.weight");
        L->gate = lload(g, l, "ffn_gate.weight");
        L->up = lload(g, l, "ffn_up.weight");
        L->down = lload(g, l, "ffn_down.weight");
        L->post_ffw = lload(g, l, "post_ffw_norm.weight");
        L->post1 = lload(g, l, "post_ffw_norm_1.weight");
        L->pre2 = lload(g, l, "pre_ffw_norm_2.weight");
        L->post2 = lload(g, l, "post_ffw_norm_2.weight");
        L->router = lload(g, l, "ffn_gate_inp.weight");
        L->rscale = lload(g, l, "ffn_gate_inp.scale");
        L->gate_up = lload(g, l, "ffn_gate_up_exps.weight");
        L->gate_e = lload(g, l, "ffn_gate_exps.weight");
        L->up_e = lload(g, l, "ffn_up_exps.weight");
        L->down_e = lload(g, l, "ffn_down_exps.weight");
        L->escale = lload(g, l, "ffn_down_exps.scale");
        char name[96];
        snprintf(name, sizeof name, "blk.%lld.ffn_gate_inp.weight", (long long)l);
        const mp_gguf_tensor *rt = mp_gguf_find_tensor(g, name);
        L->X = rt ? rt->ne[1] : 0;
        double *os = lload(g, l, "layer_output_scale.weight");
        L->out_scale = os ? os[0] : 1.0;
        free(os);
        L->kc = calloc((size_t)(max_tokens * L->Hkv * L->d), sizeof(double));
        L->vc = calloc((size_t)(max_tokens * L->Hkv * L->d), sizeof(double));
    }
    return r;
}

void ref_g4_free(ref_g4 *r) {
    if (!r) return;
    if (r->out != r->emb) free(r->out);
    free(r->emb);
    free(r->out_norm);
    free(r->rope_freqs);
    for (int64_t l = 0; l < r->n_layer; l++) {
        ref_layer *L = &r->L[l];
        double *all[] = {L->attn_norm, L->wq,     L->wk,        L->wv,       L->q_norm,
                         L->k_norm,    L->wo,     L->post_attn, L->ffn_norm, L->gate,
                         L->up,        L->down,   L->post_ffw,  L->post1,    L->pre2,
                         L->post2,     L->router, L->rscale,    L->gate_up,  L->gate_e,
                         L->up_e,      L->down_e, L->escale,    L->kc,       L->vc};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
    }
    mp_gguf_free(r->g);
    free(r);
}

int64_t ref_g4_n_vocab(const ref_g4 *r) {
    return r->V;
}

static void rmsn(const double *x, const double *w, double *y, int64_t n, double eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
    double s = 1.0 / sqrt(ss / (double)n + eps);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * s * (w ? w[i] : 1.0);
}

static void mv(const double *W, const double *x, double *y, int64_t n_in, int64_t n_out) {
    for (int64_t o = 0; o < n_out; o++) {
        double s = 0;
        for (int64_t i = 0; i < n_in; i++) s += W[o * n_in + i] * x[i];
        y[o] = s;
    }
}

static double gelu(double x) {
    return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}

/* NEOX RoPE over the whole head: pairs (j, j + d/2). */
static void rope(double *h, int64_t d, int64_t pos, double base, const double *ff) {
    for (int64_t j = 0; j < d / 2; j++) {
        double th = (double)pos * pow(base, -2.0 * (double)j / (double)d) / (ff ? ff[j] : 1.0);
        double a = h[j], b = h[j + d / 2];
        h[j] = a * cos(th) - b * sin(th);
        h[j + d / 2] = a * sin(th) + b * cos(th);
    }
}

static void attention(ref_g4 *r, int64_t l, const double *x, int64_t p, double *a) {
    ref_layer *L = &r->L[l];
    const int64_t H = L->H, Hkv = L->Hkv, d = L->d, E = r->E;
    const double base = L->swa ? r->base_swa : r->base;
    const double *ff = L->swa ? NULL : r->rope_freqs;
    double *q = malloc((size_t)(H * d) * sizeof *q), *o = malloc((size_t)(H * d) * sizeof *o);
    double *k = L->kc + p * Hkv * d, *v = L->vc + p * Hkv * d;
    double *s = malloc((size_t)(p + 1) * sizeof *s);
    mv(L->wq, x, q, E, H * d);
    for (int64_t h = 0; h < H; h++) {
        rmsn(q + h * d, L->q_norm, q + h * d, d, r->eps);
        rope(q + h * d, d, p, base, ff);
    }
    mv(L->wk, x, k, E, Hkv * d);
    if (L->wv)
        mv(L->wv, x, v, E, Hkv * d);
    else
        memcpy(v, k, (size_t)(Hkv * d) * sizeof *v); /* V = the raw K projection */
    for (int64_t gi = 0; gi < Hkv; gi++) {
        rmsn(k + gi * d, L->k_norm, k + gi * d, d, r->eps);
        rope(k + gi * d, d, p, base, ff);
        rmsn(v + gi * d, NULL, v + gi * d, d, r->eps);
    }
    for (int64_t h = 0; h < H; h++) {
        const int64_t gi = h / (H / Hkv);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= p; j++) {
            double sc = 0;
            for (int64_t i = 0; i < d; i++) sc += q[h * d + i] * L->kc[(j * Hkv + gi) * d + i];
            s[j] = !L->swa || p - j < r->n_swa ? sc : -INFINITY; /* scale 1.0 */
            if (s[j] > mx) mx = s[j];
        }
        for (int64_t j = 0; j <= p; j++) sum += (s[j] = exp(s[j] - mx));
        for (int64_t i = 0; i < d; i++) {
            double acc = 0;
            for (int64_t j = 0; j <= p; j++) acc += s[j] / sum * L->vc[(j * Hkv + gi) * d + i];
            o[h * d + i] = acc;
        }
    }
    mv(L->wo, o, a, H * d, E);
    free(q);
    free(o);
    free(s);
}

/* Every expert evaluated; the top k by probability mixed with renormalised
 * weights (floor 6.1035e-5 on the sum, as llama.cpp). */
static void moe(ref_g4 *r, int64_t l, const double *h1, int64_t p, double *mix, ref_g4_moe_fn fn,
                void *user) {
    ref_layer *L = &r->L[l];
    const int64_t E = r->E, X = L->X, F = r->ff_exp, K = r->k;
    double *rin = malloc((size_t)E * sizeof *rin), *u = malloc((size_t)E * sizeof *u);
    double *lg = malloc((size_t)X * sizeof *lg), *pr = malloc((size_t)X * sizeof *pr);
    double *g = malloc((size_t)F * sizeof *g), *t = malloc((size_t)F * sizeof *t);
    double *out = malloc((size_t)(X * E) * sizeof *out), w[64];
    int32_t sel[64];
    rmsn(h1, NULL, rin, E, r->eps);
    for (int64_t i = 0; i < E; i++) rin[i] = rin[i] / sqrt((double)E) * L->rscale[i];
    mv(L->router, rin, lg, E, X);
    double mx = -INFINITY, sum = 0, wsum = 0;
    for (int64_t e = 0; e < X; e++) mx = lg[e] > mx ? lg[e] : mx;
    for (int64_t e = 0; e < X; e++) sum += (pr[e] = exp(lg[e] - mx));
    for (int64_t e = 0; e < X; e++) pr[e] /= sum;
    for (int64_t j = 0; j < K; j++) {
        int32_t best = -1;
        for (int32_t e = 0; e < X; e++) {
            bool taken = false;
            for (int64_t i = 0; i < j; i++) taken |= sel[i] == e;
            if (!taken && (best < 0 || pr[e] > pr[best])) best = e;
        }
        sel[j] = best;
        wsum += pr[best];
    }
    for (int64_t j = 0; j < K; j++)
        w[j] = pr[sel[j]] / (wsum > 6.103515625e-5 ? wsum : 6.103515625e-5);
    rmsn(h1, L->pre2, u, E, r->eps);
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
    if (fn) {
        ref_g4_moe d = {.layer = l,
                        .pos = p,
                        .n_expert = X,
                        .k = K,
                        .n_embd = E,
                        .prob = pr,
                        .chosen = sel,
                        .weight = w,
                        .out = out};
        fn(&d, user);
    }
    free(rin);
    free(u);
    free(lg);
    free(pr);
    free(g);
    free(t);
    free(out);
}

void ref_g4_forward(ref_g4 *r, const mp_token *tok, int64_t n, double *logits, ref_g4_moe_fn fn,
                    void *user) {
    const int64_t E = r->E, V = r->V;
    double *h = malloc((size_t)E * sizeof *h), *x = malloc((size_t)E * sizeof *x);
    double *a = malloc((size_t)E * sizeof *a), *f = malloc((size_t)E * sizeof *f);
    double *mx = malloc((size_t)E * sizeof *mx);
    int64_t max_ff = 1;
    for (int64_t l = 0; l < r->n_layer; l++) max_ff = r->L[l].ff > max_ff ? r->L[l].ff : max_ff;
    double *gg = malloc((size_t)max_ff * sizeof *gg), *tt = malloc((size_t)max_ff * sizeof *tt);
    for (int64_t p = 0; p < n && p < r->max_tokens; p++) {
        for (int64_t i = 0; i < E; i++) h[i] = r->emb[tok[p] * E + i] * sqrt((double)E);
        for (int64_t l = 0; l < r->n_layer; l++) {
            ref_layer *L = &r->L[l];
            rmsn(h, L->attn_norm, x, E, r->eps);
            attention(r, l, x, p, a);
            rmsn(a, L->post_attn, a, E, r->eps);
            for (int64_t i = 0; i < E; i++) h[i] += a[i];
            rmsn(h, L->ffn_norm, x, E, r->eps);
            mv(L->gate, x, gg, E, L->ff);
            mv(L->up, x, tt, E, L->ff);
            for (int64_t i = 0; i < L->ff; i++) gg[i] = gelu(gg[i]) * tt[i];
            mv(L->down, gg, f, L->ff, E);
            if (L->X) {
                rmsn(f, L->post1, f, E, r->eps);
                moe(r, l, h, p, mx, fn, user);
                rmsn(mx, L->post2, mx, E, r->eps);
                for (int64_t i = 0; i < E; i++) f[i] += mx[i];
            }
            rmsn(f, L->post_ffw, f, E, r->eps);
            for (int64_t i = 0; i < E; i++) h[i] = (h[i] + f[i]) * L->out_scale;
        }
        rmsn(h, r->out_norm, x, E, r->eps);
        mv(r->out, x, logits + p * V, E, V);
        if (r->softcap > 0)
            for (int64_t i = 0; i < V; i++)
                logits[p * V + i] = r->softcap * tanh(logits[p * V + i] / r->softcap);
    }
    free(h);
    free(x);
    free(a);
    free(f);
    free(mx);
    free(gg);
    free(tt);
}

/* ref_gemma4.h — a deliberately naive float64 Gemma 4 forward pass for tests,
 * written straight from gemma4-gguf-spec.md section 4 and driven by the
 * GGUF's own metadata: one token at a time, every weight dequantized to
 * double at load, every expert of every MoE layer evaluated (dense), so tests
 * can check the engine and the profiler against something that shares no
 * code with them. Tiny models only (it holds the whole model in doubles).
 *
 * Handles what the spec's section 4 describes for the MoE family: sliding and
 * global layers with their own head counts, head sizes and RoPE bases,
 * partial rotation through rope_freqs, V absent (V = K) on any layer, KV
 * sharing, fused or split gate/up experts, per-expert output scales,
 * dense-only layers, per-layer expert counts, tied or separate output.
 * Not handled (refused at load): per-layer embeddings (E2B/E4B), and a
 * KV-sharing layer whose spec-given source is of the other kind. Callers can
 * remove experts (keep-masks) and change top-k per forward pass. */
#ifndef MP_REF_GEMMA4_H
#define MP_REF_GEMMA4_H

#include "moeprune.h"

#define REF_G4_MAX_LAYER 64 /* more than any tiny test model has */
#define REF_G4_MAX_USED 64  /* top-k bound (fixed arrays in the router) */

typedef struct ref_g4 ref_g4;

/* One layer as the reference read it: metadata keys, except n_expert (the
 * rows of ffn_gate_inp) and kv_source (spec 4, KV sharing). */
typedef struct ref_g4_layer_hp {
    bool swa;          /* sliding-window layer (else global) */
    int64_t n_head, n_head_kv, head_dim, n_ff;
    int64_t n_expert;  /* 0: dense-only layer */
    int64_t kv_source; /* the layer whose K/V cache it attends with (itself unless shared) */
} ref_g4_layer_hp;

/* The hyper-parameters the reference runs with, so a test can check them
 * against what it meant to write. */
typedef struct ref_g4_hparams {
    int64_t n_embd, n_vocab, n_layer, n_expert_used, n_ff_exp, n_swa, n_kv_shared;
    double eps, softcap, rope_base, rope_base_swa;
    ref_g4_layer_hp layer[REF_G4_MAX_LAYER];
} ref_g4_hparams;

/* What one MoE layer did for one token, reported through ref_g4_moe_fn. */
typedef struct ref_g4_moe {
    int64_t layer, pos, n_expert, k, n_embd;
    const double *prob;     /* [n_expert] softmax over the kept experts (0 for masked ones) */
    const int32_t *chosen;  /* [k] by descending probability, in the file's numbering */
    const double *weight;   /* [k] renormalised gate weights */
    const double *out;      /* [n_expert][n_embd] every expert's output (times its
                               per-expert scale), not yet weighted */
} ref_g4_moe;
typedef void (*ref_g4_moe_fn)(const ref_g4_moe *d, void *user);

/* Options of one forward pass; a NULL ref_g4_opts means all zero. */
typedef struct ref_g4_opts {
    int64_t n_expert_used;   /* top-k; 0: the file's expert_used_count */
    const bool *const *keep; /* NULL, or [n_layer] masks, each NULL (all kept) or
                                [n_expert]: false removes the expert, as if its router
                                row and slabs were cut from the file */
    ref_g4_moe_fn moe_fn;    /* NULL, or sees every MoE layer of every token */
    void *user;              /* passed to moe_fn */
} ref_g4_opts;

/* Loads `path` for up to max_tokens positions; NULL with a message on stderr
 * when the file is not a gemma4 model this reference handles. Free with
 * ref_g4_free (NULL is a no-op). */
ref_g4 *ref_g4_load(const char *path, int64_t max_tokens);
void ref_g4_free(ref_g4 *r);
int64_t ref_g4_n_vocab(const ref_g4 *r);
/* Valid until ref_g4_free. */
const ref_g4_hparams *ref_g4_hparams_of(const ref_g4 *r);
/* Logits [n][n_vocab] of tokens from position 0 (the cache is rewritten, so
 * calls are independent). False, with a message on stderr and logits
 * unspecified, when n exceeds max_tokens, a token is out of range, or the
 * options ask for a mask on a dense layer, a top-k above REF_G4_MAX_USED, or
 * fewer kept experts than top-k. */
bool ref_g4_forward(ref_g4 *r, const mp_token *tokens, int64_t n, const ref_g4_opts *o,
                    double *logits);

#endif

/* ref_gemma4.h — a deliberately naive float64 Gemma 4 forward pass for tests,
 * written straight from gemma4-gguf-spec.md section 4 and driven by the
 * GGUF's own metadata: one token at a time, every weight dequantized to
 * double at load, every expert of every MoE layer evaluated (dense), so tests
 * can check the engine and the profiler against something that shares no
 * code with them. Tiny models only (it holds the whole model in doubles). */
#ifndef MP_REF_GEMMA4_H
#define MP_REF_GEMMA4_H

#include "moeprune.h"

typedef struct ref_g4 ref_g4;

/* What one MoE layer did for one token, reported through ref_g4_moe_fn. */
typedef struct ref_g4_moe {
    int64_t layer, pos, n_expert, k, n_embd;
    const double *prob;     /* [n_expert] softmax over all experts */
    const int32_t *chosen;  /* [k] by descending probability */
    const double *weight;   /* [k] renormalised gate weights */
    const double *out;      /* [n_expert][n_embd] every expert's output (times its
                               per-expert scale), not yet weighted */
} ref_g4_moe;
typedef void (*ref_g4_moe_fn)(const ref_g4_moe *d, void *user);

/* Loads `path`; NULL with a message on stderr when the file is not a gemma4
 * model this reference handles (KV sharing, per-layer embeddings). */
ref_g4 *ref_g4_load(const char *path, int64_t max_tokens);
void ref_g4_free(ref_g4 *r);
int64_t ref_g4_n_vocab(const ref_g4 *r);
/* Logits [n][n_vocab] of tokens from position 0; fn (may be NULL) sees every
 * MoE layer of every token. */
void ref_g4_forward(ref_g4 *r, const mp_token *tokens, int64_t n, double *logits,
                    ref_g4_moe_fn fn, void *user);

#endif

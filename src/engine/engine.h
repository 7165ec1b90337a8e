/* engine.h — internals of the CPU engine: the thread pool, the one-block
 * scratch layout, the matmul kernel interface, the small vector ops, and the
 * model and context structs that forward.c works on.
 *
 * The public API (mp_model, mp_context) is in include/moeprune.h; the
 * forward pass follows the shared gemma4-gguf-spec.md section 4 through the
 * family-neutral fields of arch.h. */
#ifndef MP_ENGINE_H
#define MP_ENGINE_H

#include <stdatomic.h>

#include "arch/arch.h"
#include "engine/kernels.h"

/* ------------------------------------------------------------------ pool */

/* A fixed set of worker threads, created once per context. mp_pool_run hands
 * out task indices 0..n_tasks-1 to the workers and the calling thread and
 * returns when all are done. Which thread runs a task is unspecified, so a
 * task must write only its own outputs: that, and chunk sizes that never
 * depend on the thread count, keep results bit-identical for any -t. */
typedef struct mp_pool mp_pool;
/* `thread` is 0..n_threads-1: the index of per-thread scratch to use. */
typedef void (*mp_pool_fn)(void *arg, int64_t task, int thread);

mp_status mp_pool_init(mp_pool **out, int n_threads, mp_err *err);
void mp_pool_free(mp_pool *p);
int mp_pool_n_threads(const mp_pool *p);
void mp_pool_run(mp_pool *p, int64_t n_tasks, mp_pool_fn fn, void *arg);

/* ----------------------------------------------------------------- arena */

/* Carves named buffers out of one block, llm.c style: a layout function runs
 * once with base NULL to measure, then again on the allocated block. */
typedef struct mp_arena {
    uint8_t *base; /* NULL while measuring */
    size_t used;
    bool overflow; /* a size did not fit size_t */
} mp_arena;

/* count * size bytes aligned to MP_ARENA_ALIGN (NULL while measuring). */
void *mp_arena_take(mp_arena *a, size_t count, size_t size);
#define MP_ARENA_ALIGN 64 /* a cache line: no two threads' buffers share one */

/* --------------------------------------------------------------- kernels */

/* One y = W x product over a set of tokens: y[t][r] = sum_i W[r][i] x[t][i]
 * for t < n_tok, r < w.ne[1], times w.scale. w is 2-D (a slab of an expert
 * tensor is taken with mp_weight_slab). */
typedef struct mp_mm_job {
    mp_weight w;
    const float *x; /* [n_tok][ldx], ldx >= w.ne[0] */
    int64_t ldx;
    float *y;       /* [n_tok][ldy], ldy >= w.ne[1] */
    int64_t ldy;
    int64_t n_tok;
    int64_t slab;       /* expert index of an _exps slab (for hooks), else 0 */
    int64_t n_slab;     /* slabs of the tensor it came from, 1 for 2-D */
    int64_t first_task; /* set by mp_matmul */
} mp_mm_job;

/* Scratch of mp_matmul, carved by the context: per-thread float rows for
 * the dequantizing reference path, the converted activations, and the
 * bookkeeping of one call (max_jobs jobs at most). */
struct mp_mm_input;
typedef struct mp_mm_scratch {
    float *row;           /* [n_threads][row_stride] */
    int64_t row_stride;   /* >= the longest weight row */
    uint8_t *act;         /* converted activation rows */
    size_t act_bytes;     /* when a call needs more, the rest takes the reference path */
    struct mp_mm_input *in; /* [max_jobs] */
    int *job_in;          /* [max_jobs] */
    int64_t max_jobs;
} mp_mm_scratch;
size_t mp_mm_input_size(void);

/* Output rows per task: fixed, so the split never depends on the thread
 * count; small enough that a 1-token product still spreads over threads. */
#define MP_MM_CHUNK_ROWS 16

/* Runs every job (n_jobs <= sc->max_jobs), split into row chunks over the
 * pool, with the kernels of level k. */
void mp_matmul(mp_pool *pool, const mp_kernels *k, mp_mm_job *jobs, int64_t n_jobs,
               const mp_mm_scratch *sc);

float mp_dot_f32(const float *a, const float *b, int64_t n);

/* ------------------------------------------------------------------- ops */

/* y = x / sqrt(mean(x^2) + eps) (* w when w is non-NULL); y may be x.
 * The sum of squares is accumulated in double, as ggml does. */
void mp_rms_norm(const float *x, const float *w, float *y, int64_t n, float eps);
float mp_act_apply(mp_act act, float x);
/* In place softmax over n values; -inf entries get exactly 0. */
void mp_softmax(float *x, int64_t n);
/* Rotates the first n_rot dims of one head (style pairs) by the angles whose
 * cosines and sines are cs[0..n_rot/2) and sn[0..n_rot/2). */
void mp_rope_apply(float *h, int64_t n_rot, mp_rope_style style, const float *cs,
                   const float *sn);

/* ----------------------------------------------------------------- model */

struct mp_model {
    mp_gguf *owned;       /* the file when loaded by path, else NULL */
    mp_arch_model *am;
    const mp_hparams *hp; /* &am->hp */
    /* largest per-layer sizes, for scratch */
    int64_t max_n_in;     /* longest weight row (ne[0]) of any matmul */
    int64_t max_q;        /* n_head * head_dim */
    int64_t max_kv;       /* n_head_kv * head_dim */
    int64_t max_ff, max_ff_exp, max_expert, max_rot;
    /* RoPE angle per position of each rotated pair, per layer:
     * base^(-2j/n_rot) / rope_freqs[j] (spec 4), in double */
    double *inv_freq;     /* [sum over layers of n_rot/2] */
    int64_t *inv_freq_off;/* [n_layer] offset into inv_freq */
};

/* --------------------------------------------------------------- context */

struct mp_context {
    const mp_model *model;
    mp_context_params p;
    mp_pool *pool;
    const mp_kernels *kern;
    int64_t n_past;

    /* KV cache, one block: per layer that owns K/V, [n_ctx][n_head_kv*head_dim]
     * of kv_type for K and the same for V; NULL for shared-KV layers */
    void *kv_block;
    void **k_cache, **v_cache; /* [n_layer] */
    size_t kv_elem;            /* bytes per element */

    /* expert masks and top-k */
    bool *keep;                /* one block: keep[keep_off[l] + e] */
    int64_t *keep_off;         /* [n_layer] */
    int64_t *n_kept;           /* [n_layer] experts kept (n_expert when unmasked) */
    int64_t k_used;            /* experts per token */

    mp_moe_hook hook;
    mp_matmul_hook_fn mm_hook;   /* NULL: none */
    void *mm_hook_user;
    float *hook_out;           /* [n_batch][K][n_embd] when hook.want_expert_out */

    /* scratch: one block carved at init (context.c, layout()) */
    void *block;
    int64_t B, K;              /* n_batch and the file's top-k (scratch sizes) */
    float *x;     /* [B][n_embd] residual stream */
    float *xn;    /* [B][n_embd] normalised input of the current sub-block */
    float *q;     /* [B][max_q] */
    float *k;     /* [B][max_kv] */
    float *v;     /* [B][max_kv] */
    float *att;   /* [B][max_q] attention output before W_o */
    float *t1;    /* [B][n_embd] attention output / dense FFN branch */
    float *fa;    /* [B][max_ff] dense gate, then activation */
    float *fb;    /* [B][max_ff] dense up */
    float *moe;   /* [B][n_embd] expert mixture */
    float *u;     /* [B][n_embd] experts' input */
    float *r;     /* [B][n_embd] router input */
    float *rlog;  /* [B][max_expert] router logits (raw) */
    float *prob;  /* [B][max_expert] gating probabilities (masked) */
    int32_t *sel; /* [B][K] chosen experts */
    float *wsel;  /* [B][K] their weights */
    int64_t *cnt; /* [max_expert + 1] tokens per expert, then offsets */
    int64_t *off; /* [max_expert + 1] first gathered row of each expert */
    int32_t *row_slot;   /* [B*K] gathered row -> t*K + j */
    int32_t *slot_row;   /* [B*K] t*K + j -> gathered row */
    int32_t *row_expert; /* [B*K] gathered row -> expert */
    float *xe;    /* [B*K][n_embd] gathered expert inputs */
    float *gu;    /* [B*K][2*max_ff_exp] gate | up */
    float *ea;    /* [B*K][max_ff_exp] activation */
    float *ye;    /* [B*K][n_embd] expert outputs */
    mp_mm_job *jobs;     /* [2*max_expert + 3] */
    float *thr_row;      /* [n_threads][max_n_in] dequantized weight rows */
    mp_mm_scratch mm;    /* mp_matmul's scratch (thr_row, act, ...) */
    float *thr_att;      /* [n_threads][n_ctx + 2*max_rot + max_kv] scores, cos, sin, row */
    int64_t thr_att_stride;
};

/* One forward step of n <= B tokens at positions pos0.., writing logits per
 * mode into out (see mp_context_eval). forward.c. */
mp_status mp_forward(mp_context *c, const mp_token *tokens, int64_t n, int64_t pos0,
                     mp_logits_mode mode, float *out, mp_err *err);

#endif

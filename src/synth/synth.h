/* synth.h — internals of model synthesis, shared by synth.c, the generator
 * and the tests: the preset table entry (hyper-parameters only), the plan
 * (every tensor of the file with its type, shape and weight distribution) and
 * the pure function that produces a tensor's values.
 *
 * A plan is everything mp_synth_write needs except the vocabulary bytes, so a
 * test can check the layout of the 26B preset without writing 2.4 GB. */
#ifndef MP_SYNTH_H
#define MP_SYNTH_H

#include <stdbool.h>
#include <stdint.h>

#include "moeprune.h"

/* Hyper-parameters of one preset. The layer pattern is a string cycled over
 * the layers: 'S' a sliding-window layer, 'G' a global (full-attention) one. */
typedef struct mp_synth_hparams {
    const char *name;       /* preset name, "gemma4-tiny" */
    const char *model_name; /* general.name */
    const char *arch;       /* general.architecture and the key prefix */
    const char *vocab_file; /* default vocabulary, relative to the data folder */
    uint32_t n_ctx;         /* context_length */
    uint32_t n_embd;
    uint32_t n_layer;
    const char *pattern;
    uint32_t n_ff;          /* dense (shared) FFN width */
    uint32_t n_head;
    uint32_t n_head_kv_swa, n_head_kv; /* sliding / global layers */
    uint32_t head_dim_swa, head_dim;   /* sliding / global layers */
    uint32_t n_swa;                    /* sliding window (tokens) */
    float rope_base_swa, rope_base;
    float rope_partial; /* fraction of the global head dim that rotates */
    float eps;          /* RMSNorm epsilon */
    float softcap;      /* final logit soft-cap */
    uint32_t n_expert, n_expert_used, n_ff_exp;
} mp_synth_hparams;

/* rope_freqs divisor of the dimension pairs that do not rotate (spec 3.3). */
#define MP_SYNTH_ROPE_NO_ROTATION 1e30f

/* How a tensor's values are drawn. */
typedef enum mp_synth_init {
    MP_SYNTH_NORMAL,     /* a = mean, b = standard deviation */
    MP_SYNTH_UNIFORM,    /* uniform in [a, b] */
    MP_SYNTH_ROPE_FREQS, /* the first a entries 1.0, the rest MP_SYNTH_ROPE_NO_ROTATION */
    MP_SYNTH_INIT_COUNT
} mp_synth_init;

/* "NORMAL", "UNIFORM", "ROPE_FREQS"; "?" for other values. */
const char *mp_synth_init_name(int init);

typedef struct mp_synth_tensor {
    char name[MP_GGUF_MAX_NAME + 1];
    int type;
    uint32_t n_dims;
    int64_t ne[MP_GGUF_MAX_DIMS]; /* trailing dims 1 */
    mp_synth_init init;
    float a, b;
    uint64_t key; /* RNG key: hash of (seed, name) */
} mp_synth_tensor;

typedef struct mp_synth_plan {
    const mp_synth_hparams *hp;
    int64_t n_layer, n_vocab;
    int type;           /* requested matrix type */
    uint32_t file_type; /* general.file_type (llama_ftype) */
    bool split_experts, v_every_layer;
    mp_synth_tensor *tensors;
    int64_t n_tensors;
} mp_synth_plan;

/* The preset called `name`, or NULL. */
const mp_synth_hparams *mp_synth_hparams_find(const char *name);

/* Builds the plan of preset p->preset for a vocabulary of n_vocab tokens
 * (p->vocab_path and p->overwrite are not used). Free with mp_synth_plan_free. */
mp_status mp_synth_plan_init(mp_synth_plan **out, const mp_synth_params *p, int64_t n_vocab,
                             mp_err *err);
void mp_synth_plan_free(mp_synth_plan *plan);

/* The type a weight matrix with rows of ne0 elements is stored in: `type`,
 * or F16 when ne0 is not a multiple of its block size. */
int mp_synth_matrix_type(int type, int64_t ne0);

/* True when layer il is a sliding-window layer. */
bool mp_synth_layer_swa(const mp_synth_plan *plan, int64_t il);

/* Adds the metadata of the plan to w in the order llama.cpp's converter
 * writes it: general.*, the <arch>.* hyper-parameters, every tokenizer.* key
 * of `vocab` (copied raw), then general.quantization_version (not for F32)
 * and general.file_type. */
mp_status mp_synth_write_kv(const mp_synth_plan *plan, const mp_gguf *vocab, mp_gguf_writer *w,
                            mp_err *err);

/* Values of elements [start, start + n) of tensor ti (flat index, ne order):
 * a pure function of the tensor's key and the element index, so any chunking
 * gives the same numbers. */
void mp_synth_fill(const mp_synth_plan *plan, int64_t ti, uint64_t start, int64_t n, float *dst);

/* Writes the tensor data of the plan to w (its tensors must already be
 * declared), generating and quantizing chunks on n_threads threads
 * (0: one per online CPU, at most 8). Output does not depend on n_threads. */
mp_status mp_synth_write_data(const mp_synth_plan *plan, mp_gguf_writer *w, int n_threads,
                              mp_err *err);

#endif

/* arch.h — what the tensor table of a MoE GGUF says about its experts.
 *
 * mp_moe_scan finds, per layer `blk.N.`, the router (`ffn_gate_inp.weight`,
 * one row per expert) and every tensor with an expert axis (names containing
 * `_exps`: fused or split gate/up, down, and their per-expert `.scale`
 * vectors); the expert axis is the last dimension. It works from names and
 * shapes alone, so any family that follows llama.cpp's naming (gemma4,
 * qwen3moe, mixtral-style) is covered, and layers may hold different expert
 * counts (a non-uniformly pruned file). Nothing here reads tensor data. */
#ifndef MP_ARCH_H
#define MP_ARCH_H

#include "util/util.h"

#define MP_MOE_MAX_EXP_TENSORS 8

typedef struct mp_moe_layer {
    int64_t n_expert;                             /* from the tensors; 0: dense layer */
    const mp_gguf_tensor *router;                 /* ffn_gate_inp.weight, or NULL */
    int n_exp_tensors;
    const mp_gguf_tensor *exp_tensors[MP_MOE_MAX_EXP_TENSORS]; /* expert axis = last dim */
} mp_moe_layer;

typedef struct mp_moe_info {
    char *arch;             /* general.architecture (owned) */
    int64_t n_layer;        /* <arch>.block_count, or 1 + highest blk index */
    int64_t n_expert;       /* <arch>.expert_count (0 if absent) */
    int64_t n_expert_used;  /* <arch>.expert_used_count (0 if absent) */
    int64_t n_moe_layers;
    bool uniform;           /* every MoE layer has the same expert count */
    mp_moe_layer *layers;   /* [n_layer] */
    uint64_t bytes_experts; /* data bytes of all expert tensors */
    uint64_t bytes_router;  /* router weights (rows are per expert too) */
    uint64_t bytes_other;   /* everything else */
} mp_moe_info;

/* Scans g's tensors. Fails with a message when an expert tensor's expert axis
 * disagrees with its layer's router, or layer indices are absurd. Free with
 * mp_moe_info_free; tensor pointers are borrowed from g. */
mp_status mp_moe_scan(const mp_gguf *g, mp_moe_info **out, mp_err *err);
void mp_moe_info_free(mp_moe_info *m);

/* Parses "blk.N.rest": returns N and points *rest after the dot, or -1. */
int64_t mp_tensor_layer(const char *name, const char **rest);

/* Bytes the file's tensor data would take if every MoE layer kept k experts
 * (data sizes only, alignment padding ignored). */
uint64_t mp_moe_bytes_keeping(const mp_moe_info *m, int64_t k);

/* ------------------------------------------------------------------------ */
/* Architecture descriptors: hyper-parameters and bound weights             */
/* ------------------------------------------------------------------------ */
/* A descriptor (one per family: gemma4 today; qwen3moe or mixtral later)
 * reads a GGUF's metadata into mp_hparams, with every per-layer value in
 * mp_layer_hparams, and binds each tensor by name into mp_layer_weights,
 * checking its shape. The forward pass (src/engine) reads only these structs
 * and the feature fields of mp_hparams (activation, attention scale, router
 * input, ...), never the architecture name, so a new family is a new
 * descriptor (a load function plus a row in the table of desc.c) that sets
 * those fields, not a second engine. Per-layer expert counts come from each
 * layer's tensors, so a non-uniformly pruned file loads. Weight matrices stay
 * in the mapping; only 1-D vectors (norm weights, scales, rope_freqs) are
 * converted to float, because they are tiny and used on every token. */

/* A weight matrix (or 3-D stack of expert matrices) in the mapping. Row r of
 * a 2-D weight is output r of y = W x; a 3-D tensor holds ne[2] such
 * matrices ("slabs") back to back. Absent optional tensors have data NULL. */
typedef struct mp_weight {
    const char *name;            /* tensor name, borrowed from the mp_gguf */
    int type;                    /* mp_type id; dequantizable (checked at load) */
    int64_t ne[MP_GGUF_MAX_DIMS];/* ne[0] = inputs per row, ne[1] = rows, ne[2] = slabs */
    const uint8_t *data;         /* first byte in the mapping, NULL when absent */
    size_t row_bytes;            /* bytes of one row of ne[0] elements */
    float scale;                 /* per-tensor output multiplier ("<name>.scale" {1},
                                    NVFP4 checkpoints), 1 otherwise */
} mp_weight;

static inline bool mp_weight_present(const mp_weight *w) {
    return w->data != NULL;
}

/* The 2-D matrix of slab i of a 3-D weight (expert i of an _exps tensor). */
static inline mp_weight mp_weight_slab(const mp_weight *w, int64_t i) {
    mp_weight s = *w;
    s.data = w->data + (size_t)i * (size_t)w->ne[1] * w->row_bytes;
    s.ne[2] = 1;
    return s;
}

/* Activation of the gated FFNs. */
typedef enum mp_act {
    MP_ACT_GELU_TANH = 0, /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (Gemma) */
    MP_ACT_SILU,          /* x / (1 + e^-x) (Llama, Qwen, Mixtral) */
    MP_ACT_COUNT
} mp_act;
const char *mp_act_name(int act);

/* RoPE pairing. */
typedef enum mp_rope_style {
    MP_ROPE_NEOX = 0, /* pairs (j, j + n_rot/2) */
    MP_ROPE_NORM,     /* adjacent pairs (2j, 2j + 1) */
    MP_ROPE_STYLE_COUNT
} mp_rope_style;
const char *mp_rope_style_name(int style);

/* What the router multiplies. */
typedef enum mp_router_input {
    MP_ROUTER_RMS_SCALED = 0, /* rms(h) / sqrt(n_embd) * ffn_gate_inp.scale (Gemma 4) */
    MP_ROUTER_EXPERT_INPUT,   /* the experts' own normalised input (Qwen3-MoE, Mixtral) */
    MP_ROUTER_INPUT_COUNT
} mp_router_input;

/* Hyper-parameters of one layer. */
typedef struct mp_layer_hparams {
    bool is_swa;        /* sliding-window attention layer */
    int64_t n_head;     /* query heads */
    int64_t n_head_kv;  /* KV heads (n_head is a multiple) */
    int64_t head_dim;   /* K and V head length (equal for every supported family) */
    int64_t n_rot;      /* rotated dimensions per head (even, <= head_dim) */
    float rope_base;    /* RoPE frequency base */
    bool has_kv;        /* computes its own K/V (false: shared KV layer) */
    int64_t kv_source;  /* layer whose KV cache attention reads (itself when has_kv) */
    int64_t n_ff;       /* dense FFN width, 0 when the layer has no dense FFN */
    int64_t n_expert;   /* experts in this layer, from its tensors; 0: not a MoE layer */
    int64_t n_ff_exp;   /* expert FFN width (MoE layers) */
} mp_layer_hparams;

/* Hyper-parameters of a model plus the feature switches of its family. */
typedef struct mp_hparams {
    int64_t n_embd;
    int64_t n_layer;
    int64_t n_vocab;        /* rows of token_embd */
    int64_t n_ctx_train;    /* context_length, 0 if absent */
    int64_t n_expert;       /* <arch>.expert_count (the base model's; layers may hold fewer) */
    int64_t n_expert_used;  /* top-k */
    int64_t n_swa;          /* sliding window: a query at p sees keys p - n_swa + 1 .. p */
    int64_t n_kv_shared;    /* last layers without K/V of their own */
    float eps;              /* RMSNorm epsilon (all norms) */
    float softcap;          /* final logit soft-cap, 0: none */
    /* family features */
    float embd_scale;       /* token embeddings are multiplied by this */
    float attn_scale;       /* query-key score multiplier */
    bool v_rms;             /* V heads get an RMS norm without weight */
    mp_act act;
    mp_rope_style rope;
    mp_router_input router_input;
    bool norm_topk;         /* renormalise the top-k softmax weights */
    mp_layer_hparams *layers; /* [n_layer] */
} mp_hparams;

/* Weights of one layer. Optional parts are absent (data NULL / pointer NULL);
 * the forward pass skips a norm whose weight is absent. */
typedef struct mp_layer_weights {
    const float *attn_norm;       /* [n_embd] */
    mp_weight wq;                 /* {n_embd, n_head*head_dim} */
    mp_weight wk, wv;             /* {n_embd, n_head_kv*head_dim}; wv absent: V = K projection */
    const float *q_norm, *k_norm; /* [head_dim], applied per head */
    mp_weight wo;                 /* {n_head*head_dim, n_embd} */
    const float *post_attn_norm;  /* [n_embd] */
    const float *rope_freqs;      /* [n_rot/2] angle divisors, NULL: none */

    const float *ffn_norm;        /* [n_embd] pre-norm of the dense FFN */
    mp_weight ffn_gate, ffn_up;   /* {n_embd, n_ff} */
    mp_weight ffn_down;           /* {n_ff, n_embd} */
    const float *post_ffw_norm_1; /* [n_embd] on the dense branch of a MoE layer */
    const float *post_ffw_norm;   /* [n_embd] on the whole FFN output */

    mp_weight router;             /* {n_embd, n_expert}, row e = expert e */
    const float *router_scale;    /* [n_embd] (MP_ROUTER_RMS_SCALED) */
    const float *pre_ffw_norm_2;  /* [n_embd] experts' input norm */
    const float *post_ffw_norm_2; /* [n_embd] on the expert mixture */
    mp_weight gate_up_exps;       /* {n_embd, 2*n_ff_exp, n_expert}: gate rows, then up rows */
    mp_weight gate_exps, up_exps; /* {n_embd, n_ff_exp, n_expert} (when not fused) */
    mp_weight down_exps;          /* {n_ff_exp, n_embd, n_expert} */
    const float *gate_exps_scale, *up_exps_scale, *down_exps_scale; /* [n_expert] */

    float out_scale;              /* layer_output_scale, 1 when absent */
} mp_layer_weights;

typedef struct mp_arch_desc mp_arch_desc;

/* A model as a descriptor loaded it: hyper-parameters plus weights that
 * point into the (borrowed) mp_gguf's mapping. */
typedef struct mp_arch_model {
    const mp_arch_desc *desc;
    const mp_gguf *gguf;         /* borrowed: must outlive the model */
    mp_hparams hp;
    mp_weight tok_embd;          /* {n_embd, n_vocab} */
    mp_weight output;            /* {n_embd, n_vocab}: output.weight or tok_embd (tied) */
    const float *output_norm;    /* [n_embd] */
    mp_layer_weights *layers;    /* [n_layer] */
    float **vecs;                /* owned float copies of the 1-D tensors */
    int64_t n_vecs, cap_vecs;
} mp_arch_model;

/* State shared by a descriptor's load function and the binding helpers. */
typedef struct mp_arch_loader {
    const mp_gguf *g;
    const char *path;   /* for messages */
    mp_arch_model *m;
    mp_err *err;
} mp_arch_loader;

/* One model family. */
struct mp_arch_desc {
    const char *name;   /* general.architecture */
    /* Fills L->m->hp (layers allocated by the caller once n_layer is known via
     * mp_arch_alloc_layers) and binds every tensor. */
    mp_status (*load)(mp_arch_loader *L);
};

/* The descriptor for general.architecture `name`, or NULL. */
const mp_arch_desc *mp_arch_find(const char *name);
extern const mp_arch_desc mp_arch_gemma4;

/* Reads g's architecture, runs its descriptor and checks the result (every
 * matrix dequantizable, GQA ratios, KV sources). Free with
 * mp_arch_model_free; g must outlive the model. */
mp_status mp_arch_model_load(const mp_gguf *g, mp_arch_model **out, mp_err *err);
void mp_arch_model_free(mp_arch_model *m);

/* --- helpers for descriptors (desc.c) --- */

/* Allocates hp.layers for n_layer layers. */
mp_status mp_arch_alloc_layers(mp_arch_loader *L, int64_t n_layer);
/* "<arch>.<suffix>" scalar integer/float. When the key is absent: `def` if
 * !required, else MP_ERR_NOT_FOUND naming the key. */
mp_status mp_arch_get_int(mp_arch_loader *L, const char *suffix, bool required, int64_t def,
                          int64_t *out);
mp_status mp_arch_get_float(mp_arch_loader *L, const char *suffix, bool required, double def,
                            float *out);
/* Per-layer value from a key that is a scalar (same for every layer) or an
 * array of exactly n_layer elements. */
mp_status mp_arch_get_layers_int(mp_arch_loader *L, const char *suffix, bool required,
                                 int64_t def, int64_t *out /* [n_layer] */);
mp_status mp_arch_get_layers_bool(mp_arch_loader *L, const char *suffix, bool required,
                                  bool def, bool *out /* [n_layer] */);

/* Binds tensor `name` into *w, checking its shape against `ne` (n_dims
 * entries; -1 accepts any extent) and that its type can be dequantized.
 * `what` explains the expected shape in messages ("{n_embd, n_head*head_dim}").
 * Absent and !required: leaves *w absent and returns MP_OK. */
mp_status mp_arch_bind(mp_arch_loader *L, const char *name, uint32_t n_dims, const int64_t *ne,
                       const char *what, bool required, mp_weight *w);
/* Binds a 1-D tensor of n elements, converted to float (owned by the model).
 * Absent and !required: *out = NULL. */
mp_status mp_arch_bind_vec(mp_arch_loader *L, const char *name, int64_t n, const char *what,
                           bool required, const float **out);
/* Binds "<weight_name minus .weight>.scale" {1} into w->scale if present. */
mp_status mp_arch_bind_scale(mp_arch_loader *L, mp_weight *w);

#endif

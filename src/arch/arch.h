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

#endif

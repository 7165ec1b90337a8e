/* moeprune.h — the one public header of libmoeprune.
 *
 * moeprune shrinks Mixture-of-Experts models by removing experts and measures
 * what that cost. This header declares the library's building blocks: status
 * codes and error messages, the ggml tensor-type table with its dequantizers
 * and quantizers, the GGUF v3 reader (mmap, bounds-checked) and streaming
 * writer (temp file + rename), and model synthesis.
 *
 * Conventions (see ../docs in the shared folder, style.md):
 *  - Functions return mp_status (MP_OK == 0) and fill an optional mp_err with a
 *    message naming the file, the field and the value. Nothing here prints,
 *    exits or aborts on bad input.
 *  - Output parameters are written only on success.
 *  - Every _open/_init/_load has one _free that accepts NULL.
 *  - Shapes use ggml's `ne` order: ne[0] is the contiguous dimension.
 */
#ifndef MOEPRUNE_H
#define MOEPRUNE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Status and errors                                                        */
/* ------------------------------------------------------------------------ */

typedef enum mp_status {
    MP_OK = 0,
    MP_ERR_IO,          /* open/read/write/rename failed (errno text in message) */
    MP_ERR_FORMAT,      /* input file is malformed, truncated or hostile */
    MP_ERR_UNSUPPORTED, /* well-formed but not handled (e.g. IQ2 dequantization) */
    MP_ERR_NOMEM,       /* allocation failed */
    MP_ERR_ARG,         /* caller passed an invalid argument or option */
    MP_ERR_NOT_FOUND,   /* a key or tensor that was required is absent */
    MP_ERR_CHECK,       /* a verification step found a mismatch */
    MP_STATUS_COUNT
} mp_status;

#define MP_ERR_MSG_MAX 512

/* Error details: the status plus a human-readable message. */
typedef struct mp_err {
    mp_status status;
    char msg[MP_ERR_MSG_MAX];
} mp_err;

/* Name of a status code ("MP_ERR_FORMAT"); "?" for out-of-range values. */
const char *mp_status_name(mp_status s);

/* Formats a message into err (if err is non-NULL) and returns status, so that
 * `return mp_err_set(err, MP_ERR_FORMAT, "%s: ...", path);` is a whole error
 * path. */
mp_status mp_err_set(mp_err *err, mp_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ------------------------------------------------------------------------ */
/* Allocation (one entry point so tests can inject failures)                */
/* ------------------------------------------------------------------------ */

void *mp_malloc(size_t size);
void *mp_calloc(size_t n, size_t size);   /* overflow-checked */
void *mp_realloc(void *p, size_t size);
void mp_free(void *p);
/* Overflow-checked multiply: returns false (and leaves *out alone) on overflow. */
bool mp_mul_size(size_t a, size_t b, size_t *out);
/* Test hook: the n-th allocation from now on (1-based) fails; 0 disables. */
void mp_malloc_fail_at(long n);

/* ------------------------------------------------------------------------ */
/* Tensor types (ggml ids; the ids are the on-disk values)                 */
/* ------------------------------------------------------------------------ */

typedef enum mp_type {
    MP_TYPE_F32 = 0,
    MP_TYPE_F16 = 1,
    MP_TYPE_Q4_0 = 2,
    MP_TYPE_Q4_1 = 3,
    MP_TYPE_Q5_0 = 6,
    MP_TYPE_Q5_1 = 7,
    MP_TYPE_Q8_0 = 8,
    MP_TYPE_Q8_1 = 9,
    MP_TYPE_Q2_K = 10,
    MP_TYPE_Q3_K = 11,
    MP_TYPE_Q4_K = 12,
    MP_TYPE_Q5_K = 13,
    MP_TYPE_Q6_K = 14,
    MP_TYPE_Q8_K = 15,
    MP_TYPE_IQ2_XXS = 16,
    MP_TYPE_IQ2_XS = 17,
    MP_TYPE_IQ3_XXS = 18,
    MP_TYPE_IQ1_S = 19,
    MP_TYPE_IQ4_NL = 20,
    MP_TYPE_IQ3_S = 21,
    MP_TYPE_IQ2_S = 22,
    MP_TYPE_IQ4_XS = 23,
    MP_TYPE_I8 = 24,
    MP_TYPE_I16 = 25,
    MP_TYPE_I32 = 26,
    MP_TYPE_I64 = 27,
    MP_TYPE_F64 = 28,
    MP_TYPE_IQ1_M = 29,
    MP_TYPE_BF16 = 30,
    MP_TYPE_TQ1_0 = 34,
    MP_TYPE_TQ2_0 = 35,
    MP_TYPE_MXFP4 = 39,
    MP_TYPE_NVFP4 = 40,
    MP_TYPE_Q1_0 = 41,
    MP_TYPE_Q2_0 = 42,
    MP_TYPE_COUNT = 43 /* one past the largest id; some ids below are removed */
} mp_type;

/* Static facts about one type. */
typedef struct mp_type_traits {
    const char *name;   /* as ggml spells it: "Q4_K", "F32", "MXFP4" */
    int64_t blck_size;  /* elements per block (1 for plain types) */
    size_t type_size;   /* bytes per block */
    bool can_dequant;   /* mp_dequantize_row handles it */
    bool can_quant;     /* mp_quantize_row handles it */
} mp_type_traits;

/* Traits of type id `id`, or NULL when id is not a valid ggml type (out of
 * range, or one of the removed ids 4, 5, 31-33, 36-38). */
const mp_type_traits *mp_type_info(int id);
/* Name of a type id; "?" for invalid ids. */
const char *mp_type_name(int id);
/* Looks a type up by name, case-insensitive ("q8_0", "Q8_0"); -1 if unknown. */
int mp_type_from_name(const char *name);
/* Bytes of a row of n elements of `type`. Fails (MP_ERR_ARG) if the type is
 * invalid or n is not a multiple of its block size, or on overflow. */
mp_status mp_type_row_bytes(int type, int64_t n, size_t *out, mp_err *err);

/* Dequantizes n elements (a multiple of the block size) from src into dst.
 * MP_ERR_UNSUPPORTED for types without a decoder (the IQ1/IQ2/IQ3 families). */
mp_status mp_dequantize_row(int type, const void *src, float *dst, int64_t n, mp_err *err);
/* Quantizes n elements (a multiple of the block size) of src into dst, which
 * must hold mp_type_row_bytes(type, n) bytes. Supported: F32, F16, BF16, Q8_0. */
mp_status mp_quantize_row(int type, const float *src, void *dst, int64_t n, mp_err *err);

/* Scalar conversions: exact f16/bf16 -> f32; round-to-nearest-even f32 -> f16
 * (subnormals, overflow to inf, NaN kept) and f32 -> bf16 (NaN made quiet). */
float mp_f16_to_f32(uint16_t h);
uint16_t mp_f32_to_f16(float f);
float mp_bf16_to_f32(uint16_t h);
uint16_t mp_f32_to_bf16(float f);

/* ------------------------------------------------------------------------ */
/* GGUF v3 reader                                                           */
/* ------------------------------------------------------------------------ */

/* Metadata value types (on-disk ids). */
typedef enum mp_gguf_vtype {
    MP_GGUF_UINT8 = 0,
    MP_GGUF_INT8 = 1,
    MP_GGUF_UINT16 = 2,
    MP_GGUF_INT16 = 3,
    MP_GGUF_UINT32 = 4,
    MP_GGUF_INT32 = 5,
    MP_GGUF_FLOAT32 = 6,
    MP_GGUF_BOOL = 7,
    MP_GGUF_STRING = 8,
    MP_GGUF_ARRAY = 9,
    MP_GGUF_UINT64 = 10,
    MP_GGUF_INT64 = 11,
    MP_GGUF_FLOAT64 = 12,
    MP_GGUF_VTYPE_COUNT
} mp_gguf_vtype;

/* "UINT32", "STRING", ...; "?" for invalid values. */
const char *mp_gguf_vtype_name(int vtype);

#define MP_GGUF_DEFAULT_ALIGNMENT 32
#define MP_GGUF_MAX_DIMS 4
#define MP_GGUF_MAX_NAME 63 /* ggml: names shorter than 64 bytes */

/* One tensor of an open file. Pointers are borrowed until mp_gguf_free. */
typedef struct mp_gguf_tensor {
    const char *name;             /* NUL-terminated copy of the name */
    int type;                     /* mp_type id */
    uint32_t n_dims;              /* 1..4 */
    int64_t ne[MP_GGUF_MAX_DIMS]; /* trailing dims are 1 */
    uint64_t offset;              /* relative to the data section */
    uint64_t nbytes;              /* exact data size (without padding) */
    const void *data;             /* into the mapping; NULL when parsed with
                                     header_only and data beyond the buffer */
} mp_gguf_tensor;

typedef struct mp_gguf mp_gguf;

/* Options for mp_gguf_parse, passed by value so new ones don't break callers. */
typedef struct mp_gguf_params {
    bool header_only; /* buffer holds only a prefix of the file: skip the
                         checks that tensor data lies inside it */
    uint64_t file_size; /* with header_only: the real file size (0: unknown) */
} mp_gguf_params;

/* Maps `path` read-only and parses it. Free with mp_gguf_free. */
mp_status mp_gguf_open(mp_gguf **out, const char *path, mp_err *err);
/* Parses a GGUF held in memory (borrowed: it must outlive the result).
 * `name` is used in messages (a path, or "<buffer>"). */
mp_status mp_gguf_parse(mp_gguf **out, const void *data, size_t size, const char *name,
                        mp_gguf_params params, mp_err *err);
void mp_gguf_free(mp_gguf *g);

const char *mp_gguf_path(const mp_gguf *g);
uint32_t mp_gguf_version(const mp_gguf *g);
uint32_t mp_gguf_alignment(const mp_gguf *g);
uint64_t mp_gguf_data_offset(const mp_gguf *g); /* start of the tensor data section */
uint64_t mp_gguf_file_size(const mp_gguf *g);
const uint8_t *mp_gguf_base(const mp_gguf *g);  /* start of the mapping */

/* --- metadata --- */
int64_t mp_gguf_n_kv(const mp_gguf *g);
/* Index of key, or -1 when absent. */
int64_t mp_gguf_find_key(const mp_gguf *g, const char *key);
const char *mp_gguf_key(const mp_gguf *g, int64_t i); /* NUL-terminated */
mp_gguf_vtype mp_gguf_kv_type(const mp_gguf *g, int64_t i);
/* For arrays: the element type and count (0 / MP_GGUF_VTYPE_COUNT otherwise). */
mp_gguf_vtype mp_gguf_arr_type(const mp_gguf *g, int64_t i);
uint64_t mp_gguf_arr_len(const mp_gguf *g, int64_t i);
/* The raw encoded bytes of KV pair i, key included (for byte-exact copies). */
void mp_gguf_kv_raw(const mp_gguf *g, int64_t i, const uint8_t **bytes, size_t *len);

/* Typed getters by index. Integers convert between widths with a range check
 * (a negative value for an unsigned result, or too large, is MP_ERR_FORMAT).
 * For arrays, `j` selects the element; for scalars j must be 0. Floats accept
 * FLOAT32/FLOAT64. Strings are not NUL-terminated: use *len. */
mp_status mp_gguf_get_int(const mp_gguf *g, int64_t i, uint64_t j, int64_t *out, mp_err *err);
mp_status mp_gguf_get_uint(const mp_gguf *g, int64_t i, uint64_t j, uint64_t *out, mp_err *err);
mp_status mp_gguf_get_float(const mp_gguf *g, int64_t i, uint64_t j, double *out, mp_err *err);
mp_status mp_gguf_get_bool(const mp_gguf *g, int64_t i, uint64_t j, bool *out, mp_err *err);
mp_status mp_gguf_get_str(const mp_gguf *g, int64_t i, uint64_t j, const char **s, size_t *len,
                          mp_err *err);

/* Convenience getters by key for scalars; MP_ERR_NOT_FOUND when absent. */
mp_status mp_gguf_key_uint(const mp_gguf *g, const char *key, uint64_t *out, mp_err *err);
mp_status mp_gguf_key_float(const mp_gguf *g, const char *key, double *out, mp_err *err);
/* Returns a NUL-terminated copy owned by the caller (free with mp_free). */
mp_status mp_gguf_key_strdup(const mp_gguf *g, const char *key, char **out, mp_err *err);

/* --- tensors --- */
int64_t mp_gguf_n_tensors(const mp_gguf *g);
const mp_gguf_tensor *mp_gguf_tensor_at(const mp_gguf *g, int64_t i);
/* Tensor by name, or NULL. */
const mp_gguf_tensor *mp_gguf_find_tensor(const mp_gguf *g, const char *name);
/* Number of elements (product of ne). */
int64_t mp_tensor_nelements(const mp_gguf_tensor *t);

/* ------------------------------------------------------------------------ */
/* GGUF writer (streaming; temp file in the target folder, renamed on finish) */
/* ------------------------------------------------------------------------ */

typedef struct mp_gguf_writer mp_gguf_writer;

/* Starts a new file that will appear at `path` when mp_gguf_writer_finish
 * succeeds. Nothing exists at `path` before that; a writer freed without
 * finishing removes its temporary file. Refuses to replace an existing file
 * unless `overwrite`. */
mp_status mp_gguf_writer_open(mp_gguf_writer **out, const char *path, bool overwrite,
                              mp_err *err);
void mp_gguf_writer_free(mp_gguf_writer *w);

/* Metadata, kept in memory (serialized) until the header is written, in the
 * order added. Duplicate keys are refused. A "general.alignment" UINT32 key
 * also sets the alignment used for the data section. */
mp_status mp_gguf_writer_kv_raw(mp_gguf_writer *w, const uint8_t *bytes, size_t len,
                                mp_err *err); /* a pair as mp_gguf_kv_raw returns it */
mp_status mp_gguf_writer_kv_copy(mp_gguf_writer *w, const mp_gguf *src, int64_t i, mp_err *err);
mp_status mp_gguf_writer_kv_u32(mp_gguf_writer *w, const char *key, uint32_t v, mp_err *err);
mp_status mp_gguf_writer_kv_i32(mp_gguf_writer *w, const char *key, int32_t v, mp_err *err);
mp_status mp_gguf_writer_kv_u64(mp_gguf_writer *w, const char *key, uint64_t v, mp_err *err);
mp_status mp_gguf_writer_kv_f32(mp_gguf_writer *w, const char *key, float v, mp_err *err);
mp_status mp_gguf_writer_kv_bool(mp_gguf_writer *w, const char *key, bool v, mp_err *err);
mp_status mp_gguf_writer_kv_str(mp_gguf_writer *w, const char *key, const char *v, mp_err *err);
/* Array of fixed-size elements (not STRING/ARRAY): n values of `etype` read
 * from `data` in their on-disk little-endian encoding. */
mp_status mp_gguf_writer_kv_arr(mp_gguf_writer *w, const char *key, mp_gguf_vtype etype,
                                const void *data, uint64_t n, mp_err *err);
/* Array of n NUL-terminated strings. */
mp_status mp_gguf_writer_kv_arr_str(mp_gguf_writer *w, const char *key, const char *const *v,
                                    uint64_t n, mp_err *err);

/* Declares the next tensor. Data must later be written in declaration order. */
mp_status mp_gguf_writer_add_tensor(mp_gguf_writer *w, const char *name, int type,
                                    uint32_t n_dims, const int64_t *ne, mp_err *err);
/* Writes the header (after all KV pairs and tensor infos are declared).
 * Called implicitly by the first write_data. */
mp_status mp_gguf_writer_write_header(mp_gguf_writer *w, mp_err *err);
/* Appends bytes of the current tensor's data; may be called several times per
 * tensor. Moving past a tensor's size is an error; once a tensor is complete
 * its padding is written and the next one begins. */
mp_status mp_gguf_writer_write_data(mp_gguf_writer *w, const void *data, size_t len,
                                    mp_err *err);
/* Checks every tensor got all its bytes, flushes, fsyncs, re-reads the header
 * of the temp file, then renames it to the target path. */
mp_status mp_gguf_writer_finish(mp_gguf_writer *w, mp_err *err);

/* Copies a whole GGUF file through the writer: same metadata (in order), same
 * tensors. The output equals the input byte for byte when the input was laid
 * out as the format describes (sequential, zero-padded). */
mp_status mp_gguf_copy(const mp_gguf *src, const char *out_path, bool overwrite, mp_err *err);

/* ------------------------------------------------------------------------ */
/* Model synthesis                                                          */
/* ------------------------------------------------------------------------ */

/* Options for mp_synth_write. Zero values mean "the preset's default". */
typedef struct mp_synth_params {
    const char *preset;     /* "gemma4-tiny", "gemma4-26b-a4b" (see mp_synth_presets) */
    int64_t n_layer;        /* cut depth (0: the preset's layer count) */
    uint64_t seed;          /* weights are a pure function of (seed, tensor name) */
    int type;               /* type of the weight matrices: F32, F16, BF16 or Q8_0 */
    const char *vocab_path; /* GGUF whose tokenizer.* keys are copied; NULL: the
                               preset's vocabulary from the data folder */
    bool split_experts;     /* ffn_gate_exps + ffn_up_exps instead of fused gate_up */
    bool v_every_layer;     /* attn_v on global layers too */
    bool overwrite;         /* replace an existing output file */
} mp_synth_params;

/* Names of the presets, NULL-terminated. */
const char *const *mp_synth_presets(void);

/* Writes a random-weight model with the real tensor layout and metadata of
 * the preset to `path` (atomically, streaming: memory does not grow with the
 * model). */
mp_status mp_synth_write(const char *path, const mp_synth_params *p, mp_err *err);

/* Writes a vocabulary-only GGUF: general.architecture, the <arch>.* hyper-
 * parameters and every tokenizer.* key of `src`, no tensors. */
mp_status mp_vocab_extract(const mp_gguf *src, const char *path, bool overwrite, mp_err *err);

/* ------------------------------------------------------------------------ */
/* Drop maps and expert surgery                                             */
/* ------------------------------------------------------------------------ */

/* A drop map (design.md, "moeprune.dropmap/1"): per MoE layer, which of the
 * layer's original experts are kept and which dropped, as sorted ids. */
typedef struct mp_dropmap_layer {
    int64_t layer;     /* block index */
    int64_t n_keep;
    int32_t *keep;     /* [n_keep], ascending */
    int64_t n_drop;
    int32_t *drop;     /* [n_drop], ascending */
    double retained;   /* "retained" when given, else -1 */
} mp_dropmap_layer;

typedef struct mp_dropmap {
    char *arch;            /* model.arch */
    int64_t n_layer;       /* model.n_layer */
    int64_t n_expert;      /* model.n_expert (experts per layer of the base) */
    int64_t n_expert_used; /* model.n_expert_used */
    char *sha256;          /* model.sha256, or NULL */
    char *method;          /* method.name, or NULL */
    char *method_params;   /* method.params as compact JSON text, or NULL */
    int64_t n_layers;      /* entries in layers[] */
    mp_dropmap_layer *layers; /* ascending by layer */
} mp_dropmap;

/* Parses a drop map from JSON text; `name` is used in messages. Checks the
 * map's own consistency (format tag, ids in range, keep and drop disjoint and
 * together covering 0..n_expert-1, no layer twice). Free with mp_dropmap_free. */
mp_status mp_dropmap_parse(mp_dropmap **out, const char *json, size_t len, const char *name,
                           mp_err *err);
mp_status mp_dropmap_load(mp_dropmap **out, const char *path, mp_err *err);
void mp_dropmap_free(mp_dropmap *m);
/* The map as JSON text (caller frees with mp_free). */
char *mp_dropmap_to_json(const mp_dropmap *m, bool pretty);
/* Writes the map atomically (temp file + rename). */
mp_status mp_dropmap_save(const mp_dropmap *m, const char *path, bool overwrite, mp_err *err);
/* Checks that the map fits the model: architecture, layer count, every MoE
 * layer present with the model's expert count, at least n_expert_used kept. */
mp_status mp_dropmap_check(const mp_dropmap *m, const mp_gguf *model, mp_err *err);
/* The layer's entry, or NULL. */
const mp_dropmap_layer *mp_dropmap_find(const mp_dropmap *m, int64_t layer);

typedef enum mp_prune_mode {
    MP_PRUNE_REMOVE = 0, /* slice the dropped experts out */
    MP_PRUNE_ZERO,       /* keep shapes, zero their weights and router rows, record a mask */
    MP_PRUNE_MODE_COUNT
} mp_prune_mode;

typedef enum mp_prune_target {
    MP_TARGET_AUTO = 0,  /* llama.cpp for uniform maps, moeprune otherwise */
    MP_TARGET_LLAMA_CPP, /* one expert count for all layers (uniform maps only) */
    MP_TARGET_MOEPRUNE,  /* per-layer expert counts in moeprune.expert_count_per_layer */
    MP_TARGET_COUNT
} mp_prune_target;

typedef struct mp_prune_params {
    mp_prune_mode mode;
    mp_prune_target target;
    bool overwrite;
} mp_prune_params;

/* Rewrites `in` without the map's dropped experts (byte copies of the kept
 * expert slabs and router rows, any tensor type), records the map in the
 * output's metadata (moeprune.dropmap, relative to the original base model
 * when `in` was itself pruned) and renames the result into place only when
 * complete. Memory use does not depend on the model size. */
mp_status mp_prune_gguf(const char *in, const mp_dropmap *map, const char *out,
                        const mp_prune_params *p, mp_err *err);
/* Reads the drop map a pruned file records (moeprune.dropmap). */
mp_status mp_dropmap_from_gguf(const mp_gguf *g, mp_dropmap **out, mp_err *err);

/* Lets the OS drop `len` mapped bytes from memory (surgery streams through
 * files far larger than RAM; this keeps the resident set small). */
void mp_gguf_release(const mp_gguf *g, const void *ptr, size_t len);

/* ------------------------------------------------------------------------ */
/* Expert statistics (profile output) and plans                             */
/* ------------------------------------------------------------------------ */

/* One MoE layer's statistics for one class of text. Arrays are [k][n_expert]
 * (rank-major: rank 0 = the router's first choice) or [n_expert]. Sums are
 * kept in double: counts stay exact up to 2^53. */
typedef struct mp_stats_cell {
    double *count;      /* [k][n_expert] selections per rank */
    double *weight_sum; /* [k][n_expert] router weight (after renormalisation) per rank */
    double *contrib;    /* [n_expert] sum over routed tokens of ||g * E(x)||_2 */
    double *contrib_sq; /* [n_expert] sum of its squares */
} mp_stats_cell;

typedef struct mp_stats {
    char *arch;            /* source model's architecture */
    char *model_name;      /* source model's general.name ("" if none) */
    char *model_sha256;    /* hex sha256 of the source file ("" if not computed) */
    int64_t n_layer;
    int64_t n_expert_used; /* k */
    int64_t *n_expert;     /* [n_layer]; 0 for dense layers */
    int64_t n_class;       /* >= 1; a profile without classes has one, "all" */
    char **classes;        /* [n_class] */
    double *class_tokens;  /* [n_class] tokens profiled per class */
    mp_stats_cell *cells;  /* [n_layer][n_class]; NULL arrays for dense layers */
} mp_stats;

/* An empty (all-zero) stats object for a model layout. n_expert[l] = 0 marks
 * a dense layer. Free with mp_stats_free. */
mp_status mp_stats_create(mp_stats **out, const char *arch, int64_t n_layer,
                          const int64_t *n_expert, int64_t n_expert_used,
                          const char *const *classes, int64_t n_class, mp_err *err);
void mp_stats_free(mp_stats *s);
const mp_stats_cell *mp_stats_cell_at(const mp_stats *s, int64_t layer, int64_t cls);
/* Class index by name, or -1. */
int64_t mp_stats_find_class(const mp_stats *s, const char *name);
/* Stats files are GGUF containers (design.md); save is atomic. */
mp_status mp_stats_save(const mp_stats *s, const char *path, bool overwrite, mp_err *err);
mp_status mp_stats_load(mp_stats **out, const char *path, mp_err *err);
/* dst += src: same model (arch, sha256 when both have one, layout, k);
 * classes are matched by name and added to dst when new. */
mp_status mp_stats_merge(mp_stats *dst, const mp_stats *src, mp_err *err);

/* Recipes that turn statistics into a keep-set per layer (issue 7). */
typedef enum mp_plan_method {
    MP_PLAN_FREQUENCY = 0, /* selections at any rank */
    MP_PLAN_UTILITY,       /* sum_k count_k/N * mean router weight at rank k */
    MP_PLAN_CONTRIBUTION,  /* summed ||g * E(x)|| */
    MP_PLAN_MULTICLASS,    /* max over classes of the per-layer-normalised contribution */
    MP_PLAN_REAP,          /* mean of g * ||E(x)|| over routed tokens */
    MP_PLAN_METHOD_COUNT
} mp_plan_method;

const char *mp_plan_method_name(int m);
int mp_plan_method_from_name(const char *name); /* -1 if unknown */

typedef enum mp_plan_budget {
    MP_BUDGET_UNIFORM = 0,   /* keep `keep` experts in every layer */
    MP_BUDGET_RETAIN,        /* smallest uniform K such that every layer keeps >= retain
                                of its total score */
    MP_BUDGET_RETAIN_LAYER,  /* per layer, the smallest K reaching retain */
    MP_BUDGET_GLOBAL,        /* keep * n_moe_layers experts in all, spread by normalised score */
    MP_BUDGET_COUNT
} mp_plan_budget;

typedef struct mp_plan_params {
    mp_plan_method method;
    mp_plan_budget budget;
    int64_t keep;                /* UNIFORM, GLOBAL: experts per layer (average for GLOBAL) */
    double retain;               /* RETAIN*: share in (0, 1] */
    const char *const *classes;  /* classes to use (NULL: all) */
    int64_t n_classes;
    bool whitelist;              /* utility: always keep experts of average rank < 2 with
                                    at least 10 selections */
    const char *reasoning_class; /* utility: swap in this class's top experts ... */
    int64_t max_swaps;           /* ... at most this many per layer */
} mp_plan_params;

/* The method's score of every expert of `layer` (score[n_expert], higher is
 * more important), from the selected classes. */
mp_status mp_plan_scores(const mp_stats *s, const mp_plan_params *p, int64_t layer,
                         double *score, mp_err *err);
/* Builds the drop map. Ties in score are broken by the lower expert id; no
 * layer keeps fewer than n_expert_used experts. Each layer's `retained` is
 * its kept share of the method's score. */
mp_status mp_plan_make(const mp_stats *s, const mp_plan_params *p, mp_dropmap **out,
                       mp_err *err);

/* ------------------------------------------------------------------------ */
/* Files                                                                    */
/* ------------------------------------------------------------------------ */

/* True when both paths name the same existing file (same device and inode). */
bool mp_file_same(const char *a, const char *b);

#ifdef __cplusplus
}
#endif

#endif /* MOEPRUNE_H */

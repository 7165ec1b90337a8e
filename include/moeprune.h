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
/* write_data from a mapping of `src` (a tensor's data or a slice of it), giving
 * the copied pages back to the OS as it goes: memory stays flat however large
 * the file. */
mp_status mp_gguf_writer_write_mapped(mp_gguf_writer *w, const mp_gguf *src, const void *data,
                                      uint64_t len, mp_err *err);
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
/* The map in terms of the original base's expert ids: `m` indexes the experts
 * of a model that `base` already pruned (keep ids pass through base's keep
 * list). Free with mp_dropmap_free. */
mp_status mp_dropmap_compose(const mp_dropmap *base, const mp_dropmap *m, mp_dropmap **out,
                             mp_err *err);
/* Reads the drop map a pruned file records (moeprune.dropmap). */
mp_status mp_dropmap_from_gguf(const mp_gguf *g, mp_dropmap **out, mp_err *err);

/* Lets the OS drop `len` mapped bytes from memory (surgery streams through
 * files far larger than RAM; this keeps the resident set small). */
void mp_gguf_release(const mp_gguf *g, const void *ptr, size_t len);

/* ------------------------------------------------------------------------ */
/* Tokenizer, chat and sampling                                             */
/* ------------------------------------------------------------------------ */

/* A token id; MP_TOKEN_NULL means "none". */
typedef int32_t mp_token;
#define MP_TOKEN_NULL (-1)

/* Vocabulary algorithms, chosen by tokenizer.ggml.model. */
typedef enum mp_vocab_kind {
    MP_VOCAB_SPM_BPE = 0, /* "gemma4": SentencePiece-style BPE over raw UTF-8: spaces
                             become U+2581, pairs merge by tokenizer.ggml.merges rank,
                             unknown pieces fall back to <0xHH> byte tokens */
    MP_VOCAB_GPT2_BPE,    /* "gpt2" (Qwen and others): byte-level BPE behind a regex
                             pre-tokenizer. Recognised; loading one is
                             MP_ERR_UNSUPPORTED until it is implemented */
    MP_VOCAB_KIND_COUNT
} mp_vocab_kind;

/* "spm-bpe", "gpt2-bpe"; "?" for invalid values. */
const char *mp_vocab_kind_name(int kind);

/* Token types as GGUF stores them (tokenizer.ggml.token_type). */
typedef enum mp_token_type {
    MP_TOKEN_TYPE_UNDEFINED = 0,
    MP_TOKEN_TYPE_NORMAL = 1,
    MP_TOKEN_TYPE_UNKNOWN = 2,
    MP_TOKEN_TYPE_CONTROL = 3,      /* <bos>, <|turn>: read from text only on request,
                                       rendered only on request */
    MP_TOKEN_TYPE_USER_DEFINED = 4, /* <|channel>: always read from text, always rendered */
    MP_TOKEN_TYPE_UNUSED = 5,
    MP_TOKEN_TYPE_BYTE = 6,         /* <0xHH>: one raw byte */
    MP_TOKEN_TYPE_COUNT
} mp_token_type;

/* "NORMAL", "CONTROL", ...; "?" for invalid values. */
const char *mp_token_type_name(int type);

typedef struct mp_vocab mp_vocab;

/* Ids a vocabulary names (MP_TOKEN_NULL when the file has none). */
typedef struct mp_vocab_special {
    mp_token bos, eos, unk, pad; /* tokenizer.ggml.{bos,eos,unknown,padding}_token_id */
    bool add_bos;                /* prompts start with BOS (tokenizer.ggml.add_bos_token;
                                    always true for gemma4, as llama.cpp forces it) */
} mp_vocab_special;

/* Builds a tokenizer from the tokenizer.* metadata of `g`. Everything needed
 * is copied: `g` may be freed afterwards. MP_ERR_UNSUPPORTED for a vocabulary
 * kind not implemented (the message names it), MP_ERR_FORMAT for malformed
 * keys (wrong types, lengths that disagree, ids out of range). Loading the
 * 262,144-token Gemma 4 vocabulary with its 514,906 merges takes well under
 * a second. Free with mp_vocab_free. */
mp_status mp_vocab_load(mp_vocab **out, const mp_gguf *g, mp_err *err);
/* mp_gguf_open + mp_vocab_load + mp_gguf_free. */
mp_status mp_vocab_open(mp_vocab **out, const char *path, mp_err *err);
void mp_vocab_free(mp_vocab *v);

mp_vocab_kind mp_vocab_get_kind(const mp_vocab *v);
int32_t mp_vocab_n_tokens(const mp_vocab *v);
const mp_vocab_special *mp_vocab_specials(const mp_vocab *v); /* borrowed */
/* A token's text as stored (U+2581 for spaces, "<0x41>" for byte tokens),
 * borrowed until mp_vocab_free; NULL when id is out of range. Not
 * NUL-terminated in general: use *len. */
const char *mp_vocab_text(const mp_vocab *v, mp_token id, size_t *len);
/* The type the file gives the token; MP_TOKEN_TYPE_UNDEFINED out of range. */
mp_token_type mp_vocab_token_type(const mp_vocab *v, mp_token id);
/* The id whose text is exactly text[0..len), or MP_TOKEN_NULL. */
mp_token mp_vocab_find(const mp_vocab *v, const char *text, size_t len);
/* End-of-generation tokens: EOS and the tokens named <eos>, <turn|>,
 * <|tool_response>, <end_of_turn>, <|im_end|>, <|endoftext|>, <|eot_id|>,
 * <|eom_id|> that the vocabulary has (looked up by text, as llama.cpp does). */
bool mp_vocab_is_eog(const mp_vocab *v, mp_token id);
size_t mp_vocab_eog_ids(const mp_vocab *v, const mp_token **ids); /* ascending, borrowed */
/* tokenizer.chat_template (NUL-terminated, borrowed), or NULL when absent. */
const char *mp_vocab_chat_template(const mp_vocab *v);

/* --- encoding --- */

typedef struct mp_tokenize_params {
    bool add_bos;       /* prepend BOS (usually mp_vocab_specials(v)->add_bos) */
    bool parse_special; /* text of CONTROL tokens ("<|turn>") becomes their ids;
                           USER_DEFINED tokens ("<|channel>") always do */
} mp_tokenize_params;

/* Encodes len bytes of text as llama.cpp does for the vocabulary: special
 * tokens split out first (longer texts before shorter ones), then BPE on the
 * rest. Text need not be valid UTF-8: a byte that does not start a complete
 * UTF-8 character is its own symbol and ends up as a <0xHH> byte token, so
 * mp_detokenize gives back exactly the input (llama.cpp would replace such a
 * byte by U+FFFD; valid UTF-8 tokenizes identically). *ids is allocated
 * (free with mp_free) even when *n_ids is 0. The vocabulary is only read:
 * several threads may tokenize with one vocabulary at once. */
mp_status mp_tokenize(const mp_vocab *v, const char *text, size_t len, mp_tokenize_params p,
                      mp_token **ids, size_t *n_ids, mp_err *err);

/* --- decoding --- */

/* The text a token stands for, borrowed until mp_vocab_free: NORMAL tokens
 * with U+2581 turned back into spaces, USER_DEFINED tokens literally, BYTE
 * tokens as their one raw byte, CONTROL and UNKNOWN tokens literally when
 * `special` and as "" otherwise, UNUSED and UNDEFINED ones as "". NULL for an
 * id out of range. Spaces are never cleaned up, so the pieces of
 * mp_tokenize's output concatenate to its input. */
const char *mp_vocab_piece(const mp_vocab *v, mp_token id, bool special, size_t *len);

/* The concatenated pieces of ids[0..n), NUL-terminated for convenience
 * (the text itself may hold NUL bytes: use *len). Free with mp_free.
 * MP_ERR_ARG names the first id out of range. */
mp_status mp_detokenize(const mp_vocab *v, const mp_token *ids, size_t n, bool special,
                        char **out, size_t *len, mp_err *err);

/* Streaming decoder for generated tokens: gives out text only in whole UTF-8
 * characters, holding back the start of a character whose bytes come in
 * later tokens. Bytes that can never form a character (a stray continuation
 * byte, an overlong form, a surrogate, a truncated sequence followed by
 * something else) are passed through raw or, with replace_invalid, become
 * U+FFFD. With replace_invalid off, the concatenation of everything pushed
 * and flushed equals mp_detokenize of the same ids. */
typedef struct mp_detok mp_detok;
mp_status mp_detok_init(mp_detok **out, const mp_vocab *v, bool special, bool replace_invalid,
                        mp_err *err);
void mp_detok_free(mp_detok *d);
/* Adds one token; *text and *len receive the text that is complete now,
 * borrowed until the next call on d. MP_ERR_ARG for an id out of range. */
mp_status mp_detok_push(mp_detok *d, mp_token id, const char **text, size_t *len, mp_err *err);
/* Ends the stream: whatever is held back comes out (as invalid bytes). */
void mp_detok_flush(mp_detok *d, const char **text, size_t *len);
void mp_detok_reset(mp_detok *d);

/* --- chat format --- */

typedef enum mp_chat_family {
    MP_CHAT_GEMMA4 = 0, /* <|turn>role\n...<turn|>\n; thinking <|channel>thought\n...<channel|> */
    MP_CHAT_CHATML,     /* <|im_start|>role\n...<|im_end|>\n (Qwen 3);
                           thinking <think>...</think> */
    MP_CHAT_FAMILY_COUNT
} mp_chat_family;

/* "gemma4", "chatml"; "?" for invalid values. */
const char *mp_chat_family_name(int family);
/* Family by name, case-sensitive; -1 if unknown. */
int mp_chat_family_from_name(const char *name);

/* Picks the chat format from the vocabulary's tokenizer.chat_template: a
 * template using <|turn> is Gemma 4, one using <|im_start|> is ChatML. When
 * the template is absent or matches neither, the vocabulary decides: a
 * vocabulary with both <|turn> and <turn|> tokens is Gemma 4, one with
 * <|im_start|> and <|im_end|> ChatML. Otherwise MP_ERR_UNSUPPORTED (the CLI
 * lets the user name the format instead). */
mp_status mp_chat_detect(const mp_vocab *v, mp_chat_family *out, mp_err *err);

typedef enum mp_chat_role {
    MP_CHAT_SYSTEM = 0,
    MP_CHAT_USER,
    MP_CHAT_ASSISTANT, /* rendered as "model" in Gemma 4 */
    MP_CHAT_TOOL,      /* a tool's result, answering the assistant's call before it */
    MP_CHAT_ROLE_COUNT
} mp_chat_role;

/* "system", "user", "assistant", "tool"; "?" for invalid values. */
const char *mp_chat_role_name(int role);

typedef struct mp_chat_msg {
    mp_chat_role role;
    const char *content;   /* UTF-8, NUL-terminated; NULL reads as "" */
    const char *tool_name; /* ASSISTANT: the tool it calls (NULL: no call);
                              TOOL: the tool that answered (NULL: the call's name) */
    const char *tool_args; /* ASSISTANT with tool_name: the call's arguments, written
                              verbatim (Gemma 4: inside call:NAME{...}; ChatML: the
                              JSON "arguments" value); NULL reads as "" / {} */
} mp_chat_msg;

typedef struct mp_chat_params {
    bool thinking;              /* let the model reason before answering */
    bool add_generation_prompt; /* end by opening the model's turn */
} mp_chat_params;

/* Renders a conversation as prompt text, to be tokenized with add_bos and
 * parse_special (the text does not contain BOS). Follows the family's
 * published template for system, user, assistant and tool turns:
 *  - Gemma 4: a leading system message is the system turn; with thinking,
 *    "<|think|>\n" opens the system turn (created if needed). Without
 *    thinking, the generation prompt is "<|turn>model\n<|channel>thought\n
 *    <channel|>": a closed, empty thought block, which keeps pruned models
 *    from reasoning in loops. Past assistant turns lose their thought blocks;
 *    texts are trimmed of surrounding ASCII whitespace. A call is
 *    <|tool_call>call:NAME{ARGS}<tool_call|>, its results
 *    <|tool_response>response:NAME{value:<|"|>TEXT<|"|>}<tool_response|>,
 *    and the model's turn stays open after them.
 *  - ChatML: Qwen 3's layout; thinking off pre-fills "<think>\n\n</think>\n\n".
 * Tool declarations (a template's `tools` list) and images are not rendered:
 * describe tools in the system text.
 * *out is NUL-terminated; free with mp_free. MP_ERR_ARG for an invalid role
 * or family, or a TOOL message that follows no assistant call (Gemma 4). */
mp_status mp_chat_render(mp_chat_family family, const mp_chat_msg *msgs, size_t n,
                         mp_chat_params p, char **out, size_t *len, mp_err *err);

/* Texts of a family's thinking markers ("<|channel>", "<channel|>") and the
 * token ids the vocabulary gives them (MP_TOKEN_NULL when a text is not one
 * token). */
typedef struct mp_chat_think {
    const char *open;  /* starts a thinking block */
    const char *close; /* ends it */
    mp_token open_id, close_id;
} mp_chat_think;
mp_chat_think mp_chat_think_markers(mp_chat_family family, const mp_vocab *v);

/* Streaming separator of the model's thinking from its answer: feed it the
 * decoded text in any chunks; it calls emit with runs of text marked
 * ANSWER or THINKING, never with part of a marker. The markers themselves,
 * and Gemma 4's channel name line ("thought\n"), are dropped. */
typedef enum mp_chat_part {
    MP_CHAT_ANSWER = 0,
    MP_CHAT_THINKING,
    MP_CHAT_PART_COUNT
} mp_chat_part;
typedef void (*mp_chat_emit)(void *user, mp_chat_part part, const char *text, size_t len);

#define MP_THINK_SPLIT_HOLD 32
typedef struct mp_think_split { /* fields are private; set up with mp_think_split_init */
    mp_chat_family family;
    int state;
    size_t n_hold;
    char hold[MP_THINK_SPLIT_HOLD];
} mp_think_split;

/* in_thinking: the prompt left the model inside a thinking block. */
void mp_think_split_init(mp_think_split *s, mp_chat_family family, bool in_thinking);
void mp_think_split_push(mp_think_split *s, const char *text, size_t len, mp_chat_emit emit,
                         void *user);
/* Ends the stream: text held back as a possible marker start is emitted. */
void mp_think_split_flush(mp_think_split *s, mp_chat_emit emit, void *user);
/* True while inside a thinking block. */
bool mp_think_split_thinking(const mp_think_split *s);

/* --- sampling --- */

/* Explicit random state (xoshiro256**), so a seeded run repeats exactly. */
typedef struct mp_rng {
    uint64_t s[4];
} mp_rng;
void mp_rng_seed(mp_rng *r, uint64_t seed);
uint64_t mp_rng_next(mp_rng *r);
double mp_rng_uniform(mp_rng *r); /* [0, 1), 53 bits */

/* Candidates: the steps below are pure functions over this array. */
typedef struct mp_cand {
    mp_token id;
    float logit;
    float p; /* probability, valid after mp_sample_softmax */
} mp_cand;

typedef struct mp_cands {
    mp_cand *data; /* borrowed storage */
    size_t n;
    bool sorted; /* by logit, descending (ties: lower id first) */
} mp_cands;

/* Fills storage[0..n_vocab) from logits, in id order. */
void mp_cands_init(mp_cands *c, mp_cand *storage, const float *logits, int32_t n_vocab);
/* CTRL-style repetition penalty: every distinct id of last[0..n_last) has its
 * logit divided by `penalty` when positive, multiplied when negative. */
void mp_sample_repeat_penalty(mp_cands *c, const mp_token *last, size_t n_last, float penalty);
/* Keeps the k highest logits (sorted afterwards); k <= 0 or >= n: no-op. */
void mp_sample_top_k(mp_cands *c, int32_t k);
/* Sorts and sets p = softmax(logit). */
void mp_sample_softmax(mp_cands *c);
/* Keeps the smallest prefix (by probability) whose mass reaches top_p, and at
 * least min_keep; p >= 1: no-op. Probabilities are renormalised. */
void mp_sample_top_p(mp_cands *c, float top_p, size_t min_keep);
/* Keeps candidates with p >= min_p * p_max (at least min_keep); p <= 0: no-op. */
void mp_sample_min_p(mp_cands *c, float min_p, size_t min_keep);
/* Divides logits by t (> 0). */
void mp_sample_temperature(mp_cands *c, float t);
/* The highest logit (lowest id on ties). MP_TOKEN_NULL when empty. */
mp_token mp_sample_greedy(const mp_cands *c);
/* Draws from softmax(logit) with one mp_rng_uniform. */
mp_token mp_sample_dist(mp_cands *c, mp_rng *rng);

typedef struct mp_sampler_params {
    float temperature;     /* <= 0: greedy (only the repetition penalty applies) */
    int32_t top_k;         /* <= 0: off */
    float top_p;           /* >= 1: off */
    float min_p;           /* <= 0: off */
    float repeat_penalty;  /* 1: off */
    int32_t repeat_last_n; /* history length the penalty sees */
    uint64_t seed;
} mp_sampler_params;

/* llama.cpp's defaults: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05,
 * repeat penalty 1.0 over 64 tokens, seed 0. */
mp_sampler_params mp_sampler_default_params(void);

/* A sampling chain with its scratch allocated once: repetition penalty,
 * top-k, top-p, min-p, temperature, draw (greedy when temperature <= 0). */
typedef struct mp_sampler mp_sampler;
mp_status mp_sampler_init(mp_sampler **out, int32_t n_vocab, const mp_sampler_params *p,
                          mp_err *err);
void mp_sampler_free(mp_sampler *s);
/* Picks the next token from logits[0..n_vocab). Allocates nothing. */
mp_token mp_sampler_sample(mp_sampler *s, const float *logits);
/* Records a token (prompt or generated) in the repetition history. */
void mp_sampler_accept(mp_sampler *s, mp_token id);
/* Clears the history and reseeds the RNG with the seed it was built with. */
void mp_sampler_reset(mp_sampler *s);

/* --- generation control --- */

typedef struct mp_gen_params {
    int32_t max_tokens;       /* <= 0: no limit */
    const char *const *stop;  /* stop strings (may be NULL when n_stop is 0) */
    size_t n_stop;
    int32_t reasoning_budget; /* < 0: unlimited; N: after N thinking tokens the
                                 close marker is forced, then the answer follows */
    mp_token think_open;      /* thinking markers (mp_chat_think_markers); */
    mp_token think_close;     /* MP_TOKEN_NULL: no thinking tracking */
    bool in_thinking;         /* the prompt left the model inside a thinking block */
    bool special;             /* render CONTROL tokens in the text */
} mp_gen_params;

typedef enum mp_gen_status {
    MP_GEN_CONTINUE = 0,
    MP_GEN_EOG,         /* an end-of-generation token (not rendered) */
    MP_GEN_STOP_STRING, /* a stop string appeared (not rendered, nor what follows) */
    MP_GEN_MAX_TOKENS,
    MP_GEN_STATUS_COUNT
} mp_gen_status;

/* "continue", "eog", "stop-string", "max-tokens"; "?" for invalid values. */
const char *mp_gen_status_name(int status);

/* Turns the stream of generated tokens into the text to show and the
 * decision to stop. Text that could be the start of a stop string is held
 * back until it is known not to be one; UTF-8 characters are never split.
 * A generation loop (the engine supplies logits):
 *
 *     for (mp_gen_status st = MP_GEN_CONTINUE; st == MP_GEN_CONTINUE;) {
 *         mp_token t = mp_gen_forced(g);
 *         if (t == MP_TOKEN_NULL) t = mp_sampler_sample(s, logits);
 *         mp_sampler_accept(s, t);
 *         st = mp_gen_push(g, t, &text, &len);   -> show text (through an
 *         ... feed t to the engine ...              mp_think_split to part
 *     }                                             thinking from answer)
 *     mp_gen_flush(g, &text, &len);              -> show the rest */
typedef struct mp_gen mp_gen;
mp_status mp_gen_init(mp_gen **out, const mp_vocab *v, const mp_gen_params *p, mp_err *err);
void mp_gen_free(mp_gen *g);
/* The token the caller must feed next instead of sampling (the reasoning
 * budget is spent), or MP_TOKEN_NULL. */
mp_token mp_gen_forced(const mp_gen *g);
/* Feeds the token the model produced (sampled or forced). *text and *len get
 * the text to show now, borrowed until the next call on g. An id out of
 * range reads as an end of generation. */
mp_gen_status mp_gen_push(mp_gen *g, mp_token id, const char **text, size_t *len);
/* After the last push: the text still held back (none after a stop string). */
void mp_gen_flush(mp_gen *g, const char **text, size_t *len);
int32_t mp_gen_n_tokens(const mp_gen *g);   /* tokens pushed */
int32_t mp_gen_n_thinking(const mp_gen *g); /* of which inside a thinking block */
bool mp_gen_thinking(const mp_gen *g);      /* inside a thinking block now */

/* ------------------------------------------------------------------------ */
/* Engine (CPU inference)                                                   */
/* ------------------------------------------------------------------------ */

/* A model ready to run: hyper-parameters and weights bound in place in the
 * GGUF mapping (no dequantized copy). Read-only once loaded, so several
 * contexts may share one model. Architectures: gemma4. */
typedef struct mp_model mp_model;

/* Opens `path` (mapped read-only) and binds it; the model owns the mapping. */
mp_status mp_model_load(mp_model **out, const char *path, mp_err *err);
/* Binds an already open file; g is borrowed and must outlive the model. */
mp_status mp_model_from_gguf(mp_model **out, const mp_gguf *g, mp_err *err);
void mp_model_free(mp_model *m);

const char *mp_model_arch(const mp_model *m);      /* "gemma4" */
int64_t mp_model_n_vocab(const mp_model *m);
int64_t mp_model_n_embd(const mp_model *m);
int64_t mp_model_n_layer(const mp_model *m);
int64_t mp_model_n_expert_used(const mp_model *m); /* the file's top-k */
/* Experts of layer l (from its tensors; 0 for a dense layer or l out of range). */
int64_t mp_model_n_expert(const mp_model *m, int64_t layer);
/* The open file the model is bound to (borrowed, valid while the model lives). */
const mp_gguf *mp_model_gguf(const mp_model *m);
/* The CPU kernel level contexts use: "avx512", "avx2", "neon", "ref" (scalar)
 * or "exact" (float activations); MOEPRUNE_CPU chooses (see README). */
const char *mp_cpu_kernels(void);

typedef enum mp_kv_type {
    MP_KV_F32 = 0,
    MP_KV_F16,
    MP_KV_TYPE_COUNT
} mp_kv_type;
const char *mp_kv_type_name(int t); /* "f32", "f16"; "?" otherwise */

/* Options for mp_context_init, by value; start from mp_context_default_params. */
typedef struct mp_context_params {
    int64_t n_ctx;      /* positions the KV cache holds (default 4096) */
    int64_t n_batch;    /* most tokens per forward step; longer evals are split
                           (default 256) */
    int n_threads;      /* worker threads including the caller; 0: all online CPUs */
    mp_kv_type kv_type; /* KV cache element type (default F16) */
} mp_context_params;

mp_context_params mp_context_default_params(void);

/* One sequence being run: KV cache, scratch, thread pool, expert masks and
 * hooks. Everything is allocated here; evaluation allocates nothing. Not
 * safe to use from two threads at once. Results do not depend on n_threads
 * (bit-identical). */
typedef struct mp_context mp_context;

/* The model is borrowed and must outlive the context. */
mp_status mp_context_init(mp_context **out, const mp_model *m, mp_context_params p, mp_err *err);
void mp_context_free(mp_context *c);

typedef enum mp_logits_mode {
    MP_LOGITS_NONE = 0, /* fill the cache only */
    MP_LOGITS_LAST,     /* logits of the last token: [n_vocab] */
    MP_LOGITS_ALL,      /* logits of every token: [n_tokens][n_vocab] */
    MP_LOGITS_MODE_COUNT
} mp_logits_mode;
const char *mp_logits_mode_name(int mode); /* "none", "last", "all"; "?" otherwise */

/* Runs tokens[0..n) at the next n positions (after mp_context_n_past) and
 * appends them to the cache. `logits` must hold what `mode` asks for
 * (row-major, float). MP_ERR_ARG for a token id outside the vocabulary or
 * when the cache would overflow n_ctx; the cache is unchanged on error. */
mp_status mp_context_eval(mp_context *c, const mp_token *tokens, int64_t n, mp_logits_mode mode,
                          float *logits, mp_err *err);
/* Positions held in the cache. */
int64_t mp_context_n_past(const mp_context *c);
/* Forgets positions n.. (0 clears the cache); no-op when n >= n_past. */
void mp_context_truncate(mp_context *c, int64_t n);
const mp_context_params *mp_context_params_of(const mp_context *c);

/* --- expert masking and top-k --- */

/* Restricts layer `layer` to the experts with keep[e] true (n must be the
 * layer's expert count): dropped experts get a router logit of -inf before
 * the softmax and top-k, so the result equals a file with those experts
 * removed. keep = NULL restores all experts. MP_ERR_ARG when fewer experts
 * than the experts used per token would remain or the layer has none. */
mp_status mp_context_set_expert_mask(mp_context *c, int64_t layer, const bool *keep, int64_t n,
                                     mp_err *err);
/* Experts used per token in every MoE layer: 1..the file's count, 0 restores
 * the file's. MP_ERR_ARG when a layer's mask keeps fewer. */
mp_status mp_context_set_experts_used(mp_context *c, int64_t k, mp_err *err);
/* The experts used per token now. */
int64_t mp_context_experts_used(const mp_context *c);

/* --- hooks --- */

/* What a MoE hook sees for one layer and one forward step (a step holds up to
 * n_batch consecutive tokens). Pointers are valid during the call only. */
typedef struct mp_moe_hook_data {
    int64_t layer;
    int64_t n_tokens;            /* tokens of this step */
    int64_t pos0;                /* position of the first of them */
    int64_t n_expert;            /* this layer's experts */
    int64_t n_used;              /* experts chosen per token */
    int64_t n_embd;
    const float *router_logits;  /* [n_tokens][n_expert], before the mask */
    const int32_t *experts;      /* [n_tokens][n_used], by descending weight */
    const float *weights;        /* [n_tokens][n_used], the gating weights */
    const float *expert_out;     /* [n_tokens][n_used][n_embd]: each chosen expert's
                                    output times its weight (their sum is the layer's
                                    mixture before post_ffw_norm_2); NULL unless the
                                    hook asked for it */
} mp_moe_hook_data;

/* Returns MP_OK to go on; any other status stops the eval with it. */
typedef mp_status (*mp_moe_hook_fn)(const mp_moe_hook_data *d, void *user);

typedef struct mp_moe_hook {
    mp_moe_hook_fn fn;     /* NULL: no hook */
    void *user;
    bool want_expert_out;  /* fill mp_moe_hook_data.expert_out (costs a copy per token) */
} mp_moe_hook;

/* Installs (or with hook NULL / fn NULL removes) the MoE hook, called after
 * the experts of each MoE layer ran. Allocates the expert_out buffer when
 * asked for it. */
mp_status mp_context_set_moe_hook(mp_context *c, const mp_moe_hook *hook, mp_err *err);

/* What a matmul hook sees: the float inputs of one weight matrix product in
 * one forward step (an expert's slab gets the tokens routed to it). For
 * importance statistics (imatrix): per input column, the sum of x^2. */
typedef struct mp_matmul_hook_data {
    const char *tensor;  /* the weight's tensor name, e.g. "blk.3.attn_q.weight" */
    int64_t slab;        /* expert index within a 3-D expert tensor, else 0 */
    int64_t n_slab;      /* slabs of the tensor (its expert count), 1 for 2-D */
    int64_t n_in;        /* inputs per row: the columns of x that matter */
    int64_t n_tokens;    /* rows of x (0 never happens: empty products are skipped) */
    const float *x;      /* [n_tokens][ldx] */
    int64_t ldx;
} mp_matmul_hook_data;
typedef mp_status (*mp_matmul_hook_fn)(const mp_matmul_hook_data *d, void *user);

/* Installs (fn NULL removes) a hook called, on the evaluating thread, before
 * every weight matrix product of mp_context_eval (attention, dense FFN,
 * router, each expert, the output head). A status other than MP_OK stops
 * the eval with that status. While a hook (this or the MoE hook) is set,
 * every token runs through every layer, also rows no logits were asked for. */
mp_status mp_context_set_matmul_hook(mp_context *c, mp_matmul_hook_fn fn, void *user,
                                     mp_err *err);

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
/* Checks that the stats were taken on `model`'s layout: architecture, layers,
 * experts per layer, experts used per token. */
mp_status mp_stats_check_model(const mp_stats *s, const mp_gguf *model, mp_err *err);

/* Applies a drop map to a context as expert masks (checked against the model
 * first): the result equals running the pruned file. */
mp_status mp_context_apply_dropmap(mp_context *c, const mp_model *m, const mp_dropmap *map,
                                   mp_err *err);
/* For a file pruned with --mode zero, masks the experts it zeroed, so that
 * moeprune never routes to them; MP_OK and nothing done for any other file. */
mp_status mp_context_apply_file_mask(mp_context *c, const mp_model *m, mp_err *err);

/* The profiler: statistics collected through the engine's MoE hook. */
typedef struct mp_profiler mp_profiler;

/* Empty statistics for the model's layout with the given classes. */
mp_status mp_profiler_init(mp_profiler **out, const mp_model *m, const char *const *classes,
                           int64_t n_class, mp_err *err);
void mp_profiler_free(mp_profiler *p);
/* Installs the profiler's hook on a context (replacing any other hook). */
mp_status mp_profiler_attach(mp_profiler *p, mp_context *c, mp_err *err);
/* The class the following evals count towards. */
mp_status mp_profiler_set_class(mp_profiler *p, int64_t cls, mp_err *err);
/* Tokens at positions below pos are not counted (0: count all). */
void mp_profiler_set_min_pos(mp_profiler *p, int64_t pos);
/* Adds n to the current class's token count (the driver knows what it ran). */
void mp_profiler_add_tokens(mp_profiler *p, int64_t n);
/* The statistics so far; borrowed until mp_profiler_free. */
mp_stats *mp_profiler_stats(mp_profiler *p);

/* Importance matrix ("imatrix", for importance-aware quantization): for every
 * weight matrix of the model's layers, per input column the sum over the rows
 * it multiplied of x^2, and the number of rows; per expert for a 3-D expert
 * tensor (an expert's rows are the tokens routed to it). Saved in the GGUF
 * layout of llama.cpp's imatrix (src/profile/imatrix.c), which
 * `llama-quantize --imatrix FILE` reads. Sums are kept in double. */
typedef struct mp_imatrix_entry {
    char *name;     /* the weight's tensor name, e.g. "blk.3.ffn_down_exps.weight" */
    int64_t n_in;   /* input columns: the weight's ne[0] */
    int64_t n_slab; /* experts of a 3-D expert tensor, 1 for a 2-D weight */
    double *sum2;   /* [n_slab][n_in] sum over the rows seen of x^2 */
    double *count;  /* [n_slab] rows seen; an entry with all counts 0 is not saved */
} mp_imatrix_entry;

typedef struct mp_imatrix {
    char *model_sha256;        /* hex sha256 of the source model ("" if unknown) */
    char **datasets;           /* [n_dataset] where the text came from, no repeats */
    int64_t n_dataset;
    int64_t chunk_count;       /* chunks evaluated (imatrix.chunk_count) */
    int64_t chunk_size;        /* tokens per chunk (imatrix.chunk_size) */
    mp_imatrix_entry *entries; /* [n_entry], sorted by name (strcmp) */
    int64_t n_entry;
    int64_t cap_entry;         /* entries allocated (internal) */
} mp_imatrix;

/* Empty accumulators: with a model, one entry for every 2-D or 3-D weight of
 * its layers (tensors named "blk.*"); with m NULL, none. Free with
 * mp_imatrix_free. */
mp_status mp_imatrix_create(mp_imatrix **out, const mp_model *m, mp_err *err);
void mp_imatrix_free(mp_imatrix *im);
/* Adds a zeroed entry at its sorted place (moves the entries: pointers from
 * mp_imatrix_find stay valid until the next add or merge). MP_ERR_ARG for a
 * name already there, sizes below 1, or a name too long for "<name>.in_sum2". */
mp_status mp_imatrix_add(mp_imatrix *im, const char *name, int64_t n_in, int64_t n_slab,
                         mp_err *err);
/* The entry of a weight, or NULL. */
mp_imatrix_entry *mp_imatrix_find(const mp_imatrix *im, const char *name);
/* Appends a dataset name unless it is there already. */
mp_status mp_imatrix_add_dataset(mp_imatrix *im, const char *name, mp_err *err);
/* Installs the imatrix's matmul hook on a context (replacing any other matmul
 * hook; mp_context_set_matmul_hook(c, NULL, NULL, err) removes it). Products
 * of weights without an entry (the output head) are not recorded. */
mp_status mp_imatrix_attach(mp_imatrix *im, mp_context *c, mp_err *err);
/* Writes the entries that saw rows, atomically. `exact` writes F64 tensors,
 * for checkpoints that moeprune reads back (llama.cpp reads F32 only).
 * MP_ERR_ARG when no entry saw a row; MP_ERR_CHECK when a sum is not finite
 * in the output type. */
mp_status mp_imatrix_save(const mp_imatrix *im, const char *path, bool overwrite, bool exact,
                          mp_err *err);
/* Reads an imatrix GGUF (moeprune's or llama-imatrix's; F32 or F64). */
mp_status mp_imatrix_load(mp_imatrix **out, const char *path, mp_err *err);
/* dst += src: entries matched by name (src's missing from dst are added),
 * datasets joined, chunk counts added. MP_ERR_CHECK, with dst unchanged, for
 * another model (sha256, when both have one) or a tensor of another shape. */
mp_status mp_imatrix_merge(mp_imatrix *dst, const mp_imatrix *src, mp_err *err);

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
/* Safetensors and grafting                                                 */
/* ------------------------------------------------------------------------ */

/* Element types of the safetensors format (its "dtype" strings). */
typedef enum mp_st_dtype {
    MP_ST_BOOL = 0,
    MP_ST_U8,
    MP_ST_I8,
    MP_ST_F8_E5M2,
    MP_ST_F8_E4M3,
    MP_ST_F8_E8M0,
    MP_ST_I16,
    MP_ST_U16,
    MP_ST_F16,
    MP_ST_BF16,
    MP_ST_I32,
    MP_ST_U32,
    MP_ST_F32,
    MP_ST_F64,
    MP_ST_I64,
    MP_ST_U64,
    MP_ST_C64,
    MP_ST_F4,      /* sub-byte types: a tensor's elements must fill whole bytes */
    MP_ST_F6_E2M3,
    MP_ST_F6_E3M2,
    MP_ST_DTYPE_COUNT
} mp_st_dtype;

/* The format's spelling ("BF16"); "?" for invalid values. */
const char *mp_st_dtype_name(int dtype);
/* Looks a dtype up by its exact (upper-case) spelling; -1 if unknown. */
int mp_st_dtype_from_name(const char *name);
/* Bits per element (4, 6, 8, 16, 32, 64); 0 for invalid values. */
int mp_st_dtype_bits(int dtype);

#define MP_ST_MAX_DIMS 8

/* One tensor of an open safetensors file. Pointers are borrowed until
 * mp_st_free. Shapes are in the file's (PyTorch's) order: shape[0] is the
 * slowest axis, the reverse of ggml's ne. */
typedef struct mp_st_tensor {
    const char *name;
    int dtype;                     /* mp_st_dtype */
    uint32_t n_dims;               /* 0 (a scalar) .. MP_ST_MAX_DIMS */
    int64_t shape[MP_ST_MAX_DIMS];
    uint64_t offset;               /* data_offsets[0], relative to the data section */
    uint64_t nbytes;
    const void *data;              /* into the mapping */
} mp_st_tensor;

int64_t mp_st_tensor_nelements(const mp_st_tensor *t);

/* One .safetensors file. The header is checked whole: its length against
 * the file (and the 100 MB limit of huggingface/safetensors), the JSON, each
 * tensor's dtype, shape and byte range, and the ranges against each other
 * (they must tile the data section exactly). Errors name the file, the field
 * and the value. */
typedef struct mp_st mp_st;

/* Maps `path` read-only and parses it. Free with mp_st_free. */
mp_status mp_st_open(mp_st **out, const char *path, mp_err *err);
/* Parses a file held in memory (borrowed: it must outlive the result);
 * `name` is used in messages. */
mp_status mp_st_parse(mp_st **out, const void *data, size_t size, const char *name,
                      mp_err *err);
void mp_st_free(mp_st *f);

const char *mp_st_path(const mp_st *f);
uint64_t mp_st_file_size(const mp_st *f);
uint64_t mp_st_data_offset(const mp_st *f); /* 8 + the header length */
int64_t mp_st_n_tensors(const mp_st *f);
/* Tensor i in data order (ascending offset); NULL out of range. */
const mp_st_tensor *mp_st_tensor_at(const mp_st *f, int64_t i);
/* Tensor by name (binary search), or NULL. */
const mp_st_tensor *mp_st_find_tensor(const mp_st *f, const char *name);
/* "__metadata__" string pairs, in header order. */
int64_t mp_st_n_meta(const mp_st *f);
const char *mp_st_meta_key(const mp_st *f, int64_t i);
const char *mp_st_meta_value(const mp_st *f, int64_t i);
const char *mp_st_meta_get(const mp_st *f, const char *key); /* NULL when absent */
/* Lets the OS drop `len` mapped bytes from memory (as mp_gguf_release). */
void mp_st_release(const mp_st *f, const void *ptr, size_t len);

/* A Hugging Face checkpoint: a folder with model.safetensors.index.json and
 * the shards its weight_map names, or a folder with model.safetensors, or one
 * .safetensors file. The index is checked against the shards: every entry
 * names a shard file inside the folder that holds the tensor, every tensor of
 * every shard is listed, none is in two shards. */
typedef struct mp_st_model mp_st_model;

mp_status mp_st_model_open(mp_st_model **out, const char *path, mp_err *err);
void mp_st_model_free(mp_st_model *m);
/* True when `path` is a folder or an existing .safetensors file. */
bool mp_st_is_checkpoint_path(const char *path);

const char *mp_st_model_dir(const mp_st_model *m); /* the folder holding the shards */
bool mp_st_model_is_dir(const mp_st_model *m);     /* opened as a folder */
bool mp_st_model_indexed(const mp_st_model *m);    /* has an index json */
/* Shards in file-name order; names are file names inside the folder. */
int64_t mp_st_model_n_shards(const mp_st_model *m);
const mp_st *mp_st_model_shard(const mp_st_model *m, int64_t i);
const char *mp_st_model_shard_name(const mp_st_model *m, int64_t i);
int64_t mp_st_model_n_tensors(const mp_st_model *m);
/* Tensor by name across shards (and its shard index, when shard is non-NULL). */
const mp_st_tensor *mp_st_model_find(const mp_st_model *m, const char *name, int64_t *shard);

/* Streaming writer with the GGUF writer's contract: the file appears at
 * `path` only when mp_st_writer_finish succeeds (temp file in the same
 * folder, fsync, re-read, rename); freed unfinished, it leaves nothing.
 * Tensors get consecutive offsets in declaration order and their data must
 * be written in that order. */
typedef struct mp_st_writer mp_st_writer;

mp_status mp_st_writer_open(mp_st_writer **out, const char *path, bool overwrite, mp_err *err);
void mp_st_writer_free(mp_st_writer *w);
/* A "__metadata__" string pair (duplicate keys refused). */
mp_status mp_st_writer_meta(mp_st_writer *w, const char *key, const char *value, mp_err *err);
mp_status mp_st_writer_add_tensor(mp_st_writer *w, const char *name, int dtype, uint32_t n_dims,
                                  const int64_t *shape, mp_err *err);
/* Writes the header; called implicitly by the first write_data. */
mp_status mp_st_writer_write_header(mp_st_writer *w, mp_err *err);
mp_status mp_st_writer_write_data(mp_st_writer *w, const void *data, size_t len, mp_err *err);
mp_status mp_st_writer_finish(mp_st_writer *w, mp_err *err);

/* Expert surgery on a Hugging Face checkpoint (Gemma 4 layout, and any
 * model that stacks its experts the same way): in every MoE layer the expert
 * axis (axis 0) of the stacked expert tensors (experts.gate_up_proj,
 * experts.down_proj, experts.gate_proj, experts.up_proj), of the router's
 * rows (router.proj.weight) and of router.per_expert_scale keeps the map's
 * experts, byte for byte (BF16, F16 or F32; other dtypes are
 * MP_ERR_UNSUPPORTED when a tensor must be sliced); every other tensor is
 * copied. `in` is a checkpoint folder or one .safetensors file; `out` is
 * then a folder with the same shard names and index, config.json's expert
 * counts (num_experts, num_local_experts, n_routed_experts) set to the kept
 * count, the map recorded as config.json's "moeprune_dropmap" (relative to
 * the original model when `in` was itself pruned), and every other file
 * copied; or one .safetensors file. The folder is built beside the target
 * and renamed into place when complete and verified; with overwrite, an
 * existing output is replaced then, and only when it is a file or a
 * checkpoint folder. Only uniform maps (HF configs have one expert count)
 * and MP_PRUNE_REMOVE are accepted. Memory use does not depend on the model
 * size. */
mp_status mp_prune_safetensors(const char *in, const mp_dropmap *map, const char *out,
                               const mp_prune_params *p, mp_err *err);
/* Reads the drop map a pruned checkpoint folder records in config.json. */
mp_status mp_dropmap_from_safetensors(const char *path, mp_dropmap **out, mp_err *err);

typedef struct mp_graft_params {
    bool average;   /* non-expert tensors: the element-wise mean of all inputs
                       (F32/F16/BF16 only) instead of the first input's */
    bool overwrite; /* replace an existing output file */
} mp_graft_params;

/* Builds one GGUF whose experts in each MoE layer are the concatenation of
 * the inputs' experts, in input order (expert slabs, router rows and
 * per-expert scales alike, byte for byte). The inputs must share the
 * architecture, the layer count and every non-expert tensor's type and
 * shape; expert tensors must match except for their expert count.
 * <arch>.expert_count becomes the per-layer sum (the largest, with
 * moeprune.expert_count_per_layer, when layers differ), the provenance goes
 * to moeprune.graft (JSON: each input's file, name and expert range per
 * layer, and the base model ids it kept when it records a drop map).
 * Everything is checked before the output is opened. */
mp_status mp_graft_gguf(const char *const *inputs, int64_t n_inputs, const char *out,
                        const mp_graft_params *p, mp_err *err);

/* ------------------------------------------------------------------------ */
/* Files                                                                    */
/* ------------------------------------------------------------------------ */

/* True when both paths name the same existing file (same device and inode). */
bool mp_file_same(const char *a, const char *b);

#ifdef __cplusplus
}
#endif

#endif /* MOEPRUNE_H */

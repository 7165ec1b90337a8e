/* synth.c — random-weight models with a real architecture's layout: the
 * preset table, the plan (tensor names, shapes, types, weight distributions),
 * the metadata, and mp_synth_write which streams the file out through the
 * GGUF writer.
 *
 * Layout, key names and key types follow the Gemma 4 section of the shared
 * gemma4-gguf-spec.md (3.1, 3.2) and the tiny fixture
 * (tests/data/gemma4-tiny-a/tiny-a-f32.gguf), which the gemma4-tiny preset
 * reproduces tensor for tensor and key for key. Presets are rows of
 * hyper-parameters; nothing below branches on a preset's name. Values are
 * drawn by gen.c. Does not tokenize or check that a model is useful beyond
 * being well conditioned: weights are noise with the fixture's statistics. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "synth/synth.h"
#include "util/util.h"

#ifndef MP_DATA_DIR
#define MP_DATA_DIR "data"
#endif

/* Weight design, measured on tiny-a-f32.gguf (per-tensor mean and std):
 * weight matrices ~ N(0, 1/n_in), so a matmul keeps the RMS of its input;
 * token_embd ~ N(0, 4/n_embd) so that the tied logits of a unit-RMS state
 * have std 2; norm weights ~ N(1, 0.1); per-head Q/K norm weights
 * ~ N(d^-1/4, (0.1 d^-1/4)^2), which stands in for the 1/sqrt(d) attention
 * scale Gemma 4 does not apply; router weights ~ N(0, 4.2^2): the router
 * input has norm ~1 (rms / sqrt(n_embd)), so its logits have std ~4.2 at any
 * width; router input scales ~ N(1, 0.2); per-expert output scales
 * U[0.5, 1.5]; layer output scales U[0.7, 0.9]. */
#define SYNTH_EMBD_LOGIT_STD 2.0f
#define SYNTH_NORM_STD 0.1f
#define SYNTH_ROUTER_STD 4.2f
#define SYNTH_ROUTER_SCALE_STD 0.2f
#define SYNTH_EXPERT_SCALE_LO 0.5f
#define SYNTH_EXPERT_SCALE_HI 1.5f
#define SYNTH_LAYER_SCALE_LO 0.7f
#define SYNTH_LAYER_SCALE_HI 0.9f

/* Most tensors one layer can have (split experts and attn_v included). */
#define SYNTH_MAX_PER_LAYER 32

#define PRESET_TINY "gemma4-tiny"
#define PRESET_26B "gemma4-26b-a4b"

static const mp_synth_hparams presets[] = {
    {
        /* tests/data/gemma4-tiny-a: 26B-A4B scaled down (fixtures README). */
        .name = PRESET_TINY,
        .model_name = "moeprune-synth-gemma4-tiny",
        .arch = "gemma4",
        .vocab_file = "gemma4-tiny-vocab.gguf",
        .n_ctx = 4096,
        .n_embd = 256,
        .n_layer = 4,
        .pattern = "SSSG",
        .n_ff = 320,
        .n_head = 4,
        .n_head_kv_swa = 2,
        .n_head_kv = 1,
        .head_dim_swa = 64,
        .head_dim = 128,
        .n_swa = 16,
        .rope_base_swa = 1e4f,
        .rope_base = 1e6f,
        .rope_partial = 0.25f,
        .eps = 1e-6f,
        .softcap = 30.0f,
        .n_expert = 16,
        .n_expert_used = 4,
        .n_ff_exp = 64,
    },
    {
        /* Gemma 4 26B-A4B (spec 3.1; global KV heads 2 and the pattern are
         * the spec's best reading, marked unverified/inferred there). */
        .name = PRESET_26B,
        .model_name = "moeprune-synth-gemma4-26b-a4b",
        .arch = "gemma4",
        .vocab_file = "gemma4-vocab.gguf",
        .n_ctx = 262144,
        .n_embd = 2816,
        .n_layer = 30,
        .pattern = "SSSSSG",
        .n_ff = 2112,
        .n_head = 16,
        .n_head_kv_swa = 8,
        .n_head_kv = 2,
        .head_dim_swa = 256,
        .head_dim = 512,
        .n_swa = 1024,
        .rope_base_swa = 1e4f,
        .rope_base = 1e6f,
        .rope_partial = 0.25f,
        .eps = 1e-6f,
        .softcap = 30.0f,
        .n_expert = 128,
        .n_expert_used = 8,
        .n_ff_exp = 704,
    },
};

static const char *const preset_names[] = {PRESET_TINY, PRESET_26B, NULL};

const char *const *mp_synth_presets(void) {
    return preset_names;
}

static mp_status unknown_preset(const char *name, mp_err *err) {
    char list[256] = "";
    for (size_t i = 0; preset_names[i]; i++) {
        size_t n = strlen(list);
        snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", preset_names[i]);
    }
    return mp_err_set(err, MP_ERR_ARG, "synth: unknown preset '%s' (presets: %s)",
                      name ? name : "(none)", list);
}

const mp_synth_hparams *mp_synth_hparams_find(const char *name) {
    for (size_t i = 0; name && i < MP_ARRAY_LEN(presets); i++)
        if (!strcmp(presets[i].name, name)) return &presets[i];
    return NULL;
}

/* The matrix types synth writes and their llama_ftype (general.file_type). */
static const struct {
    int type;
    uint32_t ftype;
} file_types[] = {
    {MP_TYPE_F32, 0},
    {MP_TYPE_F16, 1},
    {MP_TYPE_Q8_0, 7},
    {MP_TYPE_BF16, 32},
};

const char *mp_synth_init_name(int init) {
    static const char *const names[MP_SYNTH_INIT_COUNT] = {"NORMAL", "UNIFORM", "ROPE_FREQS"};
    return init >= 0 && init < MP_SYNTH_INIT_COUNT ? names[init] : "?";
}

bool mp_synth_layer_swa(const mp_synth_plan *plan, int64_t il) {
    const char *pat = plan->hp->pattern;
    return pat[il % (int64_t)strlen(pat)] == 'S';
}

/* splitmix64's output function (Steele, Lea, Flood 2014). */
static uint64_t synth_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t tensor_key(uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        h = (h ^ *c) * 0x100000001b3ull;
    return synth_mix(h ^ synth_mix(seed + 0x9e3779b97f4a7c15ull));
}

int mp_synth_matrix_type(int type, int64_t ne0) {
    const mp_type_traits *t = mp_type_info(type);
    return ne0 % t->blck_size == 0 ? type : MP_TYPE_F16;
}

typedef struct plan_builder {
    mp_synth_plan *plan;
    uint64_t seed;
    int64_t cap;
    mp_err *err;
} plan_builder;

static mp_status add_tensor(plan_builder *b, const char *name, int type, uint32_t n_dims,
                            int64_t ne0, int64_t ne1, int64_t ne2, mp_synth_init init, float a,
                            float bb) {
    mp_synth_plan *p = b->plan;
    if (p->n_tensors >= b->cap)
        return mp_err_set(b->err, MP_ERR_ARG, "synth: more than %" PRId64 " tensors planned",
                          b->cap);
    if (strlen(name) > MP_GGUF_MAX_NAME)
        return mp_err_set(b->err, MP_ERR_ARG, "synth: tensor name '%s' longer than %d bytes",
                          name, MP_GGUF_MAX_NAME);
    mp_synth_tensor *t = &p->tensors[p->n_tensors++];
    memset(t, 0, sizeof *t);
    memcpy(t->name, name, strlen(name) + 1);
    t->type = type;
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->ne[3] = 1;
    t->init = init;
    t->a = a;
    t->b = bb;
    t->key = tensor_key(b->seed, name);
    return MP_OK;
}

/* A weight matrix {n_in, n_out[, n_mat]} ~ N(0, 1/n_in) in the requested type. */
static mp_status add_matrix(plan_builder *b, const char *name, int64_t n_in, int64_t n_out,
                            int64_t n_mat) {
    return add_tensor(b, name, mp_synth_matrix_type(b->plan->type, n_in), n_mat > 1 ? 3 : 2,
                      n_in, n_out, n_mat, MP_SYNTH_NORMAL, 0.0f,
                      (float)(1.0 / sqrt((double)n_in)));
}

static mp_status add_norm(plan_builder *b, const char *name, int64_t n, float mean) {
    return add_tensor(b, name, MP_TYPE_F32, 1, n, 1, 1, MP_SYNTH_NORMAL, mean,
                      SYNTH_NORM_STD * mean);
}

/* One layer, tensors in the order of the fixture (llama.cpp's converter). */
static mp_status add_layer(plan_builder *b, int64_t il) {
    const mp_synth_plan *p = b->plan;
    const mp_synth_hparams *hp = p->hp;
    bool swa = mp_synth_layer_swa(p, il);
    int64_t E = hp->n_embd, H = hp->n_head, X = hp->n_expert, Fe = hp->n_ff_exp;
    int64_t d = swa ? hp->head_dim_swa : hp->head_dim;
    int64_t hkv = swa ? hp->n_head_kv_swa : hp->n_head_kv;
    float qk_norm = (float)pow((double)d, -0.25);
    char n[MP_GGUF_MAX_NAME + 64];
    mp_status s = MP_OK;
#define NAME(suffix) (snprintf(n, sizeof n, "blk.%" PRId64 "." suffix, il), n)
    if ((s = add_norm(b, NAME("attn_norm.weight"), E, 1.0f)) ||
        (s = add_matrix(b, NAME("attn_q.weight"), E, H * d, 1)) ||
        (s = add_matrix(b, NAME("attn_k.weight"), E, hkv * d, 1)))
        return s;
    if ((swa || p->v_every_layer) && (s = add_matrix(b, NAME("attn_v.weight"), E, hkv * d, 1)))
        return s;
    if ((s = add_norm(b, NAME("attn_q_norm.weight"), d, qk_norm)) ||
        (s = add_norm(b, NAME("attn_k_norm.weight"), d, qk_norm)) ||
        (s = add_matrix(b, NAME("attn_output.weight"), H * d, E, 1)) ||
        (s = add_norm(b, NAME("post_attention_norm.weight"), E, 1.0f)) ||
        (s = add_norm(b, NAME("ffn_norm.weight"), E, 1.0f)) ||
        (s = add_matrix(b, NAME("ffn_gate.weight"), E, hp->n_ff, 1)) ||
        (s = add_matrix(b, NAME("ffn_up.weight"), E, hp->n_ff, 1)) ||
        (s = add_matrix(b, NAME("ffn_down.weight"), hp->n_ff, E, 1)) ||
        (s = add_norm(b, NAME("post_ffw_norm_1.weight"), E, 1.0f)) ||
        (s = add_norm(b, NAME("pre_ffw_norm_2.weight"), E, 1.0f)) ||
        (s = add_norm(b, NAME("post_ffw_norm_2.weight"), E, 1.0f)) ||
        (s = add_norm(b, NAME("post_ffw_norm.weight"), E, 1.0f)) ||
        (s = add_tensor(b, NAME("ffn_gate_inp.weight"), MP_TYPE_F32, 2, E, X, 1, MP_SYNTH_NORMAL,
                        0.0f, SYNTH_ROUTER_STD)) ||
        (s = add_tensor(b, NAME("ffn_gate_inp.scale"), MP_TYPE_F32, 1, E, 1, 1, MP_SYNTH_NORMAL,
                        1.0f, SYNTH_ROUTER_SCALE_STD)))
        return s;
    if (p->split_experts) {
        if ((s = add_matrix(b, NAME("ffn_gate_exps.weight"), E, Fe, X)) ||
            (s = add_matrix(b, NAME("ffn_up_exps.weight"), E, Fe, X)))
            return s;
    } else if ((s = add_matrix(b, NAME("ffn_gate_up_exps.weight"), E, 2 * Fe, X))) {
        return s;
    }
    if ((s = add_matrix(b, NAME("ffn_down_exps.weight"), Fe, E, X)) ||
        (s = add_tensor(b, NAME("ffn_down_exps.scale"), MP_TYPE_F32, 1, X, 1, 1,
                        MP_SYNTH_UNIFORM, SYNTH_EXPERT_SCALE_LO, SYNTH_EXPERT_SCALE_HI)) ||
        (s = add_tensor(b, NAME("layer_output_scale.weight"), MP_TYPE_F32, 1, 1, 1, 1,
                        MP_SYNTH_UNIFORM, SYNTH_LAYER_SCALE_LO, SYNTH_LAYER_SCALE_HI)))
        return s;
#undef NAME
    return MP_OK;
}

mp_status mp_synth_plan_init(mp_synth_plan **out, const mp_synth_params *p, int64_t n_vocab,
                             mp_err *err) {
    if (!out || !p) return mp_err_set(err, MP_ERR_ARG, "synth: NULL argument");
    const mp_synth_hparams *hp = mp_synth_hparams_find(p->preset);
    if (!hp)
        return unknown_preset(p->preset, err);
    if (p->n_layer < 0 || p->n_layer > (int64_t)hp->n_layer)
        return mp_err_set(err, MP_ERR_ARG,
                          "synth: %" PRId64 " layers requested; preset %s has 1..%u", p->n_layer,
                          hp->name, hp->n_layer);
    if (n_vocab <= 0)
        return mp_err_set(err, MP_ERR_ARG, "synth: vocabulary of %" PRId64 " tokens", n_vocab);
    uint32_t ftype = 0;
    bool known = false;
    for (size_t i = 0; i < MP_ARRAY_LEN(file_types); i++)
        if (file_types[i].type == p->type) {
            ftype = file_types[i].ftype;
            known = true;
        }
    if (!known)
        return mp_err_set(err, MP_ERR_ARG,
                          "synth: weight type %s (id %d) not supported (F32, F16, BF16, Q8_0)",
                          mp_type_name(p->type), p->type);

    mp_synth_plan *plan = mp_calloc(1, sizeof *plan);
    if (!plan) return mp_err_set(err, MP_ERR_NOMEM, "synth: out of memory");
    plan->hp = hp;
    plan->n_layer = p->n_layer ? p->n_layer : hp->n_layer;
    plan->n_vocab = n_vocab;
    plan->type = p->type;
    plan->file_type = ftype;
    plan->split_experts = p->split_experts;
    plan->v_every_layer = p->v_every_layer;

    plan_builder b = {plan, p->seed, 3 + plan->n_layer * SYNTH_MAX_PER_LAYER, err};
    plan->tensors = mp_calloc((size_t)b.cap, sizeof *plan->tensors);
    if (!plan->tensors) {
        mp_synth_plan_free(plan);
        return mp_err_set(err, MP_ERR_NOMEM, "synth: out of memory");
    }
    bool any_global = false;
    for (int64_t il = 0; il < plan->n_layer; il++) any_global |= !mp_synth_layer_swa(plan, il);
    int64_t E = hp->n_embd;
    mp_status s = add_tensor(&b, "token_embd.weight", mp_synth_matrix_type(p->type, E), 2, E,
                             n_vocab, 1, MP_SYNTH_NORMAL, 0.0f,
                             (float)(SYNTH_EMBD_LOGIT_STD / sqrt((double)E)));
    if (!s) s = add_norm(&b, "output_norm.weight", E, 1.0f);
    /* llama.cpp refuses files with tensors it does not use: rope_freqs only
     * when some layer is global. */
    if (!s && any_global)
        s = add_tensor(&b, "rope_freqs.weight", MP_TYPE_F32, 1, hp->head_dim / 2, 1, 1,
                       MP_SYNTH_ROPE_FREQS,
                       (float)floor((double)hp->head_dim * hp->rope_partial / 2.0), 0.0f);
    for (int64_t il = 0; il < plan->n_layer && !s; il++) s = add_layer(&b, il);
    if (s) {
        mp_synth_plan_free(plan);
        return s;
    }
    *out = plan;
    return MP_OK;
}

void mp_synth_plan_free(mp_synth_plan *plan) {
    if (!plan) return;
    mp_free(plan->tensors);
    mp_free(plan);
}

/* "<arch>.<suffix>" into buf. */
static const char *akey(char *buf, size_t n, const mp_synth_hparams *hp, const char *suffix) {
    snprintf(buf, n, "%s.%s", hp->arch, suffix);
    return buf;
}

mp_status mp_synth_write_kv(const mp_synth_plan *plan, const mp_gguf *vocab, mp_gguf_writer *w,
                            mp_err *err) {
    const mp_synth_hparams *hp = plan->hp;
    int64_t L = plan->n_layer;
    char k[128];
    mp_status s;
    uint8_t *kv_heads = mp_malloc((size_t)L * 4), *swa = mp_malloc((size_t)L);
    if (!kv_heads || !swa) {
        s = mp_err_set(err, MP_ERR_NOMEM, "synth: out of memory");
        goto fail;
    }
    for (int64_t il = 0; il < L; il++) {
        bool is_swa = mp_synth_layer_swa(plan, il);
        mp_store_u32(kv_heads + 4 * il, is_swa ? hp->n_head_kv_swa : hp->n_head_kv);
        swa[il] = is_swa;
    }
#define KU32(suffix, v) mp_gguf_writer_kv_u32(w, akey(k, sizeof k, hp, suffix), (v), err)
#define KF32(suffix, v) mp_gguf_writer_kv_f32(w, akey(k, sizeof k, hp, suffix), (v), err)
    if ((s = mp_gguf_writer_kv_str(w, "general.architecture", hp->arch, err)) ||
        (s = mp_gguf_writer_kv_str(w, "general.name", hp->model_name, err)) ||
        (s = KU32("context_length", hp->n_ctx)) ||
        (s = KU32("embedding_length", hp->n_embd)) ||
        (s = KU32("block_count", (uint32_t)L)) ||
        (s = KU32("feed_forward_length", hp->n_ff)) ||
        (s = KU32("attention.head_count", hp->n_head)) ||
        (s = mp_gguf_writer_kv_arr(w, akey(k, sizeof k, hp, "attention.head_count_kv"),
                                   MP_GGUF_INT32, kv_heads, (uint64_t)L, err)) ||
        (s = KF32("attention.layer_norm_rms_epsilon", hp->eps)) ||
        (s = KU32("attention.key_length", hp->head_dim)) ||
        (s = KU32("attention.value_length", hp->head_dim)) ||
        (s = KU32("attention.key_length_swa", hp->head_dim_swa)) ||
        (s = KU32("attention.value_length_swa", hp->head_dim_swa)) ||
        (s = KF32("rope.freq_base", hp->rope_base)) ||
        (s = KF32("rope.freq_base_swa", hp->rope_base_swa)) ||
        (s = KU32("rope.dimension_count", hp->head_dim)) ||
        (s = KU32("rope.dimension_count_swa", hp->head_dim_swa)) ||
        (s = KU32("attention.sliding_window", hp->n_swa)) ||
        (s = mp_gguf_writer_kv_arr(w, akey(k, sizeof k, hp, "attention.sliding_window_pattern"),
                                   MP_GGUF_BOOL, swa, (uint64_t)L, err)) ||
        (s = KU32("attention.shared_kv_layers", 0)) ||
        (s = KU32("embedding_length_per_layer_input", 0)) ||
        (s = KU32("expert_count", hp->n_expert)) ||
        (s = KU32("expert_used_count", hp->n_expert_used)) ||
        (s = KU32("expert_feed_forward_length", hp->n_ff_exp)) ||
        (s = KF32("final_logit_softcapping", hp->softcap)))
        goto fail;
#undef KU32
#undef KF32
    for (int64_t i = 0; i < mp_gguf_n_kv(vocab); i++)
        if (!strncmp(mp_gguf_key(vocab, i), "tokenizer.", 10) &&
            (s = mp_gguf_writer_kv_copy(w, vocab, i, err)))
            goto fail;
    /* Where llama-quantize puts them (the fixture's F16/BF16/Q8_0 files). */
    if (plan->type != MP_TYPE_F32 &&
        (s = mp_gguf_writer_kv_u32(w, "general.quantization_version", 2, err)))
        goto fail;
    s = mp_gguf_writer_kv_u32(w, "general.file_type", plan->file_type, err);
fail:
    mp_free(kv_heads);
    mp_free(swa);
    return s;
}

/* The vocabulary file to use: the caller's, or the preset's in the data
 * folder ($MOEPRUNE_DATA, else the one the build was configured with). */
static mp_status vocab_path(const mp_synth_params *p, const mp_synth_hparams *hp, char **out,
                            mp_err *err) {
    if (p->vocab_path) {
        *out = mp_strdup(p->vocab_path);
    } else {
        const char *dir = getenv("MOEPRUNE_DATA");
        if (!dir || !*dir) dir = MP_DATA_DIR;
        size_t n = strlen(dir) + strlen(hp->vocab_file) + 2;
        *out = mp_malloc(n);
        if (*out) snprintf(*out, n, "%s/%s", dir, hp->vocab_file);
    }
    return *out ? MP_OK : mp_err_set(err, MP_ERR_NOMEM, "synth: out of memory");
}

/* Opens the vocabulary and returns its token count. */
static mp_status vocab_open(const char *path, const char *preset, mp_gguf **out,
                            int64_t *n_vocab, mp_err *err) {
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        return mp_err_set(err, e == ENOENT ? MP_ERR_NOT_FOUND : MP_ERR_IO,
                          "%s: vocabulary for preset %s: %s (give a GGUF with tokenizer.* keys "
                          "with --vocab FILE, or set MOEPRUNE_DATA to the folder holding it)",
                          path, preset, mp_errno_str(e));
    }
    mp_gguf *g = NULL;
    mp_status s = mp_gguf_open(&g, path, err);
    if (s) return s;
    int64_t i = mp_gguf_find_key(g, "tokenizer.ggml.tokens");
    if (i < 0) {
        mp_gguf_free(g);
        return mp_err_set(err, MP_ERR_NOT_FOUND,
                          "%s: no tokenizer.ggml.tokens: not a vocabulary (--vocab)", path);
    }
    if (mp_gguf_kv_type(g, i) != MP_GGUF_ARRAY || mp_gguf_arr_type(g, i) != MP_GGUF_STRING ||
        mp_gguf_arr_len(g, i) == 0 || mp_gguf_arr_len(g, i) > INT32_MAX) {
        mp_gguf_free(g);
        return mp_err_set(err, MP_ERR_FORMAT,
                          "%s: tokenizer.ggml.tokens is not a non-empty array of strings", path);
    }
    *n_vocab = (int64_t)mp_gguf_arr_len(g, i);
    *out = g;
    return MP_OK;
}

mp_status mp_synth_write(const char *path, const mp_synth_params *p, mp_err *err) {
    if (!path || !p) return mp_err_set(err, MP_ERR_ARG, "synth: NULL argument");
    const mp_synth_hparams *hp = mp_synth_hparams_find(p->preset);
    if (!hp)
        return unknown_preset(p->preset, err);
    char *vpath = NULL;
    mp_gguf *vocab = NULL;
    mp_synth_plan *plan = NULL;
    mp_gguf_writer *w = NULL;
    int64_t n_vocab = 0;
    mp_status s = vocab_path(p, hp, &vpath, err);
    if (s) return s;
    if ((s = vocab_open(vpath, hp->name, &vocab, &n_vocab, err))) goto fail;
    if (mp_file_same(path, vpath)) {
        s = mp_err_set(err, MP_ERR_ARG, "%s: output would replace the vocabulary file", path);
        goto fail;
    }
    if ((s = mp_synth_plan_init(&plan, p, n_vocab, err)) ||
        (s = mp_gguf_writer_open(&w, path, p->overwrite, err)) ||
        (s = mp_synth_write_kv(plan, vocab, w, err)))
        goto fail;
    for (int64_t i = 0; i < plan->n_tensors; i++) {
        const mp_synth_tensor *t = &plan->tensors[i];
        if ((s = mp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, err)))
            goto fail;
    }
    if ((s = mp_synth_write_data(plan, w, 0, err))) goto fail;
    s = mp_gguf_writer_finish(w, err);
fail:
    mp_gguf_writer_free(w);
    mp_synth_plan_free(plan);
    mp_gguf_free(vocab);
    mp_free(vpath);
    return s;
}

/* safetensors.c — expert surgery on Hugging Face checkpoints (the layout of
 * Gemma 4 and of every model that stacks its experts in one tensor).
 *
 * In HF layout the expert axis is axis 0, the slowest: experts.gate_up_proj
 * [X, 2Fe, E], experts.down_proj [X, E, Fe], router.proj.weight [X, E],
 * router.per_expert_scale [X] (gemma4-gguf-spec.md sections 3.3 and 5). Each
 * expert's part of such a tensor is one contiguous slab of nbytes / X bytes,
 * so removal is a byte copy of the kept slabs, as in the GGUF surgery
 * (prune.c). router.scale [E] is per channel and stays. Only BF16, F16 and
 * F32 tensors are sliced; other tensors are copied whatever their dtype.
 *
 * A checkpoint folder is rebuilt in a temporary folder beside the target:
 * each shard under its own name through the streaming writer, the index with
 * the same weight_map (total_size updated), config.json with its expert
 * counts set and the map recorded, every other file copied; the result is
 * re-opened with the reader and only then renamed into place. Any failure
 * removes the temporary folder. Memory does not grow with the model: data
 * streams through in chunks and the input's pages are released behind us.
 *
 * Not here: per-expert module layouts (experts.N.w1...), which are refused;
 * non-uniform maps (an HF config has one expert count) and --mode zero (no HF
 * engine reads a mask), refused too. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "quant/quant.h"
#include "safetensors/st.h"

#define CONFIG_NAME "config.json"
#define INDEX_NAME "model.safetensors.index.json"
#define KEY_DROPMAP "moeprune_dropmap"
/* Unsliced data is copied in chunks of this size, then its pages released. */
#define ST_CHUNK ((size_t)64 << 20)
/* Folders nested deeper than this beside the weights are refused, not copied. */
#define COPY_DEPTH 16

/* Config keys, looked up in these sub-objects first, then at the top level. */
static const char *const sub_configs[] = {"text_config", "language_config", "llm_config", NULL};
static const char *const expert_count_keys[] = {"num_experts", "num_local_experts",
                                                "n_routed_experts", NULL};
static const char *const expert_used_keys[] = {"top_k_experts", "num_experts_per_tok",
                                               "num_experts_per_token", "moe_top_k", NULL};
/* Router tensors (rows = experts), as the rest of the name after "layers.N.". */
static const char *const router_names[] = {"router.proj.weight", "router.proj.bias",
                                           "mlp.router.weight",  "mlp.router.bias",
                                           "mlp.gate.weight",    "block_sparse_moe.gate.weight",
                                           NULL};
/* Per-expert vectors [X]: Gemma 4's output scales, DeepSeek's routing bias. */
static const char *const scale_names[] = {"router.per_expert_scale",
                                          "gate.e_score_correction_bias", NULL};

typedef enum st_role { ROLE_OTHER = 0, ROLE_EXPERTS, ROLE_ROUTER, ROLE_SCALE } st_role;

/* What happens to one tensor of the checkpoint. */
typedef struct st_plan {
    const mp_st_tensor *t;
    st_role role;
    int64_t layer;
    const mp_dropmap_layer *L; /* non-NULL: sliced on axis 0 */
} st_plan;

/* The checkpoint's MoE layout. */
typedef struct st_layout {
    char *prefix;          /* name text before the layer number ("model.layers.") */
    int64_t n_layer;       /* 1 + the highest layer index under prefix */
    int64_t *n_expert;     /* [n_layer]; 0: no stacked experts */
    const char **first;    /* [n_layer] the tensor that set n_expert */
    int64_t n_tensors;     /* over all shards */
    int64_t *shard_base;   /* [n_shards] index of each shard's first tensor in plan */
    st_plan *plan;         /* [n_tensors] */
} st_layout;

static void layout_free(st_layout *y) {
    mp_free(y->prefix);
    mp_free(y->n_expert);
    mp_free(y->first);
    mp_free(y->shard_base);
    mp_free(y->plan);
}

/* ------------------------------------------------------------------------ */
/* Names                                                                    */
/* ------------------------------------------------------------------------ */

/* Finds "layers.N." starting a dot-separated component of `name`: returns N,
 * with *prefix_len the bytes before N and *rest what follows "N."; -1 when
 * there is none. */
static int64_t hf_layer(const char *name, size_t *prefix_len, const char **rest) {
    for (const char *p = strstr(name, "layers."); p; p = strstr(p + 1, "layers.")) {
        if (p != name && p[-1] != '.') continue;
        const char *q = p + 7;
        if (*q < '0' || *q > '9') continue;
        int64_t n = 0;
        for (; *q >= '0' && *q <= '9'; q++) {
            if (n > 1000000) return -1; /* no model has a million layers */
            n = n * 10 + (*q - '0');
        }
        if (*q != '.') continue;
        *prefix_len = (size_t)(p + 7 - name);
        *rest = q + 1;
        return n;
    }
    return -1;
}

/* rest equals s, or ends with "." s. */
static bool has_suffix(const char *rest, const char *s) {
    size_t a = strlen(rest), b = strlen(s);
    return a == b ? !strcmp(rest, s) : a > b && rest[a - b - 1] == '.' && !strcmp(rest + a - b, s);
}

static bool in_list(const char *rest, const char *const *list) {
    for (int i = 0; list[i]; i++)
        if (has_suffix(rest, list[i])) return true;
    return false;
}

/* A component "experts" followed by a number is the per-expert module
 * layout (experts.3.w1.weight); followed by anything else, a stacked tensor. */
static st_role role_of(const char *rest, bool *module) {
    *module = false;
    for (const char *p = rest; p; p = strchr(p, '.') ? strchr(p, '.') + 1 : NULL) {
        if (strncmp(p, "experts.", 8)) continue;
        const char *q = p + 8;
        if (*q >= '0' && *q <= '9') {
            *module = true;
            return ROLE_OTHER;
        }
        return ROLE_EXPERTS;
    }
    if (in_list(rest, router_names)) return ROLE_ROUTER;
    if (in_list(rest, scale_names)) return ROLE_SCALE;
    return ROLE_OTHER;
}

/* ------------------------------------------------------------------------ */
/* Layout scan                                                              */
/* ------------------------------------------------------------------------ */

static mp_status scan_layout(const mp_st_model *m, st_layout *y, mp_err *err) {
    const char *dir = mp_st_model_dir(m);
    int64_t ns = mp_st_model_n_shards(m);
    if (!(y->shard_base = mp_calloc((size_t)ns, sizeof *y->shard_base)))
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", dir);
    for (int64_t i = 0; i < ns; i++) {
        y->shard_base[i] = y->n_tensors;
        y->n_tensors += mp_st_n_tensors(mp_st_model_shard(m, i));
    }
    if (!(y->plan = mp_calloc((size_t)(y->n_tensors ? y->n_tensors : 1), sizeof *y->plan)))
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", dir);
    /* pass 1: roles, the prefix of the expert tensors, the layer count */
    size_t plen = 0;
    for (int64_t i = 0; i < ns; i++) {
        const mp_st *f = mp_st_model_shard(m, i);
        for (int64_t j = 0; j < mp_st_n_tensors(f); j++) {
            const mp_st_tensor *t = mp_st_tensor_at(f, j);
            st_plan *p = &y->plan[y->shard_base[i] + j];
            const char *rest;
            size_t pl;
            p->t = t;
            p->layer = hf_layer(t->name, &pl, &rest);
            if (p->layer < 0) continue;
            bool module;
            p->role = role_of(rest, &module);
            if (module)
                return mp_err_set(err, MP_ERR_UNSUPPORTED, "%s: tensor '%s' stores an expert as "
                                  "its own module (experts.N.*); only stacked expert tensors "
                                  "(experts.gate_up_proj, experts.down_proj, ...) can be sliced",
                                  mp_st_path(f), t->name);
            if (p->role != ROLE_EXPERTS) continue;
            if (!y->prefix) {
                if (!(y->prefix = mp_strndup(t->name, pl)))
                    return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", dir);
                plen = pl;
            } else if (pl != plen || strncmp(t->name, y->prefix, pl)) {
                return mp_err_set(err, MP_ERR_UNSUPPORTED, "%s: expert tensors under two "
                                  "prefixes ('%s' and '%.*s')", dir, y->prefix, (int)pl, t->name);
            }
        }
    }
    if (!y->prefix)
        return mp_err_set(err, MP_ERR_UNSUPPORTED, "%s: no stacked expert tensors "
                          "(layers.N.experts.*): not a MoE checkpoint, or a layout moeprune "
                          "does not know", dir);
    /* only the expert tensors' stack counts: a vision tower's layers do not */
    for (int64_t k = 0; k < y->n_tensors; k++) {
        st_plan *p = &y->plan[k];
        if (p->layer < 0 || strncmp(p->t->name, y->prefix, plen)) {
            p->role = ROLE_OTHER;
            continue;
        }
        if (p->layer >= y->n_layer) y->n_layer = p->layer + 1;
    }
    y->n_expert = mp_calloc((size_t)y->n_layer, sizeof *y->n_expert);
    y->first = mp_calloc((size_t)y->n_layer, sizeof *y->first);
    if (!y->n_expert || !y->first) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", dir);
    /* pass 2: stacked expert tensors set each layer's expert count; pass 3:
     * routers and scales of MoE layers must agree with it */
    for (int pass = 2; pass <= 3; pass++)
        for (int64_t i = 0; i < ns; i++) {
            const mp_st *f = mp_st_model_shard(m, i);
            for (int64_t j = 0; j < mp_st_n_tensors(f); j++) {
                const mp_st_tensor *t = mp_st_tensor_at(f, j);
                st_plan *p = &y->plan[y->shard_base[i] + j];
                if (p->role == ROLE_OTHER) continue;
                if ((pass == 2) != (p->role == ROLE_EXPERTS)) continue;
                int64_t *x = &y->n_expert[p->layer];
                if (pass == 3 && *x == 0) {
                    p->role = ROLE_OTHER; /* a router-like name in a dense layer: copied */
                    continue;
                }
                if (t->n_dims < 1 || t->shape[0] < 1 ||
                    (p->role == ROLE_SCALE && t->n_dims != 1))
                    return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s' has %" PRIu32
                                      " dimensions and %" PRId64 " experts on axis 0: expected "
                                      "%s with the experts first", mp_st_path(f), t->name,
                                      t->n_dims, t->n_dims ? t->shape[0] : 0,
                                      p->role == ROLE_SCALE ? "[X]" : "a tensor");
                if (*x == 0) {
                    *x = t->shape[0];
                    y->first[p->layer] = t->name;
                } else if (t->shape[0] != *x) {
                    return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s' has %" PRId64
                                      " experts on axis 0 but '%s' has %" PRId64, mp_st_path(f),
                                      t->name, t->shape[0], y->first[p->layer], *x);
                }
                if (t->dtype != MP_ST_BF16 && t->dtype != MP_ST_F16 && t->dtype != MP_ST_F32)
                    return mp_err_set(err, MP_ERR_UNSUPPORTED, "%s: tensor '%s' is %s: only "
                                      "BF16, F16 and F32 tensors can be sliced", mp_st_path(f),
                                      t->name, mp_st_dtype_name(t->dtype));
            }
        }
    return MP_OK;
}

/* ------------------------------------------------------------------------ */
/* config.json                                                              */
/* ------------------------------------------------------------------------ */

/* The key in the first sub-config that has it, else at the top level. */
static cJSON *cfg_find(cJSON *root, const char *key) {
    for (int i = 0; root && sub_configs[i]; i++) {
        cJSON *sub = cJSON_GetObjectItemCaseSensitive(root, sub_configs[i]);
        cJSON *v = cJSON_IsObject(sub) ? cJSON_GetObjectItemCaseSensitive(sub, key) : NULL;
        if (v) return v;
    }
    return root ? cJSON_GetObjectItemCaseSensitive(root, key) : NULL;
}

static bool cfg_int(cJSON *root, const char *const *keys, int64_t *out) {
    for (int i = 0; keys[i]; i++) {
        const cJSON *v = cfg_find(root, keys[i]);
        if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1e9 &&
            v->valuedouble == floor(v->valuedouble)) {
            *out = (int64_t)v->valuedouble;
            return true;
        }
    }
    return false;
}

/* "gemma4_text" and "gemma4" name the same family; so do "qwen3_moe" and "qwen3moe". */
static bool same_family(const char *model_type, const char *arch) {
    char a[64], b[64];
    size_t n = 0, k = 0;
    for (const char *p = model_type; *p && n < sizeof a - 1; p++)
        if (*p != '_' && *p != '-') a[n++] = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    for (const char *p = arch; *p && k < sizeof b - 1; p++)
        if (*p != '_' && *p != '-') b[k++] = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    a[n] = b[k] = 0;
    return k > 0 && !strncmp(a, b, k);
}

static mp_status load_config(const char *dir, cJSON **out, mp_err *err) {
    size_t n = strlen(dir) + sizeof CONFIG_NAME + 1;
    char *path = mp_malloc(n), *text = NULL;
    if (!path) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", dir);
    snprintf(path, n, "%s/%s", dir, CONFIG_NAME);
    size_t len = 0;
    struct stat st;
    mp_status s = MP_OK;
    *out = NULL;
    if (stat(path, &st) != 0) goto done; /* no config: nothing to update */
    if ((s = mp_st_read_small(path, &text, &len, err))) goto done;
    if (mp_st_json_values(text, len) > MP_ST_MAX_JSON_VALUES) {
        s = mp_err_set(err, MP_ERR_FORMAT, "%s: more than %lld JSON values", path,
                       MP_ST_MAX_JSON_VALUES);
        goto done;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        s = mp_err_set(err, MP_ERR_FORMAT, "%s: not a JSON object", path);
        goto done;
    }
    *out = root;
done:
    mp_free(text);
    mp_free(path);
    return s;
}

/* The map recorded by an earlier prune, or NULL. */
static mp_status config_dropmap(cJSON *config, const char *dir, mp_dropmap **out, mp_err *err) {
    *out = NULL;
    const cJSON *rec = config ? cJSON_GetObjectItemCaseSensitive(config, KEY_DROPMAP) : NULL;
    if (!rec) return MP_OK;
    char *txt = cJSON_PrintUnformatted(rec);
    if (!txt) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", dir);
    char name[600];
    snprintf(name, sizeof name, "%s/%s: \"%s\"", dir, CONFIG_NAME, KEY_DROPMAP);
    mp_status s = mp_dropmap_parse(out, txt, strlen(txt), name, err);
    free(txt);
    return s;
}

mp_status mp_dropmap_from_safetensors(const char *path, mp_dropmap **out, mp_err *err) {
    struct stat st;
    if (stat(path, &st) != 0)
        return mp_err_set(err, MP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return mp_err_set(err, MP_ERR_NOT_FOUND, "%s: a single .safetensors file records no drop "
                          "map (only a checkpoint folder's config.json does)", path);
    cJSON *config = NULL;
    mp_dropmap *m = NULL;
    mp_status s = load_config(path, &config, err);
    if (!s) s = config_dropmap(config, path, &m, err);
    cJSON_Delete(config);
    if (s) return s;
    if (!m)
        return mp_err_set(err, MP_ERR_NOT_FOUND, "%s: %s has no \"%s\": the checkpoint was not "
                          "pruned by moeprune", path, CONFIG_NAME, KEY_DROPMAP);
    *out = m;
    return MP_OK;
}

/* Sets every expert count key to n and records the map. Fails when the
 * config names no expert count: the output would not load. */
static int set_counts(cJSON *obj, int64_t n) {
    int updated = 0;
    for (int k = 0; cJSON_IsObject(obj) && expert_count_keys[k]; k++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, expert_count_keys[k]);
        if (!cJSON_IsNumber(v)) continue;
        cJSON_SetNumberValue(v, (double)n);
        updated++;
    }
    return updated;
}

static mp_status update_config(cJSON *config, const char *dir, int64_t n, const mp_dropmap *rec,
                               mp_err *err) {
    int updated = set_counts(config, n);
    for (int i = 0; sub_configs[i]; i++)
        updated += set_counts(cJSON_GetObjectItemCaseSensitive(config, sub_configs[i]), n);
    if (!updated)
        return mp_err_set(err, MP_ERR_NOT_FOUND, "%s/%s names no expert count (num_experts, "
                          "num_local_experts or n_routed_experts, at the top level or in "
                          "text_config)", dir, CONFIG_NAME);
    char *json = mp_dropmap_to_json(rec, false);
    cJSON *m = json ? cJSON_Parse(json) : NULL;
    mp_free(json);
    if (!m) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", dir);
    cJSON_DeleteItemFromObjectCaseSensitive(config, KEY_DROPMAP);
    if (!cJSON_AddItemToObject(config, KEY_DROPMAP, m)) {
        cJSON_Delete(m);
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", dir);
    }
    return MP_OK;
}

/* Writes a cJSON tree as pretty text plus a newline, indented with two
 * spaces as transformers writes its JSON (cJSON indents with tabs; a raw tab
 * in its output is always formatting, since tabs inside strings are escaped). */
static mp_status write_json(const cJSON *j, const char *path, mp_err *err) {
    char *txt = cJSON_Print(j);
    if (!txt) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
    mp_buf b = {0};
    bool ok = true;
    for (const char *p = txt; ok && *p; p++) {
        if (*p != '\t') ok = mp_buf_append(&b, p, 1);
        else if (p > txt && p[-1] == ':') ok = mp_buf_append(&b, " ", 1);
        else ok = mp_buf_append(&b, "  ", 2);
    }
    mp_status s = ok && mp_buf_append(&b, "\n", 1)
                      ? mp_file_write_atomic(path, b.data, b.len, false, err)
                      : mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
    mp_buf_free(&b);
    free(txt);
    return s;
}

/* ------------------------------------------------------------------------ */
/* Checking the map                                                         */
/* ------------------------------------------------------------------------ */

static mp_status check_map(const mp_dropmap *map, const st_layout *y, cJSON *config,
                           const char *dir, mp_err *err) {
    const cJSON *mt_top = config ? cJSON_GetObjectItemCaseSensitive(config, "model_type") : NULL;
    const cJSON *mt_sub = cfg_find(config, "model_type");
    bool any = cJSON_IsString(mt_top) || cJSON_IsString(mt_sub);
    bool match = (cJSON_IsString(mt_top) && same_family(mt_top->valuestring, map->arch)) ||
                 (cJSON_IsString(mt_sub) && same_family(mt_sub->valuestring, map->arch));
    if (any && !match)
        return mp_err_set(err, MP_ERR_CHECK, "drop map is for architecture '%s' but %s is '%s'",
                          map->arch, dir,
                          cJSON_IsString(mt_sub) ? mt_sub->valuestring : mt_top->valuestring);
    const char *const layer_keys[] = {"num_hidden_layers", "n_layer", "num_layers", NULL};
    int64_t n_layer = y->n_layer, used = map->n_expert_used;
    cfg_int(config, layer_keys, &n_layer);
    cfg_int(config, expert_used_keys, &used);
    if (n_layer < y->n_layer)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: config.json says %" PRId64 " layers but "
                          "tensors of layer %" PRId64 " exist", dir, n_layer, y->n_layer - 1);
    if (map->n_layer != n_layer)
        return mp_err_set(err, MP_ERR_CHECK, "drop map is for %" PRId64 " layers but %s has %"
                          PRId64, map->n_layer, dir, n_layer);
    for (int64_t l = 0; l < n_layer; l++) {
        const mp_dropmap_layer *L = mp_dropmap_find(map, l);
        int64_t x = l < y->n_layer ? y->n_expert[l] : 0;
        if (!L && x > 0)
            return mp_err_set(err, MP_ERR_CHECK, "drop map has no entry for MoE layer %" PRId64
                              " of %s", l, dir);
        if (!L) continue;
        if (x == 0)
            return mp_err_set(err, MP_ERR_CHECK, "drop map has an entry for layer %" PRId64
                              " but that layer of %s has no experts", l, dir);
        if (L->n_keep + L->n_drop != x)
            return mp_err_set(err, MP_ERR_CHECK, "drop map layer %" PRId64 " covers %" PRId64
                              " experts but %s has %" PRId64 " in that layer", l,
                              L->n_keep + L->n_drop, dir, x);
        if (L->n_keep < (used > 0 ? used : 1))
            return mp_err_set(err, MP_ERR_CHECK, "drop map layer %" PRId64 " keeps %" PRId64
                              " experts, fewer than the %" PRId64 " used per token by %s", l,
                              L->n_keep, used, dir);
    }
    for (int64_t i = 1; i < map->n_layers; i++)
        if (map->layers[i].n_keep != map->layers[0].n_keep)
            return mp_err_set(err, MP_ERR_ARG, "the drop map keeps %" PRId64 " experts in layer "
                              "%" PRId64 " but %" PRId64 " in layer %" PRId64 ": a Hugging Face "
                              "config has one expert count for every layer (plan with a uniform "
                              "budget, or prune the GGUF with --target moeprune)",
                              map->layers[0].n_keep, map->layers[0].layer, map->layers[i].n_keep,
                              map->layers[i].layer);
    return MP_OK;
}

/* The ggml type of a float safetensors tensor, for mp_check_finite. */
static int float_type(const mp_st_tensor *t) {
    return t->dtype == MP_ST_F32 ? MP_TYPE_F32 : t->dtype == MP_ST_F16 ? MP_TYPE_F16 : MP_TYPE_BF16;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                  */
/* ------------------------------------------------------------------------ */

static mp_status stream_range(mp_st_writer *w, const mp_st *f, const uint8_t *p, uint64_t len,
                              mp_err *err) {
    while (len > 0) {
        size_t k = len < ST_CHUNK ? (size_t)len : ST_CHUNK;
        mp_status s = mp_st_writer_write_data(w, p, k, err);
        if (s) return s;
        mp_st_release(f, p, k);
        p += k;
        len -= k;
    }
    return MP_OK;
}

/* Rewrites one shard at `path` with the plan's tensors sliced. */
static mp_status write_shard(const mp_st *f, const st_plan *plan, const char *path,
                             bool overwrite, uint64_t *total, mp_err *err) {
    mp_st_writer *w = NULL;
    mp_status s = mp_st_writer_open(&w, path, overwrite, err);
    for (int64_t i = 0; !s && i < mp_st_n_meta(f); i++)
        s = mp_st_writer_meta(w, mp_st_meta_key(f, i), mp_st_meta_value(f, i), err);
    for (int64_t i = 0; !s && i < mp_st_n_tensors(f); i++) {
        const mp_st_tensor *t = mp_st_tensor_at(f, i);
        int64_t shape[MP_ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (plan[i].L) shape[0] = plan[i].L->n_keep;
        s = mp_st_writer_add_tensor(w, t->name, t->dtype, t->n_dims, shape, err);
        if (!s) *total += plan[i].L ? t->nbytes / (uint64_t)t->shape[0] *
                                          (uint64_t)plan[i].L->n_keep
                                    : t->nbytes;
    }
    for (int64_t i = 0; !s && i < mp_st_n_tensors(f); i++) {
        const mp_st_tensor *t = mp_st_tensor_at(f, i);
        const mp_dropmap_layer *L = plan[i].L;
        if (!L) {
            s = stream_range(w, f, t->data, t->nbytes, err);
            continue;
        }
        uint64_t slab = t->nbytes / (uint64_t)t->shape[0];
        const uint8_t *base = t->data;
        for (int64_t e = 0, k = 0; e < t->shape[0] && !s; e++) {
            bool kept = k < L->n_keep && L->keep[k] == e;
            if (kept) k++;
            if (kept) s = stream_range(w, f, base + (uint64_t)e * slab, slab, err);
            else mp_st_release(f, base + (uint64_t)e * slab, slab);
        }
    }
    if (!s) s = mp_st_writer_finish(w, err);
    mp_st_writer_free(w);
    return s;
}

static char *path_join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = mp_malloc(n);
    if (p) snprintf(p, n, "%s/%s", a, b);
    return p;
}

static mp_status copy_file(const char *src, const char *dst, mode_t mode, mp_err *err) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return mp_err_set(err, MP_ERR_IO, "%s: cannot open: %s", src, strerror(errno));
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode & 0777);
    mp_status s = MP_OK;
    const size_t cap = (size_t)1 << 20;
    char *buf = mp_malloc(cap);
    if (out < 0) {
        s = mp_err_set(err, MP_ERR_IO, "%s: cannot create: %s", dst, strerror(errno));
        goto done;
    }
    if (!buf) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", dst);
        goto done;
    }
    for (;;) {
        ssize_t r = read(in, buf, cap);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            s = mp_err_set(err, MP_ERR_IO, "%s: read failed: %s", src, strerror(errno));
            goto done;
        }
        if (r == 0) break;
        for (ssize_t o = 0; o < r;) {
            ssize_t k = write(out, buf + o, (size_t)(r - o));
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) {
                s = mp_err_set(err, MP_ERR_IO, "%s: write failed: %s", dst, strerror(errno));
                goto done;
            }
            o += k;
        }
    }
    if (fsync(out) != 0) s = mp_err_set(err, MP_ERR_IO, "%s: fsync failed: %s", dst,
                                        strerror(errno));
done:
    mp_free(buf);
    if (out >= 0 && close(out) != 0 && !s)
        s = mp_err_set(err, MP_ERR_IO, "%s: close failed: %s", dst, strerror(errno));
    close(in);
    return s;
}

/* Copies src (following symbolic links: Hugging Face cache snapshots are
 * links into a blob store) to dst; folders recursively. */
static mp_status copy_entry(const char *src, const char *dst, int depth, mp_err *err) {
    struct stat st;
    if (stat(src, &st) != 0)
        return mp_err_set(err, MP_ERR_IO, "%s: cannot read: %s", src, strerror(errno));
    if (S_ISREG(st.st_mode)) return copy_file(src, dst, st.st_mode, err);
    if (!S_ISDIR(st.st_mode)) return MP_OK; /* sockets, fifos: nothing to carry over */
    if (depth >= COPY_DEPTH)
        return mp_err_set(err, MP_ERR_UNSUPPORTED, "%s: folders nested more than %d deep",
                          src, COPY_DEPTH);
    if (mkdir(dst, 0755) != 0)
        return mp_err_set(err, MP_ERR_IO, "%s: cannot create: %s", dst, strerror(errno));
    DIR *d = opendir(src);
    if (!d) return mp_err_set(err, MP_ERR_IO, "%s: cannot list: %s", src, strerror(errno));
    mp_status s = MP_OK;
    for (struct dirent *e; !s && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *a = path_join(src, e->d_name), *b = path_join(dst, e->d_name);
        s = a && b ? copy_entry(a, b, depth + 1, err)
                   : mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", src);
        mp_free(a);
        mp_free(b);
    }
    closedir(d);
    return s;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* Removes a tree we created (or moved aside), not following links. */
static void rm_tree(const char *path) {
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Everything in the input folder that is not a shard, the index or the config. */
static mp_status copy_others(const mp_st_model *m, bool has_config, const char *tmp,
                             mp_err *err) {
    const char *dir = mp_st_model_dir(m);
    DIR *d = opendir(dir);
    if (!d) return mp_err_set(err, MP_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
    mp_status s = MP_OK;
    for (struct dirent *e; !s && (e = readdir(d));) {
        const char *n = e->d_name;
        bool skip = !strcmp(n, ".") || !strcmp(n, "..") ||
                    (mp_st_model_indexed(m) && !strcmp(n, INDEX_NAME)) ||
                    (has_config && !strcmp(n, CONFIG_NAME));
        for (int64_t i = 0; !skip && i < mp_st_model_n_shards(m); i++)
            skip = !strcmp(n, mp_st_model_shard_name(m, i));
        if (skip) continue;
        char *a = path_join(dir, n), *b = path_join(tmp, n);
        s = a && b ? copy_entry(a, b, 1, err)
                   : mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", dir);
        mp_free(a);
        mp_free(b);
    }
    closedir(d);
    return s;
}

/* The index with the same weight_map; metadata.total_size (the sum of the
 * tensors' bytes) updated when present. */
static mp_status write_index(const mp_st_model *m, uint64_t total, const char *tmp,
                             mp_err *err) {
    char *src = path_join(mp_st_model_dir(m), INDEX_NAME), *dst = path_join(tmp, INDEX_NAME);
    char *text = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    mp_status s = MP_OK;
    if (!src || !dst) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", tmp);
        goto done;
    }
    if ((s = mp_st_read_small(src, &text, &len, err))) goto done;
    if (!(root = cJSON_ParseWithLength(text, len))) {
        s = mp_err_set(err, MP_ERR_FORMAT, "%s: not valid JSON", src);
        goto done;
    }
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
    if (cJSON_IsObject(meta) && cJSON_GetObjectItemCaseSensitive(meta, "total_size")) {
        char num[24];
        snprintf(num, sizeof num, "%" PRIu64, total);
        cJSON *v = cJSON_CreateRaw(num);
        if (!v || !cJSON_ReplaceItemInObjectCaseSensitive(meta, "total_size", v)) {
            cJSON_Delete(v);
            s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", dst);
            goto done;
        }
    }
    s = write_json(root, dst, err);
done:
    cJSON_Delete(root);
    mp_free(text);
    mp_free(src);
    mp_free(dst);
    return s;
}

/* Re-opens the new checkpoint: it must load and hold the same tensors, with
 * the sliced ones cut to n_keep experts. */
static mp_status verify(const mp_st_model *in, const st_layout *y, const char *tmp,
                        const char *out, mp_err *err) {
    mp_st_model *m = NULL;
    mp_err cerr = {0};
    if (mp_st_model_open(&m, tmp, &cerr))
        return mp_err_set(err, cerr.status == MP_ERR_NOMEM ? MP_ERR_NOMEM : MP_ERR_CHECK,
                          "%s: the new checkpoint does not read back: %s", out, cerr.msg);
    mp_status s = MP_OK;
    if (mp_st_model_n_tensors(m) != mp_st_model_n_tensors(in) ||
        mp_st_model_n_shards(m) != mp_st_model_n_shards(in))
        s = mp_err_set(err, MP_ERR_CHECK, "%s: the new checkpoint has %" PRId64 " tensors in %"
                       PRId64 " shards, expected %" PRId64 " in %" PRId64, out,
                       mp_st_model_n_tensors(m), mp_st_model_n_shards(m),
                       mp_st_model_n_tensors(in), mp_st_model_n_shards(in));
    for (int64_t i = 0; !s && i < mp_st_model_n_shards(in); i++) {
        const mp_st *f = mp_st_model_shard(in, i);
        for (int64_t j = 0; !s && j < mp_st_n_tensors(f); j++) {
            const mp_st_tensor *a = mp_st_tensor_at(f, j);
            const mp_dropmap_layer *L = y->plan[y->shard_base[i] + j].L;
            int64_t shard = -1;
            const mp_st_tensor *b = mp_st_model_find(m, a->name, &shard);
            bool ok = b && shard == i && b->dtype == a->dtype && b->n_dims == a->n_dims;
            for (uint32_t d = 0; ok && d < a->n_dims; d++)
                ok = b->shape[d] == (d == 0 && L ? L->n_keep : a->shape[d]);
            if (!ok)
                s = mp_err_set(err, MP_ERR_CHECK, "%s: tensor '%s' did not come out as "
                               "planned", out, a->name);
        }
    }
    mp_st_model_free(m);
    return s;
}

/* Where the output folder goes: refuses an output that is, holds or lies
 * inside the input folder; *parent gets the resolved parent folder. */
static mp_status resolve_target(const char *in_dir, const char *out, char **parent,
                                mp_err *err) {
    char rin[PATH_MAX], rpar[PATH_MAX];
    char *dcopy = mp_strdup(out), *bcopy = mp_strdup(out);
    mp_status s = MP_OK;
    if (!dcopy || !bcopy) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", out);
        goto done;
    }
    const char *base = basename(bcopy);
    if (!strcmp(base, ".") || !strcmp(base, "..") || !strcmp(base, "/")) {
        s = mp_err_set(err, MP_ERR_ARG, "%s: name the output folder itself", out);
        goto done;
    }
    if (!realpath(in_dir, rin) || !realpath(dirname(dcopy), rpar)) {
        s = mp_err_set(err, MP_ERR_IO, "%s: cannot resolve the output's folder: %s", out,
                       strerror(errno));
        goto done;
    }
    char full[2 * PATH_MAX + 2];
    if (!realpath(out, full)) /* an existing output (or link) resolves as itself */
        snprintf(full, sizeof full, "%s/%s", strcmp(rpar, "/") ? rpar : "", base);
    size_t a = strlen(full), b = strlen(rin);
    if (!strcmp(full, rin) || (b > a && !strncmp(rin, full, a) && rin[a] == '/') ||
        (a > b && !strncmp(full, rin, b) && full[b] == '/')) {
        s = mp_err_set(err, MP_ERR_ARG, "%s: the output folder would replace, hold or lie inside "
                       "the input %s", out, in_dir);
        goto done;
    }
    if (!(*parent = mp_strdup(rpar))) s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", out);
done:
    mp_free(dcopy);
    mp_free(bcopy);
    return s;
}

/* Moves the finished folder into place, replacing (with overwrite) what was
 * there only once the new one is complete. */
static mp_status install(const char *tmp, const char *out, const char *parent, bool exists,
                         mp_err *err) {
    if (!exists) {
        if (rename(tmp, out) != 0)
            return mp_err_set(err, MP_ERR_IO, "%s: rename failed: %s", out, strerror(errno));
        return MP_OK;
    }
    char old[PATH_MAX];
    snprintf(old, sizeof old, "%s/.moeprune-old.XXXXXX", parent);
    if (!mkdtemp(old) || rmdir(old) != 0 || rename(out, old) != 0)
        return mp_err_set(err, MP_ERR_IO, "%s: cannot move the old output aside: %s", out,
                          strerror(errno));
    if (rename(tmp, out) != 0) {
        int e = errno;
        rename(old, out);
        return mp_err_set(err, MP_ERR_IO, "%s: rename failed: %s", out, strerror(e));
    }
    rm_tree(old);
    return MP_OK;
}

static mp_status prune_folder(const mp_st_model *m, const st_layout *y, cJSON *config,
                              const char *out, bool overwrite, mp_err *err) {
    struct stat st;
    bool exists = lstat(out, &st) == 0;
    if (exists && !overwrite)
        return mp_err_set(err, MP_ERR_ARG, "%s: exists (use --force to replace it)", out);
    /* --force replaces a file or an earlier checkpoint, never any other folder */
    if (exists && S_ISDIR(st.st_mode)) {
        char *a = path_join(out, INDEX_NAME), *b = path_join(out, "model.safetensors");
        bool ckpt = a && b && (access(a, F_OK) == 0 || access(b, F_OK) == 0);
        mp_free(a);
        mp_free(b);
        if (!ckpt)
            return mp_err_set(err, MP_ERR_ARG, "%s: exists and is not a safetensors checkpoint "
                              "folder: refusing to replace it", out);
    }
    char *parent = NULL, *tmp = NULL;
    mp_status s = resolve_target(mp_st_model_dir(m), out, &parent, err);
    if (s) return s;
    char *bcopy = mp_strdup(out);
    size_t n = strlen(parent) + strlen(out) + 32;
    if (!bcopy || !(tmp = mp_malloc(n))) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", out);
        goto done;
    }
    snprintf(tmp, n, "%s/.%s.XXXXXX", parent, basename(bcopy));
    if (!mkdtemp(tmp)) {
        s = mp_err_set(err, MP_ERR_IO, "%s: cannot create a temporary folder in '%s': %s", out,
                       parent, strerror(errno));
        mp_free(tmp);
        tmp = NULL;
        goto done;
    }
    chmod(tmp, 0755);
    uint64_t total = 0;
    for (int64_t i = 0; !s && i < mp_st_model_n_shards(m); i++) {
        char *p = path_join(tmp, mp_st_model_shard_name(m, i));
        s = p ? write_shard(mp_st_model_shard(m, i), y->plan + y->shard_base[i], p, false, &total,
                            err)
              : mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", out);
        mp_free(p);
    }
    if (!s && mp_st_model_indexed(m)) s = write_index(m, total, tmp, err);
    if (!s && config) {
        char *p = path_join(tmp, CONFIG_NAME);
        s = p ? write_json(config, p, err) : mp_err_set(err, MP_ERR_NOMEM, "out of memory");
        mp_free(p);
    }
    if (!s) s = copy_others(m, config != NULL, tmp, err);
    if (!s) s = verify(m, y, tmp, out, err);
    if (!s) s = install(tmp, out, parent, exists, err);
    if (!s) {
        mp_free(tmp);
        tmp = NULL;
    }
done:
    if (tmp) {
        rm_tree(tmp);
        mp_free(tmp);
    }
    mp_free(bcopy);
    mp_free(parent);
    return s;
}

mp_status mp_prune_safetensors(const char *in, const mp_dropmap *map, const char *out,
                               const mp_prune_params *p, mp_err *err) {
    mp_prune_params defaults = {0};
    if (!p) p = &defaults;
    if (mp_file_same(in, out))
        return mp_err_set(err, MP_ERR_ARG, "%s: the output would replace the input", out);
    if (p->mode != MP_PRUNE_REMOVE)
        return mp_err_set(err, MP_ERR_UNSUPPORTED, "%s: --mode zero is for GGUF files only (no "
                          "engine reads an expert mask from a Hugging Face checkpoint)", in);
    if (p->target == MP_TARGET_MOEPRUNE)
        return mp_err_set(err, MP_ERR_UNSUPPORTED, "%s: --target moeprune is for GGUF files "
                          "only (a Hugging Face config has one expert count)", in);
    mp_st_model *m = NULL;
    cJSON *config = NULL;
    mp_dropmap *base = NULL, *composed = NULL;
    st_layout y = {0};
    mp_status s;
    if ((s = mp_st_model_open(&m, in, err))) goto done;
    const char *dir = mp_st_model_dir(m);
    if (mp_st_model_is_dir(m) && (s = load_config(dir, &config, err))) goto done;
    if ((s = scan_layout(m, &y, err)) || (s = check_map(map, &y, config, dir, err))) goto done;
    for (int64_t i = 0; i < mp_st_model_n_shards(m) && !s; i++) {
        const mp_st *f = mp_st_model_shard(m, i);
        for (int64_t j = 0; j < mp_st_n_tensors(f) && !s; j++) {
            st_plan *pl = &y.plan[y.shard_base[i] + j];
            if (pl->role == ROLE_OTHER) continue;
            pl->L = mp_dropmap_find(map, pl->layer);
            if (pl->role == ROLE_ROUTER) {
                const mp_st_tensor *t = mp_st_tensor_at(f, j);
                s = mp_check_finite(float_type(t), t->data, mp_st_tensor_nelements(t),
                                    mp_st_path(f), t->name, err);
            }
        }
    }
    if (s) goto done;
    if (!mp_st_model_is_dir(m)) {
        s = write_shard(mp_st_model_shard(m, 0), y.plan, out, p->overwrite, &(uint64_t){0}, err);
        goto done;
    }
    const mp_dropmap *record = map;
    if ((s = config_dropmap(config, dir, &base, err))) goto done;
    if (base) {
        if ((s = mp_dropmap_compose(base, map, &composed, err))) goto done;
        record = composed;
    }
    if (config && (s = update_config(config, dir, map->layers[0].n_keep, record, err)))
        goto done;
    s = prune_folder(m, &y, config, out, p->overwrite, err);
done:
    layout_free(&y);
    mp_dropmap_free(base);
    mp_dropmap_free(composed);
    cJSON_Delete(config);
    mp_st_model_free(m);
    return s;
}

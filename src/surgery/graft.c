/* graft.c — one GGUF from the experts of several models of the same base:
 * "prune, fine-tune, merge" (four 32-expert fine-tunes back into 128, or 256
 * from two 128s).
 *
 * In GGUF the expert axis is the last, slowest one (router {n_embd, X},
 * expert stacks {.., .., X}, per-expert scales {X}: gemma4-gguf-spec.md
 * section 5), so concatenating experts is concatenating the inputs' whole
 * tensor data in input order: a byte copy in any tensor type. Non-expert
 * tensors come from the first input, or with `average` are the element-wise
 * mean of all inputs (sum in double, rounded once to the tensor's type;
 * F32/F16/BF16 only: quantized blocks cannot be averaged without
 * requantizing). Every input is checked against the first before the output
 * is opened: architecture, layer count, the same tensors with the same types
 * and shapes (expert tensors may differ only in their expert count).
 *
 * Metadata: the first input's, with <arch>.expert_count set to the per-layer
 * sum (the largest sum plus moeprune.expert_count_per_layer when layers
 * differ, as prune.c writes), <arch>.expert_used_count the largest of the
 * inputs', the inputs' own moeprune.* keys dropped (they describe the
 * inputs, not the graft), and the provenance in moeprune.graft. Output
 * streams through the GGUF writer (temp file, re-read, rename). */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>

#include "arch/arch.h"
#include "util/util.h"

#define KEY_GRAFT     "moeprune.graft"
#define KEY_DROPMAP   "moeprune.dropmap"
#define KEY_MODE      "moeprune.prune_mode"
#define KEY_PER_LAYER "moeprune.expert_count_per_layer"
#define GRAFT_FORMAT  "moeprune.graft/1"
/* Elements averaged per step (the scratch is this many doubles). */
#define MEAN_CHUNK 65536

typedef struct graft_in {
    const char *path;
    mp_gguf *g;
    mp_moe_info *moe;
    char *arch;            /* general.architecture ("" when absent) */
    int64_t n_expert_used; /* <arch>.expert_used_count (0 when absent) */
    mp_dropmap *map;       /* the drop map the input records, or NULL */
} graft_in;

/* The inputs' copies of one output tensor. */
typedef struct graft_tensor {
    const mp_gguf_tensor **src; /* [n_in] */
    int64_t layer;              /* expert tensors: their layer; -1 otherwise */
} graft_tensor;

typedef struct graft {
    graft_in *in;
    int64_t n_in;
    int64_t n_layer;
    int64_t *sum;          /* [n_layer] experts per layer in the output */
    graft_tensor *tensors; /* [n_tensors of the first input] */
    const mp_gguf_tensor **srcs;
} graft;

/* Is t the router or an expert tensor of its layer? Returns the layer or -1. */
static int64_t expert_layer(const mp_moe_info *moe, const mp_gguf_tensor *t) {
    int64_t l = mp_tensor_layer(t->name, NULL);
    if (l < 0 || l >= moe->n_layer) return -1;
    const mp_moe_layer *L = &moe->layers[l];
    if (L->router == t) return l;
    for (int j = 0; j < L->n_exp_tensors; j++)
        if (L->exp_tensors[j] == t) return l;
    return -1;
}

static void shape_str(const mp_gguf_tensor *t, char *buf, size_t n) {
    int o = snprintf(buf, n, "%s {", mp_type_name(t->type));
    for (uint32_t d = 0; d < t->n_dims && o > 0 && (size_t)o < n; d++)
        o += snprintf(buf + o, n - (size_t)o, "%s%" PRId64, d ? ", " : "", t->ne[d]);
    if (o > 0 && (size_t)o < n) snprintf(buf + o, n - (size_t)o, "}");
}

static mp_status open_inputs(graft *gr, const char *const *paths, mp_err *err) {
    for (int64_t k = 0; k < gr->n_in; k++) {
        graft_in *in = &gr->in[k];
        in->path = paths[k];
        mp_status s;
        if ((s = mp_gguf_open(&in->g, paths[k], err)) || (s = mp_moe_scan(in->g, &in->moe, err)))
            return s;
        /* read here rather than taken from the scan, so that running out of
         * memory is an error and not an absent key */
        s = mp_gguf_key_strdup(in->g, "general.architecture", &in->arch, err);
        if (s == MP_ERR_NOT_FOUND && !(in->arch = mp_strdup("")))
            s = MP_ERR_NOMEM;
        else if (s == MP_ERR_NOT_FOUND)
            s = MP_OK;
        if (s) return s == MP_ERR_NOMEM ? mp_err_set(err, s, "%s: out of memory", paths[k]) : s;
        char key[96];
        uint64_t used = 0;
        snprintf(key, sizeof key, "%s.expert_used_count", in->arch);
        if (mp_gguf_key_uint(in->g, key, &used, NULL) == MP_OK && used <= INT32_MAX)
            in->n_expert_used = (int64_t)used;
        int64_t mi = mp_gguf_find_key(in->g, KEY_MODE);
        const char *mode = "";
        size_t mode_n = 0;
        if (mi >= 0) mp_gguf_get_str(in->g, mi, 0, &mode, &mode_n, NULL);
        if (mode_n == 4 && !memcmp(mode, "zero", 4))
            return mp_err_set(err, MP_ERR_UNSUPPORTED,
                              "%s: was pruned with --mode zero: its "
                              "zeroed experts would be grafted as live ones (graft a --mode "
                              "remove prune instead)",
                              paths[k]);
        if (mp_gguf_find_key(in->g, KEY_DROPMAP) >= 0 &&
            (s = mp_dropmap_from_gguf(in->g, &in->map, err)))
            return s;
        if (in->moe->n_moe_layers == 0)
            return mp_err_set(err, MP_ERR_CHECK, "%s: has no MoE layers: nothing to graft",
                              paths[k]);
    }
    return MP_OK;
}

/* Matches every tensor of every input to the first input's. */
static mp_status match_tensors(graft *gr, bool average, mp_err *err) {
    const graft_in *a = &gr->in[0];
    int64_t nt = mp_gguf_n_tensors(a->g);
    for (int64_t k = 1; k < gr->n_in; k++) {
        const graft_in *b = &gr->in[k];
        if (strcmp(a->arch, b->arch))
            return mp_err_set(err, MP_ERR_CHECK,
                              "%s is '%s' but %s is '%s': grafting needs "
                              "models of one architecture",
                              a->path, a->arch, b->path, b->arch);
        if (a->moe->n_layer != b->moe->n_layer)
            return mp_err_set(err, MP_ERR_CHECK, "%s has %" PRId64 " layers but %s has %" PRId64,
                              a->path, a->moe->n_layer, b->path, b->moe->n_layer);
        if (mp_gguf_n_tensors(b->g) != nt)
            return mp_err_set(err, MP_ERR_CHECK, "%s has %" PRId64 " tensors but %s has %" PRId64,
                              a->path, nt, b->path, mp_gguf_n_tensors(b->g));
    }
    for (int64_t i = 0; i < nt; i++) {
        graft_tensor *gt = &gr->tensors[i];
        gt->src = gr->srcs + i * gr->n_in;
        gt->src[0] = mp_gguf_tensor_at(a->g, i);
        gt->layer = expert_layer(a->moe, gt->src[0]);
        const mp_gguf_tensor *t = gt->src[0];
        for (int64_t k = 1; k < gr->n_in; k++) {
            const graft_in *b = &gr->in[k];
            const mp_gguf_tensor *u = mp_gguf_find_tensor(b->g, t->name);
            if (!u)
                return mp_err_set(err, MP_ERR_CHECK, "%s has tensor '%s' but %s does not", a->path,
                                  t->name, b->path);
            bool exp_b = expert_layer(b->moe, u) >= 0;
            if ((gt->layer >= 0) != exp_b)
                return mp_err_set(err, MP_ERR_CHECK,
                                  "tensor '%s' holds experts in %s but not in "
                                  "%s",
                                  t->name, exp_b ? b->path : a->path, exp_b ? a->path : b->path);
            bool same = u->type == t->type && u->n_dims == t->n_dims;
            for (uint32_t d = 0; same && d < t->n_dims; d++)
                same = u->ne[d] == t->ne[d] || (gt->layer >= 0 && d == t->n_dims - 1);
            if (!same) {
                char sa[160], sb[160];
                shape_str(t, sa, sizeof sa);
                shape_str(u, sb, sizeof sb);
                return mp_err_set(err, MP_ERR_CHECK, "tensor '%s' is %s in %s but %s in %s%s",
                                  t->name, sa, a->path, sb, b->path,
                                  gt->layer >= 0 ? " (expert tensors may differ only in their "
                                                   "expert count)"
                                                 : "");
            }
            gt->src[k] = u;
        }
        if (average && gt->layer < 0 && t->type != MP_TYPE_F32 && t->type != MP_TYPE_F16 &&
            t->type != MP_TYPE_BF16)
            return mp_err_set(err, MP_ERR_UNSUPPORTED,
                              "--average: tensor '%s' is %s; only F32, "
                              "F16 and BF16 tensors can be averaged (quantized blocks would "
                              "need requantizing): graft without --average, or graft "
                              "unquantized models and quantize afterwards",
                              t->name, mp_type_name(t->type));
    }
    /* expert counts per layer: the sum over inputs */
    gr->n_layer = a->moe->n_layer;
    if (!(gr->sum = mp_calloc((size_t)(gr->n_layer ? gr->n_layer : 1), sizeof *gr->sum)))
        return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    for (int64_t l = 0; l < gr->n_layer; l++)
        for (int64_t k = 0; k < gr->n_in; k++) {
            gr->sum[l] += gr->in[k].moe->layers[l].n_expert;
            if (gr->sum[l] > INT32_MAX)
                return mp_err_set(err, MP_ERR_ARG, "layer %" PRId64 ": too many experts", l);
        }
    return MP_OK;
}

/* moeprune.graft: the inputs and where their experts went. */
static char *provenance(const graft *gr, bool average) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", GRAFT_FORMAT);
    cJSON_AddBoolToObject(root, "average", average);
    cJSON *inputs = cJSON_AddArrayToObject(root, "inputs");
    int64_t *first = mp_calloc((size_t)(gr->n_layer ? gr->n_layer : 1), sizeof *first);
    for (int64_t k = 0; first && k < gr->n_in; k++) {
        const graft_in *in = &gr->in[k];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(inputs, o);
        char *bcopy = mp_strdup(in->path), *name = NULL;
        cJSON_AddStringToObject(o, "file", bcopy ? basename(bcopy) : in->path);
        mp_free(bcopy);
        if (mp_gguf_key_strdup(in->g, "general.name", &name, NULL) == MP_OK)
            cJSON_AddStringToObject(o, "name", name);
        mp_free(name);
        cJSON *layers = cJSON_AddArrayToObject(o, "layers");
        for (int64_t l = 0; l < gr->n_layer; l++) {
            int64_t x = in->moe->layers[l].n_expert;
            if (x == 0) continue;
            cJSON *lo = cJSON_CreateObject();
            cJSON_AddItemToArray(layers, lo);
            cJSON_AddNumberToObject(lo, "layer", (double)l);
            cJSON_AddNumberToObject(lo, "first", (double)first[l]);
            cJSON_AddNumberToObject(lo, "count", (double)x);
            const mp_dropmap_layer *L = in->map ? mp_dropmap_find(in->map, l) : NULL;
            if (L && L->n_keep == x) {
                cJSON *ids = cJSON_AddArrayToObject(lo, "base_ids");
                for (int64_t e = 0; e < L->n_keep; e++)
                    cJSON_AddItemToArray(ids, cJSON_CreateNumber(L->keep[e]));
            }
            first[l] += x;
        }
    }
    char *txt = first ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    mp_free(first);
    if (!txt) return NULL;
    char *r = mp_strdup(txt); /* callers free with mp_free, whatever cJSON uses */
    free(txt);
    return r;
}

static mp_status write_metadata(mp_gguf_writer *w, const graft *gr, bool average, mp_err *err) {
    const graft_in *a = &gr->in[0];
    char k_count[96], k_used[96];
    snprintf(k_count, sizeof k_count, "%s.expert_count", a->arch);
    snprintf(k_used, sizeof k_used, "%s.expert_used_count", a->arch);
    int64_t max_sum = 0, used = 0, first = -1;
    bool uniform = true;
    for (int64_t l = 0; l < gr->n_layer; l++) {
        if (gr->sum[l] == 0) continue;
        if (first < 0) first = gr->sum[l];
        uniform = uniform && gr->sum[l] == first;
        if (gr->sum[l] > max_sum) max_sum = gr->sum[l];
    }
    for (int64_t k = 0; k < gr->n_in; k++)
        if (gr->in[k].n_expert_used > used) used = gr->in[k].n_expert_used;
    mp_status s = MP_OK;
    bool have_count = false;
    for (int64_t i = 0; i < mp_gguf_n_kv(a->g) && !s; i++) {
        const char *key = mp_gguf_key(a->g, i);
        if (!strncmp(key, "moeprune.", 9)) continue; /* describes the input, not the graft */
        if (!strcmp(key, k_count)) {
            have_count = true;
            s = mp_gguf_writer_kv_u32(w, key, (uint32_t)max_sum, err);
        } else if (!strcmp(key, k_used)) {
            s = mp_gguf_writer_kv_u32(w, key, (uint32_t)used, err);
        } else {
            s = mp_gguf_writer_kv_copy(w, a->g, i, err);
        }
    }
    if (!s && !have_count) s = mp_gguf_writer_kv_u32(w, k_count, (uint32_t)max_sum, err);
    if (!s && !uniform) {
        uint8_t *le = mp_malloc((size_t)gr->n_layer * 4);
        if (!le) return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
        for (int64_t l = 0; l < gr->n_layer; l++) mp_store_u32(le + 4 * l, (uint32_t)gr->sum[l]);
        s = mp_gguf_writer_kv_arr(w, KEY_PER_LAYER, MP_GGUF_UINT32, le, (uint64_t)gr->n_layer, err);
        mp_free(le);
    }
    if (s) return s;
    char *json = provenance(gr, average);
    if (!json) return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    s = mp_gguf_writer_kv_str(w, KEY_GRAFT, json, err);
    mp_free(json);
    return s;
}

static double load_elem(int type, const uint8_t *p) {
    return type == MP_TYPE_F32   ? (double)mp_load_f32(p)
           : type == MP_TYPE_F16 ? (double)mp_f16_to_f32(mp_load_u16(p))
                                 : (double)mp_bf16_to_f32(mp_load_u16(p));
}

/* The element-wise mean of the inputs' copies of a float tensor. */
static mp_status write_mean(mp_gguf_writer *w, const graft *gr, const graft_tensor *gt, double *acc,
                            uint8_t *out, mp_err *err) {
    const mp_gguf_tensor *t = gt->src[0];
    size_t es = t->type == MP_TYPE_F32 ? 4 : 2;
    int64_t n = mp_tensor_nelements(t);
    for (int64_t i0 = 0; i0 < n; i0 += MEAN_CHUNK) {
        int64_t m = n - i0 < MEAN_CHUNK ? n - i0 : MEAN_CHUNK;
        for (int64_t j = 0; j < m; j++) acc[j] = 0;
        for (int64_t k = 0; k < gr->n_in; k++) {
            const uint8_t *p = (const uint8_t *)gt->src[k]->data + (size_t)i0 * es;
            for (int64_t j = 0; j < m; j++) acc[j] += load_elem(t->type, p + (size_t)j * es);
            mp_gguf_release(gr->in[k].g, p, (size_t)m * es);
        }
        for (int64_t j = 0; j < m; j++) {
            float v = (float)(acc[j] / (double)gr->n_in);
            uint8_t *q = out + (size_t)j * es;
            if (t->type == MP_TYPE_F32) {
                uint32_t u;
                memcpy(&u, &v, 4);
                mp_store_u32(q, u);
            } else {
                mp_store_u16(q, t->type == MP_TYPE_F16 ? mp_f32_to_f16(v) : mp_f32_to_bf16(v));
            }
        }
        mp_status s = mp_gguf_writer_write_data(w, out, (size_t)m * es, err);
        if (s) return s;
    }
    return MP_OK;
}

static mp_status write_graft(const graft *gr, const char *out, const mp_graft_params *p,
                             mp_err *err) {
    const graft_in *a = &gr->in[0];
    int64_t nt = mp_gguf_n_tensors(a->g);
    mp_gguf_writer *w = NULL;
    double *acc = NULL;
    uint8_t *buf = NULL;
    mp_status s;
    if (p->average &&
        (!(acc = mp_malloc(MEAN_CHUNK * sizeof *acc)) || !(buf = mp_malloc(MEAN_CHUNK * 4)))) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", out);
        goto done;
    }
    if ((s = mp_gguf_writer_open(&w, out, p->overwrite, err)) ||
        (s = write_metadata(w, gr, p->average, err)))
        goto done;
    for (int64_t i = 0; i < nt && !s; i++) {
        const graft_tensor *gt = &gr->tensors[i];
        const mp_gguf_tensor *t = gt->src[0];
        int64_t ne[MP_GGUF_MAX_DIMS];
        memcpy(ne, t->ne, sizeof ne);
        if (gt->layer >= 0) ne[t->n_dims - 1] = gr->sum[gt->layer];
        s = mp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, ne, err);
    }
    for (int64_t i = 0; i < nt && !s; i++) {
        const graft_tensor *gt = &gr->tensors[i];
        if (gt->layer >= 0) {
            for (int64_t k = 0; k < gr->n_in && !s; k++)
                s = mp_gguf_writer_write_mapped(w, gr->in[k].g, gt->src[k]->data,
                                                gt->src[k]->nbytes, err);
        } else if (p->average) {
            s = write_mean(w, gr, gt, acc, buf, err);
        } else {
            s = mp_gguf_writer_write_mapped(w, a->g, gt->src[0]->data, gt->src[0]->nbytes, err);
        }
    }
    if (!s) s = mp_gguf_writer_finish(w, err);
done:
    mp_gguf_writer_free(w);
    mp_free(acc);
    mp_free(buf);
    return s;
}

mp_status mp_graft_gguf(const char *const *inputs, int64_t n_inputs, const char *out,
                        const mp_graft_params *p, mp_err *err) {
    mp_graft_params defaults = {0};
    if (!p) p = &defaults;
    if (n_inputs < 2)
        return mp_err_set(err, MP_ERR_ARG, "graft: needs at least two input models, got %" PRId64,
                          n_inputs);
    for (int64_t k = 0; k < n_inputs; k++)
        if (mp_file_same(inputs[k], out))
            return mp_err_set(err, MP_ERR_ARG, "%s: the output would replace an input", out);
    graft gr = {.n_in = n_inputs};
    mp_status s = MP_OK;
    gr.in = mp_calloc((size_t)n_inputs, sizeof *gr.in);
    if (!gr.in) return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    if ((s = open_inputs(&gr, inputs, err))) goto done;
    int64_t nt = mp_gguf_n_tensors(gr.in[0].g);
    size_t n_srcs;
    if (!mp_mul_size((size_t)(nt ? nt : 1), (size_t)n_inputs, &n_srcs) ||
        !(gr.srcs = mp_calloc(n_srcs, sizeof *gr.srcs)) ||
        !(gr.tensors = mp_calloc((size_t)(nt ? nt : 1), sizeof *gr.tensors))) {
        s = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((s = match_tensors(&gr, p->average, err))) goto done;
    s = write_graft(&gr, out, p, err);
done:
    for (int64_t k = 0; k < n_inputs; k++) {
        mp_dropmap_free(gr.in[k].map);
        mp_free(gr.in[k].arch);
        mp_moe_info_free(gr.in[k].moe);
        mp_gguf_free(gr.in[k].g);
    }
    mp_free(gr.in);
    mp_free(gr.srcs);
    mp_free(gr.tensors);
    mp_free(gr.sum);
    return s;
}

/* prune.c — expert surgery on GGUF files: remove (or zero) the experts a drop
 * map drops, losslessly.
 *
 * Every tensor with an expert axis has it last (router {n_embd, X}, fused or
 * split gate/up {n_embd, F, X}, down {F, n_embd, X}, per-expert scales {X}),
 * and quantization blocks never cross rows, so an expert's slice of any
 * tensor, in any type, is one contiguous slab of nbytes / X bytes: removal is
 * a byte copy of the kept slabs, no requantization, no dequantized copy
 * (gemma4-gguf-spec.md section 5). Output streams through the GGUF writer
 * (temp file, re-read, rename) and the input's pages are released as they are
 * copied, so memory use does not grow with the model.
 *
 * Metadata written: <arch>.expert_count (the kept count; for a non-uniform
 * map the largest, with the per-layer counts in moeprune.expert_count_per_layer,
 * which only moeprune's engine reads), <arch>.expert_used_count (lowered if a
 * layer keeps fewer), moeprune.prune_mode and moeprune.dropmap (the map in
 * terms of the original base model's expert ids, composed when the input was
 * itself pruned). Not here: safetensors surgery, grafting. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "arch/arch.h"
#include "quant/quant.h"
#include "util/util.h"

#define KEY_DROPMAP   "moeprune.dropmap"
#define KEY_MODE      "moeprune.prune_mode"
#define KEY_PER_LAYER "moeprune.expert_count_per_layer"

static const char *const mode_names[MP_PRUNE_MODE_COUNT] = {"remove", "zero"};

/* What happens to one tensor. */
typedef struct plan_tensor {
    const mp_gguf_tensor *t;
    const mp_dropmap_layer *L; /* non-NULL: sliced along its last axis */
    int64_t n_expert;          /* experts on that axis in the input */
} plan_tensor;

static mp_status write_zeros(mp_gguf_writer *w, uint64_t len, mp_err *err) {
    static const uint8_t zeros[65536];
    while (len > 0) {
        size_t k = len < sizeof zeros ? (size_t)len : sizeof zeros;
        mp_status s = mp_gguf_writer_write_data(w, zeros, k, err);
        if (s) return s;
        len -= k;
    }
    return MP_OK;
}

static mp_status write_tensor(mp_gguf_writer *w, const mp_gguf *g, const plan_tensor *pt,
                              mp_prune_mode mode, mp_err *err) {
    const mp_gguf_tensor *t = pt->t;
    if (!pt->L) return mp_gguf_writer_write_mapped(w, g, t->data, t->nbytes, err);
    uint64_t slab = t->nbytes / (uint64_t)pt->n_expert;
    const uint8_t *base = t->data;
    const mp_dropmap_layer *L = pt->L;
    mp_status s = MP_OK;
    for (int64_t e = 0, k = 0; e < pt->n_expert && !s; e++) {
        bool kept = k < L->n_keep && L->keep[k] == e;
        if (kept) k++;
        if (kept)
            s = mp_gguf_writer_write_mapped(w, g, base + (uint64_t)e * slab, slab, err);
        else if (mode == MP_PRUNE_ZERO)
            s = write_zeros(w, slab, err);
        else
            mp_gguf_release(g, base + (uint64_t)e * slab, slab);
    }
    return s;
}

mp_status mp_dropmap_from_gguf(const mp_gguf *g, mp_dropmap **out, mp_err *err) {
    int64_t i = mp_gguf_find_key(g, KEY_DROPMAP);
    if (i < 0)
        return mp_err_set(err, MP_ERR_NOT_FOUND,
                          "%s: no %s key: the file was not pruned by "
                          "moeprune",
                          mp_gguf_path(g), KEY_DROPMAP);
    const char *s;
    size_t n;
    mp_status st = mp_gguf_get_str(g, i, 0, &s, &n, err);
    if (st) return st;
    char name[600];
    snprintf(name, sizeof name, "%s: metadata %s", mp_gguf_path(g), KEY_DROPMAP);
    return mp_dropmap_parse(out, s, n, name, err);
}

/* Declares the KV pairs of the output: the input's, with the expert counts
 * rewritten and moeprune's own keys replaced. */
static mp_status write_metadata(mp_gguf_writer *w, const mp_gguf *g, const mp_moe_info *moe,
                                const mp_dropmap *record, const mp_dropmap *m, mp_prune_mode mode,
                                bool per_layer, mp_err *err) {
    char k_count[96], k_used[96];
    snprintf(k_count, sizeof k_count, "%s.expert_count", moe->arch);
    snprintf(k_used, sizeof k_used, "%s.expert_used_count", moe->arch);
    int64_t max_keep = 0, min_keep = INT64_MAX;
    for (int64_t i = 0; i < m->n_layers; i++) {
        if (m->layers[i].n_keep > max_keep) max_keep = m->layers[i].n_keep;
        if (m->layers[i].n_keep < min_keep) min_keep = m->layers[i].n_keep;
    }
    mp_status s = MP_OK;
    for (int64_t i = 0; i < mp_gguf_n_kv(g) && !s; i++) {
        const char *key = mp_gguf_key(g, i);
        if (!strncmp(key, "moeprune.", 9)) continue; /* replaced below */
        if (mode == MP_PRUNE_REMOVE && !strcmp(key, k_count))
            s = mp_gguf_writer_kv_u32(w, key, (uint32_t)max_keep, err);
        else if (!strcmp(key, k_used) && moe->n_expert_used > min_keep)
            s = mp_gguf_writer_kv_u32(w, key, (uint32_t)min_keep, err);
        else
            s = mp_gguf_writer_kv_copy(w, g, i, err);
    }
    if (s) return s;
    if (per_layer) {
        uint32_t *counts = mp_calloc((size_t)moe->n_layer, sizeof *counts);
        if (!counts) return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
        for (int64_t l = 0; l < moe->n_layer; l++) {
            const mp_dropmap_layer *L = mp_dropmap_find(m, l);
            counts[l] = L ? (uint32_t)L->n_keep : 0;
        }
        uint8_t *le = mp_malloc((size_t)moe->n_layer * 4);
        if (le) {
            for (int64_t l = 0; l < moe->n_layer; l++) mp_store_u32(le + 4 * l, counts[l]);
            s = mp_gguf_writer_kv_arr(w, KEY_PER_LAYER, MP_GGUF_UINT32, le, (uint64_t)moe->n_layer,
                                      err);
        } else {
            s = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
        }
        mp_free(le);
        mp_free(counts);
        if (s) return s;
    }
    char *json = mp_dropmap_to_json(record, false);
    if (!json) return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    s = mp_gguf_writer_kv_str(w, KEY_MODE, mode_names[mode], err);
    if (!s) s = mp_gguf_writer_kv_str(w, KEY_DROPMAP, json, err);
    mp_free(json);
    return s;
}

/* Which tensors are sliced, by which layer's entry. */
static mp_status plan_tensors(const mp_gguf *g, const mp_moe_info *moe, const mp_dropmap *m,
                              plan_tensor *plan, mp_err *err) {
    for (int64_t i = 0; i < mp_gguf_n_tensors(g); i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(g, i);
        plan[i] = (plan_tensor){.t = t};
        int64_t l = mp_tensor_layer(t->name, NULL);
        if (l < 0 || l >= moe->n_layer) continue;
        const mp_moe_layer *ML = &moe->layers[l];
        bool expert = ML->router == t;
        for (int j = 0; j < ML->n_exp_tensors; j++) expert = expert || ML->exp_tensors[j] == t;
        if (!expert) continue;
        plan[i].L = mp_dropmap_find(m, l);
        plan[i].n_expert = ML->n_expert;
        if (t->nbytes % (uint64_t)ML->n_expert != 0)
            return mp_err_set(err, MP_ERR_FORMAT,
                              "%s: tensor '%s': %" PRIu64 " bytes do not "
                              "split into %" PRId64 " experts",
                              mp_gguf_path(g), t->name, t->nbytes, ML->n_expert);
        if (ML->router == t) {
            mp_status s = mp_check_finite(t->type, t->data, mp_tensor_nelements(t), mp_gguf_path(g),
                                          t->name, err);
            if (s) return s;
        }
    }
    return MP_OK;
}

mp_status mp_prune_gguf(const char *in, const mp_dropmap *map, const char *out,
                        const mp_prune_params *p, mp_err *err) {
    if (mp_file_same(in, out))
        return mp_err_set(err, MP_ERR_ARG, "%s: the output would replace the input", out);
    if (p->mode >= MP_PRUNE_MODE_COUNT || p->target >= MP_TARGET_COUNT)
        return mp_err_set(err, MP_ERR_ARG, "prune: invalid mode or target");
    mp_gguf *g = NULL;
    mp_moe_info *moe = NULL;
    mp_dropmap *base = NULL, *composed = NULL;
    plan_tensor *plan = NULL;
    mp_gguf_writer *w = NULL;
    mp_status s;
    if ((s = mp_gguf_open(&g, in, err)) || (s = mp_moe_scan(g, &moe, err)) ||
        (s = mp_dropmap_check(map, g, err)))
        goto done;
    bool uniform = true;
    for (int64_t i = 1; i < map->n_layers; i++)
        if (map->layers[i].n_keep != map->layers[0].n_keep) {
            uniform = false;
            if (p->target == MP_TARGET_LLAMA_CPP) {
                s = mp_err_set(err, MP_ERR_ARG,
                               "the drop map keeps %" PRId64 " experts in layer "
                               "%" PRId64 " but %" PRId64 " in layer %" PRId64 ": llama.cpp and "
                               "ollama need one expert count for every layer (use --target "
                               "moeprune, or plan with a uniform budget)",
                               map->layers[0].n_keep, map->layers[0].layer, map->layers[i].n_keep,
                               map->layers[i].layer);
                goto done;
            }
            break;
        }
    bool per_layer = p->mode == MP_PRUNE_REMOVE && !uniform;
    /* record the map relative to the original base when the input was pruned */
    const mp_dropmap *record = map;
    if (mp_gguf_find_key(g, KEY_DROPMAP) >= 0) {
        int64_t mi = mp_gguf_find_key(g, KEY_MODE);
        const char *mode_s = "";
        size_t mode_n = 0;
        if (mi >= 0) mp_gguf_get_str(g, mi, 0, &mode_s, &mode_n, NULL);
        if (mode_n == 4 && !memcmp(mode_s, "zero", 4)) {
            s = mp_err_set(err, MP_ERR_UNSUPPORTED,
                           "%s: was pruned with --mode zero; prune the "
                           "original model instead",
                           in);
            goto done;
        }
        if ((s = mp_dropmap_from_gguf(g, &base, err)) ||
            (s = mp_dropmap_compose(base, map, &composed, err)))
            goto done;
        record = composed;
    }
    if (!(plan = mp_calloc((size_t)(mp_gguf_n_tensors(g) + 1), sizeof *plan))) {
        s = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((s = plan_tensors(g, moe, map, plan, err)) ||
        (s = mp_gguf_writer_open(&w, out, p->overwrite, err)) ||
        (s = write_metadata(w, g, moe, record, map, p->mode, per_layer, err)))
        goto done;
    for (int64_t i = 0; i < mp_gguf_n_tensors(g) && !s; i++) {
        const mp_gguf_tensor *t = plan[i].t;
        int64_t ne[MP_GGUF_MAX_DIMS];
        memcpy(ne, t->ne, sizeof ne);
        if (plan[i].L && p->mode == MP_PRUNE_REMOVE) ne[t->n_dims - 1] = plan[i].L->n_keep;
        s = mp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, ne, err);
    }
    for (int64_t i = 0; i < mp_gguf_n_tensors(g) && !s; i++)
        s = write_tensor(w, g, &plan[i], p->mode, err);
    if (!s) s = mp_gguf_writer_finish(w, err);
done:
    mp_gguf_writer_free(w);
    mp_free(plan);
    mp_dropmap_free(base);
    mp_dropmap_free(composed);
    mp_moe_info_free(moe);
    mp_gguf_free(g);
    return s;
}

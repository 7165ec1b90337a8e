/* dropmap.c — the drop map file (design.md, "moeprune.dropmap/1"): parse,
 * check against a model, serialise.
 *
 * A map says, per MoE layer, which original expert ids survive. Parsing
 * checks the map on its own (ids in range, sorted, keep and drop disjoint and
 * covering every expert); mp_dropmap_check then checks it against a model's
 * tensors, so that prune, the engine's masks and eval refuse a map made for
 * another model before any byte is written. Maps are small: everything here
 * is plain cJSON, nothing is streamed. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "arch/arch.h"
#include "util/util.h"

#define DROPMAP_FORMAT "moeprune.dropmap/1"
/* No MoE model has more experts per layer; also bounds what a hostile map
 * can make us allocate (llama.cpp caps expert_count at 512 today). */
#define DROPMAP_MAX_EXPERT 65536

void mp_dropmap_free(mp_dropmap *m) {
    if (!m) return;
    for (int64_t i = 0; i < m->n_layers; i++) {
        mp_free(m->layers[i].keep);
        mp_free(m->layers[i].drop);
    }
    mp_free(m->layers);
    mp_free(m->arch);
    mp_free(m->sha256);
    mp_free(m->method);
    mp_free(m->method_params);
    mp_free(m);
}

const mp_dropmap_layer *mp_dropmap_find(const mp_dropmap *m, int64_t layer) {
    for (int64_t i = 0; i < m->n_layers; i++)
        if (m->layers[i].layer == layer) return &m->layers[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Parsing                                                                  */
/* ------------------------------------------------------------------------ */

/* A non-negative integer field; false when absent, fractional or out of range. */
static bool int_field(const cJSON *o, const char *key, int64_t max, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > (double)max ||
        v->valuedouble != floor(v->valuedouble))
        return false;
    *out = (int64_t)v->valuedouble;
    return true;
}

static char *str_field(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? mp_strdup(v->valuestring) : NULL;
}

/* Reads an id list into *ids, checking range and strict ascent. */
static mp_status id_list(const cJSON *arr, const char *name, const char *what, int64_t layer,
                         int64_t n_expert, int32_t **ids, int64_t *n, mp_err *err) {
    if (!cJSON_IsArray(arr))
        return mp_err_set(err, MP_ERR_FORMAT,
                          "%s: layer %" PRId64 ": \"%s\" is missing or not "
                          "an array",
                          name, layer, what);
    int64_t cnt = cJSON_GetArraySize(arr);
    if (cnt > n_expert)
        return mp_err_set(err, MP_ERR_FORMAT,
                          "%s: layer %" PRId64 ": \"%s\" has %" PRId64
                          " ids but the model has %" PRId64 " experts",
                          name, layer, what, cnt, n_expert);
    *ids = mp_calloc((size_t)(cnt ? cnt : 1), sizeof **ids);
    if (!*ids) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", name);
    int64_t k = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
            v->valuedouble >= (double)n_expert)
            return mp_err_set(err, MP_ERR_FORMAT,
                              "%s: layer %" PRId64 ": \"%s\"[%" PRId64
                              "] = %g is not an expert id in 0..%" PRId64,
                              name, layer, what, k, cJSON_IsNumber(v) ? v->valuedouble : NAN,
                              n_expert - 1);
        int32_t id = (int32_t)v->valuedouble;
        if (k > 0 && id <= (*ids)[k - 1])
            return mp_err_set(err, MP_ERR_FORMAT,
                              "%s: layer %" PRId64 ": \"%s\" is not strictly "
                              "ascending (%" PRId32 " after %" PRId32 ")%s",
                              name, layer, what, id, (*ids)[k - 1],
                              id == (*ids)[k - 1] ? ": duplicate id" : "");
        (*ids)[k++] = id;
    }
    *n = k;
    return MP_OK;
}

static mp_status parse_layer(const cJSON *o, const char *name, int64_t n_expert,
                             mp_dropmap_layer *L, mp_err *err) {
    if (!int_field(o, "layer", 1000000, &L->layer))
        return mp_err_set(err, MP_ERR_FORMAT, "%s: a layer entry lacks a valid \"layer\" index",
                          name);
    mp_status s = id_list(cJSON_GetObjectItemCaseSensitive(o, "keep"), name, "keep", L->layer,
                          n_expert, &L->keep, &L->n_keep, err);
    if (s) return s;
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(o, "drop");
    if (drop) {
        if ((s = id_list(drop, name, "drop", L->layer, n_expert, &L->drop, &L->n_drop, err)))
            return s;
    } else {
        /* "drop" may be left out: it is the complement of "keep" */
        L->drop = mp_calloc((size_t)(n_expert - L->n_keep + 1), sizeof *L->drop);
        if (!L->drop) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", name);
        for (int64_t e = 0, k = 0; e < n_expert; e++) {
            if (k < L->n_keep && L->keep[k] == e)
                k++;
            else
                L->drop[L->n_drop++] = (int32_t)e;
        }
    }
    /* keep and drop are disjoint and cover 0..n_expert-1 */
    if (L->n_keep + L->n_drop != n_expert)
        return mp_err_set(err, MP_ERR_FORMAT,
                          "%s: layer %" PRId64 ": keep (%" PRId64 ") + drop (%" PRId64
                          ") != n_expert (%" PRId64 ")",
                          name, L->layer, L->n_keep, L->n_drop, n_expert);
    for (int64_t a = 0, b = 0; a < L->n_keep && b < L->n_drop;) {
        if (L->keep[a] == L->drop[b])
            return mp_err_set(err, MP_ERR_FORMAT,
                              "%s: layer %" PRId64 ": expert %" PRId32 " is both kept and dropped",
                              name, L->layer, L->keep[a]);
        if (L->keep[a] < L->drop[b])
            a++;
        else
            b++;
    }
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "retained");
    L->retained = cJSON_IsNumber(r) ? r->valuedouble : -1;
    return MP_OK;
}

static int cmp_layer(const void *a, const void *b) {
    int64_t x = ((const mp_dropmap_layer *)a)->layer, y = ((const mp_dropmap_layer *)b)->layer;
    return x < y ? -1 : x > y;
}

mp_status mp_dropmap_parse(mp_dropmap **out, const char *json, size_t len, const char *name,
                           mp_err *err) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= json && at <= json + len ? (long)(at - json) : -1;
        return mp_err_set(err, MP_ERR_FORMAT, "%s: not valid JSON (error near byte %ld)", name,
                          off);
    }
    mp_status s = MP_OK;
    mp_dropmap *m = mp_calloc(1, sizeof *m);
    if (!m) {
        cJSON_Delete(root);
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", name);
    }
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, DROPMAP_FORMAT) != 0) {
        s = mp_err_set(err, MP_ERR_FORMAT, "%s: \"format\" is %s%s%s, expected \"%s\"", name,
                       cJSON_IsString(fmt) ? "\"" : "",
                       cJSON_IsString(fmt) ? fmt->valuestring : "missing",
                       cJSON_IsString(fmt) ? "\"" : "", DROPMAP_FORMAT);
        goto fail;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *arch =
        cJSON_IsObject(model) ? cJSON_GetObjectItemCaseSensitive(model, "arch") : NULL;
    if (!cJSON_IsObject(model) || !(m->arch = str_field(model, "arch")) ||
        !int_field(model, "n_layer", 1000000, &m->n_layer) ||
        !int_field(model, "n_expert", DROPMAP_MAX_EXPERT, &m->n_expert) ||
        !int_field(model, "n_expert_used", DROPMAP_MAX_EXPERT, &m->n_expert_used) ||
        m->n_expert < 1) {
        if (cJSON_IsString(arch) && !m->arch) {
            s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", name);
            goto fail;
        }
        s = mp_err_set(err, MP_ERR_FORMAT,
                       "%s: \"model\" needs \"arch\" (string) and "
                       "\"n_layer\", \"n_expert\" (>= 1), \"n_expert_used\" (integers)",
                       name);
        goto fail;
    }
    m->sha256 = str_field(model, "sha256");
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(root, "method");
    if (cJSON_IsObject(method)) {
        m->method = str_field(method, "name");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(method, "params");
        if (params) {
            char *p = cJSON_PrintUnformatted(params);
            m->method_params = p ? mp_strdup(p) : NULL;
            free(p);
        }
    }
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    if (!cJSON_IsArray(layers)) {
        s = mp_err_set(err, MP_ERR_FORMAT, "%s: \"layers\" is missing or not an array", name);
        goto fail;
    }
    int64_t n = cJSON_GetArraySize(layers);
    if (n > m->n_layer) {
        s = mp_err_set(err, MP_ERR_FORMAT,
                       "%s: %" PRId64 " layer entries for a %" PRId64 "-layer model", name, n,
                       m->n_layer);
        goto fail;
    }
    if (!(m->layers = mp_calloc((size_t)(n ? n : 1), sizeof *m->layers))) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", name);
        goto fail;
    }
    const cJSON *lo;
    cJSON_ArrayForEach(lo, layers) {
        mp_dropmap_layer *L = &m->layers[m->n_layers++];
        if (!cJSON_IsObject(lo)) {
            s = mp_err_set(err, MP_ERR_FORMAT, "%s: layers[%" PRId64 "] is not an object", name,
                           m->n_layers - 1);
            goto fail;
        }
        if ((s = parse_layer(lo, name, m->n_expert, L, err))) goto fail;
        if (L->layer >= m->n_layer) {
            s = mp_err_set(err, MP_ERR_FORMAT,
                           "%s: layer %" PRId64 " is out of range for a %" PRId64 "-layer model",
                           name, L->layer, m->n_layer);
            goto fail;
        }
    }
    qsort(m->layers, (size_t)m->n_layers, sizeof *m->layers, cmp_layer);
    for (int64_t i = 1; i < m->n_layers; i++)
        if (m->layers[i].layer == m->layers[i - 1].layer) {
            s = mp_err_set(err, MP_ERR_FORMAT, "%s: layer %" PRId64 " appears twice", name,
                           m->layers[i].layer);
            goto fail;
        }
    cJSON_Delete(root);
    *out = m;
    return MP_OK;
fail:
    cJSON_Delete(root);
    mp_dropmap_free(m);
    return s;
}

mp_status mp_dropmap_load(mp_dropmap **out, const char *path, mp_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return mp_err_set(err, MP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    mp_buf b = {0};
    char chunk[65536];
    size_t n;
    bool ok = true;
    /* drop maps are a few hundred KB at most; refuse absurd inputs early */
    while (ok && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        ok = b.len + n <= (64u << 20) && mp_buf_append(&b, chunk, n);
    bool rerr = ferror(f);
    fclose(f);
    mp_status s;
    if (!ok)
        s = mp_err_set(err, MP_ERR_FORMAT, "%s: larger than 64 MiB, not a drop map", path);
    else if (rerr)
        s = mp_err_set(err, MP_ERR_IO, "%s: read error", path);
    else
        s = mp_dropmap_parse(out, (const char *)b.data, b.len, path, err);
    mp_buf_free(&b);
    return s;
}

/* ------------------------------------------------------------------------ */
/* Checking against a model                                                 */
/* ------------------------------------------------------------------------ */

/* The checks shared by files and loaded models: arch, layer count, every MoE
 * layer present with its expert count, at least n_used kept. */
static mp_status check_layout(const mp_dropmap *m, const char *path, const char *arch,
                              int64_t n_layer, const int64_t *n_expert, int64_t n_used,
                              mp_err *err) {
    if (strcmp(m->arch, arch) != 0)
        return mp_err_set(err, MP_ERR_CHECK, "drop map is for architecture '%s' but %s is '%s'",
                          m->arch, path, arch);
    if (m->n_layer != n_layer)
        return mp_err_set(err, MP_ERR_CHECK,
                          "drop map is for %" PRId64 " layers but %s has %" PRId64, m->n_layer,
                          path, n_layer);
    for (int64_t l = 0; l < n_layer; l++) {
        const mp_dropmap_layer *L = mp_dropmap_find(m, l);
        int64_t x = n_expert[l];
        if (!L && x > 0)
            return mp_err_set(err, MP_ERR_CHECK,
                              "drop map has no entry for MoE layer %" PRId64 " of %s", l, path);
        if (!L) continue;
        if (x == 0)
            return mp_err_set(err, MP_ERR_CHECK,
                              "drop map has an entry for layer %" PRId64
                              " but that layer of %s has no experts",
                              l, path);
        if (L->n_keep + L->n_drop != x)
            return mp_err_set(err, MP_ERR_CHECK,
                              "drop map layer %" PRId64 " covers %" PRId64
                              " experts but %s has %" PRId64 " in that layer",
                              l, L->n_keep + L->n_drop, path, x);
        if (L->n_keep < (n_used > 0 ? n_used : 1))
            return mp_err_set(err, MP_ERR_CHECK,
                              "drop map layer %" PRId64 " keeps %" PRId64
                              " experts, fewer than the %" PRId64 " used per token by %s",
                              l, L->n_keep, n_used > 0 ? n_used : 1, path);
    }
    return MP_OK;
}

mp_status mp_dropmap_check(const mp_dropmap *m, const mp_gguf *model, mp_err *err) {
    const char *path = mp_gguf_path(model);
    mp_moe_info *moe;
    mp_status s = mp_moe_scan(model, &moe, err);
    if (s) return s;
    int64_t *ne = mp_calloc((size_t)(moe->n_layer ? moe->n_layer : 1), sizeof *ne);
    if (!ne) {
        mp_moe_info_free(moe);
        return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    }
    for (int64_t l = 0; l < moe->n_layer; l++) ne[l] = moe->layers[l].n_expert;
    s = check_layout(m, path, moe->arch, moe->n_layer, ne, moe->n_expert_used, err);
    mp_free(ne);
    mp_moe_info_free(moe);
    return s;
}

/* ------------------------------------------------------------------------ */
/* Serialising                                                              */
/* ------------------------------------------------------------------------ */

static cJSON *ids_json(const int32_t *ids, int64_t n) {
    cJSON *a = cJSON_CreateArray();
    for (int64_t i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

char *mp_dropmap_to_json(const mp_dropmap *m, bool pretty) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", DROPMAP_FORMAT);
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "arch", m->arch);
    cJSON_AddNumberToObject(model, "n_layer", (double)m->n_layer);
    cJSON_AddNumberToObject(model, "n_expert", (double)m->n_expert);
    cJSON_AddNumberToObject(model, "n_expert_used", (double)m->n_expert_used);
    if (m->sha256) cJSON_AddStringToObject(model, "sha256", m->sha256);
    if (m->method) {
        cJSON *method = cJSON_AddObjectToObject(root, "method");
        cJSON_AddStringToObject(method, "name", m->method);
        cJSON *params = m->method_params ? cJSON_Parse(m->method_params) : NULL;
        if (params) cJSON_AddItemToObject(method, "params", params);
    }
    cJSON *layers = cJSON_AddArrayToObject(root, "layers");
    for (int64_t i = 0; i < m->n_layers; i++) {
        const mp_dropmap_layer *L = &m->layers[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "layer", (double)L->layer);
        cJSON_AddItemToObject(o, "keep", ids_json(L->keep, L->n_keep));
        cJSON_AddItemToObject(o, "drop", ids_json(L->drop, L->n_drop));
        if (L->retained >= 0) cJSON_AddNumberToObject(o, "retained", L->retained);
        cJSON_AddItemToArray(layers, o);
    }
    char *txt = pretty ? cJSON_Print(root) : cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!txt) return NULL;
    char *r = mp_strdup(txt); /* callers free with mp_free, whatever cJSON uses */
    free(txt);
    return r;
}

mp_status mp_dropmap_save(const mp_dropmap *m, const char *path, bool overwrite, mp_err *err) {
    char *txt = mp_dropmap_to_json(m, true);
    if (!txt) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
    size_t n = strlen(txt);
    txt[n] = '\n'; /* replace the terminator: the file ends with a newline */
    mp_status s = mp_file_write_atomic(path, txt, n + 1, overwrite, err);
    mp_free(txt);
    return s;
}

/* ------------------------------------------------------------------------ */
/* Masks for the engine                                                     */
/* ------------------------------------------------------------------------ */

mp_status mp_context_apply_dropmap(mp_context *c, const mp_model *m, const mp_dropmap *map,
                                   mp_err *err) {
    int64_t n_layer = mp_model_n_layer(m), max_x = 1;
    int64_t *ne = mp_calloc((size_t)(n_layer ? n_layer : 1), sizeof *ne);
    if (!ne) return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    for (int64_t l = 0; l < n_layer; l++) {
        ne[l] = mp_model_n_expert(m, l);
        if (ne[l] > max_x) max_x = ne[l];
    }
    mp_status s = check_layout(map, mp_gguf_path(mp_model_gguf(m)), mp_model_arch(m), n_layer, ne,
                               mp_context_experts_used(c), err);
    bool *keep = s ? NULL : mp_calloc((size_t)max_x, sizeof *keep);
    if (!s && !keep) s = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; !s && i < map->n_layers; i++) {
        const mp_dropmap_layer *L = &map->layers[i];
        memset(keep, 0, (size_t)max_x * sizeof *keep);
        for (int64_t k = 0; k < L->n_keep; k++) keep[L->keep[k]] = true;
        s = mp_context_set_expert_mask(c, L->layer, keep, ne[L->layer], err);
    }
    mp_free(keep);
    mp_free(ne);
    return s;
}

mp_status mp_context_apply_file_mask(mp_context *c, const mp_model *m, mp_err *err) {
    const mp_gguf *g = mp_model_gguf(m);
    int64_t i = mp_gguf_find_key(g, "moeprune.prune_mode");
    const char *mode = NULL;
    size_t n = 0;
    if (i < 0 || mp_gguf_get_str(g, i, 0, &mode, &n, NULL) || n != 4 || memcmp(mode, "zero", 4))
        return MP_OK; /* not a zero-mode file: its experts are really gone */
    mp_dropmap *map = NULL;
    mp_status s = mp_dropmap_from_gguf(g, &map, err);
    if (!s) s = mp_context_apply_dropmap(c, m, map, err);
    mp_dropmap_free(map);
    return s;
}

/* ------------------------------------------------------------------------ */
/* Composition                                                              */
/* ------------------------------------------------------------------------ */

mp_status mp_dropmap_compose(const mp_dropmap *base, const mp_dropmap *m, mp_dropmap **out,
                             mp_err *err) {
    mp_dropmap *c = mp_calloc(1, sizeof *c);
    if (!c) return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    c->n_layer = base->n_layer;
    c->n_expert = base->n_expert;
    c->n_expert_used = base->n_expert_used;
    c->arch = mp_strdup(base->arch);
    c->sha256 = base->sha256 ? mp_strdup(base->sha256) : NULL;
    c->method = m->method ? mp_strdup(m->method) : NULL;
    c->method_params = m->method_params ? mp_strdup(m->method_params) : NULL;
    c->layers = mp_calloc((size_t)(m->n_layers ? m->n_layers : 1), sizeof *c->layers);
    if (!c->arch || !c->layers || (base->sha256 && !c->sha256) || (m->method && !c->method) ||
        (m->method_params && !c->method_params))
        goto nomem;
    for (int64_t i = 0; i < m->n_layers; i++) {
        const mp_dropmap_layer *L = &m->layers[i], *B = mp_dropmap_find(base, L->layer);
        mp_dropmap_layer *C = &c->layers[c->n_layers++];
        C->layer = L->layer;
        C->retained = -1;
        if (!B || B->n_keep != L->n_keep + L->n_drop) {
            mp_dropmap_free(c);
            return mp_err_set(err, MP_ERR_CHECK,
                              "layer %" PRId64 ": the recorded drop map keeps %" PRId64
                              " experts but the model has %" PRId64,
                              L->layer, B ? B->n_keep : 0, L->n_keep + L->n_drop);
        }
        C->keep = mp_calloc((size_t)(L->n_keep ? L->n_keep : 1), sizeof *C->keep);
        C->drop = mp_calloc((size_t)(base->n_expert - L->n_keep + 1), sizeof *C->drop);
        if (!C->keep || !C->drop) goto nomem;
        for (int64_t k = 0; k < L->n_keep; k++) C->keep[C->n_keep++] = B->keep[L->keep[k]];
        for (int64_t e = 0, k = 0; e < base->n_expert; e++) {
            if (k < C->n_keep && C->keep[k] == e)
                k++;
            else
                C->drop[C->n_drop++] = (int32_t)e;
        }
    }
    *out = c;
    return MP_OK;
nomem:
    mp_dropmap_free(c);
    return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
}

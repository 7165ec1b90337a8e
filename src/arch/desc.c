/* desc.c — the table of architecture descriptors and the helpers every
 * descriptor uses: "<arch>.*" metadata that may be a scalar or a per-layer
 * array, tensor binding with shape checks, 1-D vectors converted to float,
 * and the checks that hold for every family once a descriptor has run.
 * The families themselves live in one file each (gemma4.c). Nothing here
 * reads weight matrices: they stay in the mapping (see arch.h). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#include "arch/arch.h"

static const mp_arch_desc *const arch_table[] = {&mp_arch_gemma4};

const mp_arch_desc *mp_arch_find(const char *name) {
    for (size_t i = 0; name && i < MP_ARRAY_LEN(arch_table); i++)
        if (!strcmp(arch_table[i]->name, name)) return arch_table[i];
    return NULL;
}

const char *mp_act_name(int act) {
    static const char *const names[MP_ACT_COUNT] = {"GELU_TANH", "SILU"};
    return act >= 0 && act < MP_ACT_COUNT ? names[act] : "?";
}

const char *mp_rope_style_name(int style) {
    static const char *const names[MP_ROPE_STYLE_COUNT] = {"NEOX", "NORM"};
    return style >= 0 && style < MP_ROPE_STYLE_COUNT ? names[style] : "?";
}

/* ---------------------------------------------------------------- metadata */

#define KEY_MAX 160

static void arch_key(const mp_arch_loader *L, const char *suffix, char *key) {
    snprintf(key, KEY_MAX, "%s.%s", L->m->desc->name, suffix);
}

mp_status mp_arch_alloc_layers(mp_arch_loader *L, int64_t n_layer) {
    if (n_layer <= 0 || n_layer > 100000)
        return mp_err_set(L->err, MP_ERR_FORMAT, "%s: %s.block_count = %" PRId64
                          " is not a layer count in 1..100000", L->path, L->m->desc->name,
                          n_layer);
    L->m->layers = mp_calloc((size_t)n_layer, sizeof *L->m->layers);
    L->m->hp.layers = mp_calloc((size_t)n_layer, sizeof *L->m->hp.layers);
    if (!L->m->layers || !L->m->hp.layers)
        return mp_err_set(L->err, MP_ERR_NOMEM, "%s: out of memory", L->path);
    L->m->hp.n_layer = n_layer;
    for (int64_t l = 0; l < n_layer; l++) L->m->layers[l].out_scale = 1.0f;
    return MP_OK;
}

static mp_status missing(mp_arch_loader *L, const char *key) {
    return mp_err_set(L->err, MP_ERR_NOT_FOUND, "%s: metadata key '%s' is missing", L->path,
                      key);
}

mp_status mp_arch_get_int(mp_arch_loader *L, const char *suffix, bool required, int64_t def,
                          int64_t *out) {
    char key[KEY_MAX];
    arch_key(L, suffix, key);
    int64_t i = mp_gguf_find_key(L->g, key);
    if (i < 0) {
        if (required) return missing(L, key);
        *out = def;
        return MP_OK;
    }
    if (mp_gguf_kv_type(L->g, i) == MP_GGUF_ARRAY)
        return mp_err_set(L->err, MP_ERR_FORMAT, "%s: metadata key '%s' is an array, expected "
                          "a single integer", L->path, key);
    return mp_gguf_get_int(L->g, i, 0, out, L->err);
}

mp_status mp_arch_get_float(mp_arch_loader *L, const char *suffix, bool required, double def,
                            float *out) {
    char key[KEY_MAX];
    arch_key(L, suffix, key);
    int64_t i = mp_gguf_find_key(L->g, key);
    double v = def;
    if (i < 0) {
        if (required) return missing(L, key);
    } else {
        mp_status s = mp_gguf_get_float(L->g, i, 0, &v, L->err);
        if (s) return s;
        if (!isfinite(v))
            return mp_err_set(L->err, MP_ERR_FORMAT, "%s: metadata key '%s' = %g is not finite",
                              L->path, key, v);
    }
    *out = (float)v;
    return MP_OK;
}

/* Finds a scalar-or-array key; *n = 0 for a scalar, else the array length
 * (which must be n_layer). *i < 0 when absent. */
static mp_status layers_key(mp_arch_loader *L, const char *suffix, bool required, char *key,
                            int64_t *i, bool *is_arr) {
    arch_key(L, suffix, key);
    *i = mp_gguf_find_key(L->g, key);
    *is_arr = false;
    if (*i < 0) return required ? missing(L, key) : MP_OK;
    if (mp_gguf_kv_type(L->g, *i) != MP_GGUF_ARRAY) return MP_OK;
    *is_arr = true;
    uint64_t n = mp_gguf_arr_len(L->g, *i);
    if (n != (uint64_t)L->m->hp.n_layer)
        return mp_err_set(L->err, MP_ERR_FORMAT, "%s: metadata key '%s' has %" PRIu64
                          " elements, expected one per layer (%" PRId64 ")", L->path, key, n,
                          L->m->hp.n_layer);
    return MP_OK;
}

/* The per-layer values of one key into iout (ints) or bout (bools). */
static mp_status get_layers(mp_arch_loader *L, const char *suffix, bool required, int64_t def,
                            int64_t *iout, bool *bout) {
    char key[KEY_MAX];
    int64_t i;
    bool arr;
    mp_status s = layers_key(L, suffix, required, key, &i, &arr);
    if (s) return s;
    for (int64_t l = 0; l < L->m->hp.n_layer; l++) {
        const uint64_t at = arr ? (uint64_t)l : 0;
        if (i < 0) {
            if (iout) iout[l] = def;
            else bout[l] = def != 0;
        } else if ((s = iout ? mp_gguf_get_int(L->g, i, at, &iout[l], L->err)
                             : mp_gguf_get_bool(L->g, i, at, &bout[l], L->err))) {
            return s;
        }
    }
    return MP_OK;
}

mp_status mp_arch_get_layers_int(mp_arch_loader *L, const char *suffix, bool required,
                                 int64_t def, int64_t *out) {
    return get_layers(L, suffix, required, def, out, NULL);
}

mp_status mp_arch_get_layers_bool(mp_arch_loader *L, const char *suffix, bool required,
                                  bool def, bool *out) {
    return get_layers(L, suffix, required, def, NULL, out);
}

/* ----------------------------------------------------------------- tensors */

static void format_ne(char *buf, size_t n, uint32_t n_dims, const int64_t *ne) {
    size_t o = (size_t)snprintf(buf, n, "{");
    for (uint32_t d = 0; d < n_dims && o < n; d++) {
        if (ne[d] < 0)
            o += (size_t)snprintf(buf + o, n - o, "%s*", d ? ", " : "");
        else
            o += (size_t)snprintf(buf + o, n - o, "%s%" PRId64, d ? ", " : "", ne[d]);
    }
    if (o < n) snprintf(buf + o, n - o, "}");
}

/* Finds `name` and checks its shape; *t = NULL when absent and optional. */
static mp_status find_checked(mp_arch_loader *L, const char *name, uint32_t n_dims,
                              const int64_t *ne, const char *what, bool required,
                              const mp_gguf_tensor **t) {
    *t = mp_gguf_find_tensor(L->g, name);
    if (!*t) {
        if (!required) return MP_OK;
        return mp_err_set(L->err, MP_ERR_NOT_FOUND, "%s: tensor '%s' %s is missing", L->path,
                          name, what);
    }
    bool ok = (*t)->n_dims <= n_dims || (*t)->n_dims == 0;
    for (uint32_t d = 0; d < MP_GGUF_MAX_DIMS && ok; d++) {
        int64_t want = d < n_dims ? ne[d] : 1;
        if (want >= 0 && (*t)->ne[d] != want) ok = false;
    }
    if (!ok) {
        char got[96], want[96];
        format_ne(got, sizeof got, (*t)->n_dims, (*t)->ne);
        format_ne(want, sizeof want, n_dims, ne);
        return mp_err_set(L->err, MP_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s = %s",
                          L->path, name, got, want, what);
    }
    const mp_type_traits *tr = mp_type_info((*t)->type);
    if (!tr || !tr->can_dequant)
        return mp_err_set(L->err, MP_ERR_UNSUPPORTED, "%s: tensor '%s' has type %s, which the "
                          "engine cannot read yet", L->path, name, mp_type_name((*t)->type));
    if (!(*t)->data && mp_tensor_nelements(*t) > 0)
        return mp_err_set(L->err, MP_ERR_ARG, "%s: tensor '%s' has no data (header-only parse)",
                          L->path, name);
    return MP_OK;
}

mp_status mp_arch_bind(mp_arch_loader *L, const char *name, uint32_t n_dims, const int64_t *ne,
                       const char *what, bool required, mp_weight *w) {
    const mp_gguf_tensor *t;
    mp_status s = find_checked(L, name, n_dims, ne, what, required, &t);
    if (s || !t) return s;
    mp_weight r = {.name = t->name, .type = t->type, .data = t->data, .scale = 1.0f};
    memcpy(r.ne, t->ne, sizeof r.ne);
    if ((s = mp_type_row_bytes(t->type, t->ne[0], &r.row_bytes, L->err))) return s;
    *w = r;
    return MP_OK;
}

mp_status mp_arch_bind_vec(mp_arch_loader *L, const char *name, int64_t n, const char *what,
                           bool required, const float **out) {
    const mp_gguf_tensor *t;
    *out = NULL;
    mp_status s = find_checked(L, name, 1, &n, what, required, &t);
    if (s || !t) return s;
    mp_arch_model *m = L->m;
    if (m->n_vecs == m->cap_vecs) {
        int64_t cap = m->cap_vecs ? 2 * m->cap_vecs : 64;
        float **nv = mp_realloc(m->vecs, (size_t)cap * sizeof *nv);
        if (!nv) return mp_err_set(L->err, MP_ERR_NOMEM, "%s: out of memory", L->path);
        m->vecs = nv;
        m->cap_vecs = cap;
    }
    float *v = mp_calloc((size_t)n, sizeof *v);
    if (!v) return mp_err_set(L->err, MP_ERR_NOMEM, "%s: out of memory", L->path);
    m->vecs[m->n_vecs++] = v;
    if ((s = mp_dequantize_row(t->type, t->data, v, n, L->err))) return s;
    *out = v;
    return MP_OK;
}

mp_status mp_arch_bind_scale(mp_arch_loader *L, mp_weight *w) {
    if (!mp_weight_present(w)) return MP_OK;
    char name[MP_GGUF_MAX_NAME + 8];
    size_t n = strlen(w->name);
    const char *suffix = ".weight";
    size_t ns = strlen(suffix);
    if (n < ns || strcmp(w->name + n - ns, suffix) != 0 || n - ns + 7 >= sizeof name)
        return MP_OK;
    snprintf(name, sizeof name, "%.*s.scale", (int)(n - ns), w->name);
    const float *v;
    int64_t one = 1;
    mp_status s = mp_arch_bind_vec(L, name, one, "{1} (per-tensor output scale)", false, &v);
    if (s) return s;
    if (v) w->scale = v[0];
    return MP_OK;
}

/* ------------------------------------------------------------------ checks */

/* What holds for every family: head counts divide, rotation fits the head,
 * KV sources are layers that own compatible K/V, top-k fits every layer. */
static mp_status check_model(mp_arch_loader *L) {
    const mp_hparams *hp = &L->m->hp;
    if (hp->n_embd <= 0 || hp->n_vocab <= 0)
        return mp_err_set(L->err, MP_ERR_FORMAT, "%s: n_embd %" PRId64 ", n_vocab %" PRId64
                          ": both must be positive", L->path, hp->n_embd, hp->n_vocab);
    for (int64_t l = 0; l < hp->n_layer; l++) {
        const mp_layer_hparams *lh = &hp->layers[l];
        if (lh->n_head <= 0 || lh->n_head_kv <= 0 || lh->n_head % lh->n_head_kv != 0)
            return mp_err_set(L->err, MP_ERR_FORMAT, "%s: layer %" PRId64 ": %" PRId64
                              " query heads and %" PRId64 " KV heads: the first must be a "
                              "positive multiple of the second", L->path, l, lh->n_head,
                              lh->n_head_kv);
        if (lh->head_dim <= 0 || lh->n_rot < 0 || lh->n_rot % 2 || lh->n_rot > lh->head_dim)
            return mp_err_set(L->err, MP_ERR_FORMAT, "%s: layer %" PRId64 ": head_dim %" PRId64
                              ", rotated dims %" PRId64 ": need an even n_rot <= head_dim",
                              L->path, l, lh->head_dim, lh->n_rot);
        const mp_layer_hparams *src = lh->kv_source >= 0 && lh->kv_source < hp->n_layer
                                          ? &hp->layers[lh->kv_source] : NULL;
        if (!src || !src->has_kv || src->head_dim != lh->head_dim ||
            src->n_head_kv != lh->n_head_kv || src->is_swa != lh->is_swa)
            return mp_err_set(L->err, MP_ERR_FORMAT, "%s: layer %" PRId64 " reads the KV cache "
                              "of layer %" PRId64 ", which has no compatible K/V of its own",
                              L->path, l, lh->kv_source);
        if (lh->n_expert > 0 && (hp->n_expert_used <= 0 || hp->n_expert_used > lh->n_expert))
            return mp_err_set(L->err, MP_ERR_FORMAT, "%s: layer %" PRId64 " has %" PRId64
                              " experts but expert_used_count is %" PRId64, L->path, l,
                              lh->n_expert, hp->n_expert_used);
        if (lh->n_expert == 0 && lh->n_ff == 0)
            return mp_err_set(L->err, MP_ERR_FORMAT, "%s: layer %" PRId64 " has neither a "
                              "dense FFN nor experts", L->path, l);
    }
    if (hp->n_swa <= 0) {
        for (int64_t l = 0; l < hp->n_layer; l++)
            if (hp->layers[l].is_swa)
                return mp_err_set(L->err, MP_ERR_FORMAT, "%s: layer %" PRId64 " is a sliding-"
                                  "window layer but the window is %" PRId64, L->path, l,
                                  hp->n_swa);
    }
    return MP_OK;
}

mp_status mp_arch_model_load(const mp_gguf *g, mp_arch_model **out, mp_err *err) {
    const char *path = mp_gguf_path(g);
    char *arch = NULL;
    mp_status s = mp_gguf_key_strdup(g, "general.architecture", &arch, err);
    if (s) return s;
    const mp_arch_desc *desc = mp_arch_find(arch);
    if (!desc) {
        char list[128] = "";
        for (size_t i = 0; i < MP_ARRAY_LEN(arch_table); i++) {
            size_t n = strlen(list);
            snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", arch_table[i]->name);
        }
        s = mp_err_set(err, MP_ERR_UNSUPPORTED, "%s: architecture '%s' is not supported by "
                       "the engine (supported: %s)", path, arch, list);
        mp_free(arch);
        return s;
    }
    mp_free(arch);
    mp_arch_model *m = mp_calloc(1, sizeof *m);
    if (!m) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
    m->desc = desc;
    m->gguf = g;
    mp_arch_loader L = {.g = g, .path = path, .m = m, .err = err};
    if ((s = desc->load(&L)) || (s = check_model(&L))) {
        mp_arch_model_free(m);
        return s;
    }
    *out = m;
    return MP_OK;
}

void mp_arch_model_free(mp_arch_model *m) {
    if (!m) return;
    for (int64_t i = 0; i < m->n_vecs; i++) mp_free(m->vecs[i]);
    mp_free(m->vecs);
    mp_free(m->layers);
    mp_free(m->hp.layers);
    mp_free(m);
}

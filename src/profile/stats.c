/* stats.c — the expert statistics file: create, save, load, merge.
 *
 * A stats file is a GGUF container (as llama.cpp's imatrix is), so the same
 * reader serves it and a person can `moeprune inspect` it. Metadata:
 *   general.type = "moeprune-stats", moeprune.stats.version = 1,
 *   moeprune.stats.arch / model_name / model_sha256,
 *   moeprune.stats.n_layer, moeprune.stats.n_expert_used,
 *   moeprune.stats.n_expert (UINT32 per layer; 0 = dense layer),
 *   moeprune.stats.classes (STRING array), moeprune.stats.class_tokens (FLOAT64 array).
 * Tensors, all F64, per MoE layer L and class C:
 *   blk.L.cC.count {n_expert, k}, blk.L.cC.weight_sum {n_expert, k},
 *   blk.L.cC.contrib {n_expert}, blk.L.cC.contrib_sq {n_expert}.
 * Doubles keep counts exact (to 2^53) so that merging shards equals one run.
 * REAP saliency is not stored: it is contrib / selections (the mean of
 * g * ||E(x)|| over routed tokens), derived where needed. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "arch/arch.h"
#include "util/util.h"

#define STATS_TYPE    "moeprune-stats"
#define STATS_VERSION 1
/* bounds for what a stats file may ask us to allocate */
#define STATS_MAX_CLASSES 4096
#define STATS_MAX_EXPERT  65536

static const char *const field_names[4] = {"count", "weight_sum", "contrib", "contrib_sq"};

static void cell_free(mp_stats_cell *c) {
    mp_free(c->count);
    mp_free(c->weight_sum);
    mp_free(c->contrib);
    mp_free(c->contrib_sq);
}

void mp_stats_free(mp_stats *s) {
    if (!s) return;
    if (s->cells)
        for (int64_t i = 0; i < s->n_layer * s->n_class; i++) cell_free(&s->cells[i]);
    for (int64_t c = 0; s->classes && c < s->n_class; c++) mp_free(s->classes[c]);
    mp_free(s->classes);
    mp_free(s->class_tokens);
    mp_free(s->cells);
    mp_free(s->n_expert);
    mp_free(s->arch);
    mp_free(s->model_name);
    mp_free(s->model_sha256);
    mp_free(s);
}

const mp_stats_cell *mp_stats_cell_at(const mp_stats *s, int64_t layer, int64_t cls) {
    return &s->cells[layer * s->n_class + cls];
}

int64_t mp_stats_find_class(const mp_stats *s, const char *name) {
    for (int64_t c = 0; c < s->n_class; c++)
        if (!strcmp(s->classes[c], name)) return c;
    return -1;
}

static bool cell_alloc(mp_stats_cell *c, int64_t x, int64_t k) {
    c->count = mp_calloc((size_t)(x * k), sizeof(double));
    c->weight_sum = mp_calloc((size_t)(x * k), sizeof(double));
    c->contrib = mp_calloc((size_t)x, sizeof(double));
    c->contrib_sq = mp_calloc((size_t)x, sizeof(double));
    return c->count && c->weight_sum && c->contrib && c->contrib_sq;
}

/* Grows s by one class (zeroed); false on allocation failure. */
static bool add_class(mp_stats *s, const char *name) {
    int64_t nc = s->n_class + 1;
    char **cls = mp_realloc(s->classes, (size_t)nc * sizeof *cls);
    if (!cls) return false;
    s->classes = cls;
    double *tok = mp_realloc(s->class_tokens, (size_t)nc * sizeof *tok);
    if (!tok) return false;
    s->class_tokens = tok;
    mp_stats_cell *cells = mp_calloc((size_t)(s->n_layer * nc), sizeof *cells);
    if (!cells) return false;
    bool ok = (cls[nc - 1] = mp_strdup(name)) != NULL;
    for (int64_t l = 0; l < s->n_layer; l++) {
        for (int64_t c = 0; c < s->n_class; c++) cells[l * nc + c] = s->cells[l * s->n_class + c];
        if (ok && s->n_expert[l] > 0)
            ok = cell_alloc(&cells[l * nc + nc - 1], s->n_expert[l], s->n_expert_used);
    }
    if (!ok) {
        for (int64_t l = 0; l < s->n_layer; l++) cell_free(&cells[l * nc + nc - 1]);
        mp_free(cells);
        mp_free(cls[nc - 1]);
        return false;
    }
    tok[nc - 1] = 0;
    mp_free(s->cells);
    s->cells = cells;
    s->n_class = nc;
    return true;
}

mp_status mp_stats_create(mp_stats **out, const char *arch, int64_t n_layer,
                          const int64_t *n_expert, int64_t n_expert_used,
                          const char *const *classes, int64_t n_class, mp_err *err) {
    if (n_layer < 1 || n_expert_used < 1 || n_class < 1 || n_class > STATS_MAX_CLASSES)
        return mp_err_set(err, MP_ERR_ARG,
                          "stats: invalid layout (n_layer %" PRId64 ", k %" PRId64 ", %" PRId64
                          " classes)",
                          n_layer, n_expert_used, n_class);
    for (int64_t l = 0; l < n_layer; l++)
        if (n_expert[l] < 0 || n_expert[l] > STATS_MAX_EXPERT ||
            (n_expert[l] > 0 && n_expert[l] < n_expert_used))
            return mp_err_set(err, MP_ERR_ARG,
                              "stats: layer %" PRId64 " has %" PRId64 " experts (k = %" PRId64 ")",
                              l, n_expert[l], n_expert_used);
    mp_stats *s = mp_calloc(1, sizeof *s);
    if (!s) return mp_err_set(err, MP_ERR_NOMEM, "stats: out of memory");
    s->n_layer = n_layer;
    s->n_expert_used = n_expert_used;
    s->arch = mp_strdup(arch);
    s->model_name = mp_strdup("");
    s->model_sha256 = mp_strdup("");
    s->n_expert = mp_calloc((size_t)n_layer, sizeof *s->n_expert);
    bool ok = s->arch && s->model_name && s->model_sha256 && s->n_expert;
    if (ok) memcpy(s->n_expert, n_expert, (size_t)n_layer * sizeof *n_expert);
    for (int64_t c = 0; ok && c < n_class; c++) ok = add_class(s, classes[c]);
    if (!ok) {
        mp_stats_free(s);
        return mp_err_set(err, MP_ERR_NOMEM, "stats: out of memory");
    }
    *out = s;
    return MP_OK;
}

/* ------------------------------------------------------------------------ */
/* Save                                                                     */
/* ------------------------------------------------------------------------ */

static double *cell_field(const mp_stats_cell *c, int f) {
    return f == 0 ? c->count : f == 1 ? c->weight_sum : f == 2 ? c->contrib : c->contrib_sq;
}

mp_status mp_stats_save(const mp_stats *s, const char *path, bool overwrite, mp_err *err) {
    mp_gguf_writer *w = NULL;
    mp_status st = mp_gguf_writer_open(&w, path, overwrite, err);
    if (st) return st;
    uint8_t *tmp = mp_malloc((size_t)(s->n_layer > s->n_class ? s->n_layer : s->n_class) * 8);
    if (!tmp) {
        mp_gguf_writer_free(w);
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
    }
    for (int64_t l = 0; l < s->n_layer; l++) mp_store_u32(tmp + 4 * l, (uint32_t)s->n_expert[l]);
    if (!st) st = mp_gguf_writer_kv_str(w, "general.type", STATS_TYPE, err);
    if (!st) st = mp_gguf_writer_kv_u32(w, "moeprune.stats.version", STATS_VERSION, err);
    if (!st) st = mp_gguf_writer_kv_str(w, "moeprune.stats.arch", s->arch, err);
    if (!st) st = mp_gguf_writer_kv_str(w, "moeprune.stats.model_name", s->model_name, err);
    if (!st) st = mp_gguf_writer_kv_str(w, "moeprune.stats.model_sha256", s->model_sha256, err);
    if (!st) st = mp_gguf_writer_kv_u32(w, "moeprune.stats.n_layer", (uint32_t)s->n_layer, err);
    if (!st)
        st = mp_gguf_writer_kv_u32(w, "moeprune.stats.n_expert_used", (uint32_t)s->n_expert_used,
                                   err);
    if (!st)
        st = mp_gguf_writer_kv_arr(w, "moeprune.stats.n_expert", MP_GGUF_UINT32, tmp,
                                   (uint64_t)s->n_layer, err);
    if (!st)
        st = mp_gguf_writer_kv_arr_str(w, "moeprune.stats.classes", (const char *const *)s->classes,
                                       (uint64_t)s->n_class, err);
    for (int64_t c = 0; c < s->n_class; c++) {
        uint64_t u;
        memcpy(&u, &s->class_tokens[c], 8);
        mp_store_u64(tmp + 8 * c, u);
    }
    if (!st)
        st = mp_gguf_writer_kv_arr(w, "moeprune.stats.class_tokens", MP_GGUF_FLOAT64, tmp,
                                   (uint64_t)s->n_class, err);
    mp_free(tmp);
    char name[64];
    for (int64_t l = 0; l < s->n_layer && !st; l++) {
        if (s->n_expert[l] == 0) continue;
        for (int64_t c = 0; c < s->n_class && !st; c++)
            for (int f = 0; f < 4 && !st; f++) {
                int64_t ne[2] = {s->n_expert[l], s->n_expert_used};
                snprintf(name, sizeof name, "blk.%" PRId64 ".c%" PRId64 ".%s", l, c,
                         field_names[f]);
                st = mp_gguf_writer_add_tensor(w, name, MP_TYPE_F64, f < 2 ? 2 : 1, ne, err);
            }
    }
    for (int64_t l = 0; l < s->n_layer && !st; l++) {
        if (s->n_expert[l] == 0) continue;
        for (int64_t c = 0; c < s->n_class && !st; c++)
            for (int f = 0; f < 4 && !st; f++) {
                const double *v = cell_field(mp_stats_cell_at(s, l, c), f);
                int64_t n = s->n_expert[l] * (f < 2 ? s->n_expert_used : 1);
                for (int64_t i = 0; i < n && !st; i++) {
                    uint8_t b[8];
                    uint64_t u;
                    memcpy(&u, &v[i], 8);
                    mp_store_u64(b, u);
                    st = mp_gguf_writer_write_data(w, b, 8, err);
                }
            }
    }
    if (!st) st = mp_gguf_writer_finish(w, err);
    mp_gguf_writer_free(w);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Load                                                                     */
/* ------------------------------------------------------------------------ */

static mp_status key_str(const mp_gguf *g, const char *key, char **out, mp_err *err) {
    return mp_gguf_key_strdup(g, key, out, err);
}

static mp_status load_cells(const mp_gguf *g, mp_stats *s, mp_err *err) {
    const char *path = mp_gguf_path(g);
    char name[64];
    for (int64_t l = 0; l < s->n_layer; l++) {
        if (s->n_expert[l] == 0) continue;
        for (int64_t c = 0; c < s->n_class; c++)
            for (int f = 0; f < 4; f++) {
                snprintf(name, sizeof name, "blk.%" PRId64 ".c%" PRId64 ".%s", l, c,
                         field_names[f]);
                const mp_gguf_tensor *t = mp_gguf_find_tensor(g, name);
                int64_t n = s->n_expert[l] * (f < 2 ? s->n_expert_used : 1);
                if (!t)
                    return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s' is missing", path, name);
                if (t->type != MP_TYPE_F64 || mp_tensor_nelements(t) != n ||
                    t->ne[0] != s->n_expert[l])
                    return mp_err_set(err, MP_ERR_FORMAT,
                                      "%s: tensor '%s' is %s {%" PRId64 ", %" PRId64
                                      "}, expected F64 with %" PRId64 " elements",
                                      path, name, mp_type_name(t->type), t->ne[0], t->ne[1], n);
                double *v = cell_field(mp_stats_cell_at(s, l, c), f);
                for (int64_t i = 0; i < n; i++) {
                    uint64_t u = mp_load_u64((const uint8_t *)t->data + 8 * i);
                    memcpy(&v[i], &u, 8);
                    if (!isfinite(v[i]) || v[i] < 0)
                        return mp_err_set(err, MP_ERR_FORMAT,
                                          "%s: tensor '%s'[%" PRId64
                                          "] = %g: statistics are finite and >= 0",
                                          path, name, i, v[i]);
                }
            }
    }
    return MP_OK;
}

mp_status mp_stats_load(mp_stats **out, const char *path, mp_err *err) {
    mp_gguf *g;
    mp_status st = mp_gguf_open(&g, path, err);
    if (st) return st;
    mp_stats *s = NULL;
    char *type = NULL, *arch = NULL;
    int64_t *n_expert = NULL;
    char **classes = NULL;
    uint64_t n_layer = 0, k = 0, version = 0, n_class = 0;
    mp_err terr = {0};
    mp_status ts = mp_gguf_key_strdup(g, "general.type", &type, &terr);
    if (ts == MP_ERR_NOMEM) {
        st = mp_err_set(err, ts, "%s", terr.msg);
        goto done;
    }
    if (ts || strcmp(type, STATS_TYPE)) {
        st = mp_err_set(err, MP_ERR_FORMAT,
                        "%s: not a moeprune stats file (general.type is %s%s%s"
                        ", expected \"%s\")",
                        path, type ? "\"" : "", type ? type : "missing", type ? "\"" : "",
                        STATS_TYPE);
        goto done;
    }
    if ((st = mp_gguf_key_uint(g, "moeprune.stats.version", &version, err))) goto done;
    if (version != STATS_VERSION) {
        st = mp_err_set(err, MP_ERR_UNSUPPORTED,
                        "%s: stats version %" PRIu64 " (this moeprune "
                        "reads version %d)",
                        path, version, STATS_VERSION);
        goto done;
    }
    if ((st = key_str(g, "moeprune.stats.arch", &arch, err)) ||
        (st = mp_gguf_key_uint(g, "moeprune.stats.n_layer", &n_layer, err)) ||
        (st = mp_gguf_key_uint(g, "moeprune.stats.n_expert_used", &k, err)))
        goto done;
    int64_t ie = mp_gguf_find_key(g, "moeprune.stats.n_expert");
    int64_t ic = mp_gguf_find_key(g, "moeprune.stats.classes");
    int64_t it = mp_gguf_find_key(g, "moeprune.stats.class_tokens");
    n_class = ic >= 0 ? mp_gguf_arr_len(g, ic) : 0;
    if (n_layer < 1 || n_layer > 100000 || ie < 0 || mp_gguf_arr_len(g, ie) != n_layer ||
        n_class < 1 || n_class > STATS_MAX_CLASSES || it < 0 || mp_gguf_arr_len(g, it) != n_class ||
        k < 1 || k > STATS_MAX_EXPERT) {
        st = mp_err_set(err, MP_ERR_FORMAT,
                        "%s: inconsistent layout: n_layer %" PRIu64 ", n_expert_used %" PRIu64
                        ", n_expert array of %" PRIu64 ", %" PRIu64 " classes with %" PRIu64
                        " token counts",
                        path, n_layer, k, ie >= 0 ? mp_gguf_arr_len(g, ie) : 0, n_class,
                        it >= 0 ? mp_gguf_arr_len(g, it) : 0);
        goto done;
    }
    n_expert = mp_calloc((size_t)n_layer, sizeof *n_expert);
    classes = mp_calloc((size_t)n_class, sizeof *classes);
    if (!n_expert || !classes) {
        st = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (uint64_t l = 0; l < n_layer; l++) {
        uint64_t x;
        if ((st = mp_gguf_get_uint(g, ie, l, &x, err))) goto done;
        n_expert[l] = (int64_t)(x > STATS_MAX_EXPERT ? STATS_MAX_EXPERT + 1 : x);
    }
    for (uint64_t c = 0; c < n_class; c++) {
        const char *str;
        size_t len;
        if ((st = mp_gguf_get_str(g, ic, c, &str, &len, err))) goto done;
        if (!(classes[c] = mp_strndup(str, len))) {
            st = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
    }
    mp_err cerr = {0};
    if ((st = mp_stats_create(&s, arch, (int64_t)n_layer, n_expert, (int64_t)k,
                              (const char *const *)classes, (int64_t)n_class, &cerr))) {
        st = mp_err_set(err, st, "%s: %s", path, cerr.msg);
        goto done;
    }
    for (uint64_t c = 0; c < n_class; c++) {
        double v;
        if ((st = mp_gguf_get_float(g, it, c, &v, err))) goto done;
        if (!isfinite(v) || v < 0) {
            st = mp_err_set(err, MP_ERR_FORMAT, "%s: class_tokens[%" PRIu64 "] = %g", path, c, v);
            goto done;
        }
        s->class_tokens[c] = v;
    }
    for (uint64_t c = 0; c < n_class; c++)
        for (uint64_t d = 0; d < c; d++)
            if (!strcmp(classes[c], classes[d])) {
                st = mp_err_set(err, MP_ERR_FORMAT, "%s: class '%s' appears twice", path,
                                classes[c]);
                goto done;
            }
    mp_free(s->model_name);
    mp_free(s->model_sha256);
    s->model_name = s->model_sha256 = NULL;
    if ((st = key_str(g, "moeprune.stats.model_name", &s->model_name, err)) ||
        (st = key_str(g, "moeprune.stats.model_sha256", &s->model_sha256, err)) ||
        (st = load_cells(g, s, err)))
        goto done;
done:
    if (st) {
        mp_stats_free(s);
        s = NULL;
    }
    for (uint64_t c = 0; classes && c < n_class; c++) mp_free(classes[c]);
    mp_free(classes);
    mp_free(n_expert);
    mp_free(type);
    mp_free(arch);
    mp_gguf_free(g);
    if (!st) *out = s;
    return st;
}

/* ------------------------------------------------------------------------ */
/* Merge                                                                    */
/* ------------------------------------------------------------------------ */

mp_status mp_stats_merge(mp_stats *dst, const mp_stats *src, mp_err *err) {
    if (strcmp(dst->arch, src->arch) || dst->n_layer != src->n_layer ||
        dst->n_expert_used != src->n_expert_used)
        return mp_err_set(err, MP_ERR_CHECK,
                          "stats come from different models: %s with %" PRId64
                          " layers, top-%" PRId64 " vs %s with %" PRId64 " layers, top-%" PRId64,
                          dst->arch, dst->n_layer, dst->n_expert_used, src->arch, src->n_layer,
                          src->n_expert_used);
    if (dst->model_sha256[0] && src->model_sha256[0] &&
        strcmp(dst->model_sha256, src->model_sha256))
        return mp_err_set(err, MP_ERR_CHECK,
                          "stats come from different model files (sha256 %.16s"
                          "... vs %.16s...)",
                          dst->model_sha256, src->model_sha256);
    for (int64_t l = 0; l < dst->n_layer; l++)
        if (dst->n_expert[l] != src->n_expert[l])
            return mp_err_set(err, MP_ERR_CHECK,
                              "stats layouts differ: layer %" PRId64 " has %" PRId64 " vs %" PRId64
                              " experts",
                              l, dst->n_expert[l], src->n_expert[l]);
    /* classes of src that dst lacks are added first, so nothing is half-merged */
    for (int64_t c = 0; c < src->n_class; c++)
        if (mp_stats_find_class(dst, src->classes[c]) < 0 && !add_class(dst, src->classes[c]))
            return mp_err_set(err, MP_ERR_NOMEM, "stats: out of memory");
    if (!dst->model_sha256[0] && src->model_sha256[0]) {
        char *sha = mp_strdup(src->model_sha256);
        if (!sha) return mp_err_set(err, MP_ERR_NOMEM, "stats: out of memory");
        mp_free(dst->model_sha256);
        dst->model_sha256 = sha;
    }
    for (int64_t c = 0; c < src->n_class; c++) {
        int64_t d = mp_stats_find_class(dst, src->classes[c]);
        dst->class_tokens[d] += src->class_tokens[c];
        for (int64_t l = 0; l < dst->n_layer; l++) {
            if (dst->n_expert[l] == 0) continue;
            const mp_stats_cell *a = mp_stats_cell_at(src, l, c);
            const mp_stats_cell *b = mp_stats_cell_at(dst, l, d);
            for (int f = 0; f < 4; f++) {
                const double *from = cell_field(a, f);
                double *to = cell_field(b, f);
                int64_t n = dst->n_expert[l] * (f < 2 ? dst->n_expert_used : 1);
                for (int64_t i = 0; i < n; i++) to[i] += from[i];
            }
        }
    }
    return MP_OK;
}

/* ------------------------------------------------------------------------ */
/* Checking against a model                                                 */
/* ------------------------------------------------------------------------ */

mp_status mp_stats_check_model(const mp_stats *s, const mp_gguf *model, mp_err *err) {
    const char *path = mp_gguf_path(model);
    mp_moe_info *moe;
    mp_status st = mp_moe_scan(model, &moe, err);
    if (st) return st;
    if (strcmp(s->arch, moe->arch) || s->n_layer != moe->n_layer)
        st = mp_err_set(err, MP_ERR_CHECK,
                        "the stats are for a %" PRId64 "-layer %s model but %s is a %" PRId64
                        "-layer %s model",
                        s->n_layer, s->arch, path, moe->n_layer, moe->arch);
    for (int64_t l = 0; !st && l < s->n_layer; l++)
        if (s->n_expert[l] != moe->layers[l].n_expert)
            st = mp_err_set(err, MP_ERR_CHECK,
                            "the stats have %" PRId64 " experts in layer %" PRId64
                            " but %s has %" PRId64,
                            s->n_expert[l], l, path, moe->layers[l].n_expert);
    if (!st && moe->n_expert_used && s->n_expert_used != moe->n_expert_used)
        st =
            mp_err_set(err, MP_ERR_CHECK,
                       "the stats were taken with top-%" PRId64 " routing but %s uses top-%" PRId64,
                       s->n_expert_used, path, moe->n_expert_used);
    mp_moe_info_free(moe);
    return st;
}

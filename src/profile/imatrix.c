/* imatrix.c — the importance matrix: for every weight matrix of the model's
 * layers, per input column the sum over the rows it multiplied of x^2, and
 * the number of rows; per expert for a 3-D expert tensor, whose rows are the
 * tokens routed to that expert. llama-quantize --imatrix weighs each weight's
 * rounding error by sum2 / count, the mean square of the input it multiplies,
 * so columns that meet large inputs are kept more precisely.
 *
 * The file is the GGUF layout of llama.cpp's imatrix (tools/imatrix/imatrix.cpp
 * writes it, common/imatrix-loader.cpp reads it), so llama-quantize takes it
 * as is:
 *   general.type = "imatrix"; imatrix.datasets (STRING array),
 *   imatrix.chunk_count and imatrix.chunk_size (UINT32) -- llama-quantize
 *   refuses a GGUF imatrix without all three;
 *   per weight W, in name order: "W.in_sum2" F32 {n_in, n_slab} and
 *   "W.counts" F32 {1, n_slab}, trailing dimensions of 1 dropped as ggml
 *   writes them (a 2-D weight's are {n_in} and {1}).
 * Added, and ignored by llama.cpp: moeprune.imatrix.model_sha256, so that
 * files of different models are not merged.
 *
 * Deliberate differences from llama-imatrix: sums are kept in double (it sums
 * in float) and rounded to F32 only in the file; every product is counted,
 * also steps of fewer than 16 tokens (llama-imatrix skips dense products of
 * such small batches, which it meets while generating). Like llama-imatrix
 * without --process-output, only the layers' weights ("blk.*") are recorded,
 * not the output head. Counts are exact in the file up to 2^24 rows per
 * tensor (F32), as in llama.cpp's. Checkpoints may use F64 tensors, which
 * this loader reads and llama.cpp does not.
 * Not here: which tokens are evaluated (src/cli/cmd_profile.c). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "profile/profile.h"

#define IMATRIX_TYPE   "imatrix"
#define KEY_DATASETS   "imatrix.datasets"
#define KEY_CHUNKS     "imatrix.chunk_count"
#define KEY_CHUNK_SIZE "imatrix.chunk_size"
#define KEY_SHA256     "moeprune.imatrix.model_sha256"
#define SUFFIX_SUM2    ".in_sum2"
#define SUFFIX_COUNTS  ".counts"
/* values converted per write call when saving */
#define SAVE_BLOCK 4096

static void entry_free(mp_imatrix_entry *e) {
    mp_free(e->name);
    mp_free(e->sum2);
    mp_free(e->count);
}

void mp_imatrix_free(mp_imatrix *im) {
    if (!im) return;
    for (int64_t i = 0; i < im->n_entry; i++) entry_free(&im->entries[i]);
    for (int64_t i = 0; i < im->n_dataset; i++) mp_free(im->datasets[i]);
    mp_free(im->entries);
    mp_free(im->datasets);
    mp_free(im->model_sha256);
    mp_free(im);
}

/* Index of the first entry whose name is not below `name`. */
static int64_t lower_bound(const mp_imatrix *im, const char *name) {
    int64_t lo = 0, hi = im->n_entry;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (strcmp(im->entries[mid].name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

mp_imatrix_entry *mp_imatrix_find(const mp_imatrix *im, const char *name) {
    int64_t i = lower_bound(im, name);
    return i < im->n_entry && !strcmp(im->entries[i].name, name) ? &im->entries[i] : NULL;
}

static bool entry_seen(const mp_imatrix_entry *e) {
    for (int64_t s = 0; s < e->n_slab; s++)
        if (e->count[s] > 0) return true;
    return false;
}

mp_status mp_imatrix_add(mp_imatrix *im, const char *name, int64_t n_in, int64_t n_slab,
                         mp_err *err) {
    size_t n;
    if (strlen(name) + strlen(SUFFIX_SUM2) > MP_GGUF_MAX_NAME)
        return mp_err_set(err, MP_ERR_ARG,
                          "imatrix: tensor name '%s' is too long for '%s" SUFFIX_SUM2
                          "' (at most %d bytes)",
                          name, name, MP_GGUF_MAX_NAME);
    if (n_in < 1 || n_slab < 1 || !mp_mul_size((size_t)n_in, (size_t)n_slab, &n))
        return mp_err_set(err, MP_ERR_ARG,
                          "imatrix: tensor '%s': %" PRId64 " columns x %" PRId64
                          " slabs (expected at least 1 of each)",
                          name, n_in, n_slab);
    if (mp_imatrix_find(im, name))
        return mp_err_set(err, MP_ERR_ARG, "imatrix: tensor '%s' appears twice", name);
    if (im->n_entry == im->cap_entry) {
        int64_t cap = im->cap_entry ? 2 * im->cap_entry : 64;
        mp_imatrix_entry *e = mp_realloc(im->entries, (size_t)cap * sizeof *e);
        if (!e) return mp_err_set(err, MP_ERR_NOMEM, "imatrix: out of memory");
        im->entries = e;
        im->cap_entry = cap;
    }
    mp_imatrix_entry e = {.name = mp_strdup(name),
                          .n_in = n_in,
                          .n_slab = n_slab,
                          .sum2 = mp_calloc(n, sizeof(double)),
                          .count = mp_calloc((size_t)n_slab, sizeof(double))};
    if (!e.name || !e.sum2 || !e.count) {
        entry_free(&e);
        return mp_err_set(err, MP_ERR_NOMEM, "imatrix: out of memory for tensor '%s'", name);
    }
    int64_t at = lower_bound(im, name);
    memmove(&im->entries[at + 1], &im->entries[at],
            (size_t)(im->n_entry - at) * sizeof *im->entries);
    im->entries[at] = e;
    im->n_entry++;
    return MP_OK;
}

mp_status mp_imatrix_add_dataset(mp_imatrix *im, const char *name, mp_err *err) {
    for (int64_t i = 0; i < im->n_dataset; i++)
        if (!strcmp(im->datasets[i], name)) return MP_OK;
    char **d = mp_realloc(im->datasets, (size_t)(im->n_dataset + 1) * sizeof *d);
    if (!d) return mp_err_set(err, MP_ERR_NOMEM, "imatrix: out of memory");
    im->datasets = d;
    if (!(d[im->n_dataset] = mp_strdup(name)))
        return mp_err_set(err, MP_ERR_NOMEM, "imatrix: out of memory");
    im->n_dataset++;
    return MP_OK;
}

mp_status mp_imatrix_create(mp_imatrix **out, const mp_model *m, mp_err *err) {
    mp_imatrix *im = mp_calloc(1, sizeof *im);
    if (!im || !(im->model_sha256 = mp_strdup(""))) {
        mp_free(im);
        return mp_err_set(err, MP_ERR_NOMEM, "imatrix: out of memory");
    }
    const mp_gguf *g = m ? mp_model_gguf(m) : NULL;
    for (int64_t i = 0; g && i < mp_gguf_n_tensors(g); i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(g, i);
        if (strncmp(t->name, "blk.", 4) || t->n_dims < 2 || t->n_dims > 3) continue;
        mp_status st = mp_imatrix_add(im, t->name, t->ne[0], t->n_dims == 3 ? t->ne[2] : 1, err);
        if (st) {
            mp_imatrix_free(im);
            return st;
        }
    }
    *out = im;
    return MP_OK;
}

/* ------------------------------------------------------------------------ */
/* Accumulation                                                             */
/* ------------------------------------------------------------------------ */

/* Runs on the evaluating thread, in the engine's fixed order of products, so
 * the sums do not depend on the thread count. x*x is formed in double: the
 * product of two floats is exact there. */
static mp_status on_matmul(const mp_matmul_hook_data *d, void *user) {
    mp_imatrix *im = user;
    mp_imatrix_entry *e = d->tensor ? mp_imatrix_find(im, d->tensor) : NULL;
    if (!e) return MP_OK;
    if (d->n_in != e->n_in || d->n_slab != e->n_slab || d->slab < 0 || d->slab >= e->n_slab ||
        d->ldx < d->n_in)
        return MP_ERR_CHECK; /* not the tensor the entry was made for: never expected */
    double *acc = e->sum2 + d->slab * e->n_in;
    for (int64_t t = 0; t < d->n_tokens; t++) {
        const float *x = d->x + t * d->ldx;
        for (int64_t j = 0; j < e->n_in; j++) acc[j] += (double)x[j] * (double)x[j];
    }
    e->count[d->slab] += (double)d->n_tokens;
    return MP_OK;
}

mp_status mp_imatrix_attach(mp_imatrix *im, mp_context *c, mp_err *err) {
    return mp_context_set_matmul_hook(c, on_matmul, im, err);
}

/* ------------------------------------------------------------------------ */
/* Save                                                                     */
/* ------------------------------------------------------------------------ */

/* Checks every value of the entries to be saved is finite in the output type. */
static mp_status check_finite(const mp_imatrix *im, const char *path, bool exact, mp_err *err) {
    for (int64_t i = 0; i < im->n_entry; i++) {
        const mp_imatrix_entry *e = &im->entries[i];
        if (!entry_seen(e)) continue;
        for (int64_t j = 0; j < e->n_in * e->n_slab; j++) {
            double v = exact ? e->sum2[j] : (double)(float)e->sum2[j];
            if (!isfinite(v))
                return mp_err_set(err, MP_ERR_CHECK,
                                  "%s: tensor '%s' column %" PRId64 " of slab %" PRId64
                                  ": sum of squares %g is not finite as %s (the activations "
                                  "overflowed)",
                                  path, e->name, j % e->n_in, j / e->n_in, e->sum2[j],
                                  exact ? "F64" : "F32");
        }
    }
    return MP_OK;
}

static mp_status write_values(mp_gguf_writer *w, const double *v, int64_t n, bool exact,
                              mp_err *err) {
    uint8_t buf[SAVE_BLOCK * 8];
    const int64_t size = exact ? 8 : 4;
    mp_status st = MP_OK;
    for (int64_t i0 = 0; i0 < n && !st; i0 += SAVE_BLOCK) {
        int64_t k = n - i0 < SAVE_BLOCK ? n - i0 : SAVE_BLOCK;
        for (int64_t i = 0; i < k; i++) {
            if (exact) {
                uint64_t u;
                memcpy(&u, &v[i0 + i], 8);
                mp_store_u64(buf + 8 * i, u);
            } else {
                float f = (float)v[i0 + i];
                uint32_t u;
                memcpy(&u, &f, 4);
                mp_store_u32(buf + 4 * i, u);
            }
        }
        st = mp_gguf_writer_write_data(w, buf, (size_t)(k * size), err);
    }
    return st;
}

/* UINT32 metadata; larger values are clamped (a count of chunks, only shown). */
static uint32_t clamp_u32(int64_t v) {
    return v < 0 ? 0 : v > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

mp_status mp_imatrix_save(const mp_imatrix *im, const char *path, bool overwrite, bool exact,
                          mp_err *err) {
    int64_t n_seen = 0;
    for (int64_t i = 0; i < im->n_entry; i++) n_seen += entry_seen(&im->entries[i]);
    if (n_seen == 0)
        return mp_err_set(err, MP_ERR_ARG, "%s: the imatrix is empty (no product was recorded)",
                          path);
    mp_status st = check_finite(im, path, exact, err);
    if (st) return st;
    mp_gguf_writer *w = NULL;
    if ((st = mp_gguf_writer_open(&w, path, overwrite, err))) return st;
    st = mp_gguf_writer_kv_str(w, "general.type", IMATRIX_TYPE, err);
    if (!st)
        st = mp_gguf_writer_kv_arr_str(w, KEY_DATASETS, (const char *const *)im->datasets,
                                       (uint64_t)im->n_dataset, err);
    if (!st) st = mp_gguf_writer_kv_u32(w, KEY_CHUNKS, clamp_u32(im->chunk_count), err);
    if (!st) st = mp_gguf_writer_kv_u32(w, KEY_CHUNK_SIZE, clamp_u32(im->chunk_size), err);
    if (!st && im->model_sha256[0])
        st = mp_gguf_writer_kv_str(w, KEY_SHA256, im->model_sha256, err);
    const int type = exact ? MP_TYPE_F64 : MP_TYPE_F32;
    char name[MP_GGUF_MAX_NAME + 1];
    for (int64_t i = 0; i < im->n_entry && !st; i++) {
        const mp_imatrix_entry *e = &im->entries[i];
        if (!entry_seen(e)) continue;
        const uint32_t nd = e->n_slab > 1 ? 2 : 1;
        const int64_t ne_sum[2] = {e->n_in, e->n_slab}, ne_cnt[2] = {1, e->n_slab};
        snprintf(name, sizeof name, "%s" SUFFIX_SUM2, e->name);
        st = mp_gguf_writer_add_tensor(w, name, type, nd, ne_sum, err);
        snprintf(name, sizeof name, "%s" SUFFIX_COUNTS, e->name);
        if (!st) st = mp_gguf_writer_add_tensor(w, name, type, nd, ne_cnt, err);
    }
    for (int64_t i = 0; i < im->n_entry && !st; i++) {
        const mp_imatrix_entry *e = &im->entries[i];
        if (!entry_seen(e)) continue;
        st = write_values(w, e->sum2, e->n_in * e->n_slab, exact, err);
        if (!st) st = write_values(w, e->count, e->n_slab, exact, err);
    }
    if (!st) st = mp_gguf_writer_finish(w, err);
    mp_gguf_writer_free(w);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Load                                                                     */
/* ------------------------------------------------------------------------ */

/* n values of an F32 or F64 tensor into v, each finite and >= 0. */
static mp_status read_values(const char *path, const mp_gguf_tensor *t, double *v, int64_t n,
                             mp_err *err) {
    if (!t->data)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s' has no data", path, t->name);
    const uint8_t *p = t->data;
    for (int64_t i = 0; i < n; i++) {
        if (t->type == MP_TYPE_F64) {
            uint64_t u = mp_load_u64(p + 8 * i);
            memcpy(&v[i], &u, 8);
        } else {
            v[i] = (double)mp_load_f32(p + 4 * i);
        }
        if (!isfinite(v[i]) || v[i] < 0)
            return mp_err_set(err, MP_ERR_FORMAT,
                              "%s: tensor '%s'[%" PRId64 "] = %g: sums and counts are finite "
                              "and >= 0",
                              path, t->name, i, v[i]);
    }
    return MP_OK;
}

/* The pair of tensors of the weight `base` (its in_sum2 tensor is `sum`). */
static mp_status load_entry(const mp_gguf *g, mp_imatrix *im, const mp_gguf_tensor *sum,
                            const char *base, mp_err *err) {
    const char *path = mp_gguf_path(g);
    char name[MP_GGUF_MAX_NAME + 16];
    snprintf(name, sizeof name, "%s" SUFFIX_COUNTS, base);
    const mp_gguf_tensor *cnt = mp_gguf_find_tensor(g, name);
    if (!cnt)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s' has no '%s' beside it", path,
                          sum->name, name);
    for (int k = 0; k < 2; k++) {
        const mp_gguf_tensor *t = k ? cnt : sum;
        if (t->type != MP_TYPE_F32 && t->type != MP_TYPE_F64)
            return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s' is %s, expected F32 or F64",
                              path, t->name, mp_type_name(t->type));
    }
    const int64_t n_in = sum->ne[0], n = mp_tensor_nelements(sum);
    const int64_t n_slab = n_in > 0 ? n / n_in : 0;
    if (n_slab < 1 || mp_tensor_nelements(cnt) != n_slab)
        return mp_err_set(err, MP_ERR_FORMAT,
                          "%s: tensor '%s' has %" PRId64 " elements for %" PRId64
                          " slabs of %" PRId64 " columns, expected %" PRId64,
                          path, cnt->name, mp_tensor_nelements(cnt), n_slab, n_in, n_slab);
    mp_err aerr = {0};
    mp_status st = mp_imatrix_add(im, base, n_in, n_slab, &aerr);
    if (st)
        return mp_err_set(err, st == MP_ERR_NOMEM ? st : MP_ERR_FORMAT, "%s: %s", path, aerr.msg);
    mp_imatrix_entry *e = mp_imatrix_find(im, base);
    if ((st = read_values(path, sum, e->sum2, n, err))) return st;
    return read_values(path, cnt, e->count, n_slab, err);
}

static mp_status load_meta(const mp_gguf *g, mp_imatrix *im, mp_err *err) {
    const char *path = mp_gguf_path(g);
    int64_t kd = mp_gguf_find_key(g, KEY_DATASETS);
    if (kd >= 0 &&
        (mp_gguf_kv_type(g, kd) != MP_GGUF_ARRAY || mp_gguf_arr_type(g, kd) != MP_GGUF_STRING))
        return mp_err_set(err, MP_ERR_FORMAT, "%s: %s is %s, expected a STRING array", path,
                          KEY_DATASETS, mp_gguf_vtype_name(mp_gguf_kv_type(g, kd)));
    for (uint64_t i = 0; kd >= 0 && i < mp_gguf_arr_len(g, kd); i++) {
        const char *s;
        size_t len;
        mp_status st = mp_gguf_get_str(g, kd, i, &s, &len, err);
        char *copy = st ? NULL : mp_strndup(s, len);
        if (!st && !copy) st = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
        if (!st) st = mp_imatrix_add_dataset(im, copy, err);
        mp_free(copy);
        if (st) return st;
    }
    /* the counts are optional here (llama-quantize insists, merging need not) */
    uint64_t v;
    mp_status st = MP_OK;
    if (mp_gguf_find_key(g, KEY_CHUNKS) >= 0 && !(st = mp_gguf_key_uint(g, KEY_CHUNKS, &v, err)))
        im->chunk_count = (int64_t)(v > UINT32_MAX ? UINT32_MAX : v);
    if (!st && mp_gguf_find_key(g, KEY_CHUNK_SIZE) >= 0 &&
        !(st = mp_gguf_key_uint(g, KEY_CHUNK_SIZE, &v, err)))
        im->chunk_size = (int64_t)(v > UINT32_MAX ? UINT32_MAX : v);
    if (!st && mp_gguf_find_key(g, KEY_SHA256) >= 0) {
        char *sha = NULL;
        if ((st = mp_gguf_key_strdup(g, KEY_SHA256, &sha, err))) return st;
        mp_free(im->model_sha256);
        im->model_sha256 = sha;
    }
    return st;
}

static bool ends_with(const char *s, const char *suffix, size_t *stem) {
    size_t n = strlen(s), k = strlen(suffix);
    if (n <= k || strcmp(s + n - k, suffix)) return false;
    *stem = n - k;
    return true;
}

mp_status mp_imatrix_load(mp_imatrix **out, const char *path, mp_err *err) {
    mp_gguf *g;
    mp_status st = mp_gguf_open(&g, path, err);
    if (st) return st;
    mp_imatrix *im = NULL;
    char *type = NULL;
    mp_err terr = {0};
    mp_status ts = mp_gguf_key_strdup(g, "general.type", &type, &terr);
    if (ts == MP_ERR_NOMEM) {
        st = mp_err_set(err, ts, "%s", terr.msg);
        goto done;
    }
    if (ts || strcmp(type, IMATRIX_TYPE)) {
        st = mp_err_set(err, MP_ERR_FORMAT,
                        "%s: not an imatrix file (general.type is %s%s%s, expected \"%s\")", path,
                        type ? "\"" : "", type ? type : "missing", type ? "\"" : "", IMATRIX_TYPE);
        goto done;
    }
    if ((st = mp_imatrix_create(&im, NULL, err)) || (st = load_meta(g, im, err))) goto done;
    for (int64_t i = 0; i < mp_gguf_n_tensors(g) && !st; i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(g, i);
        char base[MP_GGUF_MAX_NAME + 1];
        size_t stem;
        if (ends_with(t->name, SUFFIX_SUM2, &stem)) {
            memcpy(base, t->name, stem);
            base[stem] = 0;
            st = load_entry(g, im, t, base, err);
        } else if (ends_with(t->name, SUFFIX_COUNTS, &stem)) {
            char sum[MP_GGUF_MAX_NAME + 16];
            snprintf(sum, sizeof sum, "%.*s" SUFFIX_SUM2, (int)stem, t->name);
            if (!mp_gguf_find_tensor(g, sum))
                st = mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s' has no '%s' beside it", path,
                                t->name, sum);
        }
    }
    if (!st && im->n_entry == 0)
        st = mp_err_set(err, MP_ERR_FORMAT, "%s: no '*" SUFFIX_SUM2 "' tensors: an empty imatrix",
                        path);
done:
    mp_free(type);
    mp_gguf_free(g);
    if (st) {
        mp_imatrix_free(im);
        return st;
    }
    *out = im;
    return MP_OK;
}

/* ------------------------------------------------------------------------ */
/* Merge                                                                    */
/* ------------------------------------------------------------------------ */

mp_status mp_imatrix_merge(mp_imatrix *dst, const mp_imatrix *src, mp_err *err) {
    if (dst->model_sha256[0] && src->model_sha256[0] &&
        strcmp(dst->model_sha256, src->model_sha256))
        return mp_err_set(err, MP_ERR_CHECK,
                          "the imatrix files come from different model files (sha256 %.16s"
                          "... vs %.16s...)",
                          dst->model_sha256, src->model_sha256);
    for (int64_t i = 0; i < src->n_entry; i++) {
        const mp_imatrix_entry *s = &src->entries[i], *d = mp_imatrix_find(dst, s->name);
        if (d && (d->n_in != s->n_in || d->n_slab != s->n_slab))
            return mp_err_set(err, MP_ERR_CHECK,
                              "imatrix layouts differ: tensor '%s' is %" PRId64
                              " columns x %" PRId64 " slabs vs %" PRId64 " x %" PRId64,
                              s->name, d->n_in, d->n_slab, s->n_in, s->n_slab);
    }
    /* entries and metadata first: an allocation failure leaves only zero
     * entries and extra dataset names behind, never half-added sums */
    mp_status st = MP_OK;
    for (int64_t i = 0; i < src->n_entry && !st; i++)
        if (entry_seen(&src->entries[i]) && !mp_imatrix_find(dst, src->entries[i].name))
            st = mp_imatrix_add(dst, src->entries[i].name, src->entries[i].n_in,
                                src->entries[i].n_slab, err);
    for (int64_t i = 0; i < src->n_dataset && !st; i++)
        st = mp_imatrix_add_dataset(dst, src->datasets[i], err);
    if (!st && !dst->model_sha256[0] && src->model_sha256[0]) {
        char *sha = mp_strdup(src->model_sha256);
        if (!sha) return mp_err_set(err, MP_ERR_NOMEM, "imatrix: out of memory");
        mp_free(dst->model_sha256);
        dst->model_sha256 = sha;
    }
    if (st) return st;
    for (int64_t i = 0; i < src->n_entry; i++) {
        const mp_imatrix_entry *s = &src->entries[i];
        mp_imatrix_entry *d = mp_imatrix_find(dst, s->name);
        if (!d) continue; /* an entry src never saw */
        for (int64_t j = 0; j < s->n_in * s->n_slab; j++) d->sum2[j] += s->sum2[j];
        for (int64_t j = 0; j < s->n_slab; j++) d->count[j] += s->count[j];
    }
    dst->chunk_count += src->chunk_count;
    if (!dst->chunk_size) dst->chunk_size = src->chunk_size;
    return MP_OK;
}

/* writer.c — streaming safetensors writer.
 *
 * Tensor declarations and metadata are small and kept in memory until the
 * header is written; tensor data then streams through in declaration order,
 * so memory use does not depend on the model size. Offsets are assigned in
 * declaration order with no padding between tensors (the format has none);
 * the JSON header is padded with spaces so the data section starts on an
 * 8-byte boundary, as huggingface/safetensors does. The file is built as a
 * temporary in the target folder and renamed into place only by
 * mp_st_writer_finish, after a flush, an fsync and a re-read through the
 * reader; a writer freed before that removes its temporary. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors/st.h"

typedef struct st_wtensor {
    char *name;
    int dtype;
    uint32_t n_dims;
    int64_t shape[MP_ST_MAX_DIMS];
    uint64_t offset, nbytes;
} st_wtensor;

struct mp_st_writer {
    mp_outfile out; /* the file, under its temporary name until finish */
    char **meta_keys, **meta_vals;
    int64_t n_meta, cap_meta;
    st_wtensor *tensors;
    int64_t n_tensors, cap_tensors;
    uint64_t data_size;
    bool header_done;
    int64_t cur;       /* tensor being written */
    uint64_t cur_done; /* its bytes written so far */
    bool failed;       /* an I/O error happened: refuse to finish */
};

static mp_status st_io_error(mp_st_writer *w, mp_err *err, const char *what) {
    w->failed = true;
    return mp_err_set(err, MP_ERR_IO, "%s: %s failed: %s", w->out.path, what, strerror(errno));
}

mp_status mp_st_writer_open(mp_st_writer **out, const char *path, bool overwrite, mp_err *err) {
    *out = NULL;
    mp_st_writer *w = mp_calloc(1, sizeof *w);
    if (!w) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
    mp_status s = mp_outfile_open(&w->out, path, overwrite, err);
    if (s) {
        mp_free(w);
        return s;
    }
    *out = w;
    return MP_OK;
}

void mp_st_writer_free(mp_st_writer *w) {
    if (!w) return;
    mp_outfile_discard(&w->out);
    for (int64_t i = 0; i < w->n_meta; i++) {
        mp_free(w->meta_keys[i]);
        mp_free(w->meta_vals[i]);
    }
    for (int64_t i = 0; i < w->n_tensors; i++) mp_free(w->tensors[i].name);
    mp_free(w->meta_keys);
    mp_free(w->meta_vals);
    mp_free(w->tensors);
    mp_free(w);
}

mp_status mp_st_writer_meta(mp_st_writer *w, const char *key, const char *value, mp_err *err) {
    if (w->header_done)
        return mp_err_set(err, MP_ERR_ARG, "%s: metadata added after the header", w->out.path);
    for (int64_t i = 0; i < w->n_meta; i++)
        if (!strcmp(w->meta_keys[i], key))
            return mp_err_set(err, MP_ERR_ARG, "%s: metadata key '%s' added twice", w->out.path,
                              key);
    if (w->n_meta == w->cap_meta) {
        int64_t cap = w->cap_meta ? 2 * w->cap_meta : 8;
        char **k = mp_realloc(w->meta_keys, (size_t)cap * sizeof *k);
        if (!k) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
        w->meta_keys = k;
        char **v = mp_realloc(w->meta_vals, (size_t)cap * sizeof *v);
        if (!v) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
        w->meta_vals = v;
        w->cap_meta = cap;
    }
    char *k = mp_strdup(key), *v = mp_strdup(value);
    if (!k || !v) {
        mp_free(k);
        mp_free(v);
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
    }
    w->meta_keys[w->n_meta] = k;
    w->meta_vals[w->n_meta++] = v;
    return MP_OK;
}

mp_status mp_st_writer_add_tensor(mp_st_writer *w, const char *name, int dtype, uint32_t n_dims,
                                  const int64_t *shape, mp_err *err) {
    if (w->header_done)
        return mp_err_set(err, MP_ERR_ARG, "%s: tensor '%s' declared after the header", w->out.path,
                          name);
    if (!name[0] || !strcmp(name, "__metadata__"))
        return mp_err_set(err, MP_ERR_ARG, "%s: '%s' is not a valid tensor name", w->out.path,
                          name);
    if (mp_st_dtype_bits(dtype) == 0)
        return mp_err_set(err, MP_ERR_ARG, "%s: tensor '%s': invalid dtype %d", w->out.path, name,
                          dtype);
    if (n_dims > MP_ST_MAX_DIMS)
        return mp_err_set(err, MP_ERR_ARG, "%s: tensor '%s': %" PRIu32 " dimensions, at most %d",
                          w->out.path, name, n_dims, MP_ST_MAX_DIMS);
    st_wtensor t = {.dtype = dtype, .n_dims = n_dims, .offset = w->data_size};
    uint64_t bits = (uint64_t)mp_st_dtype_bits(dtype);
    for (uint32_t d = 0; d < n_dims; d++) {
        if (shape[d] < 0 || (double)shape[d] > MP_ST_MAX_INT ||
            !mp_mul_u64(bits, (uint64_t)shape[d], &bits))
            return mp_err_set(err, MP_ERR_ARG,
                              "%s: tensor '%s': shape[%" PRIu32 "] = %" PRId64
                              " is negative or too large",
                              w->out.path, name, d, shape[d]);
        t.shape[d] = shape[d];
    }
    if (bits % 8)
        return mp_err_set(err, MP_ERR_ARG,
                          "%s: tensor '%s': its %s elements do not fill whole "
                          "bytes",
                          w->out.path, name, mp_st_dtype_name(dtype));
    t.nbytes = bits / 8;
    uint64_t end;
    if (!mp_add_u64(t.offset, t.nbytes, &end) || (double)end > MP_ST_MAX_INT)
        return mp_err_set(err, MP_ERR_ARG, "%s: tensor '%s': data would end past 2^53 bytes",
                          w->out.path, name);
    if (w->n_tensors == w->cap_tensors) {
        int64_t cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
        st_wtensor *p = mp_realloc(w->tensors, (size_t)cap * sizeof *p);
        if (!p) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
        w->tensors = p;
        w->cap_tensors = cap;
    }
    if (!(t.name = mp_strdup(name)))
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
    w->tensors[w->n_tensors++] = t;
    w->data_size = end;
    return MP_OK;
}

/* An exact integer: cJSON would print round numbers from 1e15 up in exponent
 * form, which strict readers (serde) refuse for sizes. */
static cJSON *json_u64(uint64_t v) {
    char b[24];
    snprintf(b, sizeof b, "%" PRIu64, v);
    return cJSON_CreateRaw(b);
}

static int cmp_wname(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Refuses a name declared twice (sorted copy of the names; no quadratic scan). */
static mp_status check_unique(mp_st_writer *w, mp_err *err) {
    char **names = mp_calloc((size_t)(w->n_tensors ? w->n_tensors : 1), sizeof *names);
    if (!names) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
    for (int64_t i = 0; i < w->n_tensors; i++) names[i] = w->tensors[i].name;
    qsort(names, (size_t)w->n_tensors, sizeof *names, cmp_wname);
    mp_status s = MP_OK;
    for (int64_t i = 1; i < w->n_tensors && !s; i++)
        if (!strcmp(names[i], names[i - 1]))
            s = mp_err_set(err, MP_ERR_ARG, "%s: tensor '%s' declared twice", w->out.path,
                           names[i]);
    mp_free(names);
    return s;
}

/* The header JSON: "__metadata__" first (when any), then the tensors in
 * declaration order. cJSON's strings are escaped for us. */
static char *header_json(const mp_st_writer *w) {
    cJSON *root = cJSON_CreateObject();
    bool ok = root != NULL;
    if (ok && w->n_meta) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        ok = m != NULL;
        for (int64_t i = 0; ok && i < w->n_meta; i++)
            ok = cJSON_AddStringToObject(m, w->meta_keys[i], w->meta_vals[i]) != NULL;
    }
    for (int64_t i = 0; ok && i < w->n_tensors; i++) {
        const st_wtensor *t = &w->tensors[i];
        cJSON *o = cJSON_AddObjectToObject(root, t->name);
        cJSON *shape = o ? cJSON_AddArrayToObject(o, "shape") : NULL;
        cJSON *offs = shape ? cJSON_AddArrayToObject(o, "data_offsets") : NULL;
        ok = offs && cJSON_AddStringToObject(o, "dtype", mp_st_dtype_name(t->dtype));
        for (uint32_t d = 0; ok && d < t->n_dims; d++)
            ok = cJSON_AddItemToArray(shape, json_u64((uint64_t)t->shape[d]));
        ok = ok && cJSON_AddItemToArray(offs, json_u64(t->offset)) &&
             cJSON_AddItemToArray(offs, json_u64(t->offset + t->nbytes));
    }
    char *txt = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return txt;
}

mp_status mp_st_writer_write_header(mp_st_writer *w, mp_err *err) {
    if (w->header_done) return MP_OK;
    if (w->failed) return mp_err_set(err, MP_ERR_IO, "%s: writer already failed", w->out.path);
    mp_status s = check_unique(w, err);
    if (s) return s;
    char *txt = header_json(w);
    if (!txt) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
    size_t n = strlen(txt), pad = (8 - (8 + n) % 8) % 8;
    uint8_t len[8];
    mp_store_u64(len, (uint64_t)(n + pad));
    static const char spaces[8] = "        ";
    bool ok = fwrite(len, 1, 8, w->out.f) == 8 && fwrite(txt, 1, n, w->out.f) == n &&
              fwrite(spaces, 1, pad, w->out.f) == pad;
    free(txt);
    if (!ok) return st_io_error(w, err, "write");
    w->header_done = true;
    w->cur = 0;
    w->cur_done = 0;
    return MP_OK;
}

/* Moves past complete (and empty) tensors. */
static void st_advance(mp_st_writer *w) {
    while (w->cur < w->n_tensors && w->cur_done == w->tensors[w->cur].nbytes) {
        w->cur++;
        w->cur_done = 0;
    }
}

mp_status mp_st_writer_write_data(mp_st_writer *w, const void *data, size_t len, mp_err *err) {
    mp_status s = mp_st_writer_write_header(w, err);
    if (s) return s;
    const uint8_t *p = data;
    while (len > 0) {
        st_advance(w);
        if (w->cur >= w->n_tensors)
            return mp_err_set(err, MP_ERR_ARG, "%s: %zu bytes of data beyond the last tensor",
                              w->out.path, len);
        uint64_t left = w->tensors[w->cur].nbytes - w->cur_done;
        size_t k = len < left ? len : (size_t)left;
        if (fwrite(p, 1, k, w->out.f) != k) return st_io_error(w, err, "write");
        p += k;
        len -= k;
        w->cur_done += k;
    }
    return MP_OK;
}

mp_status mp_st_writer_finish(mp_st_writer *w, mp_err *err) {
    mp_status s;
    if (w->failed) return mp_err_set(err, MP_ERR_IO, "%s: writer already failed", w->out.path);
    if ((s = mp_st_writer_write_header(w, err))) return s;
    st_advance(w);
    if (w->cur < w->n_tensors)
        return mp_err_set(
            err, MP_ERR_ARG, "%s: tensor '%s' got %" PRIu64 " of %" PRIu64 " bytes before finish",
            w->out.path, w->tensors[w->cur].name, w->cur_done, w->tensors[w->cur].nbytes);
    if ((s = mp_outfile_sync(&w->out, err))) {
        w->failed = true;
        return s;
    }

    /* re-read what we wrote: the header must parse and describe what was declared */
    mp_st *check = NULL;
    mp_err cerr = {0};
    if (mp_st_open(&check, w->out.tmp_path, &cerr))
        return mp_err_set(err, cerr.status == MP_ERR_NOMEM ? MP_ERR_NOMEM : MP_ERR_CHECK,
                          "%s: written file does not read back: %s", w->out.path, cerr.msg);
    bool same = mp_st_n_tensors(check) == w->n_tensors && mp_st_n_meta(check) == w->n_meta &&
                mp_st_file_size(check) == mp_st_data_offset(check) + w->data_size;
    mp_st_free(check);
    if (!same)
        return mp_err_set(err, MP_ERR_CHECK, "%s: written file does not match what was declared",
                          w->out.path);
    if ((s = mp_outfile_publish(&w->out, err))) w->failed = true;
    return s;
}

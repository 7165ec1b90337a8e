/* write.c — streaming GGUF v3 writer.
 *
 * Metadata and tensor infos are small and kept serialized in memory until the
 * header is written; tensor data streams through in declaration order, so
 * memory use does not depend on the model size. The file is built as a
 * temporary in the target folder and renamed into place only by
 * mp_gguf_writer_finish, after a flush, an fsync and a re-read of its header:
 * an interrupted or failed run never leaves a partial file at the target.
 * Layout rules (sequential offsets, zero padding to the alignment after the
 * header and after every tensor) follow gemma4-gguf-spec.md section 1.6, which
 * is also what ggml's reader insists on. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf/gguf.h"

typedef struct wtensor {
    char *name;
    int type;
    uint32_t n_dims;
    int64_t ne[MP_GGUF_MAX_DIMS];
    uint64_t offset; /* relative to the data section */
    uint64_t nbytes;
} wtensor;

struct mp_gguf_writer {
    mp_outfile out; /* the file, under its temporary name until finish */
    mp_buf kv;      /* serialized KV pairs */
    int64_t n_kv;
    char **keys; /* for duplicate checks */
    int64_t keys_cap;
    uint32_t alignment;
    wtensor *tensors;
    int64_t n_tensors, cap_tensors;
    uint64_t data_size; /* running sum of padded sizes */
    bool header_done;
    int64_t cur;       /* tensor being written */
    uint64_t cur_done; /* its bytes written so far */
    bool failed;       /* an I/O error happened: refuse to finish */
};

static mp_status io_error(mp_gguf_writer *w, mp_err *err, const char *what) {
    w->failed = true;
    return mp_err_set(err, MP_ERR_IO, "%s: %s failed: %s", w->out.path, what, strerror(errno));
}

mp_status mp_gguf_writer_open(mp_gguf_writer **out, const char *path, bool overwrite, mp_err *err) {
    *out = NULL;
    mp_gguf_writer *w = mp_calloc(1, sizeof *w);
    if (!w) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
    w->alignment = MP_GGUF_DEFAULT_ALIGNMENT;
    mp_status s = mp_outfile_open(&w->out, path, overwrite, err);
    if (s) {
        mp_free(w);
        return s;
    }
    *out = w;
    return MP_OK;
}

void mp_gguf_writer_free(mp_gguf_writer *w) {
    if (!w) return;
    mp_outfile_discard(&w->out);
    for (int64_t i = 0; i < w->n_kv; i++) mp_free(w->keys[i]);
    for (int64_t i = 0; i < w->n_tensors; i++) mp_free(w->tensors[i].name);
    mp_free(w->keys);
    mp_free(w->tensors);
    mp_buf_free(&w->kv);
    mp_free(w);
}

/* ------------------------------------------------------------------------ */
/* Metadata                                                                 */
/* ------------------------------------------------------------------------ */

static mp_status check_open_for_meta(mp_gguf_writer *w, const char *what, mp_err *err) {
    if (w->header_done)
        return mp_err_set(err, MP_ERR_ARG, "%s: %s after the header was written", w->out.path,
                          what);
    return MP_OK;
}

/* Records key (refusing duplicates and empty keys). */
static mp_status note_key(mp_gguf_writer *w, const char *key, size_t klen, mp_err *err) {
    mp_status s = check_open_for_meta(w, "metadata added", err);
    if (s) return s;
    if (klen == 0) return mp_err_set(err, MP_ERR_ARG, "%s: empty metadata key", w->out.path);
    for (int64_t i = 0; i < w->n_kv; i++)
        if (strlen(w->keys[i]) == klen && memcmp(w->keys[i], key, klen) == 0)
            return mp_err_set(err, MP_ERR_ARG, "%s: metadata key '%s' added twice", w->out.path,
                              w->keys[i]);
    if (w->n_kv == w->keys_cap) {
        int64_t cap = w->keys_cap ? 2 * w->keys_cap : 32;
        char **k = mp_realloc(w->keys, (size_t)cap * sizeof *k);
        if (!k) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
        w->keys = k;
        w->keys_cap = cap;
    }
    if (!(w->keys[w->n_kv] = mp_strndup(key, klen)))
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
    w->n_kv++;
    return MP_OK;
}

static bool put_u32(mp_buf *b, uint32_t v) {
    uint8_t x[4];
    mp_store_u32(x, v);
    return mp_buf_append(b, x, 4);
}
static bool put_u64(mp_buf *b, uint64_t v) {
    uint8_t x[8];
    mp_store_u64(x, v);
    return mp_buf_append(b, x, 8);
}
static bool put_str(mp_buf *b, const char *s, size_t n) {
    return put_u64(b, n) && mp_buf_append(b, s, n);
}

/* Appends key + value type, then `n` bytes of value encoding. */
static mp_status add_kv(mp_gguf_writer *w, const char *key, mp_gguf_vtype t, const void *val,
                        size_t n, mp_err *err) {
    mp_status s = note_key(w, key, strlen(key), err);
    if (s) return s;
    if (!put_str(&w->kv, key, strlen(key)) || !put_u32(&w->kv, t) || !mp_buf_append(&w->kv, val, n))
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
    if (strcmp(key, "general.alignment") == 0 && t == MP_GGUF_UINT32) {
        uint32_t a = mp_load_u32(val);
        if (a == 0 || (a & (a - 1)))
            return mp_err_set(err, MP_ERR_ARG,
                              "%s: general.alignment = %" PRIu32 " is not a power of two",
                              w->out.path, a);
        if (w->n_tensors)
            return mp_err_set(err, MP_ERR_ARG, "%s: general.alignment set after tensors",
                              w->out.path);
        w->alignment = a;
    }
    return MP_OK;
}

mp_status mp_gguf_writer_kv_raw(mp_gguf_writer *w, const uint8_t *bytes, size_t len, mp_err *err) {
    if (len < 12)
        return mp_err_set(err, MP_ERR_ARG, "%s: raw metadata pair too short", w->out.path);
    uint64_t klen = mp_load_u64(bytes);
    if (klen > len - 12)
        return mp_err_set(err, MP_ERR_ARG, "%s: raw metadata pair malformed", w->out.path);
    mp_status s = note_key(w, (const char *)bytes + 8, (size_t)klen, err);
    if (s) return s;
    if (!mp_buf_append(&w->kv, bytes, len))
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
    uint32_t t = mp_load_u32(bytes + 8 + klen);
    if (klen == 17 && memcmp(bytes + 8, "general.alignment", 17) == 0 && t == MP_GGUF_UINT32 &&
        len == 8 + klen + 8) {
        uint32_t a = mp_load_u32(bytes + 12 + klen);
        if (a == 0 || (a & (a - 1)))
            return mp_err_set(err, MP_ERR_ARG,
                              "%s: general.alignment = %" PRIu32 " is not a power of two",
                              w->out.path, a);
        w->alignment = a;
    }
    return MP_OK;
}

mp_status mp_gguf_writer_kv_copy(mp_gguf_writer *w, const mp_gguf *src, int64_t i, mp_err *err) {
    const uint8_t *bytes;
    size_t len;
    mp_gguf_kv_raw(src, i, &bytes, &len);
    return mp_gguf_writer_kv_raw(w, bytes, len, err);
}

mp_status mp_gguf_writer_kv_u32(mp_gguf_writer *w, const char *key, uint32_t v, mp_err *err) {
    uint8_t x[4];
    mp_store_u32(x, v);
    return add_kv(w, key, MP_GGUF_UINT32, x, 4, err);
}

mp_status mp_gguf_writer_kv_i32(mp_gguf_writer *w, const char *key, int32_t v, mp_err *err) {
    uint8_t x[4];
    mp_store_u32(x, (uint32_t)v);
    return add_kv(w, key, MP_GGUF_INT32, x, 4, err);
}

mp_status mp_gguf_writer_kv_u64(mp_gguf_writer *w, const char *key, uint64_t v, mp_err *err) {
    uint8_t x[8];
    mp_store_u64(x, v);
    return add_kv(w, key, MP_GGUF_UINT64, x, 8, err);
}

mp_status mp_gguf_writer_kv_f32(mp_gguf_writer *w, const char *key, float v, mp_err *err) {
    uint32_t u;
    memcpy(&u, &v, 4);
    uint8_t x[4];
    mp_store_u32(x, u);
    return add_kv(w, key, MP_GGUF_FLOAT32, x, 4, err);
}

mp_status mp_gguf_writer_kv_bool(mp_gguf_writer *w, const char *key, bool v, mp_err *err) {
    uint8_t x = v ? 1 : 0;
    return add_kv(w, key, MP_GGUF_BOOL, &x, 1, err);
}

mp_status mp_gguf_writer_kv_str(mp_gguf_writer *w, const char *key, const char *v, mp_err *err) {
    mp_buf tmp = {0};
    mp_status s;
    if (!put_str(&tmp, v, strlen(v)))
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
    else
        s = add_kv(w, key, MP_GGUF_STRING, tmp.data, tmp.len, err);
    mp_buf_free(&tmp);
    return s;
}

mp_status mp_gguf_writer_kv_arr(mp_gguf_writer *w, const char *key, mp_gguf_vtype etype,
                                const void *data, uint64_t n, mp_err *err) {
    size_t es = mp_gguf_vtype_size(etype), bytes;
    if (es == 0)
        return mp_err_set(err, MP_ERR_ARG,
                          "%s: key '%s': array element type %s is not a "
                          "fixed-size type",
                          w->out.path, key, mp_gguf_vtype_name(etype));
    if (!mp_mul_size((size_t)n, es, &bytes))
        return mp_err_set(err, MP_ERR_ARG, "%s: key '%s': array too large", w->out.path, key);
    mp_buf tmp = {0};
    mp_status s;
    if (!put_u32(&tmp, etype) || !put_u64(&tmp, n) || !mp_buf_append(&tmp, data, bytes))
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
    else
        s = add_kv(w, key, MP_GGUF_ARRAY, tmp.data, tmp.len, err);
    mp_buf_free(&tmp);
    return s;
}

mp_status mp_gguf_writer_kv_arr_str(mp_gguf_writer *w, const char *key, const char *const *v,
                                    uint64_t n, mp_err *err) {
    mp_buf tmp = {0};
    bool ok = put_u32(&tmp, MP_GGUF_STRING) && put_u64(&tmp, n);
    for (uint64_t i = 0; ok && i < n; i++) ok = put_str(&tmp, v[i], strlen(v[i]));
    mp_status s = ok ? add_kv(w, key, MP_GGUF_ARRAY, tmp.data, tmp.len, err)
                     : mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
    mp_buf_free(&tmp);
    return s;
}

/* ------------------------------------------------------------------------ */
/* Tensors                                                                  */
/* ------------------------------------------------------------------------ */

mp_status mp_gguf_writer_add_tensor(mp_gguf_writer *w, const char *name, int type, uint32_t n_dims,
                                    const int64_t *ne, mp_err *err) {
    mp_status s = check_open_for_meta(w, "tensor declared", err);
    if (s) return s;
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen > MP_GGUF_MAX_NAME)
        return mp_err_set(err, MP_ERR_ARG, "%s: tensor name '%s' must be 1..%d bytes", w->out.path,
                          name, MP_GGUF_MAX_NAME);
    if (n_dims < 1 || n_dims > MP_GGUF_MAX_DIMS)
        return mp_err_set(err, MP_ERR_ARG, "%s: tensor '%s': n_dims %" PRIu32 " not in 1..4",
                          w->out.path, name, n_dims);
    for (int64_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return mp_err_set(err, MP_ERR_ARG, "%s: tensor '%s' declared twice", w->out.path, name);
    wtensor t = {.type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}};
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 0)
            return mp_err_set(err, MP_ERR_ARG,
                              "%s: tensor '%s': ne[%" PRIu32 "] = %" PRId64 " is negative",
                              w->out.path, name, d, ne[d]);
        t.ne[d] = ne[d];
    }
    size_t row;
    if ((s = mp_type_row_bytes(type, t.ne[0], &row, err))) return s;
    uint64_t nb = row;
    for (int d = 1; d < MP_GGUF_MAX_DIMS; d++)
        if (!mp_mul_u64(nb, (uint64_t)t.ne[d], &nb))
            return mp_err_set(err, MP_ERR_ARG, "%s: tensor '%s': size overflows", w->out.path,
                              name);
    uint64_t padded = mp_align_up(nb, w->alignment);
    if (padded < nb || !mp_add_u64(w->data_size, padded, &padded))
        return mp_err_set(err, MP_ERR_ARG, "%s: tensor '%s': size overflows", w->out.path, name);
    t.nbytes = nb;
    t.offset = w->data_size;
    if (w->n_tensors == w->cap_tensors) {
        int64_t cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
        wtensor *nt = mp_realloc(w->tensors, (size_t)cap * sizeof *nt);
        if (!nt) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
        w->tensors = nt;
        w->cap_tensors = cap;
    }
    if (!(t.name = mp_strdup(name)))
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
    w->tensors[w->n_tensors++] = t;
    w->data_size = padded;
    return MP_OK;
}

static mp_status write_zeros(mp_gguf_writer *w, uint64_t n, mp_err *err) {
    static const uint8_t zeros[256];
    while (n > 0) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (fwrite(zeros, 1, k, w->out.f) != k) return io_error(w, err, "write");
        n -= k;
    }
    return MP_OK;
}

mp_status mp_gguf_writer_write_header(mp_gguf_writer *w, mp_err *err) {
    if (w->header_done) return MP_OK;
    mp_buf h = {0};
    bool ok = put_u32(&h, MP_GGUF_MAGIC) && put_u32(&h, MP_GGUF_VERSION) &&
              put_u64(&h, (uint64_t)w->n_tensors) && put_u64(&h, (uint64_t)w->n_kv) &&
              mp_buf_append(&h, w->kv.data, w->kv.len);
    for (int64_t i = 0; ok && i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        ok = put_str(&h, t->name, strlen(t->name)) && put_u32(&h, t->n_dims);
        for (uint32_t d = 0; ok && d < t->n_dims; d++) ok = put_u64(&h, (uint64_t)t->ne[d]);
        ok = ok && put_u32(&h, (uint32_t)t->type) && put_u64(&h, t->offset);
    }
    if (!ok) {
        mp_buf_free(&h);
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", w->out.path);
    }
    mp_status s = MP_OK;
    if (fwrite(h.data, 1, h.len, w->out.f) != h.len)
        s = io_error(w, err, "write");
    else
        s = write_zeros(w, mp_align_up(h.len, w->alignment) - h.len, err);
    mp_buf_free(&h);
    if (s) return s;
    w->header_done = true;
    w->cur = 0;
    w->cur_done = 0;
    return MP_OK;
}

/* Finishes tensors that are complete (including zero-sized ones). */
static mp_status advance(mp_gguf_writer *w, mp_err *err) {
    while (w->cur < w->n_tensors && w->cur_done == w->tensors[w->cur].nbytes) {
        const wtensor *t = &w->tensors[w->cur];
        mp_status s = write_zeros(w, mp_align_up(t->nbytes, w->alignment) - t->nbytes, err);
        if (s) return s;
        w->cur++;
        w->cur_done = 0;
    }
    return MP_OK;
}

mp_status mp_gguf_writer_write_data(mp_gguf_writer *w, const void *data, size_t len, mp_err *err) {
    mp_status s;
    if (w->failed) return mp_err_set(err, MP_ERR_IO, "%s: writer already failed", w->out.path);
    if ((s = mp_gguf_writer_write_header(w, err)) || (s = advance(w, err))) return s;
    const uint8_t *p = data;
    while (len > 0) {
        if (w->cur >= w->n_tensors)
            return mp_err_set(err, MP_ERR_ARG, "%s: %zu bytes of data beyond the last tensor",
                              w->out.path, len);
        const wtensor *t = &w->tensors[w->cur];
        uint64_t left = t->nbytes - w->cur_done;
        size_t k = len < left ? len : (size_t)left;
        if (fwrite(p, 1, k, w->out.f) != k) return io_error(w, err, "write");
        p += k;
        len -= k;
        w->cur_done += k;
        if ((s = advance(w, err))) return s;
    }
    return MP_OK;
}

mp_status mp_gguf_writer_finish(mp_gguf_writer *w, mp_err *err) {
    mp_status s;
    if (w->failed) return mp_err_set(err, MP_ERR_IO, "%s: writer already failed", w->out.path);
    if ((s = mp_gguf_writer_write_header(w, err)) || (s = advance(w, err))) return s;
    if (w->cur < w->n_tensors)
        return mp_err_set(
            err, MP_ERR_ARG, "%s: tensor '%s' got %" PRIu64 " of %" PRIu64 " bytes before finish",
            w->out.path, w->tensors[w->cur].name, w->cur_done, w->tensors[w->cur].nbytes);
    if ((s = mp_outfile_sync(&w->out, err))) {
        w->failed = true;
        return s;
    }

    /* re-read what we wrote: the header must parse and the size must match */
    mp_gguf *check = NULL;
    mp_err cerr = {0};
    if ((s = mp_gguf_open(&check, w->out.tmp_path, &cerr)))
        return mp_err_set(err, s == MP_ERR_NOMEM ? MP_ERR_NOMEM : MP_ERR_CHECK,
                          "%s: written file does not read back: %s", w->out.path, cerr.msg);
    bool same = mp_gguf_n_tensors(check) == w->n_tensors && mp_gguf_n_kv(check) == w->n_kv &&
                mp_gguf_file_size(check) == mp_gguf_data_offset(check) + w->data_size;
    mp_gguf_free(check);
    if (!same)
        return mp_err_set(err, MP_ERR_CHECK, "%s: written file does not match what was declared",
                          w->out.path);
    if ((s = mp_outfile_publish(&w->out, err))) w->failed = true;
    return s;
}

/* ------------------------------------------------------------------------ */
/* Whole-file copy                                                          */
/* ------------------------------------------------------------------------ */

mp_status mp_gguf_copy(const mp_gguf *src, const char *out_path, bool overwrite, mp_err *err) {
    if (mp_file_same(mp_gguf_path(src), out_path))
        return mp_err_set(err, MP_ERR_ARG, "%s: output is the input file", out_path);
    mp_gguf_writer *w = NULL;
    mp_status s = mp_gguf_writer_open(&w, out_path, overwrite, err);
    if (s) return s;
    for (int64_t i = 0; i < mp_gguf_n_kv(src) && !s; i++)
        s = mp_gguf_writer_kv_copy(w, src, i, err);
    for (int64_t i = 0; i < mp_gguf_n_tensors(src) && !s; i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(src, i);
        s = mp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, err);
    }
    for (int64_t i = 0; i < mp_gguf_n_tensors(src) && !s; i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(src, i);
        s = mp_gguf_writer_write_data(w, t->data, (size_t)t->nbytes, err);
    }
    if (!s) s = mp_gguf_writer_finish(w, err);
    mp_gguf_writer_free(w);
    return s;
}

mp_status mp_gguf_writer_write_mapped(mp_gguf_writer *w, const mp_gguf *src, const void *data,
                                      uint64_t len, mp_err *err) {
    /* 64 MiB at a time, then the pages behind us are given back */
    const size_t chunk = (size_t)64 << 20;
    const uint8_t *p = data;
    while (len > 0) {
        size_t k = len < chunk ? (size_t)len : chunk;
        mp_status s = mp_gguf_writer_write_data(w, p, k, err);
        if (s) return s;
        mp_gguf_release(src, p, k);
        p += k;
        len -= k;
    }
    return MP_OK;
}

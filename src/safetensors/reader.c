/* reader.c — safetensors reader: maps a file read-only and indexes its header
 * without copying any tensor data.
 *
 * Every length and offset is checked before it is used, as in the GGUF
 * reader: the header length against the file and the 100 MB limit of the
 * reference implementation, the JSON's value count before cJSON allocates for
 * it, each tensor's byte range against its dtype and shape (checked
 * multiplies) and against the data section, and the ranges against each
 * other (they must tile the data section exactly: no overlap, no gap, no
 * trailing bytes, as huggingface/safetensors insists). A hostile file gets an
 * error naming the file, the field and the value. Parsing works on a byte
 * range; mp_st_open is a thin mmap wrapper. Not here: sharded checkpoints
 * (checkpoint.c), writing (writer.c). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors/st.h"

struct mp_st {
    char *path;
    const uint8_t *data; /* mapping or borrowed buffer */
    size_t size;
    bool mapped;
    uint64_t data_offset; /* 8 + header length */
    int64_t n_tensors;
    mp_st_tensor *tensors; /* in data order */
    const mp_st_tensor **by_name; /* tensors sorted by name */
    int64_t n_meta;
    char **meta_keys, **meta_vals;
};

/* ------------------------------------------------------------------------ */
/* dtypes                                                                   */
/* ------------------------------------------------------------------------ */

static const struct {
    const char *name;
    int bits;
} dtypes[MP_ST_DTYPE_COUNT] = {
    [MP_ST_BOOL] = {"BOOL", 8},       [MP_ST_U8] = {"U8", 8},
    [MP_ST_I8] = {"I8", 8},           [MP_ST_F8_E5M2] = {"F8_E5M2", 8},
    [MP_ST_F8_E4M3] = {"F8_E4M3", 8}, [MP_ST_F8_E8M0] = {"F8_E8M0", 8},
    [MP_ST_I16] = {"I16", 16},        [MP_ST_U16] = {"U16", 16},
    [MP_ST_F16] = {"F16", 16},        [MP_ST_BF16] = {"BF16", 16},
    [MP_ST_I32] = {"I32", 32},        [MP_ST_U32] = {"U32", 32},
    [MP_ST_F32] = {"F32", 32},        [MP_ST_F64] = {"F64", 64},
    [MP_ST_I64] = {"I64", 64},        [MP_ST_U64] = {"U64", 64},
    [MP_ST_C64] = {"C64", 64},        [MP_ST_F4] = {"F4", 4},
    [MP_ST_F6_E2M3] = {"F6_E2M3", 6}, [MP_ST_F6_E3M2] = {"F6_E3M2", 6},
};

const char *mp_st_dtype_name(int dtype) {
    return dtype >= 0 && dtype < MP_ST_DTYPE_COUNT ? dtypes[dtype].name : "?";
}

int mp_st_dtype_from_name(const char *name) {
    for (int i = 0; name && i < MP_ST_DTYPE_COUNT; i++)
        if (!strcmp(dtypes[i].name, name)) return i;
    return -1;
}

int mp_st_dtype_bits(int dtype) {
    return dtype >= 0 && dtype < MP_ST_DTYPE_COUNT ? dtypes[dtype].bits : 0;
}

int64_t mp_st_tensor_nelements(const mp_st_tensor *t) {
    int64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) n *= t->shape[d];
    return n;
}

/* ------------------------------------------------------------------------ */
/* Small helpers shared with model.c and the surgery                        */
/* ------------------------------------------------------------------------ */

int64_t mp_st_json_values(const char *text, size_t len) {
    int64_t n = 1;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == ',' || c == ':' || c == '[' || c == '{') {
            n++;
        }
    }
    return n;
}

mp_status mp_st_read_small(const char *path, char **out, size_t *len, mp_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mp_err_set(err, MP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    mp_status s = MP_OK;
    char *buf = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        s = mp_err_set(err, MP_ERR_IO, "%s: not a readable regular file", path);
        goto done;
    }
    if ((uint64_t)st.st_size > MP_ST_MAX_JSON_FILE) {
        s = mp_err_set(err, MP_ERR_FORMAT, "%s: %lld bytes, more than the %zu MiB allowed for a "
                       "JSON file", path, (long long)st.st_size, MP_ST_MAX_JSON_FILE >> 20);
        goto done;
    }
    size_t n = (size_t)st.st_size, got = 0;
    if (!(buf = mp_malloc(n + 1))) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            s = mp_err_set(err, MP_ERR_IO, "%s: read failed: %s", path,
                           r < 0 ? strerror(errno) : "file shrank");
            goto done;
        }
        got += (size_t)r;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    buf = NULL;
done:
    mp_free(buf);
    close(fd);
    return s;
}

/* ------------------------------------------------------------------------ */
/* Parsing                                                                  */
/* ------------------------------------------------------------------------ */

void mp_st_free(mp_st *f) {
    if (!f) return;
    for (int64_t i = 0; i < f->n_tensors; i++) mp_free((char *)f->tensors[i].name);
    for (int64_t i = 0; i < f->n_meta; i++) {
        mp_free(f->meta_keys[i]);
        mp_free(f->meta_vals[i]);
    }
    mp_free(f->tensors);
    mp_free(f->by_name);
    mp_free(f->meta_keys);
    mp_free(f->meta_vals);
    if (f->mapped) mp_file_unmap(f->data, f->size);
    mp_free(f->path);
    mp_free(f);
}

/* A JSON number that is a whole number in [0, 2^53]. */
static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > MP_ST_MAX_INT ||
        v->valuedouble != floor(v->valuedouble))
        return false;
    *out = (uint64_t)v->valuedouble;
    return true;
}

static mp_status parse_metadata(mp_st *f, const cJSON *o, mp_err *err) {
    if (f->meta_keys)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: \"__metadata__\" appears twice", f->path);
    if (!cJSON_IsObject(o))
        return mp_err_set(err, MP_ERR_FORMAT, "%s: \"__metadata__\" is not an object", f->path);
    int64_t n = cJSON_GetArraySize(o);
    f->meta_keys = mp_calloc((size_t)(n ? n : 1), sizeof *f->meta_keys);
    f->meta_vals = mp_calloc((size_t)(n ? n : 1), sizeof *f->meta_vals);
    if (!f->meta_keys || !f->meta_vals)
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", f->path);
    const cJSON *v;
    cJSON_ArrayForEach(v, o) {
        if (!cJSON_IsString(v))
            return mp_err_set(err, MP_ERR_FORMAT, "%s: \"__metadata__\": value of \"%s\" is not "
                              "a string", f->path, v->string);
        f->meta_keys[f->n_meta] = mp_strdup(v->string);
        f->meta_vals[f->n_meta] = mp_strdup(v->valuestring);
        if (!f->meta_keys[f->n_meta] || !f->meta_vals[f->n_meta]) {
            mp_free(f->meta_keys[f->n_meta]);
            mp_free(f->meta_vals[f->n_meta]);
            return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", f->path);
        }
        f->n_meta++;
    }
    return MP_OK;
}

/* Fills t from one header entry, checking it on its own (dtype, shape, size
 * against data_offsets, range inside the data section). */
static mp_status parse_tensor(mp_st *f, const cJSON *o, uint64_t data_size, mp_st_tensor *t,
                              mp_err *err) {
    const char *name = o->string;
    if (!cJSON_IsObject(o))
        return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s': entry is not an object", f->path,
                          name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(o, "dtype");
    if (!cJSON_IsString(dt))
        return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s': \"dtype\" is missing or not a "
                          "string", f->path, name);
    t->dtype = mp_st_dtype_from_name(dt->valuestring);
    if (t->dtype < 0)
        return mp_err_set(err, MP_ERR_UNSUPPORTED, "%s: tensor '%s': dtype \"%.32s\" is not a "
                          "safetensors dtype", f->path, name, dt->valuestring);
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(o, "shape");
    if (!cJSON_IsArray(shape))
        return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s': \"shape\" is missing or not an "
                          "array", f->path, name);
    int n_dims = cJSON_GetArraySize(shape);
    if (n_dims > MP_ST_MAX_DIMS)
        return mp_err_set(err, MP_ERR_UNSUPPORTED, "%s: tensor '%s': %d dimensions, at most %d "
                          "supported", f->path, name, n_dims, MP_ST_MAX_DIMS);
    t->n_dims = (uint32_t)n_dims;
    uint64_t nel = 1;
    bool overflow = false;
    int d = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, shape) {
        uint64_t x;
        if (!json_uint(v, &x))
            return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not an integer "
                              "in 0..2^53", f->path, name, d);
        t->shape[d++] = (int64_t)x;
        overflow = overflow || !mp_mul_u64(nel, x, &nel);
    }
    uint64_t bits;
    if (overflow || !mp_mul_u64(nel, (uint64_t)mp_st_dtype_bits(t->dtype), &bits))
        return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s': shape overflows a 64-bit size",
                          f->path, name);
    if (bits % 8)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s': %" PRIu64 " %s elements do not "
                          "fill whole bytes", f->path, name, nel, dt->valuestring);
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(o, "data_offsets");
    uint64_t begin, end;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        !json_uint(cJSON_GetArrayItem(offs, 0), &begin) ||
        !json_uint(cJSON_GetArrayItem(offs, 1), &end))
        return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s': \"data_offsets\" is not a pair "
                          "of integers in 0..2^53", f->path, name);
    if (begin > end)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %"
                          PRIu64 "] end before they begin", f->path, name, begin, end);
    if (end > data_size)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s': data ends at byte %" PRIu64
                          " of the data section, past its end (%" PRIu64 " bytes; file "
                          "truncated?)", f->path, name, end, data_size);
    if (end - begin != bits / 8)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s': data_offsets span %" PRIu64
                          " bytes but %" PRIu64 " %s elements take %" PRIu64, f->path, name,
                          end - begin, nel, dt->valuestring, bits / 8);
    if (!(t->name = mp_strdup(name)))
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", f->path);
    t->offset = begin;
    t->nbytes = end - begin;
    t->data = f->data + f->data_offset + begin;
    return MP_OK;
}

static int cmp_offset(const void *a, const void *b) {
    const mp_st_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_name(const void *a, const void *b) {
    const mp_st_tensor *x = *(const mp_st_tensor *const *)a, *y = *(const mp_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

/* The ranges must tile [0, data_size): sorted by offset, each starts where
 * the previous ended. */
static mp_status check_layout(const mp_st *f, uint64_t data_size, mp_err *err) {
    uint64_t at = 0;
    for (int64_t i = 0; i < f->n_tensors; i++) {
        const mp_st_tensor *t = &f->tensors[i];
        if (t->offset < at)
            return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s' [%" PRIu64 ", %" PRIu64
                              ") overlaps tensor '%s' [%" PRIu64 ", %" PRIu64 ")", f->path,
                              t->name, t->offset, t->offset + t->nbytes, f->tensors[i - 1].name,
                              f->tensors[i - 1].offset, at);
        if (t->offset > at)
            return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s' starts at byte %" PRIu64
                              " of the data section, leaving a gap of %" PRIu64 " bytes after "
                              "%s", f->path, t->name, t->offset, t->offset - at,
                              i ? f->tensors[i - 1].name : "the header");
        at = t->offset + t->nbytes;
    }
    if (at != data_size)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: %" PRIu64 " bytes after the last tensor's "
                          "data (data section %" PRIu64 " bytes, tensors end at %" PRIu64 ")",
                          f->path, data_size - at, data_size, at);
    return MP_OK;
}

static mp_status parse_header(mp_st *f, mp_err *err) {
    if (f->size < 8)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: %zu bytes, too short for the 8-byte header "
                          "length", f->path, f->size);
    uint64_t n = mp_load_u64(f->data);
    if (n > MP_ST_MAX_HEADER)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: header length %" PRIu64 " exceeds the %llu "
                          "byte limit", f->path, n, MP_ST_MAX_HEADER);
    if (n > f->size - 8)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: header length %" PRIu64 " runs past the end "
                          "of the file (%zu bytes; file truncated?)", f->path, n, f->size);
    const char *h = (const char *)f->data + 8;
    if (n < 2 || h[0] != '{')
        return mp_err_set(err, MP_ERR_FORMAT, "%s: header (%" PRIu64 " bytes) does not start "
                          "with a JSON object", f->path, n);
    int64_t values = mp_st_json_values(h, (size_t)n);
    if (values > MP_ST_MAX_JSON_VALUES)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: header holds up to %" PRId64 " JSON values, "
                          "more than the %lld allowed", f->path, values, MP_ST_MAX_JSON_VALUES);
    f->data_offset = 8 + n;
    uint64_t data_size = f->size - f->data_offset;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(h, (size_t)n, &end, 0);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long long off = at && at >= h && at <= h + n ? (long long)(at - h) : -1;
        return mp_err_set(err, MP_ERR_FORMAT, "%s: header is not valid JSON (error near byte "
                          "%lld of %" PRIu64 ")", f->path, off, n);
    }
    mp_status s = MP_OK;
    for (const char *p = end; p && p < h + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            s = mp_err_set(err, MP_ERR_FORMAT, "%s: header has bytes other than spaces after "
                           "its JSON object (at byte %lld)", f->path, (long long)(p - h));
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        s = mp_err_set(err, MP_ERR_FORMAT, "%s: header is not a JSON object", f->path);
        goto done;
    }
    int64_t cnt = cJSON_GetArraySize(root);
    if (!(f->tensors = mp_calloc((size_t)(cnt ? cnt : 1), sizeof *f->tensors)) ||
        !(f->by_name = mp_calloc((size_t)(cnt ? cnt : 1), sizeof *f->by_name))) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", f->path);
        goto done;
    }
    const cJSON *o;
    cJSON_ArrayForEach(o, root) {
        if (!strcmp(o->string, "__metadata__")) {
            s = parse_metadata(f, o, err);
        } else {
            s = parse_tensor(f, o, data_size, &f->tensors[f->n_tensors], err);
            if (!s) f->n_tensors++;
        }
        if (s) goto done;
    }
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_offset);
    for (int64_t i = 0; i < f->n_tensors; i++) f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, (size_t)f->n_tensors, sizeof *f->by_name, cmp_name);
    for (int64_t i = 1; i < f->n_tensors; i++)
        if (!strcmp(f->by_name[i]->name, f->by_name[i - 1]->name)) {
            s = mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s' appears twice in the header",
                           f->path, f->by_name[i]->name);
            goto done;
        }
    s = check_layout(f, data_size, err);
done:
    cJSON_Delete(root);
    return s;
}

mp_status mp_st_parse(mp_st **out, const void *data, size_t size, const char *name,
                      mp_err *err) {
    mp_st *f = mp_calloc(1, sizeof *f);
    if (!f) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", name);
    f->data = data;
    f->size = size;
    if (!(f->path = mp_strdup(name))) {
        mp_free(f);
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", name);
    }
    mp_status s = parse_header(f, err);
    if (s) {
        mp_st_free(f);
        return s;
    }
    *out = f;
    return MP_OK;
}

mp_status mp_st_open(mp_st **out, const char *path, mp_err *err) {
    const uint8_t *map;
    size_t size;
    mp_status s = mp_file_map(path, &map, &size, err);
    if (s) return s;
    static const uint8_t empty[1];
    mp_st *f = NULL;
    if ((s = mp_st_parse(&f, map ? map : empty, size, path, err))) {
        mp_file_unmap(map, size);
        return s;
    }
    f->mapped = map != NULL;
    *out = f;
    return MP_OK;
}

/* ------------------------------------------------------------------------ */
/* Accessors                                                                */
/* ------------------------------------------------------------------------ */

const char *mp_st_path(const mp_st *f) { return f->path; }
uint64_t mp_st_file_size(const mp_st *f) { return f->size; }
uint64_t mp_st_data_offset(const mp_st *f) { return f->data_offset; }
int64_t mp_st_n_tensors(const mp_st *f) { return f->n_tensors; }
int64_t mp_st_n_meta(const mp_st *f) { return f->n_meta; }

const mp_st_tensor *mp_st_tensor_at(const mp_st *f, int64_t i) {
    return i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL;
}

const mp_st_tensor *mp_st_find_tensor(const mp_st *f, const char *name) {
    int64_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->by_name[mid]->name, name);
        if (c == 0) return f->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *mp_st_meta_key(const mp_st *f, int64_t i) {
    return i >= 0 && i < f->n_meta ? f->meta_keys[i] : NULL;
}

const char *mp_st_meta_value(const mp_st *f, int64_t i) {
    return i >= 0 && i < f->n_meta ? f->meta_vals[i] : NULL;
}

const char *mp_st_meta_get(const mp_st *f, const char *key) {
    for (int64_t i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_vals[i];
    return NULL;
}

void mp_st_release(const mp_st *f, const void *ptr, size_t len) {
    if (!f->mapped || len == 0) return;
    /* only whole pages inside the range may be dropped */
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)ptr + page - 1) / page * page;
    uintptr_t b = ((uintptr_t)ptr + len) / page * page;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

/* gguf.c — GGUF v3 reader: maps a file read-only and indexes its metadata and
 * tensor table without copying any tensor data.
 *
 * Every count, length, size and offset is checked against the bytes that are
 * really there before it is used, so that a truncated or hostile file gets an
 * error naming the field and value instead of a crash, an overflow or a huge
 * allocation: all allocations here are bounded by the file size (each entry we
 * index occupies at least 8 bytes of the file). Parsing works on a byte range;
 * mp_gguf_open is a thin mmap wrapper around it, so tests and the fuzzer call
 * the parser without touching disk. Layout: gemma4-gguf-spec.md section 1. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf/gguf.h"

typedef struct kv_entry {
    char *key;              /* NUL-terminated copy */
    mp_gguf_vtype type;
    mp_gguf_vtype arr_type; /* MP_GGUF_VTYPE_COUNT when not an array */
    uint64_t arr_len;       /* elements (1 for scalars) */
    uint64_t raw_off;       /* start of the pair (key length field) */
    uint64_t raw_len;       /* bytes of the whole pair */
    uint64_t val_off;       /* first element (after array type and count) */
    uint64_t *str_off;      /* STRING arrays: offset of each element's length */
} kv_entry;

struct mp_gguf {
    char *path;
    const uint8_t *data; /* mapping or borrowed buffer */
    size_t size;         /* bytes available in data */
    uint64_t file_size;  /* the file's real size (== size unless header_only) */
    bool mapped;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    int64_t n_kv;
    kv_entry *kv;
    int64_t n_tensors;
    mp_gguf_tensor *tensors;
    /* open-addressing hash index over keys and over tensor names; slots hold
     * index + 1 (0 = empty) */
    uint64_t kv_hash_cap, t_hash_cap;
    int64_t *kv_hash, *t_hash;
};

static const char *const vtype_names[MP_GGUF_VTYPE_COUNT] = {
    "UINT8", "INT8",  "UINT16", "INT16",  "UINT32", "INT32",  "FLOAT32",
    "BOOL",  "STRING", "ARRAY", "UINT64", "INT64",  "FLOAT64",
};
static const uint8_t vtype_sizes[MP_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *mp_gguf_vtype_name(int t) {
    return t >= 0 && t < MP_GGUF_VTYPE_COUNT ? vtype_names[t] : "?";
}

size_t mp_gguf_vtype_size(int t) {
    return t >= 0 && t < MP_GGUF_VTYPE_COUNT ? vtype_sizes[t] : 0;
}

/* ------------------------------------------------------------------------ */
/* Bounds-checked cursor                                                    */
/* ------------------------------------------------------------------------ */

typedef struct cursor {
    const uint8_t *p;
    uint64_t pos, size;
    const char *name; /* for messages */
    mp_err *err;
} cursor;

static mp_status need(cursor *c, uint64_t n, const char *what) {
    if (n > c->size - c->pos)
        return mp_err_set(c->err, MP_ERR_FORMAT,
                          "%s: %s at byte %" PRIu64 " needs %" PRIu64 " bytes but only %" PRIu64
                          " remain (file truncated?)",
                          c->name, what, c->pos, n, c->size - c->pos);
    return MP_OK;
}

static mp_status rd_u32(cursor *c, uint32_t *v, const char *what) {
    mp_status s = need(c, 4, what);
    if (s) return s;
    *v = mp_load_u32(c->p + c->pos);
    c->pos += 4;
    return MP_OK;
}

static mp_status rd_u64(cursor *c, uint64_t *v, const char *what) {
    mp_status s = need(c, 8, what);
    if (s) return s;
    *v = mp_load_u64(c->p + c->pos);
    c->pos += 8;
    return MP_OK;
}

/* A string: u64 length + bytes. Sets *off to the bytes, *len to the length. */
static mp_status rd_str(cursor *c, uint64_t *off, uint64_t *len, const char *what) {
    uint64_t n;
    mp_status s = rd_u64(c, &n, what);
    if (s) return s;
    if (n > MP_GGUF_MAX_STRING)
        return mp_err_set(c->err, MP_ERR_FORMAT,
                          "%s: %s at byte %" PRIu64 ": length %" PRIu64 " exceeds the 1 GiB limit",
                          c->name, what, c->pos - 8, n);
    if ((s = need(c, n, what))) return s;
    *off = c->pos;
    *len = n;
    c->pos += n;
    return MP_OK;
}

/* ------------------------------------------------------------------------ */
/* Hash index over names                                                    */
/* ------------------------------------------------------------------------ */

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* Capacity: a power of two at least twice n, so probes stay short. */
static uint64_t hash_cap(int64_t n) {
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)n) cap *= 2;
    return cap;
}

typedef const char *(*name_of_fn)(const mp_gguf *g, int64_t i);
static const char *kv_name(const mp_gguf *g, int64_t i) { return g->kv[i].key; }
static const char *t_name(const mp_gguf *g, int64_t i) { return g->tensors[i].name; }

static int64_t hash_find(const mp_gguf *g, const int64_t *tab, uint64_t cap, name_of_fn name_of,
                         const char *name) {
    if (!tab) return -1;
    for (uint64_t h = hash_str(name) & (cap - 1);; h = (h + 1) & (cap - 1)) {
        if (tab[h] == 0) return -1;
        if (strcmp(name_of(g, tab[h] - 1), name) == 0) return tab[h] - 1;
    }
}

/* Inserts index i; returns the index of an existing entry with the same
 * name (a duplicate) or -1 on success. */
static int64_t hash_insert(const mp_gguf *g, int64_t *tab, uint64_t cap, name_of_fn name_of,
                           int64_t i) {
    const char *name = name_of(g, i);
    for (uint64_t h = hash_str(name) & (cap - 1);; h = (h + 1) & (cap - 1)) {
        if (tab[h] == 0) {
            tab[h] = i + 1;
            return -1;
        }
        if (strcmp(name_of(g, tab[h] - 1), name) == 0) return tab[h] - 1;
    }
}

/* ------------------------------------------------------------------------ */
/* Metadata                                                                 */
/* ------------------------------------------------------------------------ */

/* Skips over the elements of a value (scalar or array body) of type t,
 * recording string offsets for STRING arrays. */
static mp_status parse_values(cursor *c, kv_entry *e, mp_gguf_vtype t, uint64_t n) {
    if (t == MP_GGUF_STRING) {
        /* each string takes at least its 8-byte length: bounds the index */
        if (n > (c->size - c->pos) / 8)
            return mp_err_set(c->err, MP_ERR_FORMAT,
                              "%s: metadata key '%s': %" PRIu64
                              " strings cannot fit in the %" PRIu64 " bytes left",
                              c->name, e->key, n, c->size - c->pos);
        if (e->arr_type == MP_GGUF_STRING) {
            size_t bytes;
            if (!mp_mul_size((size_t)n, sizeof(uint64_t), &bytes) ||
                !(e->str_off = mp_malloc(bytes)))
                return mp_err_set(c->err, MP_ERR_NOMEM,
                                  "%s: metadata key '%s': out of memory indexing %" PRIu64
                                  " strings", c->name, e->key, n);
        }
        for (uint64_t j = 0; j < n; j++) {
            uint64_t off, len;
            if (e->str_off) e->str_off[j] = c->pos;
            mp_status s = rd_str(c, &off, &len, "metadata string value");
            if (s) return s;
        }
        return MP_OK;
    }
    size_t es = vtype_sizes[t];
    if (n > (c->size - c->pos) / es)
        return mp_err_set(c->err, MP_ERR_FORMAT,
                          "%s: metadata key '%s': %" PRIu64 " %s values (%zu bytes each) "
                          "cannot fit in the %" PRIu64 " bytes left",
                          c->name, e->key, n, vtype_names[t], es, c->size - c->pos);
    c->pos += n * es;
    return MP_OK;
}

static mp_status parse_kv(cursor *c, mp_gguf *g, int64_t i) {
    kv_entry *e = &g->kv[i];
    e->raw_off = c->pos;
    e->arr_type = MP_GGUF_VTYPE_COUNT;
    e->arr_len = 1;
    uint64_t koff, klen;
    mp_status s = rd_str(c, &koff, &klen, "metadata key");
    if (s) return s;
    if (klen == 0)
        return mp_err_set(c->err, MP_ERR_FORMAT, "%s: metadata key #%" PRId64 " is empty",
                          c->name, i);
    if (memchr(c->p + koff, 0, klen))
        return mp_err_set(c->err, MP_ERR_FORMAT,
                          "%s: metadata key #%" PRId64 " contains a NUL byte", c->name, i);
    if (!(e->key = mp_strndup((const char *)c->p + koff, klen)))
        return mp_err_set(c->err, MP_ERR_NOMEM, "%s: out of memory", c->name);
    uint32_t t;
    if ((s = rd_u32(c, &t, "metadata value type"))) return s;
    if (t >= MP_GGUF_VTYPE_COUNT)
        return mp_err_set(c->err, MP_ERR_FORMAT,
                          "%s: metadata key '%s': value type %" PRIu32
                          " is not a GGUF type (0..12)", c->name, e->key, t);
    e->type = (mp_gguf_vtype)t;
    if (e->type == MP_GGUF_ARRAY) {
        uint32_t at;
        uint64_t n;
        if ((s = rd_u32(c, &at, "array element type"))) return s;
        if (at >= MP_GGUF_VTYPE_COUNT || at == MP_GGUF_ARRAY)
            return mp_err_set(c->err, MP_ERR_FORMAT,
                              "%s: metadata key '%s': array element type %" PRIu32
                              " is not supported (0..12, nested arrays refused)",
                              c->name, e->key, at);
        if ((s = rd_u64(c, &n, "array length"))) return s;
        e->arr_type = (mp_gguf_vtype)at;
        e->arr_len = n;
        e->val_off = c->pos;
        if ((s = parse_values(c, e, e->arr_type, n))) return s;
    } else {
        e->val_off = c->pos;
        if ((s = parse_values(c, e, e->type, 1))) return s;
    }
    e->raw_len = c->pos - e->raw_off;
    return MP_OK;
}

static mp_status parse_alignment(mp_gguf *g, mp_err *err) {
    g->alignment = MP_GGUF_DEFAULT_ALIGNMENT;
    int64_t i = mp_gguf_find_key(g, "general.alignment");
    if (i < 0) return MP_OK;
    const kv_entry *e = &g->kv[i];
    if (e->type != MP_GGUF_UINT32)
        return mp_err_set(err, MP_ERR_FORMAT,
                          "%s: metadata key 'general.alignment' has type %s, expected UINT32",
                          g->path, vtype_names[e->type]);
    uint32_t a = mp_load_u32(g->data + e->val_off);
    if (a == 0 || (a & (a - 1)) != 0)
        return mp_err_set(err, MP_ERR_FORMAT,
                          "%s: metadata key 'general.alignment' = %" PRIu32
                          ": must be a non-zero power of two", g->path, a);
    g->alignment = a;
    return MP_OK;
}

/* ------------------------------------------------------------------------ */
/* Tensor infos                                                             */
/* ------------------------------------------------------------------------ */

static mp_status parse_tensor_info(cursor *c, mp_gguf *g, int64_t i) {
    mp_gguf_tensor *t = &g->tensors[i];
    uint64_t noff, nlen;
    mp_status s = rd_str(c, &noff, &nlen, "tensor name");
    if (s) return s;
    if (nlen == 0 || nlen > MP_GGUF_MAX_NAME || memchr(c->p + noff, 0, nlen))
        return mp_err_set(c->err, MP_ERR_FORMAT,
                          "%s: tensor #%" PRId64 ": name length %" PRIu64
                          " is invalid (1..%d bytes, no NUL)",
                          c->name, i, nlen, MP_GGUF_MAX_NAME);
    if (!(t->name = mp_strndup((const char *)c->p + noff, nlen)))
        return mp_err_set(c->err, MP_ERR_NOMEM, "%s: out of memory", c->name);
    uint32_t nd;
    if ((s = rd_u32(c, &nd, "tensor n_dims"))) return s;
    if (nd < 1 || nd > MP_GGUF_MAX_DIMS)
        return mp_err_set(c->err, MP_ERR_FORMAT,
                          "%s: tensor '%s': n_dims = %" PRIu32 ", expected 1..%d", c->name,
                          t->name, nd, MP_GGUF_MAX_DIMS);
    t->n_dims = nd;
    for (int d = 0; d < MP_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t v;
        if ((s = rd_u64(c, &v, "tensor dimension"))) return s;
        if (v > (uint64_t)INT64_MAX)
            return mp_err_set(c->err, MP_ERR_FORMAT,
                              "%s: tensor '%s': ne[%" PRIu32 "] = %" PRId64 " is negative",
                              c->name, t->name, d, (int64_t)v);
        t->ne[d] = (int64_t)v;
    }
    /* element count must fit in int64: check with divisions */
    int64_t nel = 1;
    for (int d = 0; d < MP_GGUF_MAX_DIMS; d++) {
        if (t->ne[d] != 0 && nel > INT64_MAX / t->ne[d])
            return mp_err_set(c->err, MP_ERR_FORMAT,
                              "%s: tensor '%s': shape [%" PRId64 ", %" PRId64 ", %" PRId64
                              ", %" PRId64 "] overflows int64",
                              c->name, t->name, t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
        nel *= t->ne[d];
    }
    uint32_t ty;
    if ((s = rd_u32(c, &ty, "tensor type"))) return s;
    const mp_type_traits *tr = mp_type_info((int)ty);
    if (!tr)
        return mp_err_set(c->err, MP_ERR_FORMAT,
                          "%s: tensor '%s': type id %" PRIu32 " is not a known ggml type",
                          c->name, t->name, ty);
    t->type = (int)ty;
    if (t->ne[0] % tr->blck_size != 0)
        return mp_err_set(c->err, MP_ERR_FORMAT,
                          "%s: tensor '%s': ne[0] = %" PRId64
                          " is not a multiple of the %s block size %" PRId64,
                          c->name, t->name, t->ne[0], tr->name, tr->blck_size);
    uint64_t row = (uint64_t)(t->ne[0] / tr->blck_size) * tr->type_size, nb = row;
    for (int d = 1; d < MP_GGUF_MAX_DIMS; d++)
        if (!mp_mul_u64(nb, (uint64_t)t->ne[d], &nb))
            return mp_err_set(c->err, MP_ERR_FORMAT,
                              "%s: tensor '%s': byte size overflows", c->name, t->name);
    t->nbytes = nb;
    return rd_u64(c, &t->offset, "tensor offset");
}

static int cmp_by_offset(const void *a, const void *b, void *ctx) {
    const mp_gguf_tensor *ts = ctx;
    uint64_t x = ts[*(const int64_t *)a].offset, y = ts[*(const int64_t *)b].offset;
    return x < y ? -1 : x > y;
}

/* Offsets aligned, data inside the file, no two tensors overlapping. */
static mp_status check_tensor_data(mp_gguf *g, bool header_only, mp_err *err) {
    for (int64_t i = 0; i < g->n_tensors; i++) {
        mp_gguf_tensor *t = &g->tensors[i];
        uint64_t start = 0, end = 0;
        if (t->offset % g->alignment != 0)
            return mp_err_set(err, MP_ERR_FORMAT,
                              "%s: tensor '%s': offset %" PRIu64
                              " is not a multiple of the alignment %" PRIu32,
                              g->path, t->name, t->offset, g->alignment);
        if (!mp_add_u64(g->data_offset, t->offset, &start) ||
            !mp_add_u64(start, t->nbytes, &end) || (g->file_size && end > g->file_size))
            return mp_err_set(err, MP_ERR_FORMAT,
                              "%s: tensor '%s': data ends at byte %" PRIu64
                              ", past the end of the file (%" PRIu64 " bytes)",
                              g->path, t->name, start + t->nbytes, g->file_size);
        t->data = end <= g->size ? g->data + start : NULL;
        if (!header_only && !t->data)
            return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s': data outside the buffer",
                              g->path, t->name);
    }
    if (g->n_tensors < 2) return MP_OK;
    int64_t *order = mp_calloc((size_t)g->n_tensors, sizeof *order);
    if (!order) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", g->path);
    for (int64_t i = 0; i < g->n_tensors; i++) order[i] = i;
    qsort_r(order, (size_t)g->n_tensors, sizeof *order, cmp_by_offset, g->tensors);
    mp_status s = MP_OK;
    for (int64_t k = 1; k < g->n_tensors && !s; k++) {
        const mp_gguf_tensor *a = &g->tensors[order[k - 1]], *b = &g->tensors[order[k]];
        if (a->offset + a->nbytes > b->offset)
            s = mp_err_set(err, MP_ERR_FORMAT,
                           "%s: tensors '%s' (offset %" PRIu64 ", %" PRIu64
                           " bytes) and '%s' (offset %" PRIu64 ") overlap",
                           g->path, a->name, a->offset, a->nbytes, b->name, b->offset);
    }
    mp_free(order);
    return s;
}

/* ------------------------------------------------------------------------ */
/* Parse / open / free                                                      */
/* ------------------------------------------------------------------------ */

static mp_status parse_header(cursor *c, mp_gguf *g) {
    uint32_t magic;
    mp_status s = rd_u32(c, &magic, "magic");
    if (s) return s;
    if (magic != MP_GGUF_MAGIC)
        return mp_err_set(c->err, MP_ERR_FORMAT,
                          "%s: magic is 0x%08" PRIx32 ", not a GGUF file (expected 'GGUF')",
                          c->name, magic);
    if ((s = rd_u32(c, &g->version, "version"))) return s;
    if (g->version == 1)
        return mp_err_set(c->err, MP_ERR_UNSUPPORTED,
                          "%s: GGUF version 1 is obsolete and not supported", c->name);
    if ((g->version & 0xFFFF) == 0 && g->version != 0)
        return mp_err_set(c->err, MP_ERR_UNSUPPORTED,
                          "%s: version field 0x%08" PRIx32
                          " looks byte-swapped: big-endian GGUF files are not supported",
                          c->name, g->version);
    if (g->version != 2 && g->version != 3)
        return mp_err_set(c->err, MP_ERR_UNSUPPORTED,
                          "%s: GGUF version %" PRIu32 " is not supported (expected 3)", c->name,
                          g->version);
    uint64_t nt, nkv;
    if ((s = rd_u64(c, &nt, "tensor count")) || (s = rd_u64(c, &nkv, "metadata count")))
        return s;
    /* a tensor info takes at least 8+1+4+4+8+8 bytes and a KV pair at least
     * 8+1+4+1: a count that cannot fit in the rest of the file is refused here,
     * before anything is allocated for it */
    uint64_t left = c->size - c->pos;
    if (nt > (uint64_t)INT64_MAX || nt > left / 33)
        return mp_err_set(c->err, MP_ERR_FORMAT,
                          "%s: tensor count %" PRIu64 " cannot fit in the %" PRIu64
                          " bytes of the header", c->name, nt, left);
    if (nkv > (uint64_t)INT64_MAX || nkv > left / 14)
        return mp_err_set(c->err, MP_ERR_FORMAT,
                          "%s: metadata count %" PRIu64 " cannot fit in the %" PRIu64
                          " bytes of the header", c->name, nkv, left);
    g->n_tensors = (int64_t)nt;
    g->n_kv = (int64_t)nkv;
    return MP_OK;
}

mp_status mp_gguf_parse(mp_gguf **out, const void *data, size_t size, const char *name,
                        mp_gguf_params params, mp_err *err) {
    mp_gguf *g = mp_calloc(1, sizeof *g);
    if (!g || !(g->path = mp_strdup(name ? name : "<buffer>"))) {
        mp_free(g);
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", name ? name : "<buffer>");
    }
    g->data = data;
    g->size = size;
    g->file_size = params.header_only ? params.file_size : size;
    cursor c = {.p = data, .pos = 0, .size = size, .name = g->path, .err = err};
    mp_status s = parse_header(&c, g);
    if (s) goto fail;

    g->kv_hash_cap = hash_cap(g->n_kv);
    if (!(g->kv = mp_calloc((size_t)g->n_kv, sizeof *g->kv)) ||
        !(g->kv_hash = mp_calloc(g->kv_hash_cap, sizeof *g->kv_hash))) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", g->path);
        goto fail;
    }
    for (int64_t i = 0; i < g->n_kv; i++) {
        if ((s = parse_kv(&c, g, i))) goto fail;
        int64_t dup = hash_insert(g, g->kv_hash, g->kv_hash_cap, kv_name, i);
        if (dup >= 0) {
            s = mp_err_set(err, MP_ERR_FORMAT, "%s: metadata key '%s' appears twice (#%" PRId64
                           " and #%" PRId64 ")", g->path, g->kv[i].key, dup, i);
            goto fail;
        }
    }
    if ((s = parse_alignment(g, err))) goto fail;

    g->t_hash_cap = hash_cap(g->n_tensors);
    if (!(g->tensors = mp_calloc((size_t)g->n_tensors, sizeof *g->tensors)) ||
        !(g->t_hash = mp_calloc(g->t_hash_cap, sizeof *g->t_hash))) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", g->path);
        goto fail;
    }
    for (int64_t i = 0; i < g->n_tensors; i++) {
        if ((s = parse_tensor_info(&c, g, i))) goto fail;
        int64_t dup = hash_insert(g, g->t_hash, g->t_hash_cap, t_name, i);
        if (dup >= 0) {
            s = mp_err_set(err, MP_ERR_FORMAT, "%s: tensor name '%s' appears twice (#%" PRId64
                           " and #%" PRId64 ")", g->path, g->tensors[i].name, dup, i);
            goto fail;
        }
    }
    g->data_offset = mp_align_up(c.pos, g->alignment);
    if (g->n_tensors > 0 && g->file_size && g->data_offset > g->file_size) {
        s = mp_err_set(err, MP_ERR_FORMAT,
                       "%s: data section would start at byte %" PRIu64
                       ", past the end of the file (%" PRIu64 " bytes)",
                       g->path, g->data_offset, g->file_size);
        goto fail;
    }
    if ((s = check_tensor_data(g, params.header_only, err))) goto fail;
    *out = g;
    return MP_OK;
fail:
    mp_gguf_free(g);
    return s;
}

mp_status mp_gguf_open(mp_gguf **out, const char *path, mp_err *err) {
    const uint8_t *map;
    size_t size;
    mp_status s = mp_file_map(path, &map, &size, err);
    if (s) return s;
    static const uint8_t empty[1];
    mp_gguf *g = NULL;
    if ((s = mp_gguf_parse(&g, map ? map : empty, size, path, (mp_gguf_params){0}, err))) {
        mp_file_unmap(map, size);
        return s;
    }
    g->mapped = map != NULL;
    *out = g;
    return MP_OK;
}

void mp_gguf_free(mp_gguf *g) {
    if (!g) return;
    if (g->kv)
        for (int64_t i = 0; i < g->n_kv; i++) {
            mp_free(g->kv[i].key);
            mp_free(g->kv[i].str_off);
        }
    if (g->tensors)
        for (int64_t i = 0; i < g->n_tensors; i++) mp_free((char *)g->tensors[i].name);
    if (g->mapped) mp_file_unmap(g->data, g->size);
    mp_free(g->kv);
    mp_free(g->tensors);
    mp_free(g->kv_hash);
    mp_free(g->t_hash);
    mp_free(g->path);
    mp_free(g);
}

/* ------------------------------------------------------------------------ */
/* Accessors                                                                */
/* ------------------------------------------------------------------------ */

const char *mp_gguf_path(const mp_gguf *g) { return g->path; }
uint32_t mp_gguf_version(const mp_gguf *g) { return g->version; }
uint32_t mp_gguf_alignment(const mp_gguf *g) { return g->alignment; }
uint64_t mp_gguf_data_offset(const mp_gguf *g) { return g->data_offset; }
uint64_t mp_gguf_file_size(const mp_gguf *g) { return g->file_size; }
const uint8_t *mp_gguf_base(const mp_gguf *g) { return g->data; }
int64_t mp_gguf_n_kv(const mp_gguf *g) { return g->n_kv; }
int64_t mp_gguf_n_tensors(const mp_gguf *g) { return g->n_tensors; }

int64_t mp_gguf_find_key(const mp_gguf *g, const char *key) {
    return hash_find(g, g->kv_hash, g->kv_hash_cap, kv_name, key);
}

const char *mp_gguf_key(const mp_gguf *g, int64_t i) { return g->kv[i].key; }
mp_gguf_vtype mp_gguf_kv_type(const mp_gguf *g, int64_t i) { return g->kv[i].type; }
mp_gguf_vtype mp_gguf_arr_type(const mp_gguf *g, int64_t i) { return g->kv[i].arr_type; }

uint64_t mp_gguf_arr_len(const mp_gguf *g, int64_t i) {
    return g->kv[i].type == MP_GGUF_ARRAY ? g->kv[i].arr_len : 0;
}

void mp_gguf_kv_raw(const mp_gguf *g, int64_t i, const uint8_t **bytes, size_t *len) {
    *bytes = g->data + g->kv[i].raw_off;
    *len = (size_t)g->kv[i].raw_len;
}

const mp_gguf_tensor *mp_gguf_tensor_at(const mp_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const mp_gguf_tensor *mp_gguf_find_tensor(const mp_gguf *g, const char *name) {
    int64_t i = hash_find(g, g->t_hash, g->t_hash_cap, t_name, name);
    return i >= 0 ? &g->tensors[i] : NULL;
}

int64_t mp_tensor_nelements(const mp_gguf_tensor *t) {
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

/* Locates element j of KV i: its type and a pointer to its encoding. */
static mp_status element(const mp_gguf *g, int64_t i, uint64_t j, mp_gguf_vtype *t,
                         const uint8_t **p, mp_err *err) {
    if (i < 0 || i >= g->n_kv)
        return mp_err_set(err, MP_ERR_ARG, "%s: metadata index %" PRId64 " out of range",
                          g->path, i);
    const kv_entry *e = &g->kv[i];
    bool arr = e->type == MP_GGUF_ARRAY;
    if (j >= (arr ? e->arr_len : 1))
        return mp_err_set(err, MP_ERR_ARG, "%s: metadata key '%s': element %" PRIu64
                          " out of range (%" PRIu64 " elements)",
                          g->path, e->key, j, arr ? e->arr_len : 1);
    *t = arr ? e->arr_type : e->type;
    if (*t == MP_GGUF_STRING)
        *p = g->data + (arr ? e->str_off[j] : e->val_off);
    else
        *p = g->data + e->val_off + j * vtype_sizes[*t];
    return MP_OK;
}

static mp_status type_error(const mp_gguf *g, int64_t i, mp_gguf_vtype t, const char *want,
                            mp_err *err) {
    return mp_err_set(err, MP_ERR_FORMAT, "%s: metadata key '%s' has type %s, expected %s",
                      g->path, g->kv[i].key, vtype_names[t], want);
}

mp_status mp_gguf_get_int(const mp_gguf *g, int64_t i, uint64_t j, int64_t *out, mp_err *err) {
    mp_gguf_vtype t = MP_GGUF_UINT8;
    const uint8_t *p = NULL;
    mp_status s = element(g, i, j, &t, &p, err);
    if (s) return s;
    int64_t v;
    switch (t) {
    case MP_GGUF_UINT8: v = p[0]; break;
    case MP_GGUF_INT8: v = (int8_t)p[0]; break;
    case MP_GGUF_UINT16: v = mp_load_u16(p); break;
    case MP_GGUF_INT16: v = (int16_t)mp_load_u16(p); break;
    case MP_GGUF_UINT32: v = mp_load_u32(p); break;
    case MP_GGUF_INT32: v = (int32_t)mp_load_u32(p); break;
    case MP_GGUF_INT64: v = (int64_t)mp_load_u64(p); break;
    case MP_GGUF_UINT64: {
        uint64_t u = mp_load_u64(p);
        if (u > (uint64_t)INT64_MAX)
            return mp_err_set(err, MP_ERR_FORMAT, "%s: metadata key '%s' = %" PRIu64
                              " is out of range", g->path, g->kv[i].key, u);
        v = (int64_t)u;
        break;
    }
    default: return type_error(g, i, t, "an integer", err);
    }
    *out = v;
    return MP_OK;
}

mp_status mp_gguf_get_uint(const mp_gguf *g, int64_t i, uint64_t j, uint64_t *out, mp_err *err) {
    mp_gguf_vtype t = MP_GGUF_UINT8;
    const uint8_t *p = NULL;
    mp_status s = element(g, i, j, &t, &p, err);
    if (s) return s;
    if (t == MP_GGUF_UINT64) {
        *out = mp_load_u64(p);
        return MP_OK;
    }
    int64_t v;
    if ((s = mp_gguf_get_int(g, i, j, &v, err))) return s;
    if (v < 0)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: metadata key '%s' = %" PRId64
                          " is negative, expected a count", g->path, g->kv[i].key, v);
    *out = (uint64_t)v;
    return MP_OK;
}

mp_status mp_gguf_get_float(const mp_gguf *g, int64_t i, uint64_t j, double *out, mp_err *err) {
    mp_gguf_vtype t = MP_GGUF_UINT8;
    const uint8_t *p = NULL;
    mp_status s = element(g, i, j, &t, &p, err);
    if (s) return s;
    if (t == MP_GGUF_FLOAT32) {
        *out = mp_load_f32(p);
    } else if (t == MP_GGUF_FLOAT64) {
        uint64_t u = mp_load_u64(p);
        double d;
        memcpy(&d, &u, 8);
        *out = d;
    } else {
        return type_error(g, i, t, "FLOAT32 or FLOAT64", err);
    }
    return MP_OK;
}

mp_status mp_gguf_get_bool(const mp_gguf *g, int64_t i, uint64_t j, bool *out, mp_err *err) {
    mp_gguf_vtype t = MP_GGUF_UINT8;
    const uint8_t *p = NULL;
    mp_status s = element(g, i, j, &t, &p, err);
    if (s) return s;
    if (t != MP_GGUF_BOOL) return type_error(g, i, t, "BOOL", err);
    *out = p[0] != 0;
    return MP_OK;
}

mp_status mp_gguf_get_str(const mp_gguf *g, int64_t i, uint64_t j, const char **str, size_t *len,
                          mp_err *err) {
    mp_gguf_vtype t = MP_GGUF_UINT8;
    const uint8_t *p = NULL;
    mp_status s = element(g, i, j, &t, &p, err);
    if (s) return s;
    if (t != MP_GGUF_STRING) return type_error(g, i, t, "STRING", err);
    *len = (size_t)mp_load_u64(p);
    *str = (const char *)p + 8;
    return MP_OK;
}

static mp_status find_required(const mp_gguf *g, const char *key, int64_t *i, mp_err *err) {
    *i = mp_gguf_find_key(g, key);
    if (*i < 0)
        return mp_err_set(err, MP_ERR_NOT_FOUND, "%s: metadata key '%s' is missing", g->path,
                          key);
    return MP_OK;
}

mp_status mp_gguf_key_uint(const mp_gguf *g, const char *key, uint64_t *out, mp_err *err) {
    int64_t i;
    mp_status s = find_required(g, key, &i, err);
    return s ? s : mp_gguf_get_uint(g, i, 0, out, err);
}

mp_status mp_gguf_key_float(const mp_gguf *g, const char *key, double *out, mp_err *err) {
    int64_t i;
    mp_status s = find_required(g, key, &i, err);
    return s ? s : mp_gguf_get_float(g, i, 0, out, err);
}

mp_status mp_gguf_key_strdup(const mp_gguf *g, const char *key, char **out, mp_err *err) {
    int64_t i;
    const char *str;
    size_t len;
    mp_status s = find_required(g, key, &i, err);
    if (s || (s = mp_gguf_get_str(g, i, 0, &str, &len, err))) return s;
    char *d = mp_strndup(str, len);
    if (!d) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", g->path);
    *out = d;
    return MP_OK;
}

void mp_gguf_release(const mp_gguf *g, const void *ptr, size_t len) {
    if (!g->mapped || len == 0) return;
    /* only whole pages inside the range may be dropped */
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)ptr + page - 1) / page * page;
    uintptr_t b = ((uintptr_t)ptr + len) / page * page;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

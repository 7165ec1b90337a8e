/* test_safetensors.c — the safetensors reader, writer and checkpoint folders.
 *
 * Files are built here byte by byte (an 8-byte length, the JSON header, the
 * data), not checked in: a hand-written file reads back with the right
 * tensors; a file copied through the writer reads back identical; every
 * prefix of a valid file and a table of hostile headers (one defect each) are
 * refused with the expected status and a message naming the field; parsing
 * survives allocation failures; a 2-shard checkpoint with its index and
 * config opens, and broken indexes are refused; writer misuse leaves no
 * file behind. */
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static char dir[256];

/* ------------------------------------------------------------------------ */
/* Byte builder                                                             */
/* ------------------------------------------------------------------------ */

typedef struct sb {
    uint8_t *d;
    size_t n, cap;
} sb;

static void sb_put(sb *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->d = realloc(b->d, b->cap);
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

/* header JSON text (length written first), then `ndata` data bytes 0, 1, 2... */
static void sb_file(sb *b, const char *header, size_t ndata) {
    b->n = 0;
    uint8_t len[8];
    uint64_t h = strlen(header);
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(h >> (8 * i));
    sb_put(b, len, 8);
    sb_put(b, header, strlen(header));
    for (size_t i = 0; i < ndata; i++) {
        uint8_t v = (uint8_t)(i * 7 + 1);
        sb_put(b, &v, 1);
    }
}

static void write_text(const char *path, const char *text) {
    mp_test_write_file(path, text, strlen(text));
}

static char *path_in(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", dir, name);
    return buf;
}

static int dir_entries(const char *d) {
    DIR *h = opendir(d);
    int n = 0;
    for (struct dirent *e; h && (e = readdir(h));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (h) closedir(h);
    return n;
}

/* ------------------------------------------------------------------------ */
/* A hand-written file                                                      */
/* ------------------------------------------------------------------------ */

/* "b" comes first in the header but second in the data. */
static const char *const good_header =
    "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"x\"},"
    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
    "\"a\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
    "\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[16,24]},"
    "\"z\":{\"dtype\":\"F16\",\"shape\":[0,4],\"data_offsets\":[24,24]},"
    "\"q\":{\"dtype\":\"F4\",\"shape\":[2,3],\"data_offsets\":[24,27]}}  ";
#define GOOD_DATA 27

static void test_read_good(void) {
    sb b = {0};
    sb_file(&b, good_header, GOOD_DATA);
    mp_err err = {0};
    mp_st *f = NULL;
    CHECK_STATUS(MP_OK, mp_st_parse(&f, b.d, b.n, "good", &err), &err);
    if (!f) {
        free(b.d);
        return;
    }
    CHECK_INT(5, mp_st_n_tensors(f));
    CHECK_INT(8 + strlen(good_header), mp_st_data_offset(f));
    const char *order[] = {"a", "b", "s", "z", "q"}; /* by offset, then size */
    for (int i = 0; i < 5; i++)
        CHECK_MSG(!strcmp(mp_st_tensor_at(f, i)->name, order[i]), "tensor %d is %s", i,
                  mp_st_tensor_at(f, i)->name);
    CHECK(mp_st_tensor_at(f, 5) == NULL && mp_st_tensor_at(f, -1) == NULL);
    const mp_st_tensor *a = mp_st_find_tensor(f, "a"), *bt = mp_st_find_tensor(f, "b");
    const mp_st_tensor *s = mp_st_find_tensor(f, "s"), *z = mp_st_find_tensor(f, "z");
    const mp_st_tensor *q = mp_st_find_tensor(f, "q");
    CHECK(a && bt && s && z && q && !mp_st_find_tensor(f, "c"));
    if (a && bt && s && z && q) {
        CHECK_INT(MP_ST_BF16, a->dtype);
        CHECK_INT(2, a->n_dims);
        CHECK_INT(2, a->shape[0]);
        CHECK_INT(8, a->nbytes);
        CHECK(a->data == b.d + mp_st_data_offset(f));
        CHECK_INT(MP_ST_F32, bt->dtype);
        CHECK_INT(8, bt->offset);
        CHECK(bt->data == b.d + mp_st_data_offset(f) + 8);
        CHECK_INT(0, s->n_dims);
        CHECK_INT(1, mp_st_tensor_nelements(s));
        CHECK_INT(8, s->nbytes);
        CHECK_INT(0, z->nbytes);
        CHECK_INT(0, mp_st_tensor_nelements(z));
        CHECK_INT(MP_ST_F4, q->dtype);
        CHECK_INT(3, q->nbytes);
    }
    CHECK_INT(2, mp_st_n_meta(f));
    CHECK(!strcmp(mp_st_meta_key(f, 0), "format") && !strcmp(mp_st_meta_value(f, 0), "pt"));
    CHECK(!strcmp(mp_st_meta_get(f, "note"), "x") && !mp_st_meta_get(f, "nope"));
    mp_st_free(f);

    /* through a file, and copied through the writer: the same tensors and bytes */
    char p1[512], p2[512];
    mp_test_write_file(path_in(p1, sizeof p1, "good.safetensors"), b.d, b.n);
    path_in(p2, sizeof p2, "copy.safetensors");
    mp_st *g = NULL, *h = NULL;
    CHECK_STATUS(MP_OK, mp_st_open(&g, p1, &err), &err);
    mp_st_writer *w = NULL;
    CHECK_STATUS(MP_OK, mp_st_writer_open(&w, p2, false, &err), &err);
    for (int64_t i = 0; g && w && i < mp_st_n_meta(g); i++)
        CHECK_STATUS(MP_OK, mp_st_writer_meta(w, mp_st_meta_key(g, i), mp_st_meta_value(g, i),
                                              &err), &err);
    for (int64_t i = 0; g && w && i < mp_st_n_tensors(g); i++) {
        const mp_st_tensor *t = mp_st_tensor_at(g, i);
        CHECK_STATUS(MP_OK, mp_st_writer_add_tensor(w, t->name, t->dtype, t->n_dims, t->shape,
                                                    &err), &err);
    }
    for (int64_t i = 0; g && w && i < mp_st_n_tensors(g); i++) {
        const mp_st_tensor *t = mp_st_tensor_at(g, i);
        CHECK_STATUS(MP_OK, mp_st_writer_write_data(w, t->data, t->nbytes, &err), &err);
    }
    if (w) CHECK_STATUS(MP_OK, mp_st_writer_finish(w, &err), &err);
    mp_st_writer_free(w);
    CHECK_STATUS(MP_OK, mp_st_open(&h, p2, &err), &err);
    if (g && h) {
        CHECK_INT(0, mp_st_data_offset(h) % 8); /* header padded for aligned data */
        CHECK_INT(mp_st_n_tensors(g), mp_st_n_tensors(h));
        CHECK_INT(mp_st_n_meta(g), mp_st_n_meta(h));
        CHECK_INT(mp_st_file_size(h) - mp_st_data_offset(h), GOOD_DATA);
        for (int64_t i = 0; i < mp_st_n_tensors(g); i++) {
            const mp_st_tensor *x = mp_st_tensor_at(g, i), *y = mp_st_find_tensor(h, x->name);
            CHECK_MSG(y && y->dtype == x->dtype && y->n_dims == x->n_dims &&
                          y->offset == x->offset && y->nbytes == x->nbytes &&
                          !memcmp(y->shape, x->shape, sizeof x->shape) &&
                          !memcmp(y->data, x->data, x->nbytes),
                      "tensor %s differs after the copy", x->name);
        }
        for (int64_t i = 0; i < mp_st_n_meta(g); i++)
            CHECK(!strcmp(mp_st_meta_get(h, mp_st_meta_key(g, i)), mp_st_meta_value(g, i)));
    }
    mp_st_free(g);
    mp_st_free(h);
    unlink(p1);
    unlink(p2);

    /* every truncation of the file is refused cleanly */
    for (size_t n = 0; n < b.n; n++) {
        mp_st *t = NULL;
        mp_status st = mp_st_parse(&t, b.d, n, "prefix", &err);
        CHECK_MSG(st == MP_ERR_FORMAT && t == NULL, "prefix of %zu bytes: %s (%s)", n,
                  mp_status_name(st), err.msg);
        mp_st_free(t);
    }

    /* allocation failures while parsing: reported, never a crash or a leak */
    int fails = 0;
    for (long k = 1; k < 1000; k++) {
        mp_st *t = NULL;
        mp_malloc_fail_at(k);
        mp_status st = mp_st_parse(&t, b.d, b.n, "good", &err);
        mp_malloc_fail_at(0);
        if (st == MP_OK) {
            mp_st_free(t);
            break;
        }
        fails++;
        CHECK_STATUS(MP_ERR_NOMEM, st, &err);
    }
    CHECK(fails >= 5);
    free(b.d);
}

/* ------------------------------------------------------------------------ */
/* Hostile headers                                                          */
/* ------------------------------------------------------------------------ */

typedef struct bad_case {
    const char *header; /* NULL: raw bytes below */
    size_t ndata;
    mp_status want;
    const char *needle;
} bad_case;

static const bad_case bad_cases[] = {
    {"[]", 0, MP_ERR_FORMAT, "does not start with a JSON object"},
    {" {}", 0, MP_ERR_FORMAT, "does not start with a JSON object"},
    {"{", 0, MP_ERR_FORMAT, "does not start with a JSON object"},
    {"{\"a\":{\"dtype\":\"F32\",", 0, MP_ERR_FORMAT, "not valid JSON"},
    {"{\"a\":1,}", 0, MP_ERR_FORMAT, "not valid JSON"},
    {"{} x", 0, MP_ERR_FORMAT, "other than spaces"},
    {"{}{}", 0, MP_ERR_FORMAT, "other than spaces"},
    {"{\"__metadata__\":5}", 0, MP_ERR_FORMAT, "\"__metadata__\" is not an object"},
    {"{\"__metadata__\":{\"k\":1}}", 0, MP_ERR_FORMAT, "value of \"k\" is not a string"},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, MP_ERR_FORMAT, "appears twice"},
    {"{\"a\":5}", 0, MP_ERR_FORMAT, "tensor 'a': entry is not an object"},
    {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, MP_ERR_FORMAT, "\"dtype\" is missing"},
    {"{\"a\":{\"dtype\":\"F17\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, MP_ERR_UNSUPPORTED,
     "dtype \"F17\""},
    {"{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, MP_ERR_UNSUPPORTED,
     "dtype \"f32\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, MP_ERR_FORMAT,
     "\"shape\" is missing or not an array"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, MP_ERR_FORMAT,
     "shape[0] is not an integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, MP_ERR_FORMAT,
     "shape[0] is not an integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,\"2\"],\"data_offsets\":[0,4]}}", 4, MP_ERR_FORMAT,
     "shape[1] is not an integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
     MP_ERR_UNSUPPORTED, "9 dimensions"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296,0],"
     "\"data_offsets\":[0,0]}}", 0, MP_ERR_FORMAT, "overflows"},
    {"{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2, MP_ERR_FORMAT,
     "whole bytes"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, MP_ERR_FORMAT, "\"data_offsets\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, MP_ERR_FORMAT,
     "\"data_offsets\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, MP_ERR_FORMAT,
     "\"data_offsets\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e300]}}", 4, MP_ERR_FORMAT,
     "\"data_offsets\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, MP_ERR_FORMAT,
     "end before they begin"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, MP_ERR_FORMAT,
     "past its end"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, MP_ERR_FORMAT,
     "span 4 bytes but 2 F32 elements take 8"},
    {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, MP_ERR_FORMAT,
     "span 4 bytes but 4 BF16 elements take 8"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, MP_ERR_FORMAT,
     "overlaps"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, MP_ERR_FORMAT,
     "overlaps"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, MP_ERR_FORMAT,
     "gap of 4 bytes"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, MP_ERR_FORMAT,
     "gap of 4 bytes after the header"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, MP_ERR_FORMAT,
     "4 bytes after the last tensor"},
    {"{}", 3, MP_ERR_FORMAT, "3 bytes after the last tensor"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, MP_ERR_FORMAT,
     "tensor 'a' appears twice"},
};

static void expect_bad(const uint8_t *d, size_t n, mp_status want, const char *needle,
                       const char *what) {
    mp_err err = {0};
    mp_st *f = NULL;
    mp_status s = mp_st_parse(&f, d, n, "case.safetensors", &err);
    CHECK_MSG(s == want && f == NULL && strstr(err.msg, needle) &&
                  strstr(err.msg, "case.safetensors"),
              "%s: expected %s with '%s', got %s: %s", what, mp_status_name(want), needle,
              mp_status_name(s), err.msg);
    mp_st_free(f);
}

static void test_hostile(void) {
    sb b = {0};
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        sb_file(&b, c->header, c->ndata);
        expect_bad(b.d, b.n, c->want, c->needle, c->header);
    }
    /* lengths: too short, past the end, over the 100 MB limit, absurd */
    uint8_t raw[16] = {0};
    expect_bad(raw, 0, MP_ERR_FORMAT, "too short", "empty file");
    expect_bad(raw, 7, MP_ERR_FORMAT, "too short", "7 bytes");
    raw[0] = 100;
    expect_bad(raw, 16, MP_ERR_FORMAT, "header length 100 runs past the end", "past EOF");
    uint64_t big = 100000001;
    for (int i = 0; i < 8; i++) raw[i] = (uint8_t)(big >> (8 * i));
    expect_bad(raw, 16, MP_ERR_FORMAT, "header length 100000001 exceeds", "over 100 MB");
    memset(raw, 0xff, 8);
    expect_bad(raw, 16, MP_ERR_FORMAT, "header length 18446744073709551615 exceeds", "2^64-1");
    raw[0] = 0;
    memset(raw, 0, 8);
    expect_bad(raw, 16, MP_ERR_FORMAT, "header (0 bytes) does not start", "empty header");

    /* a header of millions of tiny values is refused before cJSON allocates for it */
    size_t n_vals = (size_t)(2 << 20) + 10;
    char *bomb = malloc(n_vals * 2 + 16);
    size_t o = (size_t)sprintf(bomb, "{\"a\":[");
    for (size_t i = 0; i < n_vals; i++) {
        bomb[o++] = '0';
        bomb[o++] = ',';
    }
    o--;
    o += (size_t)sprintf(bomb + o, "]}");
    sb_file(&b, bomb, 0);
    expect_bad(b.d, b.n, MP_ERR_FORMAT, "JSON values", "value bomb");
    free(bomb);

    /* through mp_st_open: a missing file, a folder, a hostile file */
    mp_err err = {0};
    mp_st *f = NULL;
    char p[512];
    CHECK_STATUS(MP_ERR_IO, mp_st_open(&f, path_in(p, sizeof p, "missing.safetensors"), &err),
                 &err);
    CHECK_STATUS(MP_ERR_IO, mp_st_open(&f, dir, &err), &err);
    sb_file(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
    mp_test_write_file(path_in(p, sizeof p, "bad.safetensors"), b.d, b.n);
    CHECK_STATUS(MP_ERR_FORMAT, mp_st_open(&f, p, &err), &err);
    CHECK_MSG(strstr(err.msg, p) != NULL, "message does not name the file: %s", err.msg);
    CHECK(f == NULL);
    unlink(p);
    free(b.d);
}

/* ------------------------------------------------------------------------ */
/* Checkpoint folders                                                       */
/* ------------------------------------------------------------------------ */

static const char *const shard1 =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"model.layers.0.w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
    "\"model.embed\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[16,24]}}";
static const char *const shard2 =
    "{\"model.layers.1.w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
static const char *const index_good =
    "{\"metadata\":{\"total_size\":40},\"weight_map\":{"
    "\"model.layers.0.w\":\"model-00001-of-00002.safetensors\","
    "\"model.embed\":\"model-00001-of-00002.safetensors\","
    "\"model.layers.1.w\":\"model-00002-of-00002.safetensors\"}}";

static void make_checkpoint(const char *d, const char *index) {
    char p[600];
    sb b = {0};
    mkdir(d, 0755);
    sb_file(&b, shard1, 24);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", d);
    mp_test_write_file(p, b.d, b.n);
    sb_file(&b, shard2, 16);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", d);
    mp_test_write_file(p, b.d, b.n);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    write_text(p, index);
    snprintf(p, sizeof p, "%s/config.json", d);
    write_text(p, "{\"model_type\":\"gemma4\",\"num_experts\":4}\n");
    free(b.d);
}

static void remove_checkpoint(const char *d) {
    const char *names[] = {"model-00001-of-00002.safetensors",
                           "model-00002-of-00002.safetensors", "model.safetensors.index.json",
                           "config.json", "model.safetensors", NULL};
    char p[600];
    for (int i = 0; names[i]; i++) {
        snprintf(p, sizeof p, "%s/%s", d, names[i]);
        unlink(p);
    }
    rmdir(d);
}

static void expect_bad_index(const char *index, mp_status want, const char *needle) {
    char d[512];
    path_in(d, sizeof d, "badckpt");
    make_checkpoint(d, index);
    mp_err err = {0};
    mp_st_model *m = NULL;
    mp_status s = mp_st_model_open(&m, d, &err);
    CHECK_MSG(s == want && !m && strstr(err.msg, needle), "index %s: expected %s with '%s', got "
              "%s: %s", index, mp_status_name(want), needle, mp_status_name(s), err.msg);
    mp_st_model_free(m);
    remove_checkpoint(d);
}

static void test_checkpoint(void) {
    char d[512], p[600];
    mp_err err = {0};
    path_in(d, sizeof d, "ckpt");
    make_checkpoint(d, index_good);
    CHECK(mp_st_is_checkpoint_path(d));
    mp_st_model *m = NULL;
    CHECK_STATUS(MP_OK, mp_st_model_open(&m, d, &err), &err);
    if (m) {
        CHECK(mp_st_model_is_dir(m) && mp_st_model_indexed(m));
        CHECK_INT(2, mp_st_model_n_shards(m));
        CHECK_INT(3, mp_st_model_n_tensors(m));
        CHECK(!strcmp(mp_st_model_shard_name(m, 0), "model-00001-of-00002.safetensors"));
        CHECK(!strcmp(mp_st_model_shard_name(m, 1), "model-00002-of-00002.safetensors"));
        int64_t shard = -1;
        const mp_st_tensor *t = mp_st_model_find(m, "model.layers.1.w", &shard);
        CHECK(t && shard == 1 && t->nbytes == 16);
        t = mp_st_model_find(m, "model.embed", &shard);
        CHECK(t && shard == 0 && t->dtype == MP_ST_BF16);
        CHECK(!mp_st_model_find(m, "nope", NULL));
        CHECK(!strcmp(mp_st_meta_get(mp_st_model_shard(m, 0), "format"), "pt"));
    }
    mp_st_model_free(m);

    /* one file given by name */
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", d);
    CHECK(mp_st_is_checkpoint_path(p));
    m = NULL;
    CHECK_STATUS(MP_OK, mp_st_model_open(&m, p, &err), &err);
    if (m) {
        CHECK(!mp_st_model_is_dir(m) && !mp_st_model_indexed(m));
        CHECK_INT(1, mp_st_model_n_tensors(m));
        CHECK(!strcmp(mp_st_model_dir(m), d));
    }
    mp_st_model_free(m);

    /* a folder with model.safetensors and no index */
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    unlink(p);
    CHECK_STATUS(MP_ERR_NOT_FOUND, mp_st_model_open(&m, d, &err), &err);
    CHECK(strstr(err.msg, "not a safetensors checkpoint") != NULL);
    char q[600];
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", d);
    snprintf(q, sizeof q, "%s/model.safetensors", d);
    CHECK(rename(p, q) == 0);
    m = NULL;
    CHECK_STATUS(MP_OK, mp_st_model_open(&m, d, &err), &err);
    if (m) {
        CHECK(mp_st_model_is_dir(m) && !mp_st_model_indexed(m));
        CHECK_INT(2, mp_st_model_n_tensors(m));
    }
    mp_st_model_free(m);
    remove_checkpoint(d);
    CHECK(!mp_st_is_checkpoint_path(d));
    snprintf(p, sizeof p, "%s/x.gguf", dir);
    write_text(p, "GGUF");
    CHECK(!mp_st_is_checkpoint_path(p));
    CHECK_STATUS(MP_ERR_ARG, mp_st_model_open(&m, p, &err), &err);
    unlink(p);

    /* broken indexes */
    expect_bad_index("{\"weight_map\":", MP_ERR_FORMAT, "not valid JSON");
    expect_bad_index("{\"metadata\":{}}", MP_ERR_FORMAT, "\"weight_map\" is missing");
    expect_bad_index("{\"weight_map\":{\"model.embed\":\"../model-00001-of-00002.safetensors\"}}",
                     MP_ERR_FORMAT, "is not a file name in the folder");
    expect_bad_index("{\"weight_map\":{\"model.embed\":5}}", MP_ERR_FORMAT,
                     "is not a file name in the folder");
    expect_bad_index("{\"weight_map\":{\"model.embed\":\"missing.safetensors\"}}", MP_ERR_IO,
                     "missing.safetensors");
    expect_bad_index("{\"weight_map\":{"
                     "\"model.layers.0.w\":\"model-00001-of-00002.safetensors\","
                     "\"model.embed\":\"model-00002-of-00002.safetensors\","
                     "\"model.layers.1.w\":\"model-00002-of-00002.safetensors\"}}",
                     MP_ERR_FORMAT, "puts 'model.embed' in model-00002-of-00002.safetensors");
    expect_bad_index("{\"weight_map\":{"
                     "\"model.layers.0.w\":\"model-00001-of-00002.safetensors\","
                     "\"model.layers.1.w\":\"model-00002-of-00002.safetensors\"}}",
                     MP_ERR_FORMAT, "holds tensor 'model.embed', which the weight_map");
    expect_bad_index("{\"weight_map\":{"
                     "\"model.layers.0.w\":\"model-00001-of-00002.safetensors\","
                     "\"model.embed\":\"model-00001-of-00002.safetensors\","
                     "\"model.embed\":\"model-00001-of-00002.safetensors\","
                     "\"model.layers.1.w\":\"model-00002-of-00002.safetensors\"}}",
                     MP_ERR_FORMAT, "lists 'model.embed' twice");
    expect_bad_index("{\"weight_map\":{\"ghost\":\"model-00001-of-00002.safetensors\"}}",
                     MP_ERR_FORMAT, "puts 'ghost' in");

    /* a tensor in two shards */
    path_in(d, sizeof d, "dup");
    make_checkpoint(d, index_good);
    sb b = {0};
    sb_file(&b, shard2, 16);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", d);
    mp_test_write_file(p, b.d, b.n);
    free(b.d);
    CHECK_STATUS(MP_ERR_FORMAT, mp_st_model_open(&m, d, &err), &err);
    CHECK(strstr(err.msg, "tensor 'model.layers.1.w' is in both") != NULL);
    remove_checkpoint(d);
}

/* ------------------------------------------------------------------------ */
/* Writer misuse                                                            */
/* ------------------------------------------------------------------------ */

static void test_writer_misuse(void) {
    char p[512];
    mp_err err = {0};
    path_in(p, sizeof p, "w.safetensors");
    int64_t shape[2] = {2, 3};
    float data[6] = {1, 2, 3, 4, 5, 6};
    mp_st_writer *w = NULL;

    /* duplicate names are refused when the header is written */
    CHECK_STATUS(MP_OK, mp_st_writer_open(&w, p, false, &err), &err);
    CHECK_STATUS(MP_OK, mp_st_writer_add_tensor(w, "t", MP_ST_F32, 2, shape, &err), &err);
    CHECK_STATUS(MP_OK, mp_st_writer_add_tensor(w, "t", MP_ST_F32, 2, shape, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_st_writer_finish(w, &err), &err);
    CHECK(strstr(err.msg, "declared twice") != NULL);
    mp_st_writer_free(w);
    CHECK_INT(0, dir_entries(dir));

    /* bad declarations */
    CHECK_STATUS(MP_OK, mp_st_writer_open(&w, p, false, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_st_writer_add_tensor(w, "", MP_ST_F32, 2, shape, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_st_writer_add_tensor(w, "__metadata__", MP_ST_F32, 2, shape,
                                                     &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_st_writer_add_tensor(w, "x", MP_ST_DTYPE_COUNT, 2, shape, &err),
                 &err);
    CHECK_STATUS(MP_ERR_ARG, mp_st_writer_add_tensor(w, "x", MP_ST_F32, 9, shape, &err), &err);
    int64_t neg[1] = {-1}, odd[1] = {3};
    CHECK_STATUS(MP_ERR_ARG, mp_st_writer_add_tensor(w, "x", MP_ST_F32, 1, neg, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_st_writer_add_tensor(w, "x", MP_ST_F4, 1, odd, &err), &err);
    CHECK_STATUS(MP_OK, mp_st_writer_meta(w, "k", "v", &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_st_writer_meta(w, "k", "w", &err), &err);

    /* too much data, then too little */
    CHECK_STATUS(MP_OK, mp_st_writer_add_tensor(w, "t", MP_ST_F32, 2, shape, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_st_writer_write_data(w, data, sizeof data + 4, &err), &err);
    CHECK(strstr(err.msg, "beyond the last tensor") != NULL);
    mp_st_writer_free(w);
    CHECK_INT(0, dir_entries(dir));
    CHECK_STATUS(MP_OK, mp_st_writer_open(&w, p, false, &err), &err);
    CHECK_STATUS(MP_OK, mp_st_writer_add_tensor(w, "t", MP_ST_F32, 2, shape, &err), &err);
    CHECK_STATUS(MP_OK, mp_st_writer_write_data(w, data, 8, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_st_writer_finish(w, &err), &err);
    CHECK(strstr(err.msg, "got 8 of 24 bytes") != NULL);
    CHECK_STATUS(MP_ERR_ARG, mp_st_writer_add_tensor(w, "late", MP_ST_F32, 2, shape, &err),
                 &err);
    mp_st_writer_free(w);
    CHECK_INT(0, dir_entries(dir));

    /* a complete file; then an existing output is refused unless overwrite */
    CHECK_STATUS(MP_OK, mp_st_writer_open(&w, p, false, &err), &err);
    CHECK_STATUS(MP_OK, mp_st_writer_add_tensor(w, "t", MP_ST_F32, 2, shape, &err), &err);
    CHECK_STATUS(MP_OK, mp_st_writer_write_data(w, data, 10, &err), &err);
    CHECK_STATUS(MP_OK, mp_st_writer_write_data(w, (const uint8_t *)data + 10, 14, &err), &err);
    CHECK_STATUS(MP_OK, mp_st_writer_finish(w, &err), &err);
    mp_st_writer_free(w);
    CHECK_INT(1, dir_entries(dir));
    w = NULL;
    CHECK_STATUS(MP_ERR_ARG, mp_st_writer_open(&w, p, false, &err), &err);
    CHECK(w == NULL);
    CHECK_STATUS(MP_OK, mp_st_writer_open(&w, p, true, &err), &err);
    mp_st_writer_free(w);
    w = NULL;
    mp_st *f = NULL;
    CHECK_STATUS(MP_OK, mp_st_open(&f, p, &err), &err);
    if (f) {
        const mp_st_tensor *t = mp_st_find_tensor(f, "t");
        CHECK(t && t->nbytes == 24 && !memcmp(t->data, data, 24));
    }
    mp_st_free(f);
    unlink(p);

    /* allocation failures in the writer: reported, nothing left behind */
    int fails = 0;
    for (long k = 1; k < 1000; k++) {
        mp_malloc_fail_at(k);
        mp_status s = mp_st_writer_open(&w, p, false, &err);
        if (!s) s = mp_st_writer_meta(w, "format", "pt", &err);
        if (!s) s = mp_st_writer_add_tensor(w, "t", MP_ST_F32, 2, shape, &err);
        if (!s) s = mp_st_writer_write_data(w, data, sizeof data, &err);
        if (!s) s = mp_st_writer_finish(w, &err);
        mp_malloc_fail_at(0);
        if (w) mp_st_writer_free(w);
        w = NULL;
        if (s == MP_OK) break;
        fails++;
        CHECK_STATUS(MP_ERR_NOMEM, s, &err);
        CHECK_INT(0, dir_entries(dir));
    }
    CHECK(fails >= 3);
    unlink(p);
}

static void test_dtypes(void) {
    CHECK(!strcmp(mp_st_dtype_name(MP_ST_BF16), "BF16"));
    CHECK(!strcmp(mp_st_dtype_name(MP_ST_DTYPE_COUNT), "?"));
    CHECK(!strcmp(mp_st_dtype_name(-1), "?"));
    CHECK_INT(MP_ST_F8_E4M3, mp_st_dtype_from_name("F8_E4M3"));
    CHECK_INT(-1, mp_st_dtype_from_name("bf16"));
    CHECK_INT(-1, mp_st_dtype_from_name(NULL));
    CHECK_INT(16, mp_st_dtype_bits(MP_ST_F16));
    CHECK_INT(4, mp_st_dtype_bits(MP_ST_F4));
    CHECK_INT(0, mp_st_dtype_bits(MP_ST_DTYPE_COUNT));
    for (int i = 0; i < MP_ST_DTYPE_COUNT; i++)
        CHECK_INT(i, mp_st_dtype_from_name(mp_st_dtype_name(i)));
}

int main(void) {
    CHECK(mp_test_tmpdir(dir, sizeof dir, "safetensors") != NULL);
    test_dtypes();
    test_read_good();
    test_hostile();
    test_checkpoint();
    test_writer_misuse();
    CHECK_INT(0, dir_entries(dir));
    rmdir(dir);
    return mp_test_end("test_safetensors");
}

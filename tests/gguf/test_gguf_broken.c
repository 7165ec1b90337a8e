/* test_gguf_broken.c — hand-crafted GGUF headers, one defect each, every one
 * refused with the expected status and a message naming the field; plus the
 * allocation-failure sweep over a real fixture. The files are built here by a
 * small byte builder, not checked in. */
#include <stdlib.h>

#include "testutil.h"

/* ------------------------------------------------------------------------ */
/* Byte builder                                                             */
/* ------------------------------------------------------------------------ */

typedef struct bb {
    uint8_t d[4096];
    size_t n;
} bb;

static void u8(bb *b, uint8_t v) { b->d[b->n++] = v; }
static void u32(bb *b, uint32_t v) {
    for (int i = 0; i < 4; i++) u8(b, (uint8_t)(v >> (8 * i)));
}
static void u64(bb *b, uint64_t v) {
    for (int i = 0; i < 8; i++) u8(b, (uint8_t)(v >> (8 * i)));
}
static void str(bb *b, const char *s) {
    u64(b, strlen(s));
    for (; *s; s++) u8(b, (uint8_t)*s);
}
static void header(bb *b, uint32_t version, uint64_t nt, uint64_t nkv) {
    b->n = 0;
    u32(b, 0x46554747u);
    u32(b, version);
    u64(b, nt);
    u64(b, nkv);
}
static void kv_u32(bb *b, const char *k, uint32_t v) {
    str(b, k);
    u32(b, 4);
    u32(b, v);
}
/* A tensor info: name, dims, type, offset. */
static void tinfo(bb *b, const char *name, uint32_t nd, const int64_t *ne, uint32_t type,
                  uint64_t off) {
    str(b, name);
    u32(b, nd);
    for (uint32_t i = 0; i < nd; i++) u64(b, (uint64_t)ne[i]);
    u32(b, type);
    u64(b, off);
}
/* Pads to 32 and appends n zero bytes of tensor data. */
static void data(bb *b, size_t n) {
    while (b->n % 32) u8(b, 0);
    for (size_t i = 0; i < n; i++) u8(b, 0);
}

static void expect(const bb *b, mp_status want, const char *needle, int line) {
    mp_err err = {0};
    mp_gguf *g = NULL;
    mp_status s = mp_gguf_parse(&g, b->d, b->n, "case.gguf", (mp_gguf_params){0}, &err);
    mp_test_checks++;
    if (s != want || (needle && !strstr(err.msg, needle)) ||
        (s != MP_OK && !strstr(err.msg, "case.gguf"))) {
        mp_test_failures++;
        fprintf(stderr, "line %d: expected %s with '%s', got %s: %s\n", line, mp_status_name(want),
                needle ? needle : "", mp_status_name(s), err.msg);
    }
    if (s == MP_OK && g == NULL) {
        mp_test_failures++;
        fprintf(stderr, "line %d: MP_OK but no handle\n", line);
    }
    mp_gguf_free(g);
}
#define EXPECT(b, want, needle) expect(b, want, needle, __LINE__)

int main(void) {
    bb b;
    int64_t ne2[2] = {32, 2}, ne1[1] = {32};

    /* a valid baseline: one key, two F32 tensors */
    header(&b, 3, 2, 1);
    kv_u32(&b, "general.x", 7);
    tinfo(&b, "a", 2, ne2, 0, 0);
    tinfo(&b, "b", 1, ne1, 0, 256);
    data(&b, 256 + 128);
    EXPECT(&b, MP_OK, NULL);
    size_t valid_len = b.n;

    /* truncated anywhere before the end of the last tensor */
    for (size_t cut = 0; cut < valid_len; cut += 7) {
        bb t = b;
        t.n = cut;
        EXPECT(&t, MP_ERR_FORMAT, NULL);
    }

    bb t = b;
    t.d[0] = 'X';
    EXPECT(&t, MP_ERR_FORMAT, "magic");

    header(&b, 1, 0, 0);
    EXPECT(&b, MP_ERR_UNSUPPORTED, "version 1");
    header(&b, 0x03000000u, 0, 0);
    EXPECT(&b, MP_ERR_UNSUPPORTED, "byte-swapped");
    header(&b, 4, 0, 0);
    EXPECT(&b, MP_ERR_UNSUPPORTED, "version 4");
    header(&b, 3, 0, 0);
    data(&b, 0);
    EXPECT(&b, MP_OK, NULL); /* empty but valid */

    header(&b, 3, 1ull << 40, 0);
    EXPECT(&b, MP_ERR_FORMAT, "tensor count");
    header(&b, 3, 0, (uint64_t)-1);
    EXPECT(&b, MP_ERR_FORMAT, "metadata count");
    header(&b, 3, (uint64_t)INT64_MAX + 1, 0);
    EXPECT(&b, MP_ERR_FORMAT, "tensor count");

    /* key problems */
    header(&b, 3, 0, 1);
    u64(&b, 1ull << 62); /* key length */
    data(&b, 64);
    EXPECT(&b, MP_ERR_FORMAT, "metadata key");
    header(&b, 3, 0, 1);
    kv_u32(&b, "", 1);
    EXPECT(&b, MP_ERR_FORMAT, "empty");
    header(&b, 3, 0, 2);
    kv_u32(&b, "k", 1);
    kv_u32(&b, "k", 2);
    EXPECT(&b, MP_ERR_FORMAT, "appears twice");
    header(&b, 3, 0, 1);
    str(&b, "k");
    u32(&b, 13);
    u32(&b, 0);
    EXPECT(&b, MP_ERR_FORMAT, "value type 13");
    header(&b, 3, 0, 1);
    str(&b, "k");
    u32(&b, 9);
    u32(&b, 9); /* array of arrays */
    u64(&b, 1);
    EXPECT(&b, MP_ERR_FORMAT, "nested");
    header(&b, 3, 0, 1);
    str(&b, "k");
    u32(&b, 9);
    u32(&b, 4); /* UINT32 x huge */
    u64(&b, 1ull << 60);
    EXPECT(&b, MP_ERR_FORMAT, "cannot fit");
    header(&b, 3, 0, 1);
    str(&b, "k");
    u32(&b, 9);
    u32(&b, 8); /* STRING x huge: no allocation may follow from it */
    u64(&b, 1ull << 60);
    EXPECT(&b, MP_ERR_FORMAT, "strings cannot fit");
    header(&b, 3, 0, 1);
    str(&b, "k");
    u32(&b, 8);
    u64(&b, 100); /* string longer than the file */
    EXPECT(&b, MP_ERR_FORMAT, "remain");

    /* alignment */
    header(&b, 3, 0, 1);
    kv_u32(&b, "general.alignment", 48);
    EXPECT(&b, MP_ERR_FORMAT, "power of two");
    header(&b, 3, 0, 1);
    kv_u32(&b, "general.alignment", 0);
    EXPECT(&b, MP_ERR_FORMAT, "power of two");
    header(&b, 3, 0, 1);
    str(&b, "general.alignment");
    u32(&b, 10);
    u64(&b, 64);
    EXPECT(&b, MP_ERR_FORMAT, "expected UINT32");

    /* tensor infos */
    header(&b, 3, 1, 0);
    tinfo(&b, "this-name-is-much-too-long-for-ggml-because-it-has-more-than-63-bytes", 1, ne1,
          0, 0);
    data(&b, 128);
    EXPECT(&b, MP_ERR_FORMAT, "name length");
    header(&b, 3, 2, 0);
    tinfo(&b, "a", 1, ne1, 0, 0);
    tinfo(&b, "a", 1, ne1, 0, 128);
    data(&b, 256);
    EXPECT(&b, MP_ERR_FORMAT, "appears twice");
    header(&b, 3, 1, 0);
    tinfo(&b, "a", 0, ne1, 0, 0);
    data(&b, 128);
    EXPECT(&b, MP_ERR_FORMAT, "n_dims = 0");
    header(&b, 3, 1, 0);
    str(&b, "a");
    u32(&b, 5);
    data(&b, 64);
    EXPECT(&b, MP_ERR_FORMAT, "n_dims = 5");
    int64_t neg[2] = {32, -1};
    header(&b, 3, 1, 0);
    tinfo(&b, "a", 2, neg, 0, 0);
    data(&b, 128);
    EXPECT(&b, MP_ERR_FORMAT, "negative");
    int64_t big[4] = {1 << 20, 1 << 20, 1 << 20, 1 << 20};
    header(&b, 3, 1, 0);
    tinfo(&b, "a", 4, big, 0, 0);
    data(&b, 128);
    EXPECT(&b, MP_ERR_FORMAT, "overflows");
    int64_t bigb[3] = {1ll << 40, 1ll << 20, 1 << 2};
    header(&b, 3, 1, 0);
    tinfo(&b, "a", 3, bigb, 0, 0); /* elements fit int64, bytes (x4) do not */
    data(&b, 128);
    EXPECT(&b, MP_ERR_FORMAT, "byte size overflows");
    header(&b, 3, 1, 0);
    tinfo(&b, "a", 1, ne1, 4, 0); /* removed type Q4_2 */
    data(&b, 128);
    EXPECT(&b, MP_ERR_FORMAT, "type id 4");
    header(&b, 3, 1, 0);
    tinfo(&b, "a", 1, ne1, 99, 0);
    data(&b, 128);
    EXPECT(&b, MP_ERR_FORMAT, "type id 99");
    int64_t odd[1] = {33};
    header(&b, 3, 1, 0);
    tinfo(&b, "a", 1, odd, 8, 0); /* Q8_0 with 33 elements */
    data(&b, 128);
    EXPECT(&b, MP_ERR_FORMAT, "block size");
    header(&b, 3, 1, 0);
    tinfo(&b, "a", 1, ne1, 0, 16); /* misaligned */
    data(&b, 256);
    EXPECT(&b, MP_ERR_FORMAT, "alignment");
    header(&b, 3, 1, 0);
    tinfo(&b, "a", 1, ne1, 0, 1ull << 20); /* past the end */
    data(&b, 128);
    EXPECT(&b, MP_ERR_FORMAT, "past the end");
    header(&b, 3, 1, 0);
    tinfo(&b, "a", 1, ne1, 0, UINT64_MAX - 31); /* offset + size wraps */
    data(&b, 128);
    EXPECT(&b, MP_ERR_FORMAT, "past the end");
    header(&b, 3, 2, 0);
    tinfo(&b, "a", 2, ne2, 0, 0);
    tinfo(&b, "b", 1, ne1, 0, 128); /* inside a */
    data(&b, 512);
    EXPECT(&b, MP_ERR_FORMAT, "overlap");

    /* IQ2 tensors are valid files even though they cannot be dequantized */
    int64_t ne256[1] = {256};
    header(&b, 3, 1, 0);
    tinfo(&b, "iq", 1, ne256, 16, 0);
    data(&b, 66);
    EXPECT(&b, MP_OK, NULL);

    /* allocation failures: every one is reported, none leaks (ASan checks) */
    char path[512];
    mp_test_data(path, sizeof path, "gemma4-tiny-a/tiny-a-q4_k_m.gguf");
    int n_fail = 0;
    for (long k = 1; k < 100000; k++) {
        mp_err err = {0};
        mp_gguf *g = NULL;
        mp_malloc_fail_at(k);
        mp_status s = mp_gguf_open(&g, path, &err);
        mp_malloc_fail_at(0);
        mp_gguf_free(g);
        if (s == MP_OK) break;
        n_fail++;
        CHECK_STATUS(MP_ERR_NOMEM, s, &err);
    }
    CHECK(n_fail > 10); /* the sweep really hit allocations */
    printf("allocation-failure sweep: %d failing runs before success\n", n_fail);
    return mp_test_end("test_gguf_broken");
}

/* test_gguf_truncate.c — real fixtures cut short at 20 offsets, and with bytes
 * of their header flipped, give a clean error every time (and never a crash:
 * the suite also runs under ASan/UBSan).
 *
 * Cuts are spread from byte 0 to the end of the last tensor's data (cutting
 * inside the final padding leaves a complete file). Flips hit the structural
 * fields — magic, version, counts, a key length, a value type, a tensor's
 * n_dims, type and offset — where any change must be refused, then random
 * header bytes where a change may be harmless (inside a key's text, say) but
 * must never crash. Takes an optional seed. */
#include <stdlib.h>
#include <unistd.h>

#include "testutil.h"

static mp_status parse(const uint8_t *d, size_t n, mp_err *err) {
    mp_gguf *g = NULL;
    mp_status s = mp_gguf_parse(&g, d, n, "fixture", (mp_gguf_params){0}, err);
    if (s == MP_OK) {
        /* walk everything the handle offers */
        for (int64_t i = 0; i < mp_gguf_n_kv(g); i++) {
            const uint8_t *raw;
            size_t len;
            mp_gguf_kv_raw(g, i, &raw, &len);
        }
    }
    mp_gguf_free(g);
    return s;
}

static uint64_t load_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static uint64_t end_of_data(const mp_gguf *g) {
    uint64_t end = mp_gguf_data_offset(g);
    for (int64_t i = 0; i < mp_gguf_n_tensors(g); i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(g, i);
        uint64_t e = mp_gguf_data_offset(g) + t->offset + t->nbytes;
        if (e > end) end = e;
    }
    return end;
}

static void flip_must_fail(uint8_t *d, size_t n, size_t pos, uint8_t mask, const char *what) {
    d[pos] ^= mask;
    mp_err err = {0};
    mp_status s = parse(d, n, &err);
    d[pos] ^= mask;
    CHECK_MSG(s == MP_ERR_FORMAT || s == MP_ERR_UNSUPPORTED,
              "flipping %s (byte %zu, mask 0x%02x) gave %s", what, pos, mask, mp_status_name(s));
    CHECK_MSG(s == MP_OK || strstr(err.msg, "fixture") != NULL, "message lacks the file: %s",
              err.msg);
}

static void one_file(const char *path, uint64_t *rng, const char *tmpdir) {
    size_t n;
    uint8_t *d = mp_test_read_file(path, &n);
    CHECK_MSG(d != NULL, "cannot read %s", path);
    if (!d) return;
    mp_err err = {0};
    mp_gguf *g = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_parse(&g, d, n, path, (mp_gguf_params){0}, &err), &err);
    if (!g) {
        free(d);
        return;
    }
    uint64_t end = end_of_data(g), hdr = mp_gguf_data_offset(g);
    char t0_name[64];
    snprintf(t0_name, sizeof t0_name, "%s", mp_gguf_tensor_at(g, 0)->name);
    uint32_t t0_dims = mp_gguf_tensor_at(g, 0)->n_dims;
    mp_gguf_free(g);

    /* 20 cuts: 0, a few inside the header, the rest spread over the data */
    for (int k = 0; k < 20; k++) {
        uint64_t cut = k < 8 ? hdr * (uint64_t)k / 8 : hdr + (end - hdr) * (uint64_t)(k - 8) / 12;
        if (k == 19) cut = end - 1;
        CHECK_STATUS(MP_ERR_FORMAT, parse(d, (size_t)cut, &err), &err);
    }
    /* the same through a real file on disk, for a few cuts */
    for (int k = 0; k < 3; k++) {
        char tp[512];
        snprintf(tp, sizeof tp, "%s/cut.gguf", tmpdir);
        FILE *f = fopen(tp, "wb");
        size_t cut = (size_t)(end * (uint64_t)(k + 1) / 4);
        fwrite(d, 1, cut, f);
        fclose(f);
        mp_gguf *h = NULL;
        CHECK_STATUS(MP_ERR_FORMAT, mp_gguf_open(&h, tp, &err), &err);
        CHECK(strstr(err.msg, "cut.gguf") != NULL);
        mp_gguf_free(h);
        unlink(tp);
    }

    /* structural flips */
    flip_must_fail(d, n, 0, 0x01, "magic");
    flip_must_fail(d, n, 4, 0x04, "version");
    flip_must_fail(d, n, 7, 0x03, "version high byte");
    flip_must_fail(d, n, 15, 0x40, "tensor count");
    flip_must_fail(d, n, 23, 0x40, "metadata count");
    flip_must_fail(d, n, 24 + 6, 0x10, "first key length");
    uint64_t klen = d[24] | (uint64_t)d[25] << 8;
    flip_must_fail(d, n, 24 + 8 + klen, 0x30, "first value type");
    /* first tensor info: find its name in the header, then n_dims/type/offset */
    size_t nl = strlen(t0_name);
    for (size_t p = 24; p + 8 + nl < hdr; p++) {
        if (load_u64(d + p) != nl || memcmp(d + p + 8, t0_name, nl) != 0) continue;
        size_t q = p + 8 + nl;
        flip_must_fail(d, n, q, 0x08, "tensor n_dims");
        size_t ty = q + 4 + 8 * t0_dims;
        flip_must_fail(d, n, ty, 0x40, "tensor type");
        flip_must_fail(d, n, ty + 4 + 7, 0x10, "tensor offset");
        flip_must_fail(d, n, q + 4 + 7, 0x20, "tensor ne[0]");
        break;
    }
    /* random header flips: no crash, errors name the file */
    for (int k = 0; k < 300; k++) {
        size_t pos = (size_t)(mp_test_rand(rng) % hdr);
        uint8_t mask = (uint8_t)(1u << (mp_test_rand(rng) % 8));
        d[pos] ^= mask;
        mp_status s = parse(d, n, &err);
        d[pos] ^= mask;
        CHECK_MSG(s == MP_OK || strstr(err.msg, "fixture") != NULL, "byte %zu: %s", pos, err.msg);
    }
    free(d);
}

int main(int argc, char **argv) {
    uint64_t rng = mp_test_seed(argc, argv);
    char tmp[256], buf[512];
    CHECK(mp_test_tmpdir(tmp, sizeof tmp, "truncate") != NULL);
    for (int i = 0; mp_test_tiny_variants[i]; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "gemma4-tiny-a/tiny-a-%s.gguf", mp_test_tiny_variants[i]);
        one_file(mp_test_data(buf, sizeof buf, rel), &rng, tmp);
    }
    rmdir(tmp);
    return mp_test_end("test_gguf_truncate");
}

/* test_gguf_roundtrip.c — every fixture GGUF reads, matches its manifest
 * (tensor names, types, shapes, in order) and copies through the writer to a
 * byte-identical file; the writer leaves nothing behind on failure and never
 * replaces an existing file unless asked. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static bool files_equal(const char *a, const char *b) {
    size_t na, nb;
    char *da = mp_test_read_file(a, &na), *db = mp_test_read_file(b, &nb);
    bool same = da && db && na == nb && memcmp(da, db, na) == 0;
    free(da);
    free(db);
    return same;
}

static void roundtrip(const char *path, const char *tmpdir) {
    mp_err err = {0};
    mp_gguf *g = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_open(&g, path, &err), &err);
    if (!g) return;
    char out[512];
    snprintf(out, sizeof out, "%s/copy.gguf", tmpdir);
    CHECK_STATUS(MP_OK, mp_gguf_copy(g, out, true, &err), &err);
    CHECK_MSG(files_equal(path, out), "%s: copy differs", path);
    /* refuses to overwrite without permission, and to write over its input */
    CHECK_STATUS(MP_ERR_ARG, mp_gguf_copy(g, out, false, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_gguf_copy(g, path, true, &err), &err);
    unlink(out);
    mp_gguf_free(g);
}

/* The reader's tensor table equals manifest.json's for one variant. */
static void check_manifest(const cJSON *variant, const char *dir) {
    const cJSON *file = cJSON_GetObjectItem(variant, "file");
    const cJSON *tensors = cJSON_GetObjectItem(variant, "tensors");
    CHECK(cJSON_IsString(file) && cJSON_IsArray(tensors));
    if (!cJSON_IsString(file) || !cJSON_IsArray(tensors)) return;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file->valuestring);
    mp_err err = {0};
    mp_gguf *g = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_open(&g, path, &err), &err);
    if (!g) return;
    CHECK_INT(cJSON_GetArraySize(tensors), mp_gguf_n_tensors(g));
    int64_t i = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tensors) {
        const mp_gguf_tensor *gt = mp_gguf_tensor_at(g, i++);
        if (!gt) break;
        const char *name = cJSON_GetObjectItem(t, "name")->valuestring;
        const char *type = cJSON_GetObjectItem(t, "type")->valuestring;
        CHECK_MSG(strcmp(name, gt->name) == 0, "%s: tensor %lld is '%s', manifest '%s'", path,
                  (long long)i - 1, gt->name, name);
        CHECK_MSG(strcmp(type, mp_type_name(gt->type)) == 0, "%s: '%s' type %s, manifest %s",
                  path, name, mp_type_name(gt->type), type);
        const cJSON *ne = cJSON_GetObjectItem(t, "ne");
        CHECK_INT(cJSON_GetArraySize(ne), gt->n_dims);
        for (int d = 0; d < cJSON_GetArraySize(ne) && d < 4; d++)
            CHECK_INT((long long)cJSON_GetArrayItem(ne, d)->valuedouble, gt->ne[d]);
    }
    const cJSON *bytes = cJSON_GetObjectItem(variant, "bytes");
    if (cJSON_IsNumber(bytes)) CHECK_INT((long long)bytes->valuedouble, mp_gguf_file_size(g));
    mp_gguf_free(g);
}

/* A writer that is freed without finishing leaves no file behind. */
static void abandoned_writer(const char *tmpdir) {
    char out[512];
    snprintf(out, sizeof out, "%s/abandoned.gguf", tmpdir);
    mp_err err = {0};
    mp_gguf_writer *w = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_writer_open(&w, out, false, &err), &err);
    int64_t ne[2] = {32, 2};
    CHECK_STATUS(MP_OK, mp_gguf_writer_kv_str(w, "general.architecture", "test", &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_gguf_writer_kv_u32(w, "general.architecture", 1, &err), &err);
    CHECK_STATUS(MP_OK, mp_gguf_writer_add_tensor(w, "a", MP_TYPE_F32, 2, ne, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_gguf_writer_add_tensor(w, "a", MP_TYPE_F32, 2, ne, &err), &err);
    ne[0] = 33; /* not a multiple of the Q8_0 block */
    CHECK_STATUS(MP_ERR_ARG, mp_gguf_writer_add_tensor(w, "b", MP_TYPE_Q8_0, 2, ne, &err), &err);
    float row[32] = {0};
    CHECK_STATUS(MP_OK, mp_gguf_writer_write_data(w, row, sizeof row, &err), &err);
    /* finishing with a tensor half written is refused */
    CHECK_STATUS(MP_ERR_ARG, mp_gguf_writer_finish(w, &err), &err);
    mp_gguf_writer_free(w);
    struct stat st;
    CHECK(stat(out, &st) != 0);
    DIR *d = opendir(tmpdir);
    int entries = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) entries++;
    if (d) closedir(d);
    CHECK_INT(0, entries); /* the temporary file is gone too */
}

/* Values written by the typed setters read back through the typed getters. */
static void typed_values(const char *tmpdir) {
    char out[512];
    snprintf(out, sizeof out, "%s/typed.gguf", tmpdir);
    mp_err err = {0};
    mp_gguf_writer *w = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_writer_open(&w, out, false, &err), &err);
    const char *strs[] = {"a", "", "\xe2\x96\x81hello"};
    int32_t ints[] = {-5, 7, 1 << 30};
    mp_gguf_writer_kv_str(w, "general.architecture", "test", &err);
    mp_gguf_writer_kv_u32(w, "general.alignment", 64, &err);
    mp_gguf_writer_kv_i32(w, "k.i32", -42, &err);
    mp_gguf_writer_kv_u64(w, "k.u64", 1ull << 40, &err);
    mp_gguf_writer_kv_f32(w, "k.f32", 0.25f, &err);
    mp_gguf_writer_kv_bool(w, "k.bool", true, &err);
    mp_gguf_writer_kv_arr(w, "k.arr", MP_GGUF_INT32, ints, 3, &err);
    CHECK_STATUS(MP_OK, mp_gguf_writer_kv_arr_str(w, "k.strs", strs, 3, &err), &err);
    int64_t ne[1] = {3};
    float v[3] = {1, 2, 3};
    CHECK_STATUS(MP_OK, mp_gguf_writer_add_tensor(w, "t", MP_TYPE_F32, 1, ne, &err), &err);
    CHECK_STATUS(MP_OK, mp_gguf_writer_write_data(w, v, sizeof v, &err), &err);
    CHECK_STATUS(MP_OK, mp_gguf_writer_finish(w, &err), &err);
    mp_gguf_writer_free(w);

    mp_gguf *g = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_open(&g, out, &err), &err);
    if (!g) return;
    CHECK_INT(64, mp_gguf_alignment(g));
    CHECK_INT(0, mp_gguf_data_offset(g) % 64);
    int64_t i64;
    uint64_t u64;
    double f;
    bool b;
    const char *s;
    size_t n;
    CHECK_STATUS(MP_OK, mp_gguf_get_int(g, mp_gguf_find_key(g, "k.i32"), 0, &i64, &err), &err);
    CHECK_INT(-42, i64);
    CHECK_STATUS(MP_ERR_FORMAT, mp_gguf_get_uint(g, mp_gguf_find_key(g, "k.i32"), 0, &u64, &err),
                 &err);
    CHECK(strstr(err.msg, "k.i32") != NULL);
    CHECK_STATUS(MP_OK, mp_gguf_key_uint(g, "k.u64", &u64, &err), &err);
    CHECK(u64 == (1ull << 40));
    CHECK_STATUS(MP_OK, mp_gguf_key_float(g, "k.f32", &f, &err), &err);
    CHECK_NEAR(0.25, f, 0);
    CHECK_STATUS(MP_ERR_FORMAT, mp_gguf_key_float(g, "k.bool", &f, &err), &err);
    CHECK_STATUS(MP_OK, mp_gguf_get_bool(g, mp_gguf_find_key(g, "k.bool"), 0, &b, &err), &err);
    CHECK(b);
    int64_t ai = mp_gguf_find_key(g, "k.arr");
    CHECK_INT(3, mp_gguf_arr_len(g, ai));
    CHECK_STATUS(MP_OK, mp_gguf_get_int(g, ai, 2, &i64, &err), &err);
    CHECK_INT(1 << 30, i64);
    CHECK_STATUS(MP_ERR_ARG, mp_gguf_get_int(g, ai, 3, &i64, &err), &err);
    int64_t si = mp_gguf_find_key(g, "k.strs");
    CHECK_STATUS(MP_OK, mp_gguf_get_str(g, si, 2, &s, &n, &err), &err);
    CHECK(n == strlen(strs[2]) && memcmp(s, strs[2], n) == 0);
    CHECK_STATUS(MP_OK, mp_gguf_get_str(g, si, 1, &s, &n, &err), &err);
    CHECK_INT(0, n);
    CHECK_STATUS(MP_ERR_NOT_FOUND, mp_gguf_key_uint(g, "k.absent", &u64, &err), &err);
    CHECK(strstr(err.msg, "k.absent") != NULL);
    CHECK_INT(-1, mp_gguf_find_key(g, "nope"));
    const mp_gguf_tensor *t = mp_gguf_find_tensor(g, "t");
    CHECK(t && t->nbytes == 12 && memcmp(t->data, v, 12) == 0);
    CHECK(mp_gguf_find_tensor(g, "u") == NULL);
    mp_gguf_free(g);
    unlink(out);
}

int main(void) {
    char tmp[256], buf[512];
    CHECK(mp_test_tmpdir(tmp, sizeof tmp, "roundtrip") != NULL);

    size_t mlen;
    char *mtext = mp_test_read_file(mp_test_data(buf, sizeof buf, "gemma4-tiny-a/manifest.json"),
                                    &mlen);
    cJSON *manifest = mtext ? cJSON_Parse(mtext) : NULL;
    CHECK(manifest != NULL);
    const cJSON *variants = cJSON_GetObjectItem(manifest, "variants");
    int n_variants = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, variants) {
        check_manifest(v, mp_test_data(buf, sizeof buf, "gemma4-tiny-a"));
        n_variants++;
    }
    CHECK_INT(16, n_variants);
    cJSON_Delete(manifest);
    free(mtext);

    for (int i = 0; mp_test_tiny_variants[i]; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "gemma4-tiny-a/tiny-a-%s.gguf", mp_test_tiny_variants[i]);
        roundtrip(mp_test_data(buf, sizeof buf, rel), tmp);
    }
    snprintf(buf, sizeof buf, "%s/data/gemma4-vocab.gguf", MP_SOURCE_DIR);
    roundtrip(buf, tmp);

    abandoned_writer(tmp);
    typed_values(tmp);
    rmdir(tmp);
    return mp_test_end("test_gguf_roundtrip");
}

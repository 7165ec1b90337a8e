/* test_graft.c — grafting GGUF experts back together.
 *
 * The tiny fixture is pruned into complementary halves (experts 0-7 and
 * 8-15 of every layer); grafting them in order gives back the original
 * byte for byte in every tensor (expert slabs, router rows, per-expert
 * scales, and the non-expert tensors from the first input), with the
 * provenance recorded; reversed, the experts come in the other order; uneven
 * inputs give per-layer counts; --average takes the element-wise mean of F32
 * (and keeps identical F16/BF16 tensors exact) and refuses quantized
 * tensors; mismatched models, zero-mode inputs and bad arguments are refused
 * before any output exists. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include "testutil.h"

static char dir[256];

static mp_dropmap *range_map(int64_t first, int64_t count, bool ragged) {
    char json[4096];
    int o = snprintf(json, sizeof json,
                     "{\"format\":\"moeprune.dropmap/1\",\"model\":{\"arch\":\"gemma4\","
                     "\"n_layer\":4,\"n_expert\":16,\"n_expert_used\":4},\"layers\":[");
    for (int l = 0; l < 4; l++) {
        o += snprintf(json + o, sizeof json - (size_t)o, "%s{\"layer\":%d,\"keep\":[",
                      l ? "," : "", l);
        int64_t n = ragged ? count + l : count;
        for (int64_t e = first; e < first + n; e++)
            o += snprintf(json + o, sizeof json - (size_t)o, "%s%lld", e > first ? "," : "",
                          (long long)e);
        o += snprintf(json + o, sizeof json - (size_t)o, "]}");
    }
    snprintf(json + o, sizeof json - (size_t)o, "]}");
    mp_dropmap *m = NULL;
    mp_err err;
    if (mp_dropmap_parse(&m, json, strlen(json), "gen", &err))
        fprintf(stderr, "range_map: %s\n", err.msg);
    return m;
}

static int dir_entries(void) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

static char *tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", dir, name);
    return buf;
}

static bool is_expert(const char *name) {
    return strstr(name, "_exps") || strstr(name, "ffn_gate_inp.weight");
}

static void prune_to(const char *in, const mp_dropmap *m, const char *out, mp_prune_target t) {
    mp_err err = {0};
    mp_prune_params p = {.target = t};
    CHECK_STATUS(MP_OK, mp_prune_gguf(in, m, out, &p, &err), &err);
}

static mp_status graft2(const char *a, const char *b, const char *out, bool average,
                        mp_err *err) {
    const char *in[2] = {a, b};
    mp_graft_params p = {.average = average};
    return mp_graft_gguf(in, 2, out, &p, err);
}

/* out's expert tensors are the concatenation of parts[0..n)'s, and its
 * non-expert tensors equal `base`'s (all byte for byte). */
static void check_concat(const char *out, const char *const *parts, int n, const char *base) {
    mp_err err = {0};
    mp_gguf *g = NULL, *b = NULL, *p[4] = {0};
    CHECK_STATUS(MP_OK, mp_gguf_open(&g, out, &err), &err);
    CHECK_STATUS(MP_OK, mp_gguf_open(&b, base, &err), &err);
    for (int k = 0; k < n; k++) CHECK_STATUS(MP_OK, mp_gguf_open(&p[k], parts[k], &err), &err);
    if (!g || !b) goto done;
    CHECK_INT(mp_gguf_n_tensors(b), mp_gguf_n_tensors(g));
    for (int64_t i = 0; i < mp_gguf_n_tensors(b); i++) {
        const mp_gguf_tensor *tb = mp_gguf_tensor_at(b, i);
        const mp_gguf_tensor *tg = mp_gguf_find_tensor(g, tb->name);
        CHECK_MSG(tg && tg->type == tb->type && tg->n_dims == tb->n_dims, "%s: %s", out,
                  tb->name);
        if (!tg) continue;
        if (!is_expert(tb->name)) {
            CHECK_MSG(!memcmp(tg->ne, tb->ne, sizeof tb->ne) && tg->nbytes == tb->nbytes &&
                          !memcmp(tg->data, tb->data, tb->nbytes),
                      "%s: %s differs from %s", out, tb->name, base);
            continue;
        }
        uint64_t at = 0;
        int64_t x = 0;
        for (int k = 0; k < n && p[k]; k++) {
            const mp_gguf_tensor *tp = mp_gguf_find_tensor(p[k], tb->name);
            CHECK_MSG(tp && at + tp->nbytes <= tg->nbytes &&
                          !memcmp((const uint8_t *)tg->data + at, tp->data, tp->nbytes),
                      "%s: %s: part %d not in place", out, tb->name, k);
            if (!tp) break;
            at += tp->nbytes;
            x += tp->ne[tp->n_dims - 1];
        }
        CHECK_INT(at, tg->nbytes);
        CHECK_INT(x, tg->ne[tg->n_dims - 1]);
    }
done:
    for (int k = 0; k < n; k++) mp_gguf_free(p[k]);
    mp_gguf_free(g);
    mp_gguf_free(b);
}

static bool same_data(const char *a, const char *b) {
    mp_err err = {0};
    mp_gguf *x = NULL, *y = NULL;
    bool same = !mp_gguf_open(&x, a, &err) && !mp_gguf_open(&y, b, &err) &&
                mp_gguf_n_tensors(x) == mp_gguf_n_tensors(y);
    for (int64_t i = 0; same && i < mp_gguf_n_tensors(x); i++) {
        const mp_gguf_tensor *s = mp_gguf_tensor_at(x, i), *t = mp_gguf_tensor_at(y, i);
        same = !strcmp(s->name, t->name) && s->type == t->type &&
               !memcmp(s->ne, t->ne, sizeof s->ne) && !memcmp(s->data, t->data, s->nbytes);
    }
    mp_gguf_free(x);
    mp_gguf_free(y);
    return same;
}

/* The halves grafted in order are the original; metadata says where from. */
static void test_roundtrip(const char *orig, const char *h0, const char *h1) {
    char out[512];
    mp_err err = {0};
    tmp_path(out, sizeof out, "g.gguf");
    CHECK_STATUS(MP_OK, graft2(h0, h1, out, false, &err), &err);
    CHECK(same_data(orig, out));
    const char *parts[] = {h0, h1};
    check_concat(out, parts, 2, h0);
    mp_gguf *g = NULL, *o = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_open(&g, out, &err), &err);
    CHECK_STATUS(MP_OK, mp_gguf_open(&o, orig, &err), &err);
    if (g && o) {
        uint64_t v = 0;
        CHECK_STATUS(MP_OK, mp_gguf_key_uint(g, "gemma4.expert_count", &v, &err), &err);
        CHECK_INT(16, v);
        CHECK_STATUS(MP_OK, mp_gguf_key_uint(g, "gemma4.expert_used_count", &v, &err), &err);
        CHECK_INT(4, v);
        CHECK(mp_gguf_find_key(g, "moeprune.dropmap") < 0);
        CHECK(mp_gguf_find_key(g, "moeprune.prune_mode") < 0);
        CHECK(mp_gguf_find_key(g, "moeprune.expert_count_per_layer") < 0);
        /* every key of the original, byte for byte (the count is 16 again) */
        for (int64_t i = 0; i < mp_gguf_n_kv(o); i++) {
            int64_t j = mp_gguf_find_key(g, mp_gguf_key(o, i));
            const uint8_t *a, *b;
            size_t na, nb;
            CHECK_MSG(j >= 0, "key %s lost", mp_gguf_key(o, i));
            if (j < 0) continue;
            mp_gguf_kv_raw(o, i, &a, &na);
            mp_gguf_kv_raw(g, j, &b, &nb);
            CHECK_MSG(na == nb && !memcmp(a, b, na), "key %s changed", mp_gguf_key(o, i));
        }
        char *prov = NULL;
        CHECK_STATUS(MP_OK, mp_gguf_key_strdup(g, "moeprune.graft", &prov, &err), &err);
        cJSON *j = prov ? cJSON_Parse(prov) : NULL;
        CHECK(j != NULL);
        cJSON *inputs = cJSON_GetObjectItem(j, "inputs");
        CHECK_INT(2, cJSON_GetArraySize(inputs));
        CHECK(!strcmp(cJSON_GetObjectItem(j, "format")->valuestring, "moeprune.graft/1"));
        cJSON *in1 = cJSON_GetArrayItem(inputs, 1);
        CHECK(!strcmp(cJSON_GetObjectItem(in1, "file")->valuestring, "h1.gguf"));
        cJSON *layers = cJSON_GetObjectItem(in1, "layers");
        CHECK_INT(4, cJSON_GetArraySize(layers));
        for (int l = 0; l < 4; l++) {
            cJSON *lo = cJSON_GetArrayItem(layers, l);
            CHECK_INT(l, cJSON_GetObjectItem(lo, "layer")->valueint);
            CHECK_INT(8, cJSON_GetObjectItem(lo, "first")->valueint);
            CHECK_INT(8, cJSON_GetObjectItem(lo, "count")->valueint);
            cJSON *ids = cJSON_GetObjectItem(lo, "base_ids");
            CHECK_INT(8, cJSON_GetArraySize(ids));
            for (int e = 0; e < 8; e++) CHECK_INT(8 + e, cJSON_GetArrayItem(ids, e)->valueint);
        }
        cJSON_Delete(j);
        mp_free(prov);
    }
    mp_gguf_free(g);
    mp_gguf_free(o);

    /* the engine runs the grafted file */
    mp_model *m = NULL;
    CHECK_STATUS(MP_OK, mp_model_load(&m, out, &err), &err);
    if (m) CHECK_INT(16, mp_model_n_expert(m, 2));
    mp_model_free(m);
    unlink(out);

    /* reversed: experts 8-15 first */
    CHECK_STATUS(MP_OK, graft2(h1, h0, out, false, &err), &err);
    const char *rev[] = {h1, h0};
    check_concat(out, rev, 2, h1);
    CHECK(!same_data(orig, out));
    unlink(out);
}

/* Uneven inputs: per-layer counts, expert_count the largest. */
static void test_uneven(const char *orig, const char *h0) {
    char rag[512], out[512];
    mp_err err = {0};
    mp_dropmap *m = range_map(4, 4, true); /* layer l keeps 4 + l experts from id 4 */
    prune_to(orig, m, tmp_path(rag, sizeof rag, "ragged.gguf"), MP_TARGET_MOEPRUNE);
    mp_dropmap_free(m);
    tmp_path(out, sizeof out, "u.gguf");
    CHECK_STATUS(MP_OK, graft2(h0, rag, out, false, &err), &err);
    const char *parts[] = {h0, rag};
    check_concat(out, parts, 2, h0);
    mp_gguf *g = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_open(&g, out, &err), &err);
    if (g) {
        uint64_t v = 0;
        CHECK_STATUS(MP_OK, mp_gguf_key_uint(g, "gemma4.expert_count", &v, &err), &err);
        CHECK_INT(8 + 7, v);
        int64_t k = mp_gguf_find_key(g, "moeprune.expert_count_per_layer");
        CHECK(k >= 0);
        for (int64_t l = 0; k >= 0 && l < 4; l++) {
            CHECK_STATUS(MP_OK, mp_gguf_get_uint(g, k, (uint64_t)l, &v, &err), &err);
            CHECK_INT(8 + 4 + l, v);
        }
    }
    mp_gguf_free(g);
    mp_model *mm = NULL;
    CHECK_STATUS(MP_OK, mp_model_load(&mm, out, &err), &err);
    for (int l = 0; mm && l < 4; l++) CHECK_INT(12 + l, mp_model_n_expert(mm, l));
    mp_model_free(mm);
    unlink(out);

    /* three inputs */
    const char *three[] = {h0, rag, h0};
    CHECK_STATUS(MP_OK, mp_graft_gguf(three, 3, out, NULL, &err), &err);
    check_concat(out, three, 3, h0);
    unlink(out);
    unlink(rag);
}

/* Copies `in` with every non-expert F32 tensor's values v -> 3v + 0.25:
 * a "fine-tune" to average with. */
static void perturbed_copy(const char *in, const char *out) {
    mp_err err = {0};
    mp_gguf *g = NULL;
    mp_gguf_writer *w = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_open(&g, in, &err), &err);
    CHECK_STATUS(MP_OK, mp_gguf_writer_open(&w, out, false, &err), &err);
    if (!g || !w) goto done;
    for (int64_t i = 0; i < mp_gguf_n_kv(g); i++)
        CHECK_STATUS(MP_OK, mp_gguf_writer_kv_copy(w, g, i, &err), &err);
    for (int64_t i = 0; i < mp_gguf_n_tensors(g); i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(g, i);
        CHECK_STATUS(MP_OK, mp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne,
                                                      &err), &err);
    }
    for (int64_t i = 0; i < mp_gguf_n_tensors(g); i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(g, i);
        float *buf = malloc(t->nbytes);
        memcpy(buf, t->data, t->nbytes);
        if (t->type == MP_TYPE_F32 && !is_expert(t->name))
            for (uint64_t j = 0; j < t->nbytes / 4; j++) buf[j] = 3 * buf[j] + 0.25f;
        CHECK_STATUS(MP_OK, mp_gguf_writer_write_data(w, buf, t->nbytes, &err), &err);
        free(buf);
    }
    CHECK_STATUS(MP_OK, mp_gguf_writer_finish(w, &err), &err);
done:
    mp_gguf_writer_free(w);
    mp_gguf_free(g);
}

static void test_average(void) {
    char orig[512], h0[512], h1[512], h1p[512], out[512];
    mp_err err = {0};
    mp_dropmap *lo = range_map(0, 8, false), *hi = range_map(8, 8, false);
    const char *variants[] = {"f32", "f16", "bf16"};
    for (int v = 0; v < 3; v++) {
        char rel[128];
        snprintf(rel, sizeof rel, "gemma4-tiny-a/tiny-a-%s.gguf", variants[v]);
        mp_test_data(orig, sizeof orig, rel);
        prune_to(orig, lo, tmp_path(h0, sizeof h0, "a0.gguf"), MP_TARGET_AUTO);
        prune_to(orig, hi, tmp_path(h1, sizeof h1, "a1.gguf"), MP_TARGET_AUTO);
        /* the mean of identical tensors is the tensor itself, in every float type */
        tmp_path(out, sizeof out, "avg.gguf");
        CHECK_STATUS(MP_OK, graft2(h0, h1, out, true, &err), &err);
        CHECK_MSG(same_data(orig, out), "%s: average of identical tensors changed them",
                  variants[v]);
        unlink(out);
        if (v == 0) {
            perturbed_copy(h1, tmp_path(h1p, sizeof h1p, "a1p.gguf"));
            CHECK_STATUS(MP_OK, graft2(h0, h1p, out, true, &err), &err);
            mp_gguf *a = NULL, *b = NULL, *g = NULL;
            CHECK_STATUS(MP_OK, mp_gguf_open(&a, h0, &err), &err);
            CHECK_STATUS(MP_OK, mp_gguf_open(&b, h1p, &err), &err);
            CHECK_STATUS(MP_OK, mp_gguf_open(&g, out, &err), &err);
            int64_t n_avg = 0;
            for (int64_t i = 0; a && b && g && i < mp_gguf_n_tensors(a); i++) {
                const mp_gguf_tensor *ta = mp_gguf_tensor_at(a, i);
                const mp_gguf_tensor *tb = mp_gguf_find_tensor(b, ta->name);
                const mp_gguf_tensor *tg = mp_gguf_find_tensor(g, ta->name);
                if (is_expert(ta->name) || ta->type != MP_TYPE_F32) continue;
                n_avg++;
                int64_t bad = 0;
                for (uint64_t j = 0; j < ta->nbytes / 4; j++) {
                    float x, y, z;
                    memcpy(&x, (const uint8_t *)ta->data + 4 * j, 4);
                    memcpy(&y, (const uint8_t *)tb->data + 4 * j, 4);
                    memcpy(&z, (const uint8_t *)tg->data + 4 * j, 4);
                    float want = (float)(((double)x + (double)y) / 2.0);
                    if (memcmp(&want, &z, 4)) bad++;
                }
                CHECK_MSG(bad == 0, "%s: %lld elements are not the mean", ta->name,
                          (long long)bad);
            }
            CHECK(n_avg > 20);
            mp_gguf_free(a);
            mp_gguf_free(b);
            mp_gguf_free(g);
            /* experts are still concatenated, not averaged */
            mp_gguf *gg = NULL, *pa = NULL, *pb = NULL;
            CHECK_STATUS(MP_OK, mp_gguf_open(&gg, out, &err), &err);
            CHECK_STATUS(MP_OK, mp_gguf_open(&pa, h0, &err), &err);
            CHECK_STATUS(MP_OK, mp_gguf_open(&pb, h1p, &err), &err);
            if (gg && pa && pb) {
                const char *nm = "blk.1.ffn_gate_inp.weight";
                const mp_gguf_tensor *x = mp_gguf_find_tensor(gg, nm);
                const mp_gguf_tensor *y = mp_gguf_find_tensor(pa, nm);
                const mp_gguf_tensor *z = mp_gguf_find_tensor(pb, nm);
                CHECK(x && y && z && !memcmp(x->data, y->data, y->nbytes) &&
                      !memcmp((const uint8_t *)x->data + y->nbytes, z->data, z->nbytes));
            }
            mp_gguf_free(gg);
            mp_gguf_free(pa);
            mp_gguf_free(pb);
            unlink(out);
            unlink(h1p);
        }
        unlink(h0);
        unlink(h1);
    }
    mp_dropmap_free(lo);
    mp_dropmap_free(hi);
}

static void refused(const char *const *in, int64_t n, bool average, mp_status want,
                    const char *needle) {
    char out[512];
    tmp_path(out, sizeof out, "refused.gguf");
    int before = dir_entries();
    mp_err err = {0};
    mp_graft_params p = {.average = average};
    mp_status s = mp_graft_gguf(in, n, out, &p, &err);
    CHECK_MSG(s == want && strstr(err.msg, needle), "expected %s with '%s', got %s: %s",
              mp_status_name(want), needle, mp_status_name(s), err.msg);
    CHECK_INT(before, dir_entries());
}

int main(void) {
    char orig[512], h0[512], h1[512], other[512], out[512];
    mp_err err = {0};
    CHECK(mp_test_tmpdir(dir, sizeof dir, "graft") != NULL);
    mp_test_data(orig, sizeof orig, "gemma4-tiny-a/tiny-a-q8_0.gguf");
    mp_dropmap *lo = range_map(0, 8, false), *hi = range_map(8, 8, false);
    CHECK(lo && hi);
    if (!lo || !hi) return mp_test_end("test_graft");
    prune_to(orig, lo, tmp_path(h0, sizeof h0, "h0.gguf"), MP_TARGET_AUTO);
    prune_to(orig, hi, tmp_path(h1, sizeof h1, "h1.gguf"), MP_TARGET_AUTO);

    test_roundtrip(orig, h0, h1);
    test_uneven(orig, h0);
    test_average();

    /* refusals */
    const char *pair[] = {h0, h1};
    refused(pair, 2, true, MP_ERR_UNSUPPORTED, "--average: tensor 'token_embd.weight' is Q8_0");
    refused(pair, 1, false, MP_ERR_ARG, "at least two");
    char rel[512];
    mp_test_data(rel, sizeof rel, "gemma4-tiny-a/tiny-a-q4_k_m.gguf");
    prune_to(rel, hi, tmp_path(other, sizeof other, "other.gguf"), MP_TARGET_AUTO);
    const char *mixed[] = {h0, other};
    refused(mixed, 2, false, MP_ERR_CHECK, "tensor 'token_embd.weight' is Q8_0 {256, 1024} in");
    unlink(other);
    mp_synth_params sp = {.preset = "gemma4-tiny", .n_layer = 3, .type = MP_TYPE_Q8_0,
                          .seed = 7};
    CHECK_STATUS(MP_OK, mp_synth_write(tmp_path(other, sizeof other, "l3.gguf"), &sp, &err),
                 &err);
    refused(mixed, 2, false, MP_ERR_CHECK, "has 4 layers but");
    unlink(other);
    mp_prune_params zp = {.mode = MP_PRUNE_ZERO};
    CHECK_STATUS(MP_OK, mp_prune_gguf(orig, hi, tmp_path(other, sizeof other, "z.gguf"), &zp,
                                      &err), &err);
    refused(mixed, 2, false, MP_ERR_UNSUPPORTED, "--mode zero");
    unlink(other);
    const char *missing[] = {h0, "/nonexistent/x.gguf"};
    refused(missing, 2, false, MP_ERR_IO, "/nonexistent/x.gguf");
    CHECK_STATUS(MP_ERR_ARG, graft2(h0, h1, h1, false, &err), &err);
    CHECK(strstr(err.msg, "replace an input") != NULL);
    tmp_path(out, sizeof out, "exists.gguf");
    CHECK_STATUS(MP_OK, graft2(h0, h1, out, false, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, graft2(h0, h1, out, false, &err), &err);
    CHECK(strstr(err.msg, "exists") != NULL);
    mp_graft_params force = {.overwrite = true};
    CHECK_STATUS(MP_OK, mp_graft_gguf(pair, 2, out, &force, &err), &err);
    unlink(out);

    /* allocation failures: reported, nothing left behind. (The inputs are
     * the original twice: the halves record drop maps, whose parser reads an
     * allocation failure as a missing field.) */
    int fails = 0, before = dir_entries();
    for (long k = 1; k < 100000; k++) {
        mp_malloc_fail_at(k);
        mp_status s = graft2(orig, orig, out, false, &err);
        mp_malloc_fail_at(0);
        if (s == MP_OK) break;
        fails++;
        CHECK_STATUS(MP_ERR_NOMEM, s, &err);
        CHECK_INT(before, dir_entries());
    }
    CHECK(fails > 10);
    const char *twice[] = {orig, orig};
    check_concat(out, twice, 2, orig);
    unlink(out);

    unlink(h0);
    unlink(h1);
    CHECK_INT(0, dir_entries());
    rmdir(dir);
    mp_dropmap_free(lo);
    mp_dropmap_free(hi);
    return mp_test_end("test_graft");
}

/* test_prune.c — expert surgery on every fixture variant, checked byte by byte
 * against the input: non-expert tensors identical, expert tensors exactly the
 * kept slabs in order, zero mode zeroes (and dequantizes to 0.0), metadata
 * updated; composition of two prunes equals one; bad maps, a non-uniform map
 * for llama.cpp, and a full disk leave no output file; the input is never
 * changed. */
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static char dir[256];

/* Keeps `keep` experts per layer: layer l keeps ids (l + 3k) mod n, sorted. */
static mp_dropmap *make_map(int64_t n_layer, int64_t n_expert, int64_t used, int64_t keep,
                            bool ragged) {
    char json[8192];
    int o = snprintf(json, sizeof json,
                     "{\"format\":\"moeprune.dropmap/1\",\"model\":{\"arch\":\"gemma4\","
                     "\"n_layer\":%lld,\"n_expert\":%lld,\"n_expert_used\":%lld},\"layers\":[",
                     (long long)n_layer, (long long)n_expert, (long long)used);
    for (int64_t l = 0; l < n_layer; l++) {
        int64_t k = ragged ? keep + l : keep;
        bool on[1024] = {0};
        for (int64_t j = 0; j < k; j++) on[(l + 3 * j) % n_expert] = true;
        o += snprintf(json + o, sizeof json - (size_t)o, "%s{\"layer\":%lld,\"keep\":[",
                      l ? "," : "", (long long)l);
        int first = 1;
        for (int64_t e = 0; e < n_expert; e++)
            if (on[e]) {
                o += snprintf(json + o, sizeof json - (size_t)o, "%s%lld", first ? "" : ",",
                              (long long)e);
                first = 0;
            }
        o += snprintf(json + o, sizeof json - (size_t)o, "]}");
    }
    snprintf(json + o, sizeof json - (size_t)o, "]}");
    mp_dropmap *m = NULL;
    mp_err err;
    if (mp_dropmap_parse(&m, json, strlen(json), "gen", &err)) {
        fprintf(stderr, "make_map: %s\n", err.msg);
        return NULL;
    }
    return m;
}

static bool is_expert_tensor(const char *name) {
    return strstr(name, "_exps") || strstr(name, "ffn_gate_inp.weight");
}

/* Compares `out` with `in` pruned by m in `mode`. */
static void check_output(const char *in, const char *out, const mp_dropmap *m, bool zero) {
    mp_err err = {0};
    mp_gguf *a = NULL, *b = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_open(&a, in, &err), &err);
    CHECK_STATUS(MP_OK, mp_gguf_open(&b, out, &err), &err);
    if (!a || !b) goto done;
    CHECK_INT(mp_gguf_n_tensors(a), mp_gguf_n_tensors(b));
    for (int64_t i = 0; i < mp_gguf_n_tensors(a); i++) {
        const mp_gguf_tensor *ta = mp_gguf_tensor_at(a, i), *tb = mp_gguf_tensor_at(b, i);
        if (!tb) break;
        CHECK(!strcmp(ta->name, tb->name) && ta->type == tb->type && ta->n_dims == tb->n_dims);
        int64_t l = -1;
        sscanf(ta->name, "blk.%lld.", (long long *)&l);
        if (!is_expert_tensor(ta->name) || l < 0) {
            CHECK_MSG(ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, ta->nbytes),
                      "%s: %s changed", out, ta->name);
            continue;
        }
        const mp_dropmap_layer *L = mp_dropmap_find(m, l);
        int64_t x = ta->ne[ta->n_dims - 1];
        uint64_t slab = ta->nbytes / (uint64_t)x;
        CHECK_INT(zero ? x : L->n_keep, tb->ne[tb->n_dims - 1]);
        const uint8_t *pa = ta->data, *pb = tb->data;
        int64_t k = 0, pos = 0;
        for (int64_t e = 0; e < x; e++) {
            bool kept = k < L->n_keep && L->keep[k] == e;
            if (kept) k++;
            if (kept) {
                CHECK_MSG(!memcmp(pa + e * slab, pb + pos * slab, slab), "%s: %s expert %lld", out,
                          ta->name, (long long)e);
                pos++;
            } else if (zero) {
                bool allz = true;
                for (uint64_t j = 0; j < slab; j++) allz = allz && pb[pos * slab + j] == 0;
                CHECK_MSG(allz, "%s: %s expert %lld not zeroed", out, ta->name, (long long)e);
                if (mp_type_info(tb->type)->can_dequant) {
                    float v[512];
                    int64_t n = ta->n_dims == 1 ? 1 : ta->ne[0] < 512 ? ta->ne[0] : 0;
                    if (n && mp_dequantize_row(tb->type, pb + pos * slab, v, n, &err) == MP_OK)
                        for (int64_t j = 0; j < n; j++) CHECK(v[j] == 0.0f);
                }
                pos++;
            }
        }
    }
    uint64_t cnt = 0;
    CHECK_STATUS(MP_OK, mp_gguf_key_uint(b, "gemma4.expert_count", &cnt, &err), &err);
    CHECK_INT(zero ? 16 : m->layers[0].n_keep, cnt);
    mp_dropmap *rec = NULL;
    CHECK_STATUS(MP_OK, mp_dropmap_from_gguf(b, &rec, &err), &err);
    if (rec) {
        CHECK_INT(m->n_layers, rec->n_layers);
        for (int64_t l = 0; l < m->n_layers && l < rec->n_layers; l++)
            CHECK(rec->layers[l].n_keep == m->layers[l].n_keep &&
                  !memcmp(rec->layers[l].keep, m->layers[l].keep,
                          (size_t)m->layers[l].n_keep * sizeof(int32_t)));
    }
    mp_dropmap_free(rec);
done:
    mp_gguf_free(a);
    mp_gguf_free(b);
}

static int dir_entries(void) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

static void refused(const char *in, const mp_dropmap *m, mp_prune_target target,
                    const char *needle) {
    char out[512];
    snprintf(out, sizeof out, "%s/refused.gguf", dir);
    mp_err err = {0};
    mp_prune_params p = {.target = target};
    mp_status s = mp_prune_gguf(in, m, out, &p, &err);
    CHECK_MSG(s != MP_OK && strstr(err.msg, needle), "expected refusal with '%s', got %s: %s",
              needle, mp_status_name(s), err.msg);
    CHECK_INT(0, dir_entries());
}

/* A full disk: the write limit makes write() fail with EFBIG part way. */
static void full_disk(const char *in, const mp_dropmap *m) {
    char out[512];
    snprintf(out, sizeof out, "%s/full.gguf", dir);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {.rlim_cur = 1 << 20, .rlim_max = 1 << 20};
        setrlimit(RLIMIT_FSIZE, &rl);
        mp_err err = {0};
        mp_prune_params p = {0};
        mp_status s = mp_prune_gguf(in, m, out, &p, &err);
        _exit(s == MP_ERR_IO && strstr(err.msg, "full.gguf") ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "full disk: child status %d", st);
    CHECK_INT(0, dir_entries());
}

int main(void) {
    char in[512], out[512], out2[512], out3[512];
    mp_err err = {0};
    CHECK(mp_test_tmpdir(dir, sizeof dir, "prune") != NULL);
    mp_dropmap *m8 = make_map(4, 16, 4, 8, false);
    mp_dropmap *m4 = make_map(4, 8, 4, 4, false); /* for a second prune of the 8-expert file */
    mp_dropmap *ragged = make_map(4, 16, 4, 5, true);
    CHECK(m8 && m4 && ragged);
    if (!m8 || !m4 || !ragged) return mp_test_end("test_prune");

    for (int v = 0; mp_test_tiny_variants[v]; v++) {
        char rel[128];
        snprintf(rel, sizeof rel, "gemma4-tiny-a/tiny-a-%s.gguf", mp_test_tiny_variants[v]);
        mp_test_data(in, sizeof in, rel);
        size_t n0;
        char *before = mp_test_read_file(in, &n0);
        snprintf(out, sizeof out, "%s/p.gguf", dir);
        mp_prune_params p = {0};
        CHECK_STATUS(MP_OK, mp_prune_gguf(in, m8, out, &p, &err), &err);
        check_output(in, out, m8, false);
        p.mode = MP_PRUNE_ZERO;
        snprintf(out2, sizeof out2, "%s/z.gguf", dir);
        CHECK_STATUS(MP_OK, mp_prune_gguf(in, m8, out2, &p, &err), &err);
        check_output(in, out2, m8, true);
        size_t n1;
        char *after = mp_test_read_file(in, &n1);
        CHECK_MSG(before && after && n0 == n1 && !memcmp(before, after, n0), "%s changed", in);
        free(before);
        free(after);
        unlink(out);
        unlink(out2);
    }

    /* two prunes compose: 16 -> 8 -> 4 records the original ids and equals
     * one prune with the composed map */
    mp_test_data(in, sizeof in, "gemma4-tiny-a/tiny-a-q4_k_m.gguf");
    snprintf(out, sizeof out, "%s/p8.gguf", dir);
    snprintf(out2, sizeof out2, "%s/p4.gguf", dir);
    snprintf(out3, sizeof out3, "%s/direct4.gguf", dir);
    mp_prune_params p = {0};
    CHECK_STATUS(MP_OK, mp_prune_gguf(in, m8, out, &p, &err), &err);
    CHECK_STATUS(MP_OK, mp_prune_gguf(out, m4, out2, &p, &err), &err);
    mp_gguf *g4 = NULL;
    mp_dropmap *rec = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_open(&g4, out2, &err), &err);
    if (g4) CHECK_STATUS(MP_OK, mp_dropmap_from_gguf(g4, &rec, &err), &err);
    if (rec) {
        CHECK_INT(16, rec->n_expert);
        for (int64_t l = 0; l < 4; l++) {
            CHECK_INT(4, rec->layers[l].n_keep);
            for (int64_t k = 0; k < 4; k++)
                CHECK_INT(m8->layers[l].keep[m4->layers[l].keep[k]], rec->layers[l].keep[k]);
        }
        CHECK_STATUS(MP_OK, mp_prune_gguf(in, rec, out3, &p, &err), &err);
        mp_gguf *gd = NULL;
        CHECK_STATUS(MP_OK, mp_gguf_open(&gd, out3, &err), &err);
        for (int64_t i = 0; gd && i < mp_gguf_n_tensors(gd); i++) {
            const mp_gguf_tensor *a = mp_gguf_tensor_at(gd, i), *b = mp_gguf_tensor_at(g4, i);
            CHECK(a->nbytes == b->nbytes && !memcmp(a->data, b->data, a->nbytes));
        }
        mp_gguf_free(gd);
    }
    mp_dropmap_free(rec);
    mp_gguf_free(g4);
    unlink(out);
    unlink(out2);
    unlink(out3);

    /* non-uniform: refused for llama.cpp, per-layer counts for moeprune */
    refused(in, ragged, MP_TARGET_LLAMA_CPP, "one expert count for every layer");
    p.target = MP_TARGET_AUTO;
    CHECK_STATUS(MP_OK, mp_prune_gguf(in, ragged, out, &p, &err), &err);
    mp_gguf *gr = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_open(&gr, out, &err), &err);
    int64_t ki = gr ? mp_gguf_find_key(gr, "moeprune.expert_count_per_layer") : -1;
    CHECK(ki >= 0);
    for (int64_t l = 0; ki >= 0 && l < 4; l++) {
        uint64_t c = 0;
        mp_gguf_get_uint(gr, ki, (uint64_t)l, &c, &err);
        CHECK_INT(5 + l, c);
        char name[64];
        snprintf(name, sizeof name, "blk.%lld.ffn_gate_up_exps.weight", (long long)l);
        CHECK_INT(5 + l, mp_gguf_find_tensor(gr, name)->ne[2]);
    }
    mp_gguf_free(gr);
    unlink(out);

    /* a map for another model, and an output that already exists */
    mp_dropmap *other = make_map(5, 16, 4, 8, false);
    refused(in, other, MP_TARGET_AUTO, "5 layers");
    mp_dropmap_free(other);
    other = make_map(4, 32, 4, 8, false);
    refused(in, other, MP_TARGET_AUTO, "covers 32");
    mp_dropmap_free(other);
    other = make_map(4, 16, 2, 3, false); /* keeps 3 < 4 used per token */
    refused(in, other, MP_TARGET_AUTO, "fewer than the 4 used");
    mp_dropmap_free(other);
    CHECK_STATUS(MP_ERR_ARG, mp_prune_gguf(in, m8, in, &p, &err), &err);
    full_disk(in, m8);

    /* allocation failures: reported, nothing left behind */
    int fails = 0;
    for (long k = 1; k < 100000; k++) {
        mp_malloc_fail_at(k);
        mp_status s = mp_prune_gguf(in, m8, out, &p, &err);
        mp_malloc_fail_at(0);
        if (s == MP_OK) break;
        fails++;
        CHECK_STATUS(MP_ERR_NOMEM, s, &err);
        CHECK_INT(0, dir_entries());
    }
    CHECK(fails > 10);
    unlink(out);
    rmdir(dir);
    mp_dropmap_free(m8);
    mp_dropmap_free(m4);
    mp_dropmap_free(ragged);
    return mp_test_end("test_prune");
}

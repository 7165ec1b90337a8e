/* test_synth.c — model synthesis: the gemma4-tiny preset reproduces the tiny
 * fixture's layout and metadata (tests/data/gemma4-tiny-a), in F32 and in the
 * F16/BF16/Q8_0 variants; output is a pure function of the seed (also across
 * thread counts and chunkings); weights follow the design and the fixture's
 * statistics; layer cut, split experts and V on every layer change exactly
 * what they should; the 26B-A4B plan has the spec's shapes (checked without
 * writing the 2.4 GB file); vocabulary extraction and the error paths. */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "synth/synth.h"
#include "testutil.h"

static char tmpdir[512];

static const char *tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", tmpdir, name);
    return buf;
}

static bool files_equal(const char *a, const char *b) {
    size_t na, nb;
    char *da = mp_test_read_file(a, &na), *db = mp_test_read_file(b, &nb);
    bool same = da && db && na == nb && memcmp(da, db, na) == 0;
    free(da);
    free(db);
    return same;
}

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

static void remove_tmpdir(void) {
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char p[1024];
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            unlink(tmp_path(p, sizeof p, e->d_name));
    if (d) closedir(d);
    rmdir(tmpdir);
}

static mp_synth_params tiny_params(int type) {
    mp_synth_params p = {0};
    p.preset = "gemma4-tiny";
    p.type = type;
    p.seed = 42;
    p.overwrite = true;
    return p;
}

static mp_gguf *open_or_fail(const char *path) {
    mp_err err = {0};
    mp_gguf *g = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_open(&g, path, &err), &err);
    return g;
}

static mp_gguf *fixture(const char *variant) {
    char rel[128], path[512];
    snprintf(rel, sizeof rel, "gemma4-tiny-a/tiny-a-%s.gguf", variant);
    return open_or_fail(mp_test_data(path, sizeof path, rel));
}

static bool kv_raw_equal(const mp_gguf *a, int64_t ia, const mp_gguf *b, int64_t ib) {
    const uint8_t *ra, *rb;
    size_t la, lb;
    mp_gguf_kv_raw(a, ia, &ra, &la);
    mp_gguf_kv_raw(b, ib, &rb, &lb);
    return la == lb && memcmp(ra, rb, la) == 0;
}

static uint64_t key_u64(const mp_gguf *g, const char *key) {
    uint64_t v = UINT64_MAX;
    mp_err err = {0};
    CHECK_STATUS(MP_OK, mp_gguf_key_uint(g, key, &v, &err), &err);
    return v;
}

/* Metadata of `ours` equals `ref` key for key, in order and byte for byte,
 * except general.name (ours names itself) and `extra`, a key only ours has. */
static void check_kv_like(const mp_gguf *ours, const mp_gguf *ref, const char *extra) {
    int64_t i = 0, j = 0, n_ours = mp_gguf_n_kv(ours), n_ref = mp_gguf_n_kv(ref);
    for (;;) {
        while (i < n_ours && (!strcmp(mp_gguf_key(ours, i), "general.name") ||
                              (extra && !strcmp(mp_gguf_key(ours, i), extra))))
            i++;
        while (j < n_ref && !strcmp(mp_gguf_key(ref, j), "general.name")) j++;
        if (i >= n_ours || j >= n_ref) break;
        CHECK_MSG(kv_raw_equal(ours, i, ref, j), "key %lld '%s' differs from the fixture's '%s'",
                  (long long)i, mp_gguf_key(ours, i), mp_gguf_key(ref, j));
        i++;
        j++;
    }
    CHECK_MSG(i == n_ours && j == n_ref, "key counts differ: ours stopped at %lld/%lld, "
              "fixture at %lld/%lld", (long long)i, (long long)n_ours, (long long)j,
              (long long)n_ref);
    int64_t k = mp_gguf_find_key(ours, "general.name");
    CHECK(k >= 0 && mp_gguf_kv_type(ours, k) == MP_GGUF_STRING);
}

/* Same tensor names and shapes in the same order as `order_ref`; each type
 * equals that of the same-named tensor in `types_from` (NULL: order_ref). */
static void check_tensors_like(const mp_gguf *ours, const mp_gguf *order_ref,
                               const mp_gguf *types_from) {
    CHECK_INT(mp_gguf_n_tensors(order_ref), mp_gguf_n_tensors(ours));
    for (int64_t i = 0; i < mp_gguf_n_tensors(ours) && i < mp_gguf_n_tensors(order_ref); i++) {
        const mp_gguf_tensor *a = mp_gguf_tensor_at(ours, i), *b = mp_gguf_tensor_at(order_ref, i);
        CHECK_MSG(!strcmp(a->name, b->name), "tensor %lld: '%s', fixture '%s'", (long long)i,
                  a->name, b->name);
        CHECK_MSG(a->n_dims == b->n_dims && !memcmp(a->ne, b->ne, sizeof a->ne),
                  "%s: shape differs from the fixture's", a->name);
        const mp_gguf_tensor *t = types_from ? mp_gguf_find_tensor(types_from, a->name) : b;
        CHECK_MSG(t && t->type == a->type, "%s: type %s, fixture %s", a->name,
                  mp_type_name(a->type), t ? mp_type_name(t->type) : "(absent)");
    }
}

static void test_tiny_f32_matches_fixture(void) {
    char out[600];
    mp_err err = {0};
    mp_synth_params p = tiny_params(MP_TYPE_F32);
    CHECK_STATUS(MP_OK, mp_synth_write(tmp_path(out, sizeof out, "tiny-f32.gguf"), &p, &err),
                 &err);
    mp_gguf *ours = open_or_fail(out), *ref = fixture("f32");
    if (ours && ref) {
        /* the fixture (written by a script, not llama-quantize) has no file type */
        check_kv_like(ours, ref, "general.file_type");
        CHECK_INT(0, key_u64(ours, "general.file_type"));
        CHECK(mp_gguf_find_key(ref, "general.file_type") < 0);
        check_tensors_like(ours, ref, NULL);
    }
    mp_gguf_free(ours);
    mp_gguf_free(ref);
}

/* F16, BF16, Q8_0: the metadata equals llama-quantize's variant of the
 * fixture (quantization_version and file_type included), tensor order the
 * F32 file's, each tensor's type the variant's. */
static void test_tiny_variants(void) {
    static const struct {
        int type;
        const char *variant;
        uint64_t ftype;
    } v[] = {{MP_TYPE_F16, "f16", 1}, {MP_TYPE_BF16, "bf16", 32}, {MP_TYPE_Q8_0, "q8_0", 7}};
    for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
        char out[600], name[64];
        mp_err err = {0};
        mp_synth_params p = tiny_params(v[k].type);
        snprintf(name, sizeof name, "tiny-%s.gguf", v[k].variant);
        CHECK_STATUS(MP_OK, mp_synth_write(tmp_path(out, sizeof out, name), &p, &err), &err);
        mp_gguf *ours = open_or_fail(out), *ref = fixture(v[k].variant), *f32 = fixture("f32");
        if (ours && ref && f32) {
            check_kv_like(ours, ref, NULL);
            CHECK_INT(v[k].ftype, key_u64(ours, "general.file_type"));
            CHECK_INT(2, key_u64(ours, "general.quantization_version"));
            check_tensors_like(ours, f32, ref);
        }
        mp_gguf_free(ours);
        mp_gguf_free(ref);
        mp_gguf_free(f32);
        unlink(out);
    }
}

static void test_determinism(void) {
    char a[600], b[600], c[600];
    mp_err err = {0};
    mp_synth_params p = tiny_params(MP_TYPE_Q8_0);
    CHECK_STATUS(MP_OK, mp_synth_write(tmp_path(a, sizeof a, "det-a.gguf"), &p, &err), &err);
    CHECK_STATUS(MP_OK, mp_synth_write(tmp_path(b, sizeof b, "det-b.gguf"), &p, &err), &err);
    CHECK_MSG(files_equal(a, b), "same seed, different bytes");
    p.seed = 43;
    CHECK_STATUS(MP_OK, mp_synth_write(tmp_path(c, sizeof c, "det-c.gguf"), &p, &err), &err);
    size_t na = 0, nc = 0;
    char *da = mp_test_read_file(a, &na), *dc = mp_test_read_file(c, &nc);
    CHECK(da && dc && na == nc);
    if (da && dc && na == nc) {
        /* same header; data differs in (nearly) every block */
        mp_gguf *g = open_or_fail(a);
        size_t off = g ? (size_t)mp_gguf_data_offset(g) : 0;
        CHECK(g && memcmp(da, dc, off) == 0 && memcmp(da + off, dc + off, na - off) != 0);
        size_t same = 0;
        for (size_t i = off; i < na; i++) same += da[i] == dc[i];
        CHECK_MSG(same < (na - off) / 4, "%zu of %zu data bytes equal across seeds", same,
                  na - off);
        mp_gguf_free(g);
    }
    free(da);
    free(dc);
    unlink(b);
    unlink(c);
}

/* Writes the plan through the internal pipeline with n_threads threads. */
static mp_status write_with_threads(const char *path, const mp_synth_params *p, int n_threads,
                                    mp_err *err) {
    char vpath[512];
    snprintf(vpath, sizeof vpath, "%s/data/gemma4-tiny-vocab.gguf", MP_SOURCE_DIR);
    mp_gguf *vocab = NULL;
    mp_synth_plan *plan = NULL;
    mp_gguf_writer *w = NULL;
    mp_status s = mp_gguf_open(&vocab, vpath, err);
    if (!s) s = mp_synth_plan_init(&plan, p, 1024, err);
    if (!s) s = mp_gguf_writer_open(&w, path, true, err);
    if (!s) s = mp_synth_write_kv(plan, vocab, w, err);
    for (int64_t i = 0; !s && i < plan->n_tensors; i++) {
        const mp_synth_tensor *t = &plan->tensors[i];
        s = mp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, err);
    }
    if (!s) s = mp_synth_write_data(plan, w, n_threads, err);
    if (!s) s = mp_gguf_writer_finish(w, err);
    mp_gguf_writer_free(w);
    mp_synth_plan_free(plan);
    mp_gguf_free(vocab);
    return s;
}

static void test_threads_and_chunks(void) {
    char a[600], b[600], ref[600];
    mp_err err = {0};
    mp_synth_params p = tiny_params(MP_TYPE_Q8_0);
    tmp_path(ref, sizeof ref, "det-a.gguf"); /* from test_determinism */
    CHECK_STATUS(MP_OK, write_with_threads(tmp_path(a, sizeof a, "thr-1.gguf"), &p, 1, &err),
                 &err);
    CHECK_STATUS(MP_OK, write_with_threads(tmp_path(b, sizeof b, "thr-3.gguf"), &p, 3, &err),
                 &err);
    CHECK_MSG(files_equal(a, ref), "1 thread differs from the default");
    CHECK_MSG(files_equal(b, ref), "3 threads differ from the default");
    unlink(a);
    unlink(b);
    unlink(ref);

    /* any sub-range of a tensor equals the same slice of a longer range */
    mp_synth_plan *plan = NULL;
    CHECK_STATUS(MP_OK, mp_synth_plan_init(&plan, &p, 1024, &err), &err);
    if (!plan) return;
    float whole[300], part[300];
    for (int64_t ti = 0; ti < plan->n_tensors; ti++) {
        int64_t n = plan->tensors[ti].ne[0] * plan->tensors[ti].ne[1];
        if (n > 300) n = 300;
        mp_synth_fill(plan, ti, 0, n, whole);
        for (int64_t start = 0; start < n; start += 37) {
            int64_t len = (n - start) < 51 ? n - start : 51;
            mp_synth_fill(plan, ti, (uint64_t)start, len, part);
            CHECK_MSG(!memcmp(part, whole + start, (size_t)len * sizeof *part),
                      "%s: [%lld, +%lld) differs from the whole", plan->tensors[ti].name,
                      (long long)start, (long long)len);
        }
    }
    mp_synth_plan_free(plan);
}

static double *tensor_f64(const mp_gguf_tensor *t, int64_t *n) {
    *n = mp_tensor_nelements(t);
    float *f = malloc((size_t)*n * sizeof *f);
    double *d = malloc((size_t)*n * sizeof *d);
    mp_err err = {0};
    CHECK_STATUS(MP_OK, mp_dequantize_row(t->type, t->data, f, *n, &err), &err);
    for (int64_t i = 0; i < *n; i++) d[i] = f[i];
    free(f);
    return d;
}

typedef struct stats {
    double mean, std, min, max;
    int64_t nonfinite;
} stats;

static stats stats_of(const double *x, int64_t n) {
    stats s = {0, 0, INFINITY, -INFINITY, 0};
    double sum = 0, sum2 = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) {
            s.nonfinite++;
            continue;
        }
        sum += x[i];
        sum2 += x[i] * x[i];
        s.min = fmin(s.min, x[i]);
        s.max = fmax(s.max, x[i]);
    }
    s.mean = sum / (double)n;
    s.std = sqrt(fmax(sum2 / (double)n - s.mean * s.mean, 0.0));
    return s;
}

/* Weights are finite and follow the plan's design; their statistics are
 * close to the fixture's (what the design copies); rope_freqs is exact. */
static void test_weight_stats(void) {
    char out[600];
    tmp_path(out, sizeof out, "tiny-f32.gguf");
    mp_synth_params p = tiny_params(MP_TYPE_F32);
    mp_err err = {0};
    mp_synth_plan *plan = NULL;
    mp_gguf *ours = open_or_fail(out), *ref = fixture("f32");
    CHECK_STATUS(MP_OK, mp_synth_plan_init(&plan, &p, 1024, &err), &err);
    if (!ours || !ref || !plan) goto done;
    CHECK_INT(plan->n_tensors, mp_gguf_n_tensors(ours));
    for (int64_t i = 0; i < plan->n_tensors && i < mp_gguf_n_tensors(ours); i++) {
        const mp_synth_tensor *d = &plan->tensors[i];
        const mp_gguf_tensor *t = mp_gguf_tensor_at(ours, i);
        const mp_gguf_tensor *r = mp_gguf_find_tensor(ref, t->name);
        int64_t n, nr;
        double *x = tensor_f64(t, &n), *xr = r ? tensor_f64(r, &nr) : NULL;
        stats s = stats_of(x, n);
        CHECK_MSG(s.nonfinite == 0, "%s: %lld values not finite", t->name,
                  (long long)s.nonfinite);
        if (d->init == MP_SYNTH_ROPE_FREQS) {
            CHECK_MSG(r && n == nr && !memcmp(t->data, r->data, (size_t)t->nbytes),
                      "rope_freqs differs from the fixture's");
        } else if (d->init == MP_SYNTH_UNIFORM) {
            CHECK_MSG(s.min >= d->a && s.max <= d->b, "%s: [%g, %g] outside [%g, %g]", t->name,
                      s.min, s.max, d->a, d->b);
        } else {
            /* mean within 5 standard errors; std within 20% once there are
             * 256 values (the std of a std estimate is ~1/sqrt(2n) = 4%);
             * extremes within the table's 4.5 sigma */
            CHECK_MSG(fabs(s.mean - d->a) <= 5.0 * d->b / sqrt((double)n),
                      "%s: mean %g, design %g", t->name, s.mean, d->a);
            if (n >= 256)
                CHECK_MSG(s.std > 0.8 * d->b && s.std < 1.2 * d->b, "%s: std %g, design %g",
                          t->name, s.std, d->b);
            else
                CHECK_MSG(s.std > 0.6 * d->b && s.std < 1.5 * d->b, "%s: std %g, design %g",
                          t->name, s.std, d->b);
            CHECK_MSG(s.min >= d->a - 4.6 * d->b && s.max <= d->a + 4.6 * d->b,
                      "%s: range [%g, %g] beyond 4.6 sigma", t->name, s.min, s.max);
        }
        if (xr && n >= 16 && d->init != MP_SYNTH_ROPE_FREQS) {
            stats sr = stats_of(xr, nr);
            /* two sample means: 4 standard errors of their difference */
            CHECK_MSG(fabs(s.mean - sr.mean) <= 4.0 * sr.std * sqrt(2.0 / (double)n) + 1e-3,
                      "%s: mean %g, fixture %g", t->name, s.mean, sr.mean);
            CHECK_MSG(s.std > 0.7 * sr.std && s.std < 1.4 * sr.std, "%s: std %g, fixture %g",
                      t->name, s.std, sr.std);
        }
        free(x);
        free(xr);
    }
done:
    mp_synth_plan_free(plan);
    mp_gguf_free(ours);
    mp_gguf_free(ref);
}

static void test_split_and_v(void) {
    char out[600];
    mp_err err = {0};
    mp_synth_params p = tiny_params(MP_TYPE_Q8_0);
    p.split_experts = true;
    p.v_every_layer = true;
    CHECK_STATUS(MP_OK, mp_synth_write(tmp_path(out, sizeof out, "split.gguf"), &p, &err), &err);
    mp_gguf *g = open_or_fail(out);
    if (!g) return;
    CHECK_INT(90 + 4 + 1, mp_gguf_n_tensors(g)); /* +1 gate/up per layer, +1 attn_v */
    for (int l = 0; l < 4; l++) {
        char n[64];
        static const char *const split[] = {"ffn_gate_exps", "ffn_up_exps"};
        for (int k = 0; k < 2; k++) {
            snprintf(n, sizeof n, "blk.%d.%s.weight", l, split[k]);
            const mp_gguf_tensor *t = mp_gguf_find_tensor(g, n);
            CHECK_MSG(t && t->n_dims == 3 && t->ne[0] == 256 && t->ne[1] == 64 && t->ne[2] == 16 &&
                      t->type == MP_TYPE_Q8_0, "%s: missing or wrong shape", n);
        }
        snprintf(n, sizeof n, "blk.%d.ffn_gate_up_exps.weight", l);
        CHECK(mp_gguf_find_tensor(g, n) == NULL);
        snprintf(n, sizeof n, "blk.%d.attn_v.weight", l);
        const mp_gguf_tensor *v = mp_gguf_find_tensor(g, n);
        int64_t kv = l == 3 ? 1 * 128 : 2 * 64;
        CHECK_MSG(v && v->ne[0] == 256 && v->ne[1] == kv, "%s: missing or wrong shape", n);
    }
    /* the split pair holds the gate and up halves under their own names */
    const mp_gguf_tensor *ord0 = mp_gguf_find_tensor(g, "blk.0.ffn_gate_inp.scale");
    const mp_gguf_tensor *ord1 = mp_gguf_find_tensor(g, "blk.0.ffn_gate_exps.weight");
    const mp_gguf_tensor *ord2 = mp_gguf_find_tensor(g, "blk.0.ffn_up_exps.weight");
    const mp_gguf_tensor *ord3 = mp_gguf_find_tensor(g, "blk.0.ffn_down_exps.weight");
    CHECK(ord0 && ord1 && ord2 && ord3 && ord0->offset < ord1->offset &&
          ord1->offset < ord2->offset && ord2->offset < ord3->offset);
    mp_gguf_free(g);
    unlink(out);
}

static void test_layer_cut(void) {
    char out[600];
    mp_err err = {0};
    mp_synth_params p = tiny_params(MP_TYPE_F32);
    p.n_layer = 2;
    CHECK_STATUS(MP_OK, mp_synth_write(tmp_path(out, sizeof out, "cut.gguf"), &p, &err), &err);
    mp_gguf *g = open_or_fail(out);
    if (g) {
        CHECK_INT(2, key_u64(g, "gemma4.block_count"));
        int64_t k = mp_gguf_find_key(g, "gemma4.attention.head_count_kv");
        CHECK(k >= 0 && mp_gguf_arr_len(g, k) == 2 && mp_gguf_arr_type(g, k) == MP_GGUF_INT32);
        k = mp_gguf_find_key(g, "gemma4.attention.sliding_window_pattern");
        CHECK(k >= 0 && mp_gguf_arr_len(g, k) == 2 && mp_gguf_arr_type(g, k) == MP_GGUF_BOOL);
        /* two sliding layers: no global layer uses rope_freqs, so it is left out
         * (llama.cpp refuses unused tensors) */
        CHECK(mp_gguf_find_tensor(g, "rope_freqs.weight") == NULL);
        CHECK_INT(2 + 2 * 22, mp_gguf_n_tensors(g));
        CHECK(mp_gguf_find_tensor(g, "blk.1.layer_output_scale.weight") != NULL);
        CHECK(mp_gguf_find_tensor(g, "blk.2.attn_norm.weight") == NULL);
        /* the layers kept are the full model's, value for value */
        mp_gguf *full = open_or_fail(tmp_path(out, sizeof out, "tiny-f32.gguf"));
        const mp_gguf_tensor *a = mp_gguf_find_tensor(g, "blk.1.attn_q.weight");
        const mp_gguf_tensor *b = full ? mp_gguf_find_tensor(full, "blk.1.attn_q.weight") : NULL;
        CHECK(a && b && a->nbytes == b->nbytes && !memcmp(a->data, b->data, a->nbytes));
        mp_gguf_free(full);
        mp_gguf_free(g);
    }
    unlink(tmp_path(out, sizeof out, "cut.gguf"));
    p.n_layer = 5;
    CHECK_STATUS(MP_ERR_ARG, mp_synth_write(tmp_path(out, sizeof out, "cut5.gguf"), &p, &err),
                 &err);
    p.n_layer = -1;
    CHECK_STATUS(MP_ERR_ARG, mp_synth_write(out, &p, &err), &err);
    CHECK(access(out, F_OK) != 0);
}

static void test_errors(void) {
    char out[600], path[600];
    mp_err err = {0};
    mp_synth_params p = tiny_params(MP_TYPE_F32);
    tmp_path(out, sizeof out, "err.gguf");

    p.vocab_path = "/nonexistent-moeprune/vocab.gguf";
    CHECK_STATUS(MP_ERR_NOT_FOUND, mp_synth_write(out, &p, &err), &err);
    CHECK_MSG(strstr(err.msg, p.vocab_path) && strstr(err.msg, "--vocab"), "message: %s",
              err.msg);

    /* default vocabulary in an empty data folder */
    p.vocab_path = NULL;
    setenv("MOEPRUNE_DATA", tmpdir, 1);
    CHECK_STATUS(MP_ERR_NOT_FOUND, mp_synth_write(out, &p, &err), &err);
    snprintf(path, sizeof path, "%s/gemma4-tiny-vocab.gguf", tmpdir);
    CHECK_MSG(strstr(err.msg, path) && strstr(err.msg, "--vocab"), "message: %s", err.msg);
    unsetenv("MOEPRUNE_DATA");

    /* a GGUF without tokenizer is no vocabulary */
    mp_gguf_writer *w = NULL;
    tmp_path(path, sizeof path, "novocab.gguf");
    CHECK_STATUS(MP_OK, mp_gguf_writer_open(&w, path, true, &err), &err);
    CHECK_STATUS(MP_OK, mp_gguf_writer_kv_str(w, "general.architecture", "gemma4", &err), &err);
    CHECK_STATUS(MP_OK, mp_gguf_writer_finish(w, &err), &err);
    mp_gguf_writer_free(w);
    p.vocab_path = path;
    CHECK_STATUS(MP_ERR_NOT_FOUND, mp_synth_write(out, &p, &err), &err);
    unlink(path);
    p.vocab_path = NULL;

    p.preset = "gemma4-huge";
    CHECK_STATUS(MP_ERR_ARG, mp_synth_write(out, &p, &err), &err);
    CHECK_MSG(strstr(err.msg, "gemma4-tiny") && strstr(err.msg, "gemma4-26b-a4b"), "message: %s",
              err.msg);
    p.preset = NULL;
    CHECK_STATUS(MP_ERR_ARG, mp_synth_write(out, &p, &err), &err);
    p.preset = "gemma4-tiny";
    p.type = MP_TYPE_Q4_K;
    CHECK_STATUS(MP_ERR_ARG, mp_synth_write(out, &p, &err), &err);
    p.type = MP_TYPE_F32;
    CHECK(access(out, F_OK) != 0);

    /* an existing file stays unless overwrite */
    FILE *f = fopen(out, "wb");
    fputs("keep", f);
    fclose(f);
    p.overwrite = false;
    CHECK_STATUS(MP_ERR_ARG, mp_synth_write(out, &p, &err), &err);
    size_t n = 0;
    char *d = mp_test_read_file(out, &n);
    CHECK(d && n == 4 && !memcmp(d, "keep", 4));
    free(d);
    p.overwrite = true;
    CHECK_STATUS(MP_OK, mp_synth_write(out, &p, &err), &err);
    mp_gguf *g = open_or_fail(out);
    mp_gguf_free(g);
    unlink(out);
}

/* Every allocation failure is reported, leaks nothing (ASan) and leaves no
 * file behind. */
static void test_alloc_failures(void) {
    char out[600];
    mp_synth_params p = tiny_params(MP_TYPE_Q8_0);
    p.n_layer = 1;
    tmp_path(out, sizeof out, "oom.gguf");
    int files_before = count_files(tmpdir);
    mp_status s = MP_ERR_NOMEM;
    int k;
    for (k = 1; k < 2000 && s != MP_OK; k++) {
        mp_err err = {0};
        mp_malloc_fail_at(k);
        s = mp_synth_write(out, &p, &err);
        mp_malloc_fail_at(0);
        if (s != MP_OK) {
            CHECK_MSG(s == MP_ERR_NOMEM || s == MP_ERR_IO || s == MP_ERR_CHECK,
                      "allocation %d failed: %s (%s)", k, mp_status_name(s), err.msg);
            CHECK_MSG(count_files(tmpdir) == files_before, "allocation %d failed: file left", k);
        }
    }
    CHECK_MSG(s == MP_OK, "still failing after %d injected failures", k);
    printf("allocation failures: %d injected\n", k - 2);
    unlink(out);
}

/* The 26B-A4B plan, checked against the spec's shapes without writing it. */
static void test_26b_layout(void) {
    mp_synth_params p = {0};
    p.preset = "gemma4-26b-a4b";
    p.type = MP_TYPE_Q8_0;
    mp_err err = {0};
    mp_synth_plan *plan = NULL;
    CHECK_STATUS(MP_OK, mp_synth_plan_init(&plan, &p, 262144, &err), &err);
    if (!plan) return;
    CHECK_INT(30, plan->n_layer);
    CHECK_INT(3 + 25 * 22 + 5 * 21, plan->n_tensors);
    for (int64_t l = 0; l < 30; l++)
        CHECK_MSG(mp_synth_layer_swa(plan, l) == (l % 6 != 5), "layer %lld", (long long)l);
    static const struct {
        const char *name;
        int type;
        int64_t ne[3];
    } want[] = {
        {"token_embd.weight", MP_TYPE_Q8_0, {2816, 262144, 1}},
        {"output_norm.weight", MP_TYPE_F32, {2816, 1, 1}},
        {"rope_freqs.weight", MP_TYPE_F32, {256, 1, 1}},
        {"blk.0.attn_q.weight", MP_TYPE_Q8_0, {2816, 4096, 1}},
        {"blk.0.attn_k.weight", MP_TYPE_Q8_0, {2816, 2048, 1}},
        {"blk.0.attn_v.weight", MP_TYPE_Q8_0, {2816, 2048, 1}},
        {"blk.0.attn_q_norm.weight", MP_TYPE_F32, {256, 1, 1}},
        {"blk.0.attn_k_norm.weight", MP_TYPE_F32, {256, 1, 1}},
        {"blk.0.attn_output.weight", MP_TYPE_Q8_0, {4096, 2816, 1}},
        {"blk.5.attn_q.weight", MP_TYPE_Q8_0, {2816, 8192, 1}},
        {"blk.5.attn_k.weight", MP_TYPE_Q8_0, {2816, 1024, 1}},
        {"blk.5.attn_q_norm.weight", MP_TYPE_F32, {512, 1, 1}},
        {"blk.5.attn_k_norm.weight", MP_TYPE_F32, {512, 1, 1}},
        {"blk.5.attn_output.weight", MP_TYPE_Q8_0, {8192, 2816, 1}},
        {"blk.29.attn_q.weight", MP_TYPE_Q8_0, {2816, 8192, 1}},
        {"blk.28.attn_v.weight", MP_TYPE_Q8_0, {2816, 2048, 1}},
        {"blk.7.ffn_gate.weight", MP_TYPE_Q8_0, {2816, 2112, 1}},
        {"blk.7.ffn_up.weight", MP_TYPE_Q8_0, {2816, 2112, 1}},
        {"blk.7.ffn_down.weight", MP_TYPE_Q8_0, {2112, 2816, 1}},
        {"blk.7.ffn_gate_inp.weight", MP_TYPE_F32, {2816, 128, 1}},
        {"blk.7.ffn_gate_inp.scale", MP_TYPE_F32, {2816, 1, 1}},
        {"blk.7.ffn_gate_up_exps.weight", MP_TYPE_Q8_0, {2816, 1408, 128}},
        {"blk.7.ffn_down_exps.weight", MP_TYPE_Q8_0, {704, 2816, 128}},
        {"blk.7.ffn_down_exps.scale", MP_TYPE_F32, {128, 1, 1}},
        {"blk.7.layer_output_scale.weight", MP_TYPE_F32, {1, 1, 1}},
        {"blk.7.pre_ffw_norm_2.weight", MP_TYPE_F32, {2816, 1, 1}},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        const mp_synth_tensor *t = NULL;
        for (int64_t i = 0; i < plan->n_tensors && !t; i++)
            if (!strcmp(plan->tensors[i].name, want[k].name)) t = &plan->tensors[i];
        CHECK_MSG(t, "%s: not planned", want[k].name);
        if (!t) continue;
        CHECK_MSG(t->type == want[k].type && t->ne[0] == want[k].ne[0] &&
                  t->ne[1] == want[k].ne[1] && t->ne[2] == want[k].ne[2] && t->ne[3] == 1,
                  "%s: %s {%lld, %lld, %lld}", t->name, mp_type_name(t->type),
                  (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2]);
        if (!strcmp(t->name, "rope_freqs.weight"))
            CHECK_MSG(t->init == MP_SYNTH_ROPE_FREQS && t->a == 64.0f, "rope_freqs: %g ones",
                      t->a);
    }
    for (int64_t i = 0; i < plan->n_tensors; i++) {
        const char *n = plan->tensors[i].name;
        for (int l = 5; l < 30; l += 6) {
            char v[64];
            snprintf(v, sizeof v, "blk.%d.attn_v.weight", l);
            CHECK_MSG(strcmp(n, v) != 0, "%s planned on a global layer", n);
        }
    }
    /* bytes of the two-layer Q8_0 file's data (~2.5 GB) */
    mp_synth_plan_free(plan);
    p.n_layer = 2;
    CHECK_STATUS(MP_OK, mp_synth_plan_init(&plan, &p, 262144, &err), &err);
    if (!plan) return;
    uint64_t bytes = 0;
    for (int64_t i = 0; i < plan->n_tensors; i++) {
        size_t rb = 0;
        CHECK_STATUS(MP_OK, mp_type_row_bytes(plan->tensors[i].type, plan->tensors[i].ne[0], &rb,
                                              &err), &err);
        bytes += rb * (uint64_t)(plan->tensors[i].ne[1] * plan->tensors[i].ne[2]);
    }
    CHECK_MSG(bytes > 2400000000ull && bytes < 2600000000ull, "%llu bytes",
              (unsigned long long)bytes);
    mp_synth_plan_free(plan);
}

/* The 26B metadata, written without tensors, against the real vocabulary
 * file (which carries the 26B-A4B hyper-parameters too). */
static void test_26b_metadata(void) {
    char vpath[512], out[600];
    snprintf(vpath, sizeof vpath, "%s/data/gemma4-vocab.gguf", MP_SOURCE_DIR);
    if (access(vpath, R_OK) != 0) {
        printf("skipping the 26B metadata check: %s absent\n", vpath);
        return;
    }
    mp_synth_params p = {0};
    p.preset = "gemma4-26b-a4b";
    p.type = MP_TYPE_Q8_0;
    mp_err err = {0};
    mp_synth_plan *plan = NULL;
    mp_gguf_writer *w = NULL;
    mp_gguf *vocab = open_or_fail(vpath);
    if (!vocab) return;
    CHECK_STATUS(MP_OK, mp_synth_plan_init(&plan, &p, 262144, &err), &err);
    CHECK_STATUS(MP_OK, mp_gguf_writer_open(&w, tmp_path(out, sizeof out, "kv26.gguf"), true,
                                            &err), &err);
    if (plan && w) {
        CHECK_STATUS(MP_OK, mp_synth_write_kv(plan, vocab, w, &err), &err);
        CHECK_STATUS(MP_OK, mp_gguf_writer_finish(w, &err), &err);
    }
    mp_gguf_writer_free(w);
    mp_gguf *g = open_or_fail(out);
    if (g) {
        for (int64_t i = 0; i < mp_gguf_n_kv(vocab); i++) {
            const char *k = mp_gguf_key(vocab, i);
            if (!strcmp(k, "general.name") || !strcmp(k, "gemma4.attention.head_count_kv"))
                continue;
            int64_t j = mp_gguf_find_key(g, k);
            CHECK_MSG(j >= 0 && kv_raw_equal(g, j, vocab, i), "%s differs from %s", k, vpath);
        }
        int64_t j = mp_gguf_find_key(g, "gemma4.attention.head_count_kv");
        CHECK(j >= 0 && mp_gguf_arr_type(g, j) == MP_GGUF_INT32 && mp_gguf_arr_len(g, j) == 30);
        for (uint64_t l = 0; j >= 0 && l < 30; l++) {
            int64_t v = 0;
            CHECK_STATUS(MP_OK, mp_gguf_get_int(g, j, l, &v, &err), &err);
            CHECK_INT(l % 6 == 5 ? 2 : 8, v);
        }
        double f = 0;
        CHECK_STATUS(MP_OK, mp_gguf_key_float(g, "gemma4.rope.freq_base", &f, &err), &err);
        CHECK_NEAR(1e6, f, 0);
        CHECK_STATUS(MP_OK, mp_gguf_key_float(g, "gemma4.rope.freq_base_swa", &f, &err), &err);
        CHECK_NEAR(1e4, f, 0);
        CHECK_STATUS(MP_OK, mp_gguf_key_float(g, "gemma4.final_logit_softcapping", &f, &err),
                     &err);
        CHECK_NEAR(30, f, 0);
        CHECK_INT(512, key_u64(g, "gemma4.rope.dimension_count"));
        CHECK_INT(256, key_u64(g, "gemma4.rope.dimension_count_swa"));
        CHECK_INT(7, key_u64(g, "general.file_type"));
        mp_gguf_free(g);
    }
    unlink(out);
    mp_synth_plan_free(plan);
    mp_gguf_free(vocab);
}

static void test_vocab_extract(void) {
    char out[600], ref[512];
    mp_err err = {0};
    mp_gguf *src = fixture("f32");
    if (!src) return;
    tmp_path(out, sizeof out, "vocab.gguf");
    CHECK_STATUS(MP_OK, mp_vocab_extract(src, out, false, &err), &err);
    mp_gguf *g = open_or_fail(out);
    if (g) {
        CHECK_INT(0, mp_gguf_n_tensors(g));
        /* the source's keys minus general.name, in order, byte for byte */
        int64_t j = 0;
        for (int64_t i = 0; i < mp_gguf_n_kv(src); i++) {
            if (!strcmp(mp_gguf_key(src, i), "general.name")) continue;
            CHECK_MSG(j < mp_gguf_n_kv(g) && kv_raw_equal(g, j, src, i), "key %s",
                      mp_gguf_key(src, i));
            j++;
        }
        CHECK_INT(j, mp_gguf_n_kv(g));
        mp_gguf_free(g);
    }
    /* data/gemma4-tiny-vocab.gguf is this file (see data/README.md) */
    snprintf(ref, sizeof ref, "%s/data/gemma4-tiny-vocab.gguf", MP_SOURCE_DIR);
    CHECK_MSG(files_equal(out, ref), "%s is not `moeprune vocab` of the tiny fixture", ref);
    CHECK_STATUS(MP_ERR_ARG, mp_vocab_extract(src, out, false, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_vocab_extract(src, mp_gguf_path(src), true, &err), &err);
    /* no tokenizer: nothing to extract */
    mp_gguf *novocab = open_or_fail(out);
    char out2[600];
    if (novocab) {
        mp_gguf_writer *w = NULL;
        CHECK_STATUS(MP_OK, mp_gguf_writer_open(&w, tmp_path(out2, sizeof out2, "arch.gguf"),
                                                true, &err), &err);
        CHECK_STATUS(MP_OK, mp_gguf_writer_kv_str(w, "general.architecture", "gemma4", &err),
                     &err);
        CHECK_STATUS(MP_OK, mp_gguf_writer_finish(w, &err), &err);
        mp_gguf_writer_free(w);
        mp_gguf *a = open_or_fail(out2);
        if (a) CHECK_STATUS(MP_ERR_NOT_FOUND, mp_vocab_extract(a, out, true, &err), &err);
        mp_gguf_free(a);
        unlink(out2);
        mp_gguf_free(novocab);
    }
    unlink(out);
    mp_gguf_free(src);
}

static void test_presets(void) {
    const char *const *names = mp_synth_presets();
    int n = 0;
    for (; names[n]; n++) {
        const mp_synth_hparams *hp = mp_synth_hparams_find(names[n]);
        CHECK_MSG(hp && !strcmp(hp->name, names[n]), "preset %s", names[n]);
    }
    CHECK_INT(2, n);
    CHECK(mp_synth_hparams_find("nope") == NULL);
    /* rows that do not fill whole blocks fall back to F16 */
    CHECK_INT(MP_TYPE_Q8_0, mp_synth_matrix_type(MP_TYPE_Q8_0, 704));
    CHECK_INT(MP_TYPE_F16, mp_synth_matrix_type(MP_TYPE_Q8_0, 100));
    CHECK_INT(MP_TYPE_BF16, mp_synth_matrix_type(MP_TYPE_BF16, 7));
    CHECK_INT(MP_TYPE_F32, mp_synth_matrix_type(MP_TYPE_F32, 7));
    CHECK(mp_synth_hparams_find(NULL) == NULL);
    CHECK(!strcmp(mp_synth_init_name(MP_SYNTH_UNIFORM), "UNIFORM"));
    CHECK(!strcmp(mp_synth_init_name(MP_SYNTH_INIT_COUNT), "?"));
}

int main(void) {
    unsetenv("MOEPRUNE_DATA"); /* the build's data folder */
    if (!mp_test_tmpdir(tmpdir, sizeof tmpdir, "synth")) {
        fprintf(stderr, "cannot create a temporary folder\n");
        return 1;
    }
    test_presets();
    test_tiny_f32_matches_fixture();
    test_weight_stats();
    test_layer_cut();
    test_tiny_variants();
    test_determinism();
    test_threads_and_chunks();
    test_split_and_v();
    test_errors();
    test_alloc_failures();
    test_26b_layout();
    test_26b_metadata();
    test_vocab_extract();
    remove_tmpdir();
    return mp_test_end("test_synth");
}

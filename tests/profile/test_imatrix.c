/* test_imatrix.c — the importance matrix (src/profile/imatrix.c) on the tiny
 * F32 fixture, for the tokens of its three reference prompts, against
 * computations that share no code with it:
 *  - every entry against a plain accumulation made by a matmul hook of this
 *    test on a second context over the same tokens (same engine, so the same
 *    float inputs, summed in the same order): counts and sums exactly equal;
 *  - blk.0.attn_q/k/v against their input recomputed in float64 from the
 *    file's weights alone (token embedding * sqrt(n_embd), RMS norm times
 *    attn_norm): relative 1e-5 per column (the engine works in float32, with
 *    a relative error near 1e-7 on these values);
 *  - counts: dense weights saw every token; expert slab e of a layer saw as
 *    many rows as the profiler counted selections of e (all ranks): k per
 *    token in all;
 *  - the file is llama.cpp's layout, read back with the GGUF reader:
 *    general.type, imatrix.datasets (STRING array), imatrix.chunk_count and
 *    imatrix.chunk_size (UINT32), and for every 2-D or 3-D weight of the layers
 *    "<w>.in_sum2" F32 {n_in} or {n_in, n_expert} and "<w>.counts" F32 {1} or
 *    {1, n_expert}, in name order, holding the sums rounded to F32;
 *  - another thread count gives the same bits; F64 save/load keeps every bit;
 *    two halves merged equal the whole;
 *  - broken files, merges with another model or shape, an unwritable path and
 *    allocation failures are refused cleanly, naming what is wrong. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "testutil.h"
#include "util/util.h"

#define MAX_TOK   32
#define N_PROMPT  3
#define MAX_BRUTE 128

/* ------------------------------------------------------------------ brute */

/* The test's own accumulation: a list searched by name. */
typedef struct brute_entry {
    char name[MP_GGUF_MAX_NAME + 1];
    int64_t n_in, n_slab;
    double *sum2;  /* [n_slab][n_in] */
    double *count; /* [n_slab] */
} brute_entry;

typedef struct brute {
    brute_entry e[MAX_BRUTE];
    int n;
    bool overflow;
} brute;

static mp_status brute_hook(const mp_matmul_hook_data *d, void *user) {
    brute *b = user;
    if (!d->tensor || strncmp(d->tensor, "blk.", 4)) return MP_OK; /* llama-imatrix's rule */
    brute_entry *e = NULL;
    for (int i = 0; i < b->n && !e; i++)
        if (!strcmp(b->e[i].name, d->tensor)) e = &b->e[i];
    if (!e) {
        if (b->n == MAX_BRUTE) {
            b->overflow = true;
            return MP_OK;
        }
        e = &b->e[b->n++];
        snprintf(e->name, sizeof e->name, "%s", d->tensor);
        e->n_in = d->n_in;
        e->n_slab = d->n_slab;
        e->sum2 = calloc((size_t)(d->n_in * d->n_slab), sizeof(double));
        e->count = calloc((size_t)d->n_slab, sizeof(double));
    }
    for (int64_t t = 0; t < d->n_tokens; t++)
        for (int64_t j = 0; j < d->n_in; j++) {
            double v = d->x[t * d->ldx + j];
            e->sum2[d->slab * d->n_in + j] += v * v;
        }
    e->count[d->slab] += (double)d->n_tokens;
    return MP_OK;
}

static void brute_free(brute *b) {
    for (int i = 0; i < b->n; i++) {
        free(b->e[i].sum2);
        free(b->e[i].count);
    }
}

/* ---------------------------------------------------------------- helpers */

/* Runs the prompts [p0, p1) on a fresh cache each. */
static void run_prompts(mp_context *c, mp_token ids[][MAX_TOK], const int64_t *n, int p0, int p1,
                        mp_profiler *prof) {
    mp_err err = {0};
    for (int p = p0; p < p1; p++) {
        mp_context_truncate(c, 0);
        CHECK_STATUS(MP_OK, mp_context_eval(c, ids[p], n[p], MP_LOGITS_NONE, NULL, &err), &err);
        if (prof) mp_profiler_add_tokens(prof, n[p]);
    }
}

/* A hand-made imatrix-like file: one tensor pair, options to break it. */
typedef struct bad_file {
    const char *what;   /* what is broken, and the message must say it */
    const char *expect; /* substring of the error message */
    int sum_type, cnt_type;
    int64_t cnt_n; /* elements of counts (2 is right) */
    bool no_sum, no_cnt;
    float value; /* written as in_sum2[1] */
    bool datasets_u32;
} bad_file;

static void write_bad(const char *path, const bad_file *b) {
    mp_err err = {0};
    mp_gguf_writer *w = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_writer_open(&w, path, true, &err), &err);
    if (!w) return;
    const char *ds[1] = {"x.txt"};
    mp_status st = mp_gguf_writer_kv_str(w, "general.type", "imatrix", &err);
    if (!st && b->datasets_u32) st = mp_gguf_writer_kv_u32(w, "imatrix.datasets", 7, &err);
    if (!st && !b->datasets_u32) st = mp_gguf_writer_kv_arr_str(w, "imatrix.datasets", ds, 1, &err);
    if (!st) st = mp_gguf_writer_kv_u32(w, "imatrix.chunk_count", 1, &err);
    if (!st) st = mp_gguf_writer_kv_u32(w, "imatrix.chunk_size", 8, &err);
    const int64_t ne_s[2] = {3, 2}, ne_c[2] = {1, b->cnt_n};
    if (!st && !b->no_sum)
        st =
            mp_gguf_writer_add_tensor(w, "blk.0.attn_q.weight.in_sum2", b->sum_type, 2, ne_s, &err);
    if (!st && !b->no_cnt)
        st = mp_gguf_writer_add_tensor(w, "blk.0.attn_q.weight.counts", b->cnt_type, 2, ne_c, &err);
    const float sums[6] = {1, b->value, 3, 4, 5, 6};
    if (!st && !b->no_sum) {
        uint8_t buf[24];
        for (int i = 0; i < 6; i++) {
            if (b->sum_type == MP_TYPE_F16)
                mp_store_u16(buf + 2 * i, mp_f32_to_f16(sums[i]));
            else
                memcpy(buf + 4 * i, &sums[i], 4);
        }
        st = mp_gguf_writer_write_data(w, buf, b->sum_type == MP_TYPE_F16 ? 12 : 24, &err);
    }
    if (!st && !b->no_cnt) {
        float cnt[4] = {8, 8, 8, 8};
        st = mp_gguf_writer_write_data(w, cnt, (size_t)b->cnt_n * 4, &err);
    }
    if (!st) st = mp_gguf_writer_finish(w, &err);
    CHECK_STATUS(MP_OK, st, &err);
    mp_gguf_writer_free(w);
}

/* ------------------------------------------------------------------- main */

static void check_layer0(const mp_model *m, const mp_imatrix *im, mp_token ids[][MAX_TOK],
                         const int64_t *n) {
    const mp_gguf *g = mp_model_gguf(m);
    const mp_gguf_tensor *emb = mp_gguf_find_tensor(g, "token_embd.weight");
    const mp_gguf_tensor *nw = mp_gguf_find_tensor(g, "blk.0.attn_norm.weight");
    double eps = 0;
    CHECK(emb && nw && emb->type == MP_TYPE_F32 && nw->type == MP_TYPE_F32);
    CHECK(mp_gguf_key_float(g, "gemma4.attention.layer_norm_rms_epsilon", &eps, NULL) == MP_OK);
    const mp_imatrix_entry *q = mp_imatrix_find(im, "blk.0.attn_q.weight");
    const mp_imatrix_entry *k = mp_imatrix_find(im, "blk.0.attn_k.weight");
    const mp_imatrix_entry *v = mp_imatrix_find(im, "blk.0.attn_v.weight");
    CHECK(q && k && v);
    if (!emb || !nw || !q || !k || !v) return;
    const int64_t E = emb->ne[0];
    double *want = calloc((size_t)E, sizeof *want), *x = calloc((size_t)E, sizeof *x);
    for (int p = 0; p < N_PROMPT; p++)
        for (int64_t t = 0; t < n[p]; t++) {
            double ss = 0;
            for (int64_t i = 0; i < E; i++) {
                x[i] = mp_load_f32((const uint8_t *)emb->data + 4 * (ids[p][t] * E + i)) *
                       sqrt((double)E);
                ss += x[i] * x[i];
            }
            double r = 1.0 / sqrt(ss / (double)E + eps);
            for (int64_t i = 0; i < E; i++) {
                double y = x[i] * r * mp_load_f32((const uint8_t *)nw->data + 4 * i);
                want[i] += y * y;
            }
        }
    double worst = 0;
    for (int64_t i = 0; i < E; i++) {
        double rel = fabs(q->sum2[i] - want[i]) / want[i];
        worst = rel > worst ? rel : worst;
        CHECK_MSG(rel < 1e-5, "blk.0.attn_q column %lld: %.9g, float64 recomputation %.9g",
                  (long long)i, q->sum2[i], want[i]);
        CHECK(k->sum2[i] == q->sum2[i] && v->sum2[i] == q->sum2[i]);
    }
    printf("blk.0.attn_q in_sum2 vs float64 recomputation: worst relative difference %.2e\n",
           worst);
    free(want);
    free(x);
}

static void check_counts(const mp_model *m, const mp_imatrix *im, const mp_stats *s,
                         double tokens) {
    char name[128];
    int64_t dense = 0, slabs = 0;
    for (int64_t i = 0; i < im->n_entry; i++) {
        const mp_imatrix_entry *e = &im->entries[i];
        if (e->n_slab != 1) continue;
        dense++;
        CHECK_MSG(e->count[0] == tokens, "%s: %g rows for %g tokens", e->name, e->count[0], tokens);
    }
    for (int64_t l = 0; l < mp_model_n_layer(m); l++) {
        const int64_t x = mp_model_n_expert(m, l), k = mp_model_n_expert_used(m);
        if (!x) continue;
        const mp_stats_cell *c = mp_stats_cell_at(s, l, 0);
        for (int w = 0; w < 2; w++) {
            snprintf(name, sizeof name, "blk.%lld.%s", (long long)l,
                     w ? "ffn_down_exps.weight" : "ffn_gate_up_exps.weight");
            const mp_imatrix_entry *e = mp_imatrix_find(im, name);
            CHECK_MSG(e && e->n_slab == x, "%s: missing or not %lld slabs", name, (long long)x);
            if (!e || e->n_slab != x) continue;
            double all = 0;
            for (int64_t ex = 0; ex < x; ex++) {
                double sel = 0;
                for (int64_t r = 0; r < k; r++) sel += c->count[r * x + ex];
                CHECK_MSG(e->count[ex] == sel, "%s slab %lld: %g rows, %g selections", name,
                          (long long)ex, e->count[ex], sel);
                all += e->count[ex];
                slabs++;
            }
            CHECK(all == tokens * (double)k);
        }
    }
    CHECK(dense >= 7 * mp_model_n_layer(m) - 1); /* q, k, (v), o, gate, up, down, router */
    CHECK(slabs > 0);
}

/* The saved F32 file, read with the GGUF reader. */
static void check_file(const char *path, const mp_model *m, const mp_imatrix *im) {
    mp_err err = {0};
    mp_gguf *g = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_open(&g, path, &err), &err);
    if (!g) return;
    char *type = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_key_strdup(g, "general.type", &type, &err), &err);
    CHECK(type && !strcmp(type, "imatrix"));
    mp_free(type);
    int64_t kd = mp_gguf_find_key(g, "imatrix.datasets");
    CHECK(kd >= 0 && mp_gguf_kv_type(g, kd) == MP_GGUF_ARRAY &&
          mp_gguf_arr_type(g, kd) == MP_GGUF_STRING && mp_gguf_arr_len(g, kd) == 2);
    const char *keys[2] = {"imatrix.chunk_count", "imatrix.chunk_size"};
    const uint64_t vals[2] = {N_PROMPT, MAX_TOK};
    for (int i = 0; i < 2; i++) {
        int64_t ki = mp_gguf_find_key(g, keys[i]);
        uint64_t v = 0;
        CHECK_MSG(ki >= 0 && mp_gguf_kv_type(g, ki) == MP_GGUF_UINT32, "%s is not UINT32", keys[i]);
        CHECK(mp_gguf_key_uint(g, keys[i], &v, NULL) == MP_OK && v == vals[i]);
    }
    /* every 2-D/3-D weight of the layers, and nothing else, in name order */
    const mp_gguf *mg = mp_model_gguf(m);
    int64_t n_weights = 0;
    char name[128];
    for (int64_t i = 0; i < mp_gguf_n_tensors(mg); i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(mg, i);
        if (strncmp(t->name, "blk.", 4) || t->n_dims < 2) continue;
        n_weights++;
        const int64_t n_slab = t->n_dims == 3 ? t->ne[2] : 1;
        const mp_imatrix_entry *e = mp_imatrix_find(im, t->name);
        snprintf(name, sizeof name, "%s.in_sum2", t->name);
        const mp_gguf_tensor *s = mp_gguf_find_tensor(g, name);
        snprintf(name, sizeof name, "%s.counts", t->name);
        const mp_gguf_tensor *c = mp_gguf_find_tensor(g, name);
        CHECK_MSG(s && c && e, "%s: no in_sum2/counts in the file", t->name);
        if (!s || !c || !e) continue;
        CHECK_MSG(s->type == MP_TYPE_F32 && c->type == MP_TYPE_F32, "%s: not F32", t->name);
        CHECK_MSG(s->n_dims == (n_slab > 1 ? 2u : 1u) && s->ne[0] == t->ne[0] &&
                      s->ne[1] == n_slab && c->n_dims == s->n_dims && c->ne[0] == 1 &&
                      c->ne[1] == n_slab,
                  "%s: in_sum2 %u dims {%lld, %lld}, counts %u dims {%lld, %lld}", t->name,
                  s->n_dims, (long long)s->ne[0], (long long)s->ne[1], c->n_dims,
                  (long long)c->ne[0], (long long)c->ne[1]);
        bool eq = s->type == MP_TYPE_F32 && mp_tensor_nelements(s) == e->n_in * e->n_slab;
        for (int64_t j = 0; eq && j < e->n_in * e->n_slab; j++)
            eq = mp_load_f32((const uint8_t *)s->data + 4 * j) == (float)e->sum2[j];
        for (int64_t j = 0; eq && j < e->n_slab; j++)
            eq = mp_load_f32((const uint8_t *)c->data + 4 * j) == (float)e->count[j];
        CHECK_MSG(eq, "%s: the file's values are not the sums rounded to F32", t->name);
    }
    CHECK_INT(2 * n_weights, mp_gguf_n_tensors(g));
    for (int64_t i = 0; i + 1 < mp_gguf_n_tensors(g); i += 2) {
        const char *a = mp_gguf_tensor_at(g, i)->name, *b = mp_gguf_tensor_at(g, i + 1)->name;
        size_t la = strlen(a);
        CHECK_MSG(la > 8 && !strcmp(a + la - 8, ".in_sum2") && !strncmp(a, b, la - 8) &&
                      !strcmp(b + la - 8, ".counts"),
                  "tensors %lld, %lld: '%s', '%s' are not a pair", (long long)i, (long long)i + 1,
                  a, b);
        if (i + 2 < mp_gguf_n_tensors(g))
            CHECK_MSG(strcmp(a, mp_gguf_tensor_at(g, i + 2)->name) < 0, "'%s' out of order", a);
    }
    mp_gguf_free(g);
}

static void check_errors(const char *dir, const mp_imatrix *im, const char *model_path) {
    mp_err err = {0};
    char p[600], q[700];
    mp_imatrix *bad = NULL, *cp = NULL;
    /* writing: a missing folder, an existing file, an empty matrix, overflow */
    snprintf(p, sizeof p, "%s/missing/im.gguf", dir);
    CHECK_STATUS(MP_ERR_IO, mp_imatrix_save(im, p, false, false, &err), &err);
    CHECK(strstr(err.msg, p) != NULL && access(p, F_OK) != 0);
    snprintf(p, sizeof p, "%s/im.gguf", dir);
    CHECK_STATUS(MP_ERR_ARG, mp_imatrix_save(im, p, false, false, &err), &err);
    CHECK(strstr(err.msg, "exists") != NULL);
    CHECK_STATUS(MP_OK, mp_imatrix_create(&bad, NULL, &err), &err);
    snprintf(q, sizeof q, "%s/empty.gguf", dir);
    CHECK_STATUS(MP_ERR_ARG, mp_imatrix_save(bad, q, false, false, &err), &err);
    CHECK(access(q, F_OK) != 0);
    CHECK_STATUS(MP_OK, mp_imatrix_add(bad, "blk.0.x.weight", 4, 1, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_imatrix_add(bad, "blk.0.x.weight", 4, 1, &err), &err);
    CHECK_STATUS(MP_ERR_ARG,
                 mp_imatrix_add(bad, "blk.0.a_name_that_is_far_too_long_for_ggml_tensors.weight", 4,
                                1, &err),
                 &err);
    bad->entries[0].count[0] = 1;
    bad->entries[0].sum2[2] = 1e39; /* beyond F32 */
    CHECK_STATUS(MP_ERR_CHECK, mp_imatrix_save(bad, q, false, false, &err), &err);
    CHECK(strstr(err.msg, "blk.0.x.weight") && strstr(err.msg, "column 2") && access(q, F_OK));
    CHECK_STATUS(MP_OK, mp_imatrix_save(bad, q, false, true, &err), &err); /* fits F64 */
    mp_imatrix_free(bad);
    bad = NULL;

    /* reading: a model is not an imatrix; hand-made broken files */
    CHECK_STATUS(MP_ERR_FORMAT, mp_imatrix_load(&bad, model_path, &err), &err);
    CHECK(strstr(err.msg, "not an imatrix file") && strstr(err.msg, model_path));
    const bad_file cases[] = {
        {"good", NULL, MP_TYPE_F32, MP_TYPE_F32, 2, false, false, 2, false},
        {"no counts", "has no 'blk.0.attn_q.weight.counts'", MP_TYPE_F32, MP_TYPE_F32, 2, false,
         true, 2, false},
        {"no sums", "has no 'blk.0.attn_q.weight.in_sum2'", MP_TYPE_F32, MP_TYPE_F32, 2, true,
         false, 2, false},
        {"counts of 3", "blk.0.attn_q.weight.counts' has 3 elements", MP_TYPE_F32, MP_TYPE_F32, 3,
         false, false, 2, false},
        {"F16 sums", "in_sum2' is F16", MP_TYPE_F16, MP_TYPE_F32, 2, false, false, 2, false},
        {"negative", "in_sum2'[1] = -2", MP_TYPE_F32, MP_TYPE_F32, 2, false, false, -2, false},
        {"NaN", "in_sum2'[1] = nan", MP_TYPE_F32, MP_TYPE_F32, 2, false, false, NAN, false},
        {"no tensors", "empty imatrix", MP_TYPE_F32, MP_TYPE_F32, 2, true, true, 2, false},
        {"datasets", "imatrix.datasets is UINT32", MP_TYPE_F32, MP_TYPE_F32, 2, false, false, 2,
         true},
    };
    snprintf(q, sizeof q, "%s/bad.gguf", dir);
    for (size_t i = 0; i < MP_ARRAY_LEN(cases); i++) {
        write_bad(q, &cases[i]);
        bad = NULL;
        mp_status st = mp_imatrix_load(&bad, q, &err);
        if (!cases[i].expect) {
            CHECK_STATUS(MP_OK, st, &err);
            CHECK(bad && bad->n_entry == 1 && bad->entries[0].n_slab == 2 &&
                  bad->entries[0].sum2[4] == 5 && bad->n_dataset == 1 && bad->chunk_size == 8);
            mp_imatrix_free(bad);
            continue;
        }
        CHECK_MSG(st == MP_ERR_FORMAT && strstr(err.msg, cases[i].expect) && strstr(err.msg, q),
                  "%s: got %s '%s'", cases[i].what, mp_status_name(st), err.msg);
        if (st == MP_OK) mp_imatrix_free(bad); /* only when the check above failed */
    }

    /* merging: another shape or another model is refused, dst unchanged */
    CHECK_STATUS(MP_OK, mp_imatrix_load(&cp, p, &err), &err);
    CHECK_STATUS(MP_OK, mp_imatrix_create(&bad, NULL, &err), &err);
    if (cp && bad) {
        CHECK_STATUS(MP_OK, mp_imatrix_add(bad, "blk.1.ffn_down_exps.weight", 64, 15, &err), &err);
        bad->entries[0].count[0] = 1;
        CHECK_STATUS(MP_ERR_CHECK, mp_imatrix_merge(cp, bad, &err), &err);
        CHECK(strstr(err.msg, "blk.1.ffn_down_exps.weight") && strstr(err.msg, "16 slabs"));
        CHECK(mp_test_imatrix_same(cp, im, 1e-7));
        mp_imatrix_free(bad);
        bad = NULL;
        CHECK_STATUS(MP_OK, mp_imatrix_create(&bad, NULL, &err), &err);
        mp_free(bad->model_sha256);
        bad->model_sha256 = mp_strdup("0123456789abcdef0123");
        CHECK_STATUS(MP_ERR_CHECK, mp_imatrix_merge(cp, bad, &err), &err);
        CHECK(strstr(err.msg, "sha256") != NULL);
    }
    mp_imatrix_free(bad);
    mp_imatrix_free(cp);

    /* allocation failures in load and save: reported, no leak, no file */
    int fails = 0;
    snprintf(q, sizeof q, "%s/nomem.gguf", dir);
    for (long k = 1; k < 100000; k++) {
        mp_malloc_fail_at(k);
        mp_status st = mp_imatrix_load(&cp, p, &err);
        mp_status st2 = st ? MP_OK : mp_imatrix_save(cp, q, true, false, &err);
        mp_malloc_fail_at(0);
        if (st == MP_OK) mp_imatrix_free(cp);
        if (st == MP_OK && st2 == MP_OK) break;
        fails++;
        CHECK_STATUS(MP_ERR_NOMEM, st ? st : st2, &err);
        if (st2) CHECK(access(q, F_OK) != 0);
    }
    CHECK(fails > 10);
    unlink(q);
}

int main(void) {
    char path[512], dir[256], p[600], half[600];
    char ids_path[512];
    mp_err err = {0};
    CHECK(mp_test_tmpdir(dir, sizeof dir, "imatrix") != NULL);
    mp_test_data(path, sizeof path, "gemma4-tiny-a/tiny-a-f32.gguf");
    mp_model *m = NULL;
    CHECK_STATUS(MP_OK, mp_model_load(&m, path, &err), &err);
    if (!m) return mp_test_end("test_imatrix");
    mp_token ids[N_PROMPT][MAX_TOK];
    int64_t n[N_PROMPT];
    double tokens = 0;
    for (int pr = 0; pr < N_PROMPT; pr++) {
        char rel[128];
        snprintf(rel, sizeof rel, "gemma4-tiny-a/tiny-a-f32.ref/prompt%d.tokens.txt", pr);
        n[pr] = mp_test_read_ids(mp_test_data(ids_path, sizeof ids_path, rel), ids[pr], MAX_TOK);
        CHECK(n[pr] > 4);
        tokens += (double)n[pr];
    }
    mp_context *c1 = NULL, *c2 = NULL, *c3 = NULL;
    mp_context_params cp = mp_context_default_params();
    cp.n_ctx = MAX_TOK;
    cp.n_threads = 1;
    CHECK_STATUS(MP_OK, mp_context_init(&c1, m, cp, &err), &err);
    cp.n_threads = 2;
    CHECK_STATUS(MP_OK, mp_context_init(&c2, m, cp, &err), &err);
    cp.n_threads = 3;
    CHECK_STATUS(MP_OK, mp_context_init(&c3, m, cp, &err), &err);
    const char *cls[1] = {"all"};
    mp_profiler *prof = NULL;
    mp_imatrix *im = NULL, *im3 = NULL, *im_b = NULL;
    CHECK_STATUS(MP_OK, mp_profiler_init(&prof, m, cls, 1, &err), &err);
    CHECK_STATUS(MP_OK, mp_imatrix_create(&im, m, &err), &err);
    CHECK_STATUS(MP_OK, mp_imatrix_create(&im3, m, &err), &err);
    CHECK_STATUS(MP_OK, mp_imatrix_create(&im_b, m, &err), &err);
    if (!c1 || !c2 || !c3 || !prof || !im || !im3 || !im_b) return mp_test_end("test_imatrix");
    CHECK_STATUS(MP_OK, mp_profiler_attach(prof, c1, &err), &err);
    CHECK_STATUS(MP_OK, mp_imatrix_attach(im, c1, &err), &err);
    CHECK_STATUS(MP_OK, mp_imatrix_add_dataset(im, "prompts", &err), &err);
    CHECK_STATUS(MP_OK, mp_imatrix_add_dataset(im, "more", &err), &err);
    CHECK_STATUS(MP_OK, mp_imatrix_add_dataset(im, "prompts", &err), &err);
    CHECK_INT(2, im->n_dataset);
    im->chunk_size = MAX_TOK;

    /* the first two prompts, a snapshot of that half (F64), then the third */
    snprintf(half, sizeof half, "%s/half.gguf", dir);
    run_prompts(c1, ids, n, 0, 2, prof);
    im->chunk_count = 2;
    CHECK_STATUS(MP_OK, mp_imatrix_save(im, half, false, true, &err), &err);
    run_prompts(c1, ids, n, 2, N_PROMPT, prof);
    im->chunk_count = N_PROMPT;

    /* the test's own accumulation over the same tokens: bit for bit */
    brute b = {.n = 0};
    CHECK_STATUS(MP_OK, mp_context_set_matmul_hook(c2, brute_hook, &b, &err), &err);
    run_prompts(c2, ids, n, 0, N_PROMPT, NULL);
    CHECK(!b.overflow);
    int64_t n_seen = 0;
    for (int64_t i = 0; i < im->n_entry; i++) n_seen += mp_test_imatrix_seen(&im->entries[i]);
    CHECK_INT(b.n, n_seen);
    for (int i = 0; i < b.n; i++) {
        const brute_entry *x = &b.e[i];
        const mp_imatrix_entry *e = mp_imatrix_find(im, x->name);
        CHECK_MSG(e && e->n_in == x->n_in && e->n_slab == x->n_slab, "%s: shape", x->name);
        if (!e || e->n_in != x->n_in || e->n_slab != x->n_slab) continue;
        bool eq = !memcmp(e->count, x->count, (size_t)x->n_slab * sizeof(double)) &&
                  !memcmp(e->sum2, x->sum2, (size_t)(x->n_in * x->n_slab) * sizeof(double));
        CHECK_MSG(eq, "%s: sums or counts differ from the test's accumulation", x->name);
    }
    brute_free(&b);
    check_layer0(m, im, ids, n);
    check_counts(m, im, mp_profiler_stats(prof), tokens);

    /* three threads: the same bits; then the third prompt alone (the other half) */
    CHECK_STATUS(MP_OK, mp_imatrix_attach(im3, c3, &err), &err);
    run_prompts(c3, ids, n, 0, N_PROMPT, NULL);
    CHECK(mp_test_imatrix_same(im, im3, 0));
    CHECK_STATUS(MP_OK, mp_imatrix_attach(im_b, c3, &err), &err);
    run_prompts(c3, ids, n, 2, N_PROMPT, NULL);
    im_b->chunk_count = 1;

    /* save (F32), read back with the GGUF reader and with the loader */
    snprintf(p, sizeof p, "%s/im.gguf", dir);
    mp_free(im->model_sha256);
    im->model_sha256 = mp_strdup("53aa7703f2758a550a878ff9195d16c8fe194dffea63cd72f768764584f13c5");
    CHECK_STATUS(MP_OK, mp_imatrix_save(im, p, false, false, &err), &err);
    check_file(p, m, im);
    mp_imatrix *back = NULL, *a = NULL;
    CHECK_STATUS(MP_OK, mp_imatrix_load(&back, p, &err), &err);
    CHECK(back && mp_test_imatrix_same(im, back, 1e-7) && back->chunk_count == N_PROMPT &&
          back->chunk_size == MAX_TOK && back->n_dataset == 2 &&
          !strcmp(back->model_sha256, im->model_sha256));
    mp_imatrix_free(back);

    /* halves: the F64 snapshot keeps every bit, and with the rest merged
     * equals the whole (counts exactly, sums to double rounding) */
    CHECK_STATUS(MP_OK, mp_imatrix_load(&a, half, &err), &err);
    if (a) {
        CHECK_STATUS(MP_OK, mp_imatrix_merge(a, im_b, &err), &err);
        CHECK(mp_test_imatrix_same(im, a, 1e-12) && a->chunk_count == N_PROMPT);
        CHECK(!strcmp(a->model_sha256, ""));
    }
    mp_imatrix_free(a);
    check_errors(dir, im, path);

    snprintf(p, sizeof p, "rm -rf '%s'", dir);
    CHECK(system(p) == 0);
    mp_imatrix_free(im);
    mp_imatrix_free(im3);
    mp_imatrix_free(im_b);
    mp_profiler_free(prof);
    mp_context_free(c1);
    mp_context_free(c2);
    mp_context_free(c3);
    mp_model_free(m);
    return mp_test_end("test_imatrix");
}

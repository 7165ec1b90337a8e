/* test_stats.c — the stats file: save/load keeps every double bit for bit;
 * merging two shards equals the stats of the whole (counts exactly); merging
 * stats of another model or layout is refused; classes merge by name; broken
 * files are refused with the file and field named. */
#include <stdlib.h>
#include <unistd.h>

#include <math.h>

#include "testutil.h"
#include "util/util.h"

static const int64_t n_expert[3] = {8, 0, 6}; /* layer 1 is dense */

/* Fills every cell with seeded values (integers for counts). */
static void fill(mp_stats *s, uint64_t *rng) {
    for (int64_t l = 0; l < s->n_layer; l++) {
        int64_t x = s->n_expert[l];
        for (int64_t c = 0; x && c < s->n_class; c++) {
            const mp_stats_cell *cell = mp_stats_cell_at(s, l, c);
            for (int64_t i = 0; i < x * s->n_expert_used; i++) {
                cell->count[i] = (double)(mp_test_rand(rng) % 1000);
                cell->weight_sum[i] = cell->count[i] * (0.5 + 0.5 * mp_test_randf(rng));
            }
            for (int64_t e = 0; e < x; e++) {
                cell->contrib[e] = 10 * (1 + mp_test_randf(rng));
                cell->contrib_sq[e] = cell->contrib[e] * cell->contrib[e];
            }
        }
    }
    for (int64_t c = 0; c < s->n_class; c++)
        s->class_tokens[c] = (double)(mp_test_rand(rng) % 5000);
}

static bool same(const mp_stats *a, const mp_stats *b, double tol) {
    if (a->n_layer != b->n_layer || a->n_class != b->n_class) return false;
    for (int64_t c = 0; c < a->n_class; c++) {
        int64_t d = mp_stats_find_class(b, a->classes[c]);
        if (d < 0 || a->class_tokens[c] != b->class_tokens[d]) return false;
        for (int64_t l = 0; l < a->n_layer; l++) {
            int64_t x = a->n_expert[l];
            if (x != b->n_expert[l]) return false;
            const mp_stats_cell *p = x ? mp_stats_cell_at(a, l, c) : NULL;
            const mp_stats_cell *q = x ? mp_stats_cell_at(b, l, d) : NULL;
            for (int64_t i = 0; x && i < x * a->n_expert_used; i++)
                if (p->count[i] != q->count[i] || fabs(p->weight_sum[i] - q->weight_sum[i]) > tol)
                    return false;
            for (int64_t e = 0; e < x; e++)
                if (fabs(p->contrib[e] - q->contrib[e]) > tol ||
                    fabs(p->contrib_sq[e] - q->contrib_sq[e]) > tol * 100)
                    return false;
        }
    }
    return true;
}

int main(int argc, char **argv) {
    uint64_t rng = mp_test_seed(argc, argv);
    mp_err err = {0};
    char dir[256], pa[512], pb[512];
    CHECK(mp_test_tmpdir(dir, sizeof dir, "stats") != NULL);
    snprintf(pa, sizeof pa, "%s/a.stats", dir);
    snprintf(pb, sizeof pb, "%s/b.stats", dir);
    const char *classes[] = {"math", "code"};
    mp_stats *a = NULL, *b = NULL, *whole = NULL, *back = NULL;
    CHECK_STATUS(MP_OK, mp_stats_create(&a, "gemma4", 3, n_expert, 2, classes, 2, &err), &err);
    CHECK_STATUS(MP_OK, mp_stats_create(&b, "gemma4", 3, n_expert, 2, classes, 2, &err), &err);
    CHECK_STATUS(MP_OK, mp_stats_create(&whole, "gemma4", 3, n_expert, 2, classes, 2, &err), &err);
    if (!a || !b || !whole) return mp_test_end("test_stats");
    fill(a, &rng);
    fill(b, &rng);

    /* save -> load is bit exact */
    mp_free(a->model_name);
    a->model_name = mp_strdup("tiny");
    CHECK_STATUS(MP_OK, mp_stats_save(a, pa, false, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_stats_save(a, pa, false, &err), &err);
    CHECK_STATUS(MP_OK, mp_stats_load(&back, pa, &err), &err);
    CHECK(back && same(a, back, 0));
    CHECK(back && !strcmp(back->model_name, "tiny") && back->n_expert[1] == 0);

    /* whole = a + b computed by hand; merge(a, b) must equal it */
    for (int64_t l = 0; l < 3; l++)
        for (int64_t c = 0; c < 2 && n_expert[l]; c++) {
            const mp_stats_cell *x = mp_stats_cell_at(a, l, c), *y = mp_stats_cell_at(b, l, c),
                                *z = mp_stats_cell_at(whole, l, c);
            for (int64_t i = 0; i < n_expert[l] * 2; i++) {
                z->count[i] = x->count[i] + y->count[i];
                z->weight_sum[i] = x->weight_sum[i] + y->weight_sum[i];
            }
            for (int64_t e = 0; e < n_expert[l]; e++) {
                z->contrib[e] = x->contrib[e] + y->contrib[e];
                z->contrib_sq[e] = x->contrib_sq[e] + y->contrib_sq[e];
            }
        }
    for (int c = 0; c < 2; c++) whole->class_tokens[c] = a->class_tokens[c] + b->class_tokens[c];
    CHECK_STATUS(MP_OK, mp_stats_merge(back, b, &err), &err);
    CHECK(same(whole, back, 1e-9));

    /* a class only the second shard has is added */
    mp_stats *c3 = NULL;
    const char *logic[] = {"logic"};
    CHECK_STATUS(MP_OK, mp_stats_create(&c3, "gemma4", 3, n_expert, 2, logic, 1, &err), &err);
    fill(c3, &rng);
    CHECK_STATUS(MP_OK, mp_stats_merge(back, c3, &err), &err);
    CHECK_INT(3, back->n_class);
    CHECK(mp_stats_find_class(back, "logic") == 2 && back->class_tokens[2] == c3->class_tokens[0] &&
          mp_stats_cell_at(back, 2, 2)->contrib[5] == mp_stats_cell_at(c3, 2, 0)->contrib[5]);

    /* other models are refused and leave dst unchanged */
    mp_stats *other = NULL;
    int64_t ne2[3] = {8, 0, 7};
    CHECK_STATUS(MP_OK, mp_stats_create(&other, "gemma4", 3, ne2, 2, classes, 2, &err), &err);
    CHECK_STATUS(MP_ERR_CHECK, mp_stats_merge(back, other, &err), &err);
    CHECK(strstr(err.msg, "layer 2") != NULL);
    mp_stats_free(other);
    CHECK_STATUS(MP_OK, mp_stats_create(&other, "qwen3moe", 3, n_expert, 2, classes, 2, &err),
                 &err);
    CHECK_STATUS(MP_ERR_CHECK, mp_stats_merge(back, other, &err), &err);
    CHECK(strstr(err.msg, "qwen3moe") != NULL);
    mp_stats_free(other);
    mp_free(back->model_sha256);
    back->model_sha256 = mp_strdup("aaaa");
    CHECK_STATUS(MP_OK, mp_stats_create(&other, "gemma4", 3, n_expert, 2, classes, 2, &err), &err);
    mp_free(other->model_sha256);
    other->model_sha256 = mp_strdup("bbbb");
    CHECK_STATUS(MP_ERR_CHECK, mp_stats_merge(back, other, &err), &err);
    CHECK(strstr(err.msg, "sha256") != NULL);
    mp_stats_free(other);

    /* checked against a model: the tiny fixture has 4 MoE layers of 16 experts, top-4 */
    mp_gguf *tiny = NULL;
    char tp[512];
    CHECK_STATUS(
        MP_OK,
        mp_gguf_open(&tiny, mp_test_data(tp, sizeof tp, "gemma4-tiny-a/tiny-a-q4_0.gguf"), &err),
        &err);
    const int64_t ne16[4] = {16, 16, 16, 16}, ne15[4] = {16, 16, 15, 16};
    mp_stats *fits = NULL, *nofit = NULL;
    CHECK_STATUS(MP_OK, mp_stats_create(&fits, "gemma4", 4, ne16, 4, classes, 1, &err), &err);
    CHECK_STATUS(MP_OK, mp_stats_create(&nofit, "gemma4", 4, ne15, 4, classes, 1, &err), &err);
    if (tiny && fits && nofit) {
        CHECK_STATUS(MP_OK, mp_stats_check_model(fits, tiny, &err), &err);
        CHECK_STATUS(MP_ERR_CHECK, mp_stats_check_model(nofit, tiny, &err), &err);
        CHECK(strstr(err.msg, "15 experts in layer 2") != NULL);
        CHECK_STATUS(MP_ERR_CHECK, mp_stats_check_model(a, tiny, &err), &err);
    }
    mp_stats_free(fits);
    mp_stats_free(nofit);
    mp_gguf_free(tiny);

    /* broken files: not a stats file, a model file, a stats file with a bad value */
    mp_stats *bad = NULL;
    char fx[512];
    CHECK_STATUS(
        MP_ERR_FORMAT,
        mp_stats_load(&bad, mp_test_data(fx, sizeof fx, "gemma4-tiny-a/tiny-a-q8_0.gguf"), &err),
        &err);
    CHECK(strstr(err.msg, "not a moeprune stats file") && strstr(err.msg, "tiny-a-q8_0.gguf"));
    mp_stats_cell_at(a, 0, 1)->contrib[3] = -1;
    CHECK_STATUS(MP_OK, mp_stats_save(a, pb, false, &err), &err);
    CHECK_STATUS(MP_ERR_FORMAT, mp_stats_load(&bad, pb, &err), &err);
    CHECK(strstr(err.msg, "blk.0.c1.contrib") != NULL);
    CHECK_STATUS(MP_ERR_ARG, mp_stats_create(&bad, "gemma4", 3, ne2, 9, classes, 2, &err), &err);

    /* allocation failures while loading: reported, nothing leaks */
    int fails = 0;
    for (long k = 1; k < 10000; k++) {
        mp_malloc_fail_at(k);
        mp_status st = mp_stats_load(&bad, pa, &err);
        mp_malloc_fail_at(0);
        if (st == MP_OK) {
            mp_stats_free(bad);
            break;
        }
        fails++;
        CHECK_STATUS(MP_ERR_NOMEM, st, &err);
    }
    CHECK(fails > 5);
    unlink(pa);
    unlink(pb);
    rmdir(dir);
    mp_stats_free(a);
    mp_stats_free(b);
    mp_stats_free(c3);
    mp_stats_free(whole);
    mp_stats_free(back);
    return mp_test_end("test_stats");
}

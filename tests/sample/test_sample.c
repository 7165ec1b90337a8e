/* test_sample.c — each sampling step on hand-made logits with known answers,
 * the chain's reproducibility, and generation control (EOG, stop strings
 * across token boundaries, max tokens, reasoning budget).
 *
 * Probabilities are set through logits = log(p), so a cutoff's expected
 * survivors can be read off the numbers. Randomised parts take a seed
 * argument (printed) and repeat exactly with it. */
#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "testutil.h"
#include "util/util.h"

#define N_MAX 8

/* Candidates from a small logit array (storage is the caller's). */
static mp_cands cands(mp_cand *store, const float *logits, int n) {
    mp_cands c;
    mp_cands_init(&c, store, logits, n);
    return c;
}

static void ids_are(const mp_cands *c, const mp_token *want, size_t n, int line) {
    bool same = c->n == n;
    for (size_t i = 0; same && i < n; i++) same = c->data[i].id == want[i];
    CHECK_MSG(same, "line %d: %zu candidates, first id %d", line, c->n,
              c->n ? c->data[0].id : -1);
}

#define IDS_ARE(c, ...)                                                      \
    do {                                                                     \
        const mp_token w_[] = {__VA_ARGS__};                                 \
        ids_are(c, w_, sizeof w_ / sizeof w_[0], __LINE__);                  \
    } while (0)

/* log of probabilities 0.5, 0.3, 0.15, 0.05 in shuffled id order:
 * id 0 = 0.15, id 1 = 0.5, id 2 = 0.05, id 3 = 0.3 */
static void probs4(float *l) {
    l[0] = logf(0.15f);
    l[1] = logf(0.5f);
    l[2] = logf(0.05f);
    l[3] = logf(0.3f);
}

static void test_steps(void) {
    mp_cand st[N_MAX];
    float l[N_MAX];
    mp_cands c;

    /* greedy: ties go to the lower id */
    const float g[4] = {1, 3, 2, 3};
    c = cands(st, g, 4);
    CHECK_INT(1, mp_sample_greedy(&c));
    c.n = 0;
    CHECK_INT(MP_TOKEN_NULL, mp_sample_greedy(&c));

    /* top-k */
    const float k5[5] = {0.1f, 5, 3, 4, -1};
    c = cands(st, k5, 5);
    mp_sample_top_k(&c, 2);
    IDS_ARE(&c, 1, 3);
    CHECK(c.sorted);
    c = cands(st, k5, 5);
    mp_sample_top_k(&c, 0);
    CHECK_INT(5, c.n);
    mp_sample_top_k(&c, 9);
    CHECK_INT(5, c.n);

    /* softmax */
    probs4(l);
    c = cands(st, l, 4);
    mp_sample_softmax(&c);
    IDS_ARE(&c, 1, 3, 0, 2);
    CHECK_NEAR(0.5, c.data[0].p, 1e-6);
    CHECK_NEAR(0.3, c.data[1].p, 1e-6);
    CHECK_NEAR(0.05, c.data[3].p, 1e-6);

    /* top-p: the smallest set reaching the mass */
    struct { float p; size_t keep; int n; } tp[] = {
        {0.49f, 0, 1}, {0.75f, 0, 2}, {0.81f, 0, 3}, {0.96f, 0, 4}, {0.5f, 3, 3}, {1.0f, 0, 4}};
    for (size_t i = 0; i < MP_ARRAY_LEN(tp); i++) {
        probs4(l);
        c = cands(st, l, 4);
        mp_sample_top_p(&c, tp[i].p, tp[i].keep);
        CHECK_MSG((int)c.n == tp[i].n, "top_p %g min_keep %zu: kept %zu, expected %d",
                  (double)tp[i].p, tp[i].keep, c.n, tp[i].n);
    }
    probs4(l);
    c = cands(st, l, 4);
    mp_sample_top_p(&c, 0.75f, 1);
    IDS_ARE(&c, 1, 3);
    CHECK_NEAR(0.5 / 0.8, c.data[0].p, 1e-6); /* renormalised */

    /* min-p: p >= min_p * p_max, order kept */
    probs4(l);
    c = cands(st, l, 4);
    mp_sample_min_p(&c, 0.2f, 1); /* threshold 0.1: drops only 0.05 */
    IDS_ARE(&c, 0, 1, 3);
    probs4(l);
    c = cands(st, l, 4);
    mp_sample_min_p(&c, 0.35f, 1); /* threshold 0.175 */
    IDS_ARE(&c, 1, 3);
    probs4(l);
    c = cands(st, l, 4);
    mp_sample_min_p(&c, 0.99f, 2); /* min_keep wins */
    IDS_ARE(&c, 1, 3);

    /* temperature */
    const float t3[3] = {2, -4, 1};
    c = cands(st, t3, 3);
    mp_sample_temperature(&c, 2);
    CHECK_NEAR(1, c.data[0].logit, 0);
    CHECK_NEAR(-2, c.data[1].logit, 0);
    mp_sample_temperature(&c, 0); /* no-op */
    CHECK_NEAR(1, c.data[0].logit, 0);

    /* repetition penalty: positive divided, negative multiplied, once per id */
    const float r4[4] = {2, -2, 1.5f, 0.5f};
    const mp_token last[4] = {0, 1, 0, 7};
    c = cands(st, r4, 4);
    mp_sample_repeat_penalty(&c, last, 4, 2.0f);
    CHECK_NEAR(1, c.data[0].logit, 0);
    CHECK_NEAR(-4, c.data[1].logit, 0);
    CHECK_NEAR(1.5, c.data[2].logit, 0);
    CHECK_NEAR(0.5, c.data[3].logit, 0);
    CHECK_INT(2, mp_sample_greedy(&c));
    for (int i = 0; i < 4; i++) CHECK_NEAR(0, c.data[i].p, 0); /* scratch cleaned */
    /* after a reorder, ids are found by search */
    c = cands(st, r4, 4);
    mp_sample_top_k(&c, 3);
    const mp_token two = 2;
    mp_sample_repeat_penalty(&c, &two, 1, 2.0f);
    CHECK_NEAR(0.75, c.data[1].logit, 0); /* id 2, now second */

    /* NaN reads as "never" */
    const float nan3[3] = {NAN, 1, NAN};
    c = cands(st, nan3, 3);
    CHECK_INT(1, mp_sample_greedy(&c));
    mp_rng rng;
    mp_rng_seed(&rng, 5);
    CHECK_INT(1, mp_sample_dist(&c, &rng));
}

/* top-p on a large unsorted array, where the mass needs more than the first
 * sorted batch: 300 equal tokens hold it all; ties go to lower ids. */
static void test_top_p_large(void) {
    enum { N = 100000 };
    float *l = malloc(N * sizeof *l);
    mp_cand *st = malloc(N * sizeof *st);
    for (int i = 0; i < N; i++) l[i] = -10;
    for (int i = 0; i < 300; i++) l[(i * 7919) % N] = 10; /* scattered */
    mp_cands c = cands(st, l, N);
    mp_sample_top_p(&c, 0.951f, 1); /* 0.951 * 300 = 285.3 -> 286 tokens */
    CHECK_INT(286, c.n);
    bool ok = true;
    for (size_t i = 0; i < c.n; i++) ok &= l[c.data[i].id] == 10;
    for (size_t i = 1; i < c.n; i++) ok &= c.data[i - 1].id < c.data[i].id;
    CHECK_MSG(ok, "top-p kept the wrong tokens or the wrong order");
    free(l);
    free(st);
}

static void test_rng_and_dist(uint64_t seed) {
    mp_rng a, b;
    mp_rng_seed(&a, seed);
    mp_rng_seed(&b, seed);
    bool same = true, in_range = true;
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        double x = mp_rng_uniform(&a), y = mp_rng_uniform(&b);
        same &= x == y;
        in_range &= x >= 0 && x < 1;
        sum += x;
    }
    CHECK(same && in_range);
    CHECK_NEAR(0.5, sum / 100000, 0.01);
    mp_rng_seed(&b, seed + 1);
    CHECK(mp_rng_next(&a) != mp_rng_next(&b));

    /* frequencies follow the softmax */
    float l[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    mp_cand st[3];
    int count[3] = {0};
    for (int i = 0; i < 20000; i++) {
        mp_cands c = cands(st, l, 3);
        mp_token t = mp_sample_dist(&c, &a);
        if (t >= 0 && t < 3) count[t]++;
    }
    CHECK_NEAR(0.5, count[0] / 20000.0, 0.02);
    CHECK_NEAR(0.3, count[1] / 20000.0, 0.02);
    CHECK_NEAR(0.2, count[2] / 20000.0, 0.02);
}

static void test_sampler(uint64_t seed) {
    enum { V = 262144 };
    float *l = malloc(V * sizeof *l);
    uint64_t st = seed;
    for (int i = 0; i < V; i++) l[i] = 4 * mp_test_randf(&st);
    l[777] = 9; /* a clear favourite */
    mp_err err = {0};
    mp_sampler_params p = mp_sampler_default_params();
    p.seed = seed;
    mp_sampler *s1 = NULL, *s2 = NULL;
    CHECK_STATUS(MP_OK, mp_sampler_init(&s1, V, &p, &err), &err);
    CHECK_STATUS(MP_OK, mp_sampler_init(&s2, V, &p, &err), &err);
    if (!s1 || !s2) goto done;
    /* the same seed gives the same tokens; reset repeats them */
    mp_token first[20];
    bool same = true;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 20; i++) {
        first[i] = mp_sampler_sample(s1, l);
        same &= first[i] == mp_sampler_sample(s2, l);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("default chain on %d candidates: %.2f ms per token\n", V,
           ((double)(t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6) / 40);
    CHECK(same);
    mp_sampler_reset(s1);
    for (int i = 0; i < 20; i++) same &= first[i] == mp_sampler_sample(s1, l);
    CHECK_MSG(same, "reset did not reproduce the draws");
    mp_sampler_free(s1);
    mp_sampler_free(s2);
    s1 = s2 = NULL;

    /* temperature 0 is greedy; a penalty with a window pushes recent tokens away */
    p = mp_sampler_default_params();
    p.temperature = 0;
    p.repeat_penalty = 100;
    p.repeat_last_n = 2;
    CHECK_STATUS(MP_OK, mp_sampler_init(&s1, V, &p, &err), &err);
    if (!s1) goto done;
    CHECK_INT(777, mp_sampler_sample(s1, l));
    mp_sampler_accept(s1, 777);
    mp_token second = mp_sampler_sample(s1, l);
    CHECK(second != 777);
    mp_sampler_accept(s1, second);
    mp_sampler_accept(s1, 5); /* 777 leaves the window of 2 */
    CHECK_INT(777, mp_sampler_sample(s1, l));
    mp_sampler_free(s1);
    s1 = NULL;

    /* top-k 1 is greedy whatever the seed */
    p = mp_sampler_default_params();
    p.top_k = 1;
    for (uint64_t k = 0; k < 5; k++) {
        p.seed = k;
        CHECK_STATUS(MP_OK, mp_sampler_init(&s1, V, &p, &err), &err);
        if (s1) CHECK_INT(777, mp_sampler_sample(s1, l));
        mp_sampler_free(s1);
        s1 = NULL;
    }
    /* bad parameters */
    p = mp_sampler_default_params();
    p.repeat_penalty = 0;
    CHECK_STATUS(MP_ERR_ARG, mp_sampler_init(&s1, V, &p, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_sampler_init(&s1, 0, &p, &err), &err);
done:
    mp_sampler_free(s1);
    mp_sampler_free(s2);
    free(l);
}

/* ------------------------------------------------------------------------ */
/* Generation control                                                       */
/* ------------------------------------------------------------------------ */

typedef struct run_result {
    char text[1024];
    size_t n;
    mp_gen_status status;
    int pushes;
    bool prefix_ok; /* text never showed something the final text lacks */
} run_result;

/* Feeds ids one by one (stopping at the first non-CONTINUE), then flushes. */
static run_result feed(mp_gen *g, const mp_token *ids, size_t n, const char *final_text) {
    run_result r = {.status = MP_GEN_CONTINUE, .prefix_ok = true};
    for (size_t i = 0; i < n && r.status == MP_GEN_CONTINUE; i++) {
        const char *t;
        size_t k;
        r.status = mp_gen_push(g, ids[i], &t, &k);
        r.pushes++;
        if (r.n + k < sizeof r.text) memcpy(r.text + r.n, t, k);
        r.n += k;
        if (final_text && (r.n > strlen(final_text) || memcmp(r.text, final_text, r.n)))
            r.prefix_ok = false;
    }
    const char *t;
    size_t k;
    mp_gen_flush(g, &t, &k);
    if (r.n + k < sizeof r.text) memcpy(r.text + r.n, t, k);
    r.n += k;
    r.text[r.n < sizeof r.text ? r.n : sizeof r.text - 1] = 0;
    return r;
}

/* The ids of text, one byte token per byte (so stop strings really do
 * arrive split), or the tokenizer's ids. */
static size_t ids_of(const mp_vocab *v, const char *text, bool bytes, mp_token *out, size_t cap) {
    size_t n = 0;
    if (bytes) {
        char name[8];
        for (size_t i = 0; text[i] && n < cap; i++) {
            snprintf(name, sizeof name, "<0x%02X>", (unsigned char)text[i]);
            out[n++] = mp_vocab_find(v, name, 6);
        }
        return n;
    }
    mp_token *ids;
    size_t k;
    if (mp_tokenize(v, text, strlen(text), (mp_tokenize_params){false, true}, &ids, &k, NULL))
        return 0;
    for (size_t i = 0; i < k && n < cap; i++) out[n++] = ids[i];
    mp_free(ids);
    return n;
}

static void test_gen(const mp_vocab *v) {
    mp_err err = {0};
    mp_token ids[256];
    mp_gen *g = NULL;
    mp_chat_think mk = mp_chat_think_markers(MP_CHAT_GEMMA4, v);
    const char *stops[] = {"STOP", "\n\nUser:"};
    mp_gen_params p = {.max_tokens = 0, .stop = stops, .n_stop = 2, .reasoning_budget = -1,
                       .think_open = mk.open_id, .think_close = mk.close_id};

    /* EOG ends it, and shows nothing */
    size_t n = ids_of(v, "Hello<turn|>ignored", false, ids, 256);
    CHECK_STATUS(MP_OK, mp_gen_init(&g, v, &p, &err), &err);
    run_result r = feed(g, ids, n, "Hello");
    CHECK_INT(MP_GEN_EOG, r.status);
    CHECK(!strcmp(r.text, "Hello"));
    mp_gen_free(g);

    /* stop strings split over tokens: near misses are shown late, never early,
     * and nothing of the stop string or after it is shown */
    for (int bytes = 0; bytes < 2; bytes++) {
        const char *want = "a S b ST c STO d \n\nUser ";
        n = ids_of(v, "a S b ST c STO d \n\nUser STOP e", bytes, ids, 256);
        CHECK_STATUS(MP_OK, mp_gen_init(&g, v, &p, &err), &err);
        r = feed(g, ids, n, want);
        CHECK_INT(MP_GEN_STOP_STRING, r.status);
        CHECK_MSG(!strcmp(r.text, want) && r.prefix_ok, "bytes %d: shown \"%s\"", bytes, r.text);
        CHECK(r.pushes < (int)n);
        mp_gen_free(g);
        n = ids_of(v, "x\n\nUser: hi", bytes, ids, 256);
        CHECK_STATUS(MP_OK, mp_gen_init(&g, v, &p, &err), &err);
        r = feed(g, ids, n, "x");
        CHECK_INT(MP_GEN_STOP_STRING, r.status);
        CHECK(!strcmp(r.text, "x") && r.prefix_ok);
        mp_gen_free(g);
    }

    /* a held-back stop prefix comes out when generation ends otherwise */
    mp_token eog = mp_vocab_specials(v)->eos;
    n = ids_of(v, "abc ST", true, ids, 256);
    ids[n++] = eog;
    CHECK_STATUS(MP_OK, mp_gen_init(&g, v, &p, &err), &err);
    r = feed(g, ids, n, "abc ST");
    CHECK_INT(MP_GEN_EOG, r.status);
    CHECK(!strcmp(r.text, "abc ST"));
    mp_gen_free(g);

    /* max tokens: the last token's text counts; held text is flushed */
    p.max_tokens = 3;
    n = ids_of(v, "abcdef", true, ids, 256);
    CHECK_STATUS(MP_OK, mp_gen_init(&g, v, &p, &err), &err);
    r = feed(g, ids, n, "abc");
    CHECK_INT(MP_GEN_MAX_TOKENS, r.status);
    CHECK(!strcmp(r.text, "abc") && r.pushes == 3);
    CHECK_INT(3, mp_gen_n_tokens(g));
    const char *t;
    size_t k;
    CHECK_INT(MP_GEN_MAX_TOKENS, mp_gen_push(g, ids[4], &t, &k)); /* stays stopped */
    CHECK_INT(0, k);
    mp_gen_free(g);
    p.max_tokens = 0;

    /* a character split over byte tokens comes out whole */
    n = ids_of(v, "\xF0\x9F\x98\x80!", true, ids, 256);
    CHECK_STATUS(MP_OK, mp_gen_init(&g, v, &p, &err), &err);
    for (size_t i = 0; i < 3; i++) {
        CHECK_INT(MP_GEN_CONTINUE, mp_gen_push(g, ids[i], &t, &k));
        CHECK_INT(0, k);
    }
    mp_gen_push(g, ids[3], &t, &k);
    CHECK(k == 4 && !memcmp(t, "\xF0\x9F\x98\x80", 4));
    CHECK_INT(MP_GEN_EOG, mp_gen_push(g, -5, &t, &k)); /* an invalid id ends it */
    mp_gen_free(g);

    /* reasoning budget: after 3 thinking tokens the close marker is forced */
    p.reasoning_budget = 3;
    CHECK_STATUS(MP_OK, mp_gen_init(&g, v, &p, &err), &err);
    mp_token a = mp_vocab_find(v, "a", 1);
    CHECK_INT(MP_TOKEN_NULL, mp_gen_forced(g));
    mp_gen_push(g, mk.open_id, &t, &k);
    CHECK(mp_gen_thinking(g));
    for (int i = 0; i < 3; i++) {
        CHECK_INT(MP_TOKEN_NULL, mp_gen_forced(g));
        mp_gen_push(g, a, &t, &k);
    }
    CHECK_INT(mk.close_id, mp_gen_forced(g));
    CHECK_INT(3, mp_gen_n_thinking(g));
    mp_gen_push(g, mk.close_id, &t, &k);
    CHECK(!mp_gen_thinking(g));
    CHECK_INT(MP_TOKEN_NULL, mp_gen_forced(g));
    mp_gen_push(g, a, &t, &k);
    CHECK_INT(3, mp_gen_n_thinking(g)); /* answer tokens do not count */
    mp_gen_free(g);

    /* budget 0 with the prompt inside a thinking block: close at once */
    p.reasoning_budget = 0;
    p.in_thinking = true;
    CHECK_STATUS(MP_OK, mp_gen_init(&g, v, &p, &err), &err);
    CHECK_INT(mk.close_id, mp_gen_forced(g));
    mp_gen_free(g);

    /* bad parameters */
    const char *empty[] = {""};
    p.stop = empty;
    p.n_stop = 1;
    g = NULL;
    CHECK_STATUS(MP_ERR_ARG, mp_gen_init(&g, v, &p, &err), &err);
    CHECK(g == NULL);
    CHECK(!strcmp(mp_gen_status_name(MP_GEN_STOP_STRING), "stop-string"));
}

int main(int argc, char **argv) {
    uint64_t seed = mp_test_seed(argc, argv);
    test_steps();
    test_top_p_large();
    test_rng_and_dist(seed);
    test_sampler(seed);
    char path[512];
    mp_vocab *v = NULL;
    mp_err err = {0};
    CHECK_STATUS(MP_OK, mp_vocab_open(&v, mp_test_data(path, sizeof path,
                 "gemma4-tiny-a/tiny-a-f32.gguf"), &err), &err);
    if (v) test_gen(v);
    mp_vocab_free(v);
    return mp_test_end("test_sample");
}

/* test_vocab_load.c — vocabularies built by code: rules the real Gemma 4
 * vocabulary cannot show, malformed tokenizer metadata, and allocation
 * failures.
 *
 *  - A tiny synthetic vocabulary (written with the GGUF writer) where BPE
 *    alone gives different ids than llama.cpp's rules: a newline run that is
 *    a token but has no merges (taken whole), merge order by rank (not by
 *    the merged token's score), leftmost-first on equal ranks, byte fallback
 *    for a symbol whose merge result is not a token, and a byte without a
 *    <0xHH> token (dropped, as llama.cpp does).
 *  - Special tokens overlapping each other: the longer text wins even when
 *    the shorter starts first (llama.cpp's order).
 *  - A table of broken files, each refused with a specific status.
 *  - mp_vocab_open, mp_tokenize and mp_detok under allocation-failure
 *    injection: every failure is reported as MP_ERR_NOMEM (ASan: no leak). */
#include <stdlib.h>
#include <unistd.h>

#include "testutil.h"
#include "util/util.h"

/* What a synthetic vocabulary file holds; NULL/0 fields are left out. */
typedef struct spec {
    const char *model;          /* tokenizer.ggml.model (NULL: absent) */
    const char *const *tokens;  /* NULL: absent */
    size_t n_tokens;
    const int32_t *types;       /* NULL: absent */
    size_t n_types;
    const char *const *merges;  /* NULL: absent */
    size_t n_merges;
    int64_t bos;                /* -1: absent */
    bool model_as_u32;          /* write the model key with the wrong type */
    bool tokens_as_ints;        /* write tokens as an INT32 array */
    bool scores_as_strings;
} spec;

static void write_spec(const char *path, const spec *s) {
    mp_gguf_writer *w = NULL;
    mp_err err = {0};
    CHECK_STATUS(MP_OK, mp_gguf_writer_open(&w, path, true, &err), &err);
    if (!w) return;
    mp_gguf_writer_kv_str(w, "general.architecture", "gemma4", &err);
    if (s->model_as_u32) mp_gguf_writer_kv_u32(w, "tokenizer.ggml.model", 4, &err);
    else if (s->model) mp_gguf_writer_kv_str(w, "tokenizer.ggml.model", s->model, &err);
    if (s->tokens_as_ints) {
        int32_t x[3] = {1, 2, 3};
        mp_gguf_writer_kv_arr(w, "tokenizer.ggml.tokens", MP_GGUF_INT32, x, 3, &err);
    } else if (s->tokens) {
        mp_gguf_writer_kv_arr_str(w, "tokenizer.ggml.tokens", s->tokens, s->n_tokens, &err);
    }
    if (s->types)
        mp_gguf_writer_kv_arr(w, "tokenizer.ggml.token_type", MP_GGUF_INT32, s->types,
                              s->n_types, &err);
    if (s->scores_as_strings)
        mp_gguf_writer_kv_arr_str(w, "tokenizer.ggml.scores", s->tokens, s->n_tokens, &err);
    if (s->merges)
        mp_gguf_writer_kv_arr_str(w, "tokenizer.ggml.merges", s->merges, s->n_merges, &err);
    if (s->bos >= 0)
        mp_gguf_writer_kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)s->bos, &err);
    mp_gguf_writer_kv_u32(w, "tokenizer.ggml.eos_token_id", 1, &err);
    CHECK_STATUS(MP_OK, mp_gguf_writer_finish(w, &err), &err);
    mp_gguf_writer_free(w);
}

/* ids 0..: */
static const char *const toks[] = {
    "<pad>", "<eos>", "<bos>", "<|a>", "<|a>>",              /* 0-4 */
    "\n", "\n\n", "a", "b", "c",                             /* 5-9 */
    "ab", "bc", "abc", "\xe2\x96\x81", "\342\226\201a",      /* 10-14 */
    "<0x7A>", "aa", "<|u>", "<eot>", "<|x", "x|>>",          /* 15-20 */
};
static const int32_t types[] = {3, 3, 3, 3, 4, 1, 1, 1, 1, 1,
                                1, 1, 1, 1, 1, 6, 1, 4, 3, 3, 4};
/* rank 0 "b c" beats rank 1 "a b"; "c c" merges to "cc", not a token */
static const char *const merges[] = {"b c", "a b", "\xe2\x96\x81 a", "a bc", "c c", "a a",
                                     "nospace"};

static void tokens_are(const mp_vocab *v, const char *text, bool special, const mp_token *want,
                       size_t n_want) {
    mp_token *ids = NULL;
    size_t n = 0;
    mp_err err = {0};
    CHECK_STATUS(MP_OK, mp_tokenize(v, text, strlen(text), (mp_tokenize_params){false, special},
                                    &ids, &n, &err), &err);
    bool same = n == n_want && (n == 0 || !memcmp(ids, want, n * sizeof *ids));
    CHECK_MSG(same, "\"%s\": got %zu tokens, first %d", text, n, n ? ids[0] : -1);
    mp_free(ids);
}

#define TOKENS_ARE(v, text, special, ...)                                   \
    do {                                                                    \
        const mp_token w_[] = {__VA_ARGS__};                                \
        tokens_are(v, text, special, w_, sizeof w_ / sizeof w_[0]);         \
    } while (0)

static void test_rules(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/synth.gguf", dir);
    spec s = {"gemma4", toks, MP_ARRAY_LEN(toks), types, MP_ARRAY_LEN(types),
              merges, MP_ARRAY_LEN(merges), 2, false, false, false};
    write_spec(path, &s);
    mp_vocab *v = NULL;
    mp_err err = {0};
    CHECK_STATUS(MP_OK, mp_vocab_open(&v, path, &err), &err);
    if (!v) return;
    TOKENS_ARE(v, "\n\n", false, 6);        /* no "\n \n" merge: taken whole */
    TOKENS_ARE(v, "\n\n\n", false, 5, 5, 5); /* not a token: BPE, which cannot merge */
    TOKENS_ARE(v, "abc", false, 12);        /* "b c" (rank 0) before "a b", then "a bc" */
    TOKENS_ARE(v, "aaa", false, 16, 7);     /* equal rank: leftmost pair first */
    TOKENS_ARE(v, " a", false, 14);         /* space is U+2581 */
    tokens_are(v, "cc", false, NULL, 0);    /* "cc" not a token, no <0x63>: dropped */
    TOKENS_ARE(v, "z", false, 15);          /* byte fallback */
    TOKENS_ARE(v, "<|a>>", false, 4);       /* USER_DEFINED: always */
    TOKENS_ARE(v, "<|a>>", true, 4);        /* longer special text wins */
    /* CONTROL <|a> is text without parsing; "<" has no token and is dropped */
    TOKENS_ARE(v, "<|u><|a>", false, 17, 7);
    TOKENS_ARE(v, "<|x|>>", true, 20);      /* the longer text first, though it starts later */
    TOKENS_ARE(v, "<|x|>", true, 19);       /* no overlap: the CONTROL token */
    /* "<eot>" is CONTROL but not an EOG text; <eos> is EOS */
    CHECK(mp_vocab_is_eog(v, 1));
    CHECK(!mp_vocab_is_eog(v, 18));
    CHECK_INT(2, mp_vocab_specials(v)->bos);
    mp_vocab_free(v);
}

static void expect_refused(const char *dir, const char *what, const spec *s, mp_status want) {
    char path[1024];
    snprintf(path, sizeof path, "%s/broken.gguf", dir);
    write_spec(path, s);
    mp_vocab *v = NULL;
    mp_err err = {0};
    mp_status got = mp_vocab_open(&v, path, &err);
    CHECK_MSG(got == want, "%s: expected %s, got %s (%s)", what, mp_status_name(want),
              mp_status_name(got), err.msg);
    CHECK_MSG(got == MP_OK || err.msg[0], "%s: no message", what);
    if (got != MP_OK) printf("  refused (%s): %s\n", what, err.msg);
    mp_vocab_free(v);
}

static void test_broken(const char *dir) {
    const spec ok = {"gemma4", toks, MP_ARRAY_LEN(toks), types, MP_ARRAY_LEN(types),
                     merges, MP_ARRAY_LEN(merges), 2, false, false, false};
    spec s;
    s = ok; s.model = NULL;
    expect_refused(dir, "no model key", &s, MP_ERR_NOT_FOUND);
    s = ok; s.model_as_u32 = true;
    expect_refused(dir, "model key not a string", &s, MP_ERR_FORMAT);
    s = ok; s.model = "gpt2";
    expect_refused(dir, "gpt2 vocabulary", &s, MP_ERR_UNSUPPORTED);
    s = ok; s.model = "llama";
    expect_refused(dir, "llama (SPM) vocabulary", &s, MP_ERR_UNSUPPORTED);
    s = ok; s.model = "bert";
    expect_refused(dir, "unknown vocabulary", &s, MP_ERR_UNSUPPORTED);
    s = ok; s.tokens = NULL;
    expect_refused(dir, "no tokens", &s, MP_ERR_NOT_FOUND);
    s = ok; s.tokens = NULL; s.tokens_as_ints = true;
    expect_refused(dir, "tokens as integers", &s, MP_ERR_FORMAT);
    s = ok; s.n_types = 5;
    expect_refused(dir, "fewer token types than tokens", &s, MP_ERR_FORMAT);
    s = ok; s.scores_as_strings = true;
    expect_refused(dir, "scores as strings", &s, MP_ERR_FORMAT);
    s = ok; s.merges = NULL;
    expect_refused(dir, "no merges", &s, MP_ERR_NOT_FOUND);
    s = ok; s.bos = 21;
    expect_refused(dir, "BOS out of range", &s, MP_ERR_FORMAT);
    s = ok; s.bos = -1;
    expect_refused(dir, "no BOS while Gemma 4 adds one", &s, MP_ERR_FORMAT);
    s = ok;
    expect_refused(dir, "the good one", &s, MP_OK);
}

/* Runs op with the k-th allocation failing, k = 1, 2, ... until it passes. */
static int sweep(const char *what, mp_status (*op)(void *), void *ctx) {
    int n_fail = 0;
    for (long k = 1; k < 100000; k++) {
        mp_malloc_fail_at(k);
        mp_status s = op(ctx);
        mp_malloc_fail_at(0);
        if (s == MP_OK) break;
        n_fail++;
        CHECK_MSG(s == MP_ERR_NOMEM, "%s: allocation %ld failing gave %s", what, k,
                  mp_status_name(s));
    }
    printf("allocation-failure sweep, %s: %d failing runs before success\n", what, n_fail);
    return n_fail;
}

static mp_status op_open(void *ctx) {
    mp_vocab *v = NULL;
    mp_status s = mp_vocab_open(&v, ctx, NULL);
    mp_vocab_free(v);
    return s;
}

static mp_status op_tokenize(void *ctx) {
    static const char text[] = "<|turn>user\nHello, world! 😀 \xff\n\n<turn|>";
    mp_token *ids = NULL;
    size_t n;
    mp_status s = mp_tokenize(ctx, text, sizeof text - 1, (mp_tokenize_params){true, true}, &ids,
                              &n, NULL);
    mp_free(ids);
    return s;
}

static mp_status op_detok(void *ctx) {
    mp_detok *d = NULL;
    mp_status s = mp_detok_init(&d, ctx, true, false, NULL);
    char *t = NULL;
    size_t n;
    mp_token ids[3] = {2, 3, 4};
    if (!s) s = mp_detokenize(ctx, ids, 3, true, &t, &n, NULL);
    mp_free(t);
    mp_detok_free(d);
    return s;
}

int main(void) {
    char dir[512], path[1024];
    CHECK(mp_test_tmpdir(dir, sizeof dir, "vocab") != NULL);
    test_rules(dir);
    test_broken(dir);

    mp_test_data(path, sizeof path, "gemma4-tiny-a/tiny-a-f32.gguf");
    CHECK(sweep("mp_vocab_open", op_open, path) > 10);
    mp_vocab *v = NULL;
    mp_err err = {0};
    CHECK_STATUS(MP_OK, mp_vocab_open(&v, path, &err), &err);
    if (v) {
        CHECK(sweep("mp_tokenize", op_tokenize, v) > 3);
        CHECK(sweep("mp_detok", op_detok, v) >= 2);
        mp_vocab_free(v);
    }
    snprintf(path, sizeof path, "%s/synth.gguf", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/broken.gguf", dir);
    unlink(path);
    rmdir(dir);
    return mp_test_end("test_vocab_load");
}

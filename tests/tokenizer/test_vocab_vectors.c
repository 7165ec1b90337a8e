/* test_vocab_vectors.c — the tokenizer against llama.cpp's own answers.
 *
 *  1. Every case of llama.cpp's Gemma 4 test vectors (tests/data/vocab/
 *     gemma4-vocab.gguf.inp/.out, read as its tests/test-tokenizer-0.cpp reads
 *     them: cases split at "\n__ggml_vocab_test__\n", expected ids one line
 *     per case, stripped; no BOS, special tokens not parsed) on the full
 *     262,144-token vocabulary.
 *  2. The tiny fixtures' prompts (BOS added, special tokens parsed) equal
 *     llama.cpp's promptN.tokens.txt for every variant.
 *  3. decode(encode(x)) == x over a corpus of mixed scripts, emoji,
 *     whitespace runs, newlines, special-token texts and invalid UTF-8, on
 *     both vocabularies, with and without special-token parsing; and on
 *     random byte strings (seeded: pass a seed to repeat).
 *  4. Streaming decoding never gives out part of a character and
 *     concatenates to the batch decoding.
 *
 * The full vocabulary lives in data/ (MP_SOURCE_DIR); loading it is timed
 * and printed, as the load must stay well under a second. */
#include <stdlib.h>
#include <time.h>

#include "testutil.h"
#include "util/util.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A valid UTF-8 check of our own, independent of the library's. */
static bool valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], len, min;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
        else return false;
        if (i + len > n) return false;
        unsigned cp = c & (0x7F >> len);
        for (unsigned k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* 1. llama.cpp's vectors                                                   */
/* ------------------------------------------------------------------------ */

static void parse_ids(const char *line, size_t n, mp_token *ids, size_t *n_ids, size_t cap) {
    *n_ids = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) i++;
        if (i >= n) break;
        long v = strtol(line + i, NULL, 10);
        if (*n_ids < cap) ids[(*n_ids)++] = (mp_token)v;
        while (i < n && line[i] != ' ') i++;
    }
}

static void print_ids(const char *what, const mp_token *ids, size_t n) {
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

static void check_tokens(const mp_vocab *v, const char *text, size_t len, mp_tokenize_params p,
                         const mp_token *want, size_t n_want, const char *what) {
    mp_err err = {0};
    mp_token *ids = NULL;
    size_t n = 0;
    CHECK_STATUS(MP_OK, mp_tokenize(v, text, len, p, &ids, &n, &err), &err);
    bool same = n == n_want && (n == 0 || !memcmp(ids, want, n * sizeof *ids));
    CHECK_MSG(same, "%s: tokens differ from llama.cpp for \"%.60s\"", what, text);
    if (!same) {
        print_ids("want", want, n_want);
        print_ids("got ", ids, n);
    }
    mp_free(ids);
}

static void test_vectors(const mp_vocab *v) {
    char path[512];
    size_t ni, no;
    char *inp = mp_test_read_file(mp_test_data(path, sizeof path, "vocab/gemma4-vocab.gguf.inp"),
                                  &ni);
    char *out = mp_test_read_file(mp_test_data(path, sizeof path, "vocab/gemma4-vocab.gguf.out"),
                                  &no);
    CHECK(inp && out);
    if (!inp || !out) goto done;
    static const char sep[] = "\n__ggml_vocab_test__\n";
    const size_t seplen = sizeof sep - 1;
    size_t pos = 0, opos = 0, n_cases = 0;
    mp_token want[4096];
    while (pos < ni) {
        const char *next = NULL;
        for (size_t i = pos; i + seplen <= ni && !next; i++)
            if (!memcmp(inp + i, sep, seplen)) next = inp + i;
        size_t end = next ? (size_t)(next - inp) : ni;
        /* the matching line of .out (std::getline) */
        CHECK_MSG(opos < no || (opos == no && end == pos), "more cases than lines in .out");
        size_t oend = opos;
        while (oend < no && out[oend] != '\n') oend++;
        size_t n_want;
        parse_ids(out + opos, oend - opos, want, &n_want, MP_ARRAY_LEN(want));
        opos = oend + 1;
        char *text = malloc(end - pos + 1);
        memcpy(text, inp + pos, end - pos);
        text[end - pos] = 0;
        check_tokens(v, text, end - pos, (mp_tokenize_params){false, false}, want, n_want,
                     "vocab vector");
        free(text);
        n_cases++;
        if (!next) break;
        pos = end + seplen;
    }
    CHECK_MSG(opos >= no, "fewer cases than lines in .out");
    printf("vocab vectors: %zu cases\n", n_cases);
    CHECK(n_cases >= 40); /* the file holds 46: a parser that stops early must fail */
done:
    free(inp);
    free(out);
}

/* More cases, with ids from llama.cpp's llama-tokenize (commit 3f545bec;
 * --no-bos --no-parse-special --no-escape). The first two need the one
 * merge that joins a character to a following space ("> ▁</"): a word split
 * before every space would get them wrong (spm_bpe.c). */
static void test_more_vectors(const mp_vocab *v) {
    static const struct {
        const char *text;
        mp_token ids[48];
    } cases[] = {
        {"> </a>", {107068, 236746, 236813}},
        {"<div> </div>\n<p>x</p> </b> > </a>>  </i> a> </q>\n<table><tr> <td> </td> </tr>"
         "</table>",
         {236820, 1928, 107068, 1928, 236813, 107, 236820, 236758, 236813, 236781, 954, 236758,
          107068, 236763, 236813, 1890, 1454, 236746, 6985, 138, 954, 236747, 236813, 496,
          107068, 236809, 236813, 107, 236820, 5127, 1798, 1168, 236813, 655, 2004, 107068,
          2004, 107068, 1168, 2588, 5127, 236813}},
    };
    for (size_t i = 0; i < MP_ARRAY_LEN(cases); i++) {
        size_t n = 0;
        while (n < MP_ARRAY_LEN(cases[i].ids) && cases[i].ids[n]) n++;
        check_tokens(v, cases[i].text, strlen(cases[i].text), (mp_tokenize_params){false, false},
                     cases[i].ids, n, "extra vector");
    }
    char nl[66] = "x";
    memset(nl + 1, '\n', 64);
    nl[65] = 'y'; /* 64 newlines: 31 + 31 + 2 */
    const mp_token nl_ids[] = {236781, 137, 137, 108, 236762};
    check_tokens(v, nl, sizeof nl, (mp_tokenize_params){false, false}, nl_ids, 5, "newlines");
}

/* ------------------------------------------------------------------------ */
/* 2. Tiny fixtures                                                         */
/* ------------------------------------------------------------------------ */

static void test_tiny_prompts(void) {
    char path[512], rel[256];
    for (const char *const *var = mp_test_tiny_variants; *var; var++) {
        mp_vocab *v = NULL;
        mp_err err = {0};
        snprintf(rel, sizeof rel, "gemma4-tiny-a/tiny-a-%s.gguf", *var);
        CHECK_STATUS(MP_OK, mp_vocab_open(&v, mp_test_data(path, sizeof path, rel), &err), &err);
        if (!v) continue;
        for (int p = 0; p < 3; p++) {
            size_t nt, ni;
            snprintf(rel, sizeof rel, "gemma4-tiny-a/prompts/prompt%d.txt", p);
            char *text = mp_test_read_file(mp_test_data(path, sizeof path, rel), &nt);
            snprintf(rel, sizeof rel, "gemma4-tiny-a/tiny-a-%s.ref/prompt%d.tokens.txt", *var, p);
            char *ids = mp_test_read_file(mp_test_data(path, sizeof path, rel), &ni);
            CHECK_MSG(text && ids, "%s prompt %d: fixture files missing", *var, p);
            if (text && ids) {
                mp_token want[4096];
                size_t n_want;
                parse_ids(ids, ni, want, &n_want, MP_ARRAY_LEN(want));
                CHECK(n_want > 10);
                check_tokens(v, text, nt, (mp_tokenize_params){true, true}, want, n_want, rel);
            }
            free(text);
            free(ids);
        }
        mp_vocab_free(v);
    }
}

/* ------------------------------------------------------------------------ */
/* 3. Round trips, 4. streaming                                             */
/* ------------------------------------------------------------------------ */

static const char *const corpus[] = {
    "Hello world",
    " leading space, trailing space ",
    "   three spaces, then tabs\t\t\tand a\vvertical tab",
    "\n",
    "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n",
    "line one\nline two\r\nline three\n\n\nafter three newlines \n \n",
    "Grüße aus Köln — “typographic quotes” … and ½ ⅔",
    "Русский текст, ελληνικά, עברית, العربية, हिन्दी, ภาษาไทย",
    "中文字符和日本語のテキスト、한국어 텍스트",
    "emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇯🇵 🏳️‍🌈 and rare ones 🫠🪿",
    "math 𝔸𝔹ℂ ∀x∈ℝ: x² ≥ 0; code `int main(void) { return 0; }`",
    "<bos><eos><|turn>user\nhi<turn|>\n<|channel>thought\n<channel|> <unused42>",
    "<|tool_call>call:f{a:<|\"|>b<|\"|>}<tool_call|><|tool_response>",
    "\xff\xfe invalid bytes \x80\x81 and a cut-off \xe2\x96 char",
    "overlong \xc0\xaf, surrogate \xed\xa0\x80, past U+10FFFF \xf4\x90\x80\x80, F5 \xf5",
    "double  spaces,  and U+2580 \xe2\x96\x80 next to U+2581's neighbours",
    "",
};

static void round_trip(const mp_vocab *v, const char *s, size_t n, bool special, const char *tag) {
    mp_err err = {0};
    mp_token *ids = NULL;
    size_t n_ids = 0;
    CHECK_STATUS(MP_OK, mp_tokenize(v, s, n, (mp_tokenize_params){false, special}, &ids, &n_ids,
                                    &err), &err);
    char *back = NULL;
    size_t n_back = 0;
    CHECK_STATUS(MP_OK, mp_detokenize(v, ids, n_ids, special, &back, &n_back, &err), &err);
    bool same = back && n_back == n && !memcmp(back, s, n);
    CHECK_MSG(same, "%s: round trip (special %d) changed \"%.40s\" (%zu -> %zu bytes)", tag,
              special, s, n, n_back);

    /* streaming, raw: chunks never split a character of valid text, and add
     * up to the batch result */
    bool valid = valid_utf8((const unsigned char *)s, n);
    mp_detok *d = NULL;
    CHECK_STATUS(MP_OK, mp_detok_init(&d, v, special, false, &err), &err);
    char *cat = malloc(n_back + 64);
    size_t n_cat = 0;
    bool chunks_ok = true;
    for (size_t i = 0; d && i < n_ids; i++) {
        const char *t;
        size_t k;
        CHECK_STATUS(MP_OK, mp_detok_push(d, ids[i], &t, &k, &err), &err);
        if (valid && !valid_utf8((const unsigned char *)t, k)) chunks_ok = false;
        if (n_cat + k <= n_back + 64) memcpy(cat + n_cat, t, k);
        n_cat += k;
    }
    if (d) {
        const char *t;
        size_t k;
        mp_detok_flush(d, &t, &k);
        if (n_cat + k <= n_back + 64) memcpy(cat + n_cat, t, k);
        n_cat += k;
    }
    CHECK_MSG(chunks_ok, "%s: streaming split a character of \"%.40s\"", tag, s);
    CHECK_MSG(n_cat == n_back && back && !memcmp(cat, back, n_back),
              "%s: streamed text differs from batch decode of \"%.40s\"", tag, s);
    mp_detok_free(d);

    /* streaming with replacement: always valid UTF-8 */
    CHECK_STATUS(MP_OK, mp_detok_init(&d, v, special, true, &err), &err);
    bool all_valid = true;
    for (size_t i = 0; d && i < n_ids; i++) {
        const char *t;
        size_t k;
        mp_detok_push(d, ids[i], &t, &k, NULL);
        all_valid &= valid_utf8((const unsigned char *)t, k);
    }
    if (d) {
        const char *t;
        size_t k;
        mp_detok_flush(d, &t, &k);
        all_valid &= valid_utf8((const unsigned char *)t, k);
    }
    CHECK_MSG(all_valid, "%s: replacement streaming gave invalid UTF-8 for \"%.40s\"", tag, s);
    mp_detok_free(d);
    free(cat);
    mp_free(back);
    mp_free(ids);
}

static void test_round_trips(const mp_vocab *v, const char *tag, uint64_t seed) {
    for (size_t i = 0; i < MP_ARRAY_LEN(corpus); i++)
        for (int sp = 0; sp < 2; sp++) round_trip(v, corpus[i], strlen(corpus[i]), sp, tag);
    /* random bytes, biased towards UTF-8 lead/continuation bytes, spaces
     * and newlines so that partial characters and runs are common */
    static const unsigned char pool[] = {' ', '\n', 'a', 'e', '<', '|', 0xE2, 0x96, 0x81, 0xF0,
                                         0x9F, 0x98, 0x80, 0xC3, 0xA9, 0xFF, 0x80, 0xED, 0x00};
    uint64_t st = seed;
    char buf[256];
    for (int r = 0; r < 300; r++) {
        size_t n = (size_t)(mp_test_rand(&st) % sizeof buf);
        for (size_t i = 0; i < n; i++) {
            uint64_t x = mp_test_rand(&st);
            buf[i] = (char)(x % 3 ? pool[(x >> 8) % sizeof pool] : (unsigned char)(x >> 16));
        }
        /* a literal U+2581 reads as a space: the one text that cannot round-trip */
        for (size_t i = 0; i + 2 < n; i++)
            if (!memcmp(buf + i, "\xE2\x96\x81", 3)) buf[i + 2] = (char)0x80;
        round_trip(v, buf, n, r & 1, tag);
    }
}

/* A character split across byte tokens comes out whole, at the last one. */
static void test_stream_split_char(const mp_vocab *v) {
    mp_token t[4];
    const unsigned char e[4] = {0xF0, 0x9F, 0xAB, 0xA0}; /* U+1FAE0 */
    char name[8];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "<0x%02X>", e[i]);
        t[i] = mp_vocab_find(v, name, 6);
        CHECK(t[i] != MP_TOKEN_NULL);
        CHECK_INT(MP_TOKEN_TYPE_BYTE, mp_vocab_token_type(v, t[i]));
    }
    mp_detok *d = NULL;
    mp_err err = {0};
    CHECK_STATUS(MP_OK, mp_detok_init(&d, v, false, false, &err), &err);
    if (!d) return;
    const char *s;
    size_t k;
    for (int i = 0; i < 3; i++) {
        mp_detok_push(d, t[i], &s, &k, NULL);
        CHECK_INT(0, k);
    }
    mp_detok_push(d, t[3], &s, &k, NULL);
    CHECK(k == 4 && !memcmp(s, e, 4));
    /* a cut-off character then a new one: the stump comes out as raw bytes */
    mp_detok_push(d, t[0], &s, &k, NULL);
    mp_detok_push(d, t[1], &s, &k, NULL);
    CHECK_INT(0, k);
    mp_token a = mp_vocab_find(v, "a", 1);
    mp_detok_push(d, a, &s, &k, NULL);
    CHECK(k == 3 && !memcmp(s, "\xF0\x9F" "a", 3));
    mp_detok_push(d, t[0], &s, &k, NULL);
    mp_detok_flush(d, &s, &k);
    CHECK(k == 1 && (unsigned char)s[0] == 0xF0);
    CHECK_STATUS(MP_ERR_ARG, mp_detok_push(d, mp_vocab_n_tokens(v), &s, &k, &err), &err);
    mp_detok_free(d);

    /* replacement mode: one U+FFFD per maximal invalid subpart */
    CHECK_STATUS(MP_OK, mp_detok_init(&d, v, false, true, &err), &err);
    if (!d) return;
    mp_detok_push(d, t[0], &s, &k, NULL);
    mp_detok_push(d, t[1], &s, &k, NULL);
    mp_detok_push(d, a, &s, &k, NULL);
    CHECK(k == 4 && !memcmp(s, "\xEF\xBF\xBD" "a", 4));
    mp_detok_free(d);
}

static void test_lookups(const mp_vocab *v) {
    const mp_vocab_special *sp = mp_vocab_specials(v);
    CHECK_INT(262144, mp_vocab_n_tokens(v));
    CHECK_INT(MP_VOCAB_SPM_BPE, mp_vocab_get_kind(v));
    CHECK_INT(2, sp->bos);
    CHECK_INT(1, sp->eos);
    CHECK_INT(3, sp->unk);
    CHECK_INT(0, sp->pad);
    CHECK(sp->add_bos);
    /* EOG by text: <eos>, <turn|>, <|tool_response>; never </s> */
    const mp_token *eog;
    size_t n = mp_vocab_eog_ids(v, &eog);
    mp_token want[3] = {mp_vocab_find(v, "<eos>", 5), mp_vocab_find(v, "<|tool_response>", 16),
                        mp_vocab_find(v, "<turn|>", 7)};
    CHECK_INT(3, n);
    for (size_t i = 0; i < 3 && i < n; i++) CHECK_INT(want[i], eog[i]);
    CHECK(!mp_vocab_is_eog(v, mp_vocab_find(v, "</s>", 4)));
    CHECK(mp_vocab_is_eog(v, mp_vocab_find(v, "<turn|>", 7)));
    /* pieces */
    size_t len;
    const char *p = mp_vocab_piece(v, mp_vocab_find(v, "<|channel>", 10), false, &len);
    CHECK(p && len == 10 && !memcmp(p, "<|channel>", 10)); /* USER_DEFINED: always */
    p = mp_vocab_piece(v, sp->bos, false, &len);
    CHECK(p && len == 0);                                  /* CONTROL: on request */
    p = mp_vocab_piece(v, sp->bos, true, &len);
    CHECK(p && len == 5 && !memcmp(p, "<bos>", 5));
    p = mp_vocab_piece(v, mp_vocab_find(v, "<|tool_response>", 16), false, &len);
    CHECK(p && len == 0); /* USER_DEFINED made CONTROL as an EOG token, as in llama.cpp */
    p = mp_vocab_piece(v, mp_vocab_find(v, "<0x41>", 6), false, &len);
    CHECK(p && len == 1 && p[0] == 'A');
    p = mp_vocab_piece(v, mp_vocab_find(v, "\xe2\x96\x81the", 6), false, &len);
    CHECK(p && len == 4 && !memcmp(p, " the", 4));
    CHECK(mp_vocab_piece(v, -1, true, &len) == NULL);
    CHECK(mp_vocab_piece(v, 262144, true, &len) == NULL);
    CHECK(mp_vocab_text(v, 262144, &len) == NULL);
    /* special-token parsing: CONTROL only on request, USER_DEFINED always */
    mp_token *ids;
    size_t n_ids;
    mp_err err = {0};
    const char *txt = "<|turn>x<|channel>";
    CHECK_STATUS(MP_OK, mp_tokenize(v, txt, strlen(txt), (mp_tokenize_params){false, true}, &ids,
                                    &n_ids, &err), &err);
    CHECK(n_ids == 3 && ids[0] == mp_vocab_find(v, "<|turn>", 7) &&
          ids[2] == mp_vocab_find(v, "<|channel>", 10));
    mp_free(ids);
    CHECK_STATUS(MP_OK, mp_tokenize(v, txt, strlen(txt), (mp_tokenize_params){true, false}, &ids,
                                    &n_ids, &err), &err);
    CHECK(n_ids > 3 && ids[0] == sp->bos && ids[n_ids - 1] == mp_vocab_find(v, "<|channel>", 10));
    for (size_t i = 0; i < n_ids; i++) CHECK(ids[i] != mp_vocab_find(v, "<|turn>", 7));
    mp_free(ids);
    /* a literal U+2581 is SentencePiece's space mark: it decodes as a space
     * (llama.cpp agrees); this is why the round trips avoid it */
    char *back;
    size_t n_back;
    CHECK_STATUS(MP_OK, mp_tokenize(v, "a\xe2\x96\x81" "b", 5, (mp_tokenize_params){false, false},
                                    &ids, &n_ids, &err), &err);
    CHECK_STATUS(MP_OK, mp_detokenize(v, ids, n_ids, false, &back, &n_back, &err), &err);
    CHECK(n_back == 3 && !memcmp(back, "a b", 3));
    mp_free(back);
    mp_free(ids);
    /* empty text: just BOS, or nothing */
    CHECK_STATUS(MP_OK, mp_tokenize(v, "", 0, (mp_tokenize_params){true, false}, &ids, &n_ids,
                                    &err), &err);
    CHECK(n_ids == 1 && ids[0] == sp->bos);
    mp_free(ids);
}

int main(int argc, char **argv) {
    uint64_t seed = mp_test_seed(argc, argv);
    char path[512];
    snprintf(path, sizeof path, "%s/data/gemma4-vocab.gguf", MP_SOURCE_DIR);
    mp_vocab *v = NULL;
    mp_err err = {0};
    double t0 = now_s();
    CHECK_STATUS(MP_OK, mp_vocab_open(&v, path, &err), &err);
    printf("loaded %s in %.3f s\n", path, now_s() - t0);
    if (v) {
        test_lookups(v);
        test_vectors(v);
        test_more_vectors(v);
        test_round_trips(v, "full vocab", seed);
        test_stream_split_char(v);
        mp_vocab_free(v);
    }
    test_tiny_prompts();
    mp_vocab *tiny = NULL;
    CHECK_STATUS(MP_OK, mp_vocab_open(&tiny, mp_test_data(path, sizeof path,
                 "gemma4-tiny-a/tiny-a-q8_0.gguf"), &err), &err);
    if (tiny) {
        test_round_trips(tiny, "tiny vocab", seed);
        mp_vocab_free(tiny);
    }
    return mp_test_end("test_vocab_vectors");
}

/* test_imatrix_cli.c — `moeprune profile --imatrix FILE` from the outside, on
 * the tiny F32 fixture:
 *  - the file holds what the library computes when it runs the same chunks
 *    itself (the CLI's tokenizing and chunking, nothing dropped or counted
 *    twice): values equal to the sums rounded to F32, counts exact; its
 *    counts agree with the stats file of the same run (dense weights saw
 *    every token, expert slab e saw the selections of e); its metadata names
 *    the input, the chunks, --ctx and the model's sha256;
 *  - two shards merged with `stats merge` equal one run (counts exactly,
 *    sums to F32 rounding);
 *  - --stop-after then --resume writes the same bytes as one uninterrupted
 *    run; resuming without --imatrix a run that had it is refused;
 *  - --generate: the imatrix sees prompts and answers, the stats the answers;
 *  - an unwritable or existing FILE fails before any work, and leaves nothing.
 * argv[1] is the moeprune binary. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "testutil.h"
#include "util/util.h"

#define CTX 16

static const char text[] =
    "The lighthouse keeper watched the small red boat rock on the grey water, and put the "
    "kettle on. Solve 3x + 7 = 25: subtract 7, then divide by 3, so x = 6. def add(a, b): "
    "return a + b";

/* The library's imatrix over the chunks the CLI cuts from `text`. */
static mp_imatrix *recompute(const char *model_path, int64_t *n_chunks) {
    mp_err err = {0};
    mp_model *m = NULL;
    mp_vocab *v = NULL;
    mp_context *c = NULL;
    mp_imatrix *im = NULL;
    mp_token *toks = NULL;
    size_t n = 0;
    CHECK_STATUS(MP_OK, mp_model_load(&m, model_path, &err), &err);
    if (m) CHECK_STATUS(MP_OK, mp_vocab_load(&v, mp_model_gguf(m), &err), &err);
    mp_context_params cp = mp_context_default_params();
    cp.n_ctx = CTX;
    if (v) {
        mp_tokenize_params tp = {.add_bos = mp_vocab_specials(v)->add_bos};
        CHECK_STATUS(MP_OK, mp_tokenize(v, text, strlen(text), tp, &toks, &n, &err), &err);
        CHECK_STATUS(MP_OK, mp_context_init(&c, m, cp, &err), &err);
    }
    if (c) CHECK_STATUS(MP_OK, mp_imatrix_create(&im, m, &err), &err);
    if (im) CHECK_STATUS(MP_OK, mp_imatrix_attach(im, c, &err), &err);
    *n_chunks = 0;
    for (size_t s0 = 0; im && s0 < n; s0 += CTX, ++*n_chunks) {
        mp_context_truncate(c, 0);
        int64_t len = n - s0 < CTX ? (int64_t)(n - s0) : CTX;
        CHECK_STATUS(MP_OK, mp_context_eval(c, toks + s0, len, MP_LOGITS_NONE, NULL, &err), &err);
    }
    mp_free(toks);
    mp_context_free(c);
    mp_vocab_free(v);
    mp_model_free(m);
    return im;
}

/* Tokens of the chat prompts two-phase profiling renders for `texts`
 * (a user turn, thinking on, the model's turn opened), summed. */
static double prompt_tokens(const char *model_path, const char *const *texts, int n) {
    mp_err err = {0};
    mp_model *m = NULL;
    mp_vocab *v = NULL;
    mp_chat_family fam;
    double sum = 0;
    CHECK_STATUS(MP_OK, mp_model_load(&m, model_path, &err), &err);
    if (m) CHECK_STATUS(MP_OK, mp_vocab_load(&v, mp_model_gguf(m), &err), &err);
    if (v) CHECK_STATUS(MP_OK, mp_chat_detect(v, &fam, &err), &err);
    for (int i = 0; v && !err.status && i < n; i++) {
        mp_chat_msg msg = {.role = MP_CHAT_USER, .content = texts[i]};
        mp_chat_params cp = {.thinking = true, .add_generation_prompt = true};
        char *prompt = NULL;
        size_t plen = 0, nt = 0;
        mp_token *toks = NULL;
        CHECK_STATUS(MP_OK, mp_chat_render(fam, &msg, 1, cp, &prompt, &plen, &err), &err);
        mp_tokenize_params tp = {.add_bos = mp_vocab_specials(v)->add_bos, .parse_special = true};
        if (prompt) CHECK_STATUS(MP_OK, mp_tokenize(v, prompt, plen, tp, &toks, &nt, &err), &err);
        sum += (double)nt;
        mp_free(prompt);
        mp_free(toks);
    }
    mp_vocab_free(v);
    mp_model_free(m);
    return sum;
}

static void check_against_stats(const mp_imatrix *im, const mp_stats *s) {
    double tokens = 0;
    for (int64_t c = 0; c < s->n_class; c++) tokens += s->class_tokens[c];
    char name[64];
    for (int64_t i = 0; i < im->n_entry; i++)
        if (im->entries[i].n_slab == 1)
            CHECK_MSG(im->entries[i].count[0] == tokens, "%s: %g rows for %g tokens",
                      im->entries[i].name, im->entries[i].count[0], tokens);
    for (int64_t l = 0; l < s->n_layer; l++) {
        const int64_t x = s->n_expert[l], k = s->n_expert_used;
        snprintf(name, sizeof name, "blk.%lld.ffn_gate_up_exps.weight", (long long)l);
        const mp_imatrix_entry *e = mp_imatrix_find(im, name);
        CHECK(x == 0 || (e && e->n_slab == x));
        for (int64_t ex = 0; x && e && e->n_slab == x && ex < x; ex++) {
            double sel = 0;
            for (int64_t c = 0; c < s->n_class; c++)
                for (int64_t r = 0; r < k; r++) sel += mp_stats_cell_at(s, l, c)->count[r * x + ex];
            CHECK_MSG(e->count[ex] == sel, "%s slab %lld: %g rows, %g selections", name,
                      (long long)ex, e->count[ex], sel);
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *cli = argv[1];
    char dir[256], model[512], cmd[4096], *out = NULL;
    char txt[600], full[600], full_im[600], s_st[2][600], s_im[2][600], merged[600];
    mp_err err = {0};
    CHECK(mp_test_tmpdir(dir, sizeof dir, "imatrix-cli") != NULL);
    mp_test_data(model, sizeof model, "gemma4-tiny-a/tiny-a-f32.gguf");
    snprintf(txt, sizeof txt, "%s/corpus.txt", dir);
    mp_test_write_file(txt, text, strlen(text));
    snprintf(full, sizeof full, "%s/full.stats", dir);
    snprintf(full_im, sizeof full_im, "%s/full.imatrix.gguf", dir);
    snprintf(merged, sizeof merged, "%s/merged.imatrix.gguf", dir);

    /* one run: the file against the library's own run and the stats */
    snprintf(cmd, sizeof cmd,
             "'%s' profile '%s' '%s' --ctx %d -t 2 --quiet -o '%s' --imatrix '%s' 2>&1", cli, model,
             txt, CTX, full, full_im);
    CHECK_INT(0, mp_test_run(cmd, &out));
    CHECK_MSG(out && strstr(out, "imatrix of 39 weight matrices"), "%s", out ? out : "");
    free(out);
    mp_imatrix *im = NULL, *ref = NULL;
    mp_stats *st = NULL;
    int64_t n_chunks = 0;
    CHECK_STATUS(MP_OK, mp_imatrix_load(&im, full_im, &err), &err);
    CHECK_STATUS(MP_OK, mp_stats_load(&st, full, &err), &err);
    ref = recompute(model, &n_chunks);
    if (im && st && ref) {
        CHECK(n_chunks >= 3 && im->chunk_count == n_chunks && im->chunk_size == CTX);
        CHECK(im->n_dataset == 1 && !strcmp(im->datasets[0], txt));
        CHECK(!strcmp(im->model_sha256, st->model_sha256) && strlen(im->model_sha256) == 64);
        int64_t n_ref = 0;
        for (int64_t i = 0; i < ref->n_entry; i++) {
            const mp_imatrix_entry *r = &ref->entries[i], *e = mp_imatrix_find(im, r->name);
            if (!mp_test_imatrix_seen(r)) continue;
            n_ref++;
            bool eq = e && e->n_in == r->n_in && e->n_slab == r->n_slab;
            for (int64_t s = 0; eq && s < r->n_slab; s++) eq = e->count[s] == r->count[s];
            for (int64_t j = 0; eq && j < r->n_in * r->n_slab; j++)
                eq = e->sum2[j] == (double)(float)r->sum2[j];
            CHECK_MSG(eq, "%s: the CLI's file differs from the library's sums", r->name);
        }
        CHECK_INT(n_ref, im->n_entry);
        check_against_stats(im, st);
    }
    mp_imatrix_free(ref);
    mp_stats_free(st);

    /* shards merged with `stats merge` equal the one run */
    for (int i = 0; i < 2; i++) {
        snprintf(s_st[i], sizeof s_st[i], "%s/s%d.stats", dir, i);
        snprintf(s_im[i], sizeof s_im[i], "%s/s%d.imatrix.gguf", dir, i);
        snprintf(cmd, sizeof cmd,
                 "'%s' profile '%s' '%s' --ctx %d --shard %d/2 --quiet -o '%s' --imatrix '%s' "
                 "2>&1",
                 cli, model, txt, CTX, i, s_st[i], s_im[i]);
        CHECK_INT(0, mp_test_run(cmd, &out));
        free(out);
    }
    snprintf(cmd, sizeof cmd, "'%s' stats merge '%s' '%s' -o '%s' 2>&1", cli, s_im[0], s_im[1],
             merged);
    CHECK_INT(0, mp_test_run(cmd, &out));
    free(out);
    mp_imatrix *mg = NULL, *h0 = NULL;
    CHECK_STATUS(MP_OK, mp_imatrix_load(&mg, merged, &err), &err);
    CHECK_STATUS(MP_OK, mp_imatrix_load(&h0, s_im[0], &err), &err);
    /* each shard rounded to F32, added, rounded again: a few F32 ulps */
    CHECK(im && mg && mp_test_imatrix_same(im, mg, 1e-6));
    CHECK(mg && im && mg->chunk_count == im->chunk_count && mg->n_dataset == 1);
    CHECK(h0 && im && h0->chunk_count < im->chunk_count && !mp_test_imatrix_same(im, h0, 1e-6));
    mp_imatrix_free(mg);
    mp_imatrix_free(h0);
    snprintf(cmd, sizeof cmd, "'%s' stats merge '%s' '%s' -o '%s/x.gguf' 2>&1", cli, s_im[0],
             s_st[1], dir);
    CHECK_INT(1, mp_test_run(cmd, &out));
    CHECK_MSG(out && strstr(out, "not an imatrix file") && strstr(out, "s1.stats"), "%s",
              out ? out : "");
    free(out);

    /* --stop-after, then --resume: the same bytes as one run */
    char res[600], res_im[600], part[700];
    snprintf(res, sizeof res, "%s/res.stats", dir);
    snprintf(res_im, sizeof res_im, "%s/res.imatrix.gguf", dir);
    snprintf(part, sizeof part, "%s.partial.imatrix", res);
    snprintf(cmd, sizeof cmd,
             "'%s' profile '%s' '%s' --ctx %d --quiet --stop-after 2 -o '%s' --imatrix '%s' 2>&1",
             cli, model, txt, CTX, res, res_im);
    CHECK_INT(0, mp_test_run(cmd, &out));
    free(out);
    CHECK(access(part, F_OK) == 0 && access(res_im, F_OK) != 0 && access(res, F_OK) != 0);
    snprintf(cmd, sizeof cmd, "'%s' profile '%s' '%s' --ctx %d --quiet --resume -o '%s' 2>&1", cli,
             model, txt, CTX, res);
    CHECK_INT(1, mp_test_run(cmd, &out)); /* the checkpoint has an imatrix: another plan */
    CHECK(out && strstr(out, "another run"));
    free(out);
    snprintf(cmd, sizeof cmd,
             "'%s' profile '%s' '%s' --ctx %d --quiet --resume -o '%s' --imatrix '%s' 2>&1", cli,
             model, txt, CTX, res, res_im);
    CHECK_INT(0, mp_test_run(cmd, &out));
    free(out);
    CHECK(access(part, F_OK) != 0);
    size_t la = 0, lb = 0;
    char *a = mp_test_read_file(full_im, &la), *b = mp_test_read_file(res_im, &lb);
    CHECK_MSG(a && b && la == lb && !memcmp(a, b, la),
              "the resumed run's imatrix differs from the uninterrupted run's");
    free(a);
    free(b);

    /* two-phase: prompts and answers in the imatrix (the whole replay, once),
     * answers in the stats */
    char pj[600], g_st[600], g_im[600];
    snprintf(pj, sizeof pj, "%s/prompts.jsonl", dir);
    snprintf(g_st, sizeof g_st, "%s/g.stats", dir);
    snprintf(g_im, sizeof g_im, "%s/g.imatrix.gguf", dir);
    const char *const questions[2] = {"What is 17 * 23?", "Name a colour."};
    char prompts[256];
    snprintf(prompts, sizeof prompts, "{\"text\": \"%s\"}\n{\"text\": \"%s\"}\n", questions[0],
             questions[1]);
    mp_test_write_file(pj, prompts, strlen(prompts));
    snprintf(cmd, sizeof cmd,
             "'%s' profile '%s' '%s' --generate 6 --ctx 96 --seed 3 --quiet -o '%s' --imatrix "
             "'%s' 2>&1",
             cli, model, pj, g_st, g_im);
    CHECK_INT(0, mp_test_run(cmd, &out));
    free(out);
    mp_imatrix *gi = NULL;
    CHECK_STATUS(MP_OK, mp_imatrix_load(&gi, g_im, &err), &err);
    CHECK_STATUS(MP_OK, mp_stats_load(&st, g_st, &err), &err);
    const double prompt_tok = prompt_tokens(model, questions, 2);
    if (gi && st) {
        const mp_imatrix_entry *q = mp_imatrix_find(gi, "blk.0.attn_q.weight");
        const mp_imatrix_entry *x = mp_imatrix_find(gi, "blk.0.ffn_gate_up_exps.weight");
        double answers = st->class_tokens[0], rows = 0;
        for (int64_t e = 0; x && e < x->n_slab; e++) rows += x->count[e];
        CHECK(answers >= 2 && prompt_tok > 10);
        CHECK_MSG(q && q->count[0] == prompt_tok + answers,
                  "blk.0.attn_q: %g rows for %g prompt and %g answer tokens", q ? q->count[0] : -1,
                  prompt_tok, answers);
        CHECK(q && x && rows == q->count[0] * (double)st->n_expert_used);
        CHECK(gi->chunk_count == 2);
    }
    mp_imatrix_free(gi);
    mp_stats_free(st);

    /* unwritable, existing, or clashing FILE: refused before any work */
    char nope[700], never[600];
    snprintf(nope, sizeof nope, "%s/missing/im.gguf", dir);
    snprintf(never, sizeof never, "%s/never.stats", dir);
    /* --stop-after 1 would checkpoint and succeed, were FILE checked only at the end */
    snprintf(cmd, sizeof cmd,
             "'%s' profile '%s' '%s' --ctx %d --quiet --stop-after 1 -o '%s' --imatrix '%s' 2>&1",
             cli, model, txt, CTX, never, nope);
    CHECK_INT(1, mp_test_run(cmd, &out));
    CHECK_MSG(out && strstr(out, nope), "%s", out ? out : "");
    free(out);
    snprintf(part, sizeof part, "%s.partial", never);
    CHECK(access(never, F_OK) != 0 && access(nope, F_OK) != 0 && access(part, F_OK) != 0);
    snprintf(cmd, sizeof cmd, "'%s' profile '%s' '%s' --ctx %d --quiet -o '%s' --imatrix '%s' 2>&1",
             cli, model, txt, CTX, never, full_im);
    CHECK_INT(1, mp_test_run(cmd, &out));
    CHECK_MSG(out && strstr(out, "file exists") && strstr(out, full_im), "%s", out ? out : "");
    free(out);
    CHECK(access(never, F_OK) != 0);
    snprintf(cmd, sizeof cmd, "'%s' profile '%s' '%s' -o '%s' --imatrix '%s' 2>&1", cli, model, txt,
             never, never);
    CHECK_INT(2, mp_test_run(cmd, &out));
    free(out);
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -c '^[.]'", dir); /* no temporary file left */
    CHECK_INT(1, mp_test_run(cmd, &out));
    free(out);
    mp_imatrix_free(im);

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK_INT(0, mp_test_run(cmd, &out));
    free(out);
    return mp_test_end("test_imatrix_cli");
}

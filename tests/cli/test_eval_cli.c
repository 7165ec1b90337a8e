/* test_eval_cli.c — `moeprune ppl` and `moeprune kld` from the outside:
 *  - a model against itself: KL divergence 0, top-1 agreement 100%, PPL ratio 1;
 *  - a masked model (FILE:MAP.json) has KLD > 0 that grows as more experts
 *    are dropped (16 -> 12 -> 8 -> 4 per layer on the tiny fixture), and a
 *    pruned file gives the same numbers as its mask;
 *  - ppl --json carries its fields, equals exp(nll), equals kld's base PPL,
 *    and does not depend on the thread count;
 *  - a text shorter than two windows, a vocabulary mismatch and a missing
 *    file are refused with clear messages.
 * argv[1] is the moeprune binary. (Agreement with llama-perplexity within
 * 0.5% was measured by hand: see bench/RESULTS.md.) */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "testutil.h"

/* A map keeping `keep` of 16 experts in each of the 4 layers. */
static void write_map(const char *path, int keep) {
    char json[4096];
    int o =
        snprintf(json, sizeof json,
                 "{\"format\":\"moeprune.dropmap/1\",\"model\":{\"arch\":\"gemma4\",\"n_layer\":"
                 "4,\"n_expert\":16,\"n_expert_used\":4},\"layers\":[");
    for (int l = 0; l < 4; l++) {
        o += snprintf(json + o, sizeof json - (size_t)o, "%s{\"layer\":%d,\"keep\":[", l ? "," : "",
                      l);
        for (int e = 0; e < keep; e++)
            o += snprintf(json + o, sizeof json - (size_t)o, "%s%d", e ? "," : "", e);
        o += snprintf(json + o, sizeof json - (size_t)o, "]}");
    }
    snprintf(json + o, sizeof json - (size_t)o, "]}\n");
    mp_test_write_file(path, json, strlen(json));
}

/* A copy of `in` whose vocabulary differs in one token's text. */
static bool write_other_vocab(const char *in, const char *out) {
    mp_err err = {0};
    mp_gguf *g = NULL;
    mp_gguf_writer *w = NULL;
    char **toks = NULL;
    uint64_t nt = 0;
    bool ok = false;
    if (mp_gguf_open(&g, in, &err) || mp_gguf_writer_open(&w, out, true, &err)) goto done;
    int64_t ti = mp_gguf_find_key(g, "tokenizer.ggml.tokens");
    nt = ti >= 0 ? mp_gguf_arr_len(g, ti) : 0;
    toks = calloc(nt, sizeof *toks);
    for (uint64_t i = 0; toks && i < nt; i++) {
        const char *s;
        size_t n;
        mp_gguf_get_str(g, ti, i, &s, &n, &err);
        toks[i] = calloc(n + 2, 1);
        memcpy(toks[i], s, n);
        if (i == 700) toks[i][n] = 'Z'; /* one token changes its text */
    }
    mp_status s = MP_OK;
    for (int64_t i = 0; i < mp_gguf_n_kv(g) && !s; i++)
        s = i == ti ? mp_gguf_writer_kv_arr_str(w, "tokenizer.ggml.tokens",
                                                (const char *const *)toks, nt, &err)
                    : mp_gguf_writer_kv_copy(w, g, i, &err);
    for (int64_t i = 0; i < mp_gguf_n_tensors(g) && !s; i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(g, i);
        s = mp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, &err);
    }
    for (int64_t i = 0; i < mp_gguf_n_tensors(g) && !s; i++)
        s = mp_gguf_writer_write_data(w, mp_gguf_tensor_at(g, i)->data,
                                      mp_gguf_tensor_at(g, i)->nbytes, &err);
    ok = !s && !mp_gguf_writer_finish(w, &err);
done:
    for (uint64_t i = 0; toks && i < nt; i++) free(toks[i]);
    free(toks);
    mp_gguf_writer_free(w);
    mp_gguf_free(g);
    return ok;
}

static cJSON *run_json(const char *cmd) {
    char *out = NULL;
    int rc = mp_test_run(cmd, &out);
    cJSON *j = rc == 0 && out ? cJSON_Parse(out) : NULL;
    CHECK_MSG(j != NULL, "%s: exit %d, output %s", cmd, rc, out ? out : "");
    free(out);
    return j;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *cli = argv[1];
    char dir[256], model[512], text[600], maps[4][600], pruned[600], other[600], cmd[8192];
    char *out = NULL;
    CHECK(mp_test_tmpdir(dir, sizeof dir, "eval") != NULL);
    mp_test_data(model, sizeof model, "gemma4-tiny-a/tiny-a-q8_0.gguf");
    snprintf(text, sizeof text, "%s/text.txt", dir);
    /* ~800 tokens of the tiny vocabulary: 6 windows of 128 */
    char body[8192] = "";
    for (int i = 0; i < 12; i++)
        strcat(body, "The quick brown fox jumps over the lazy dog; in 1859 the steam engine "
                     "changed how people traveled, and prices rose 3.5% in Q2.\n");
    mp_test_write_file(text, body, strlen(body));
    const int keeps[4] = {16, 12, 8, 4};
    for (int i = 0; i < 4; i++) {
        snprintf(maps[i], sizeof maps[i], "%s/keep%d.json", dir, keeps[i]);
        write_map(maps[i], keeps[i]);
    }

    /* kld: itself, then 12, 8, 4 experts kept */
    snprintf(cmd, sizeof cmd,
             "'%s' kld '%s' '%s' '%s:%s' '%s:%s' '%s:%s' '%s' --ctx 64 --chunks 2 --json -t 2", cli,
             model, model, model, maps[1], model, maps[2], model, maps[3], text);
    cJSON *j = run_json(cmd);
    const cJSON *rows = cJSON_GetObjectItem(j, "candidates");
    CHECK_INT(4, cJSON_GetArraySize(rows));
    double prev = -1, base_ppl = num(j, "base_ppl");
    for (int i = 0; i < cJSON_GetArraySize(rows); i++) {
        const cJSON *r = cJSON_GetArrayItem(rows, i);
        double kld = num(r, "kld_mean");
        if (i == 0) {
            CHECK(kld == 0 && num(r, "kld_max") == 0);
            CHECK(num(r, "same_top_p") == 1.0 && num(r, "ppl_ratio") == 1.0);
            CHECK(num(r, "delta_p_rms") == 0);
        } else {
            CHECK_MSG(kld > prev, "KLD with %d experts kept (%g) is not above %g", keeps[i], kld,
                      prev);
        }
        CHECK(num(r, "kld_min") <= num(r, "kld_median") &&
              num(r, "kld_median") <= num(r, "kld_p99"));
        CHECK(num(r, "file_size") > 0 && num(r, "n_tokens") == num(j, "chunks") * 31);
        prev = kld;
    }
    double kld8 = num(cJSON_GetArrayItem(rows, 2), "kld_mean");
    cJSON_Delete(j);

    /* ppl: fields, exp(nll), equals kld's base, thread count irrelevant */
    snprintf(cmd, sizeof cmd, "'%s' ppl '%s' '%s' --ctx 64 --chunks 2 --json -t 1", cli, model,
             text);
    cJSON *p1 = run_json(cmd);
    snprintf(cmd, sizeof cmd, "'%s' ppl '%s' '%s' --ctx 64 --chunks 2 --json -t 2", cli, model,
             text);
    cJSON *p2 = run_json(cmd);
    CHECK(num(p1, "ppl") == num(p2, "ppl") && num(p1, "nll") == num(p2, "nll"));
    CHECK_NEAR(exp(num(p1, "nll")), num(p1, "ppl"), 1e-9 * num(p1, "ppl"));
    CHECK_NEAR(base_ppl, num(p1, "ppl"), 1e-9 * base_ppl);
    CHECK(num(p1, "n_tokens") == num(p1, "chunks") * 31 && num(p1, "ctx") == 64 &&
          num(p1, "ppl_stderr") > 0);
    cJSON_Delete(p1);
    cJSON_Delete(p2);

    /* a pruned file measures exactly like its mask */
    snprintf(pruned, sizeof pruned, "%s/p8.gguf", dir);
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' '%s' -o '%s' 2>&1", cli, model, maps[2], pruned);
    CHECK_INT(0, mp_test_run(cmd, &out));
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' kld '%s' '%s' '%s' --ctx 64 --chunks 2 --json", cli, model,
             pruned, text);
    j = run_json(cmd);
    CHECK(num(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "candidates"), 0), "kld_mean") == kld8);
    cJSON_Delete(j);

    /* --save-base / --base-logits: with K = the whole vocabulary the saved base
     * gives the live numbers; with a smaller K, a lower bound (the tail merged
     * into one event can only lower KL); other settings or text refused */
    char kb[600], kb32[600];
    snprintf(kb, sizeof kb, "%s/base.kld", dir);
    snprintf(kb32, sizeof kb32, "%s/base32.kld", dir);
    double live = 0, full = 0, lower = 0;
    snprintf(cmd, sizeof cmd,
             "'%s' kld '%s' '%s:%s' '%s' --ctx 64 --chunks 2 --json --save-base '%s' --top-k 4096",
             cli, model, model, maps[2], text, kb);
    j = run_json(cmd);
    live = num(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "candidates"), 0), "kld_mean");
    cJSON_Delete(j);
    snprintf(cmd, sizeof cmd,
             "'%s' kld '%s' '%s:%s' '%s' --ctx 64 --chunks 2 --json --base-logits '%s'", cli, model,
             model, maps[2], text, kb);
    j = run_json(cmd);
    full = num(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "candidates"), 0), "kld_mean");
    cJSON_Delete(j);
    snprintf(cmd, sizeof cmd,
             "'%s' kld '%s' '%s:%s' '%s' --ctx 64 --chunks 2 --json --save-base '%s' --top-k 32",
             cli, model, model, maps[2], text, kb32);
    j = run_json(cmd);
    cJSON_Delete(j);
    snprintf(cmd, sizeof cmd,
             "'%s' kld '%s' '%s:%s' '%s' --ctx 64 --chunks 2 --json --base-logits '%s'", cli, model,
             model, maps[2], text, kb32);
    j = run_json(cmd);
    lower = num(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "candidates"), 0), "kld_mean");
    cJSON_Delete(j);
    CHECK_MSG(live > 0 && fabs(full - live) < 1e-5 * live, "saved base %g vs live %g", full, live);
    CHECK_MSG(lower > 0 && lower <= live * (1 + 1e-6), "top-32 KLD %g above live %g", lower, live);
    snprintf(cmd, sizeof cmd, "'%s' kld '%s' '%s' '%s' --ctx 32 --chunks 2 --base-logits '%s' 2>&1",
             cli, model, model, text, kb);
    CHECK_INT(1, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "--ctx 64"));
    free(out);

    /* refusals */
    char short_text[600];
    snprintf(short_text, sizeof short_text, "%s/short.txt", dir);
    mp_test_write_file(short_text, "Too short.", strlen("Too short."));
    snprintf(cmd, sizeof cmd, "'%s' ppl '%s' '%s' --ctx 128 2>&1", cli, model, short_text);
    CHECK_INT(1, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "short.txt") && strstr(out, "at least 256"));
    free(out);
    snprintf(other, sizeof other, "%s/other.gguf", dir);
    CHECK(write_other_vocab(model, other));
    snprintf(cmd, sizeof cmd, "'%s' kld '%s' '%s' '%s' --ctx 64 --chunks 2 2>&1", cli, model, other,
             text);
    CHECK_INT(1, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "token 700") && strstr(out, "different vocabularies"));
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' kld '%s' /nonexistent.gguf '%s' 2>&1", cli, model, text);
    CHECK_INT(1, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "/nonexistent.gguf"));
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' kld '%s' '%s' 2>&1", cli, model, text);
    CHECK_INT(2, mp_test_run(cmd, &out));
    free(out);

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK_INT(0, mp_test_run(cmd, &out));
    free(out);
    return mp_test_end("test_eval_cli");
}

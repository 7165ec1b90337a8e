/* test_bench_mc.c — `moeprune bench-mc`: each choice's log-likelihood equals
 * an independent computation (the whole question + choice run in one pass
 * from an empty cache, log-softmax summed over the choice's tokens), acc and
 * acc_norm follow from the per-question predictions, answers given as letters
 * parse, and malformed files are refused naming file and line.
 * argv[1] is the moeprune binary. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "testutil.h"

/* log-likelihood of `choice` after the question, in one pass. */
static double one_pass_ll(mp_model *m, const mp_vocab *v, const char *question,
                          const char *choice) {
    char prompt[512], cont[256];
    snprintf(prompt, sizeof prompt, "Question: %s\nAnswer:", question);
    snprintf(cont, sizeof cont, " %s", choice);
    mp_token *pt = NULL, *ct = NULL, all[256];
    size_t np = 0, nc = 0;
    mp_err err = {0};
    mp_tokenize_params tp = {.add_bos = true}, cp = {0};
    mp_tokenize(v, prompt, strlen(prompt), tp, &pt, &np, &err);
    mp_tokenize(v, cont, strlen(cont), cp, &ct, &nc, &err);
    memcpy(all, pt, np * sizeof *pt);
    memcpy(all + np, ct, nc * sizeof *ct);
    int64_t n = (int64_t)(np + nc), V = mp_model_n_vocab(m);
    mp_context *c = NULL;
    mp_context_params p = mp_context_default_params();
    p.n_ctx = n;
    float *lg = malloc((size_t)(n * V) * sizeof *lg);
    double ll = NAN;
    if (!mp_context_init(&c, m, p, &err) && !mp_context_eval(c, all, n, MP_LOGITS_ALL, lg, &err)) {
        ll = 0;
        for (int64_t t = (int64_t)np; t < n; t++) {
            const float *row = lg + (t - 1) * V;
            double mx = -INFINITY, z = 0;
            for (int64_t i = 0; i < V; i++) mx = row[i] > mx ? row[i] : mx;
            for (int64_t i = 0; i < V; i++) z += exp(row[i] - mx);
            ll += row[all[t]] - mx - log(z);
        }
    }
    free(lg);
    mp_context_free(c);
    mp_free(pt);
    mp_free(ct);
    return ll;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *cli = argv[1];
    char dir[256], model[512], file[600], bad[600], cmd[2048], *out = NULL;
    CHECK(mp_test_tmpdir(dir, sizeof dir, "mc") != NULL);
    mp_test_data(model, sizeof model, "gemma4-tiny-a/tiny-a-f32.gguf");
    snprintf(file, sizeof file, "%s/q.jsonl", dir);
    FILE *f = fopen(file, "w");
    fputs(
        "{\"question\": \"What is 2 + 2?\", \"choices\": [\"3\", \"4\", \"five\"], \"answer\": 1}\n"
        "\n"
        "{\"question\": \"Which is a colour?\", \"choices\": [\"blue\", \"chair\"], \"answer\": "
        "\"A\"}\n",
        f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' bench-mc '%s' '%s' --json -t 2", cli, model, file);
    CHECK_INT(0, mp_test_run(cmd, &out));
    cJSON *j = out ? cJSON_Parse(out) : NULL;
    free(out);
    CHECK(j != NULL);
    mp_err err = {0};
    mp_model *m = NULL;
    mp_vocab *v = NULL;
    CHECK_STATUS(MP_OK, mp_model_load(&m, model, &err), &err);
    if (m) CHECK_STATUS(MP_OK, mp_vocab_load(&v, mp_model_gguf(m), &err), &err);
    const char *qs[2] = {"What is 2 + 2?", "Which is a colour?"};
    const char *cs[2][3] = {{"3", "4", "five"}, {"blue", "chair", NULL}};
    const int answers[2] = {1, 0};
    int correct = 0;
    for (int i = 0; j && m && v && i < 2; i++) {
        const cJSON *q = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "questions"), i);
        const cJSON *ll = cJSON_GetObjectItem(q, "loglik");
        CHECK_INT(answers[i], cJSON_GetObjectItem(q, "answer")->valueint);
        int best = 0;
        for (int k = 0; k < cJSON_GetArraySize(ll); k++) {
            double want = one_pass_ll(m, v, qs[i], cs[i][k]);
            double got = cJSON_GetArrayItem(ll, k)->valuedouble;
            CHECK_MSG(fabs(got - want) < 1e-3 * (1 + fabs(want)),
                      "q%d choice %d: %g vs one pass %g", i, k, got, want);
            if (got > cJSON_GetArrayItem(ll, best)->valuedouble) best = k;
        }
        CHECK_INT(best, cJSON_GetObjectItem(q, "pred")->valueint);
        correct += best == answers[i];
    }
    if (j) {
        CHECK_INT(2, cJSON_GetObjectItem(j, "n")->valueint);
        CHECK_NEAR(correct / 2.0, cJSON_GetObjectItem(j, "acc")->valuedouble, 1e-12);
    }
    cJSON_Delete(j);
    mp_vocab_free(v);
    mp_model_free(m);

    /* the built-in set runs; malformed files are refused with file:line */
    snprintf(cmd, sizeof cmd, "'%s' bench-mc '%s'", cli, model);
    CHECK_INT(0, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "built-in smoke set") && strstr(out, "/8)"));
    free(out);
    snprintf(bad, sizeof bad, "%s/bad.jsonl", dir);
    f = fopen(bad, "w");
    fputs("{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 0}\n"
          "{\"question\": \"q\", \"choices\": [\"a\"], \"answer\": 0}\n",
          f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' bench-mc '%s' '%s' 2>&1", cli, model, bad);
    CHECK_INT(1, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "bad.jsonl:2"));
    free(out);
    unlink(file);
    unlink(bad);
    rmdir(dir);
    return mp_test_end("test_bench_mc");
}

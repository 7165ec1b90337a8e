/* test_profile_cli.c — `moeprune profile` from the outside, on the tiny
 * fixture, with a small corpus of its own and the built-in calibration set:
 *  - the statistics are consistent: per layer, class and rank the selections
 *    add up to the tokens profiled, the renormalised router weights of a
 *    token add up to 1, every contribution is positive where selected and
 *    zero where not, and contrib_sq >= contrib^2 / selections (Cauchy-Schwarz);
 *  - profiling in two shards and merging equals one run: counts exactly,
 *    sums to float rounding;
 *  - classes from --class NAME=PATH and JSONL "class" fields;
 *  - empty, non-UTF-8 and garbage inputs are refused with the file named.
 * argv[1] is the moeprune binary. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "testutil.h"
#include "util/util.h"

static void check_consistent(const mp_stats *s) {
    int64_t k = s->n_expert_used;
    for (int64_t l = 0; l < s->n_layer; l++) {
        int64_t x = s->n_expert[l];
        for (int64_t c = 0; x && c < s->n_class; c++) {
            const mp_stats_cell *cell = mp_stats_cell_at(s, l, c);
            double wsum = 0;
            for (int64_t r = 0; r < k; r++) {
                double sel = 0;
                for (int64_t e = 0; e < x; e++) {
                    sel += cell->count[r * x + e];
                    wsum += cell->weight_sum[r * x + e];
                }
                CHECK_MSG(sel == s->class_tokens[c],
                          "layer %lld class %s rank %lld: %g selections"
                          " for %g tokens",
                          (long long)l, s->classes[c], (long long)r, sel, s->class_tokens[c]);
            }
            CHECK_NEAR(s->class_tokens[c], wsum, 1e-3);
            for (int64_t e = 0; e < x; e++) {
                double sel = 0;
                for (int64_t r = 0; r < k; r++) sel += cell->count[r * x + e];
                CHECK(sel > 0 ? cell->contrib[e] > 0 : cell->contrib[e] == 0);
                if (sel > 0)
                    CHECK(cell->contrib_sq[e] >=
                          cell->contrib[e] * cell->contrib[e] / sel * (1 - 1e-9));
            }
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *cli = argv[1];
    char dir[256], model[512], cmd[4096], *out = NULL;
    char full[600], s0[600], s1[600], merged[600];
    mp_err err = {0};
    CHECK(mp_test_tmpdir(dir, sizeof dir, "profile") != NULL);
    mp_test_data(model, sizeof model, "gemma4-tiny-a/tiny-a-q8_0.gguf");
    snprintf(full, sizeof full, "%s/full.stats", dir);
    snprintf(s0, sizeof s0, "%s/s0.stats", dir);
    snprintf(s1, sizeof s1, "%s/s1.stats", dir);
    snprintf(merged, sizeof merged, "%s/merged.stats", dir);

    /* a small three-class corpus (the built-in set is ~5k tokens: too slow for
     * the scalar engine under ASan), profiled in one run and in two shards */
    static const char *const texts[3][2] = {
        {"math", "Solve 3x + 7 = 25: subtract 7, then divide by 3, so x = 6. The sum of 1 to 100 "
                 "is 5050, and 221 = 13 * 17 is not prime."},
        {"code", "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(add(i, i))\n"},
        {"prose", "The lighthouse keeper watched the small red boat rock on the grey water, and "
                  "put the kettle on."},
    };
    char classes_arg[2048] = "";
    for (int i = 0; i < 3; i++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s.txt", dir, texts[i][0]);
        mp_test_write_file(p, texts[i][1], strlen(texts[i][1]));
        snprintf(classes_arg + strlen(classes_arg), sizeof classes_arg - strlen(classes_arg),
                 " --class %s='%s'", texts[i][0], p);
    }
    snprintf(cmd, sizeof cmd, "'%s' profile '%s'%s --ctx 16 -t 2 --quiet -o '%s' 2>&1", cli, model,
             classes_arg, full);
    CHECK_INT(0, mp_test_run(cmd, &out));
    free(out);
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd,
                 "'%s' profile '%s'%s --ctx 16 -t 2 --quiet --shard %d/2 -o '%s' 2>&1", cli, model,
                 classes_arg, i, i ? s1 : s0);
        CHECK_INT(0, mp_test_run(cmd, &out));
        free(out);
    }
    snprintf(cmd, sizeof cmd, "'%s' stats merge '%s' '%s' -o '%s' 2>&1", cli, s0, s1, merged);
    CHECK_INT(0, mp_test_run(cmd, &out));
    free(out);
    mp_stats *a = NULL, *b = NULL, *h0 = NULL;
    CHECK_STATUS(MP_OK, mp_stats_load(&a, full, &err), &err);
    CHECK_STATUS(MP_OK, mp_stats_load(&b, merged, &err), &err);
    CHECK_STATUS(MP_OK, mp_stats_load(&h0, s0, &err), &err);
    if (a && b && h0) {
        check_consistent(a);
        CHECK_INT(3, a->n_class);
        CHECK_INT(64, strlen(a->model_sha256));
        double t_a = 0, t_h = 0;
        for (int64_t c = 0; c < a->n_class; c++) t_a += a->class_tokens[c];
        for (int64_t c = 0; c < h0->n_class; c++) t_h += h0->class_tokens[c];
        CHECK(t_h > 0.2 * t_a && t_h < 0.8 * t_a); /* a shard really is part of the corpus */
        for (int64_t c = 0; c < a->n_class; c++) {
            int64_t d = mp_stats_find_class(b, a->classes[c]);
            CHECK(d >= 0 && a->class_tokens[c] == b->class_tokens[d]);
            for (int64_t l = 0; d >= 0 && l < a->n_layer; l++) {
                const mp_stats_cell *x = mp_stats_cell_at(a, l, c), *y = mp_stats_cell_at(b, l, d);
                int64_t ne = a->n_expert[l];
                for (int64_t i = 0; i < ne * a->n_expert_used; i++) {
                    CHECK(x->count[i] == y->count[i]);
                    CHECK_NEAR(x->weight_sum[i], y->weight_sum[i], 1e-9 * (1 + x->weight_sum[i]));
                }
                for (int64_t e = 0; e < ne; e++) {
                    CHECK_NEAR(x->contrib[e], y->contrib[e], 1e-9 * (1 + x->contrib[e]));
                    CHECK_NEAR(x->contrib_sq[e], y->contrib_sq[e], 1e-9 * (1 + x->contrib_sq[e]));
                }
            }
        }
    }
    mp_stats_free(a);
    mp_stats_free(b);
    mp_stats_free(h0);

    /* resume: --stop-after 2 leaves a checkpoint and no output; --resume
     * finishes it, equal to the uninterrupted run */
    char res[600], part[700];
    snprintf(res, sizeof res, "%s/res.stats", dir);
    snprintf(part, sizeof part, "%s/res.stats.partial", dir);
    snprintf(cmd, sizeof cmd,
             "'%s' profile '%s'%s --ctx 16 -t 2 --quiet --stop-after 2 -o '%s' 2>&1", cli, model,
             classes_arg, res);
    CHECK_INT(0, mp_test_run(cmd, &out));
    free(out);
    CHECK(access(res, F_OK) != 0 && access(part, F_OK) == 0);
    snprintf(cmd, sizeof cmd, "'%s' profile '%s'%s --ctx 32 -t 2 --quiet --resume -o '%s' 2>&1",
             cli, model, classes_arg, res);
    CHECK_INT(1, mp_test_run(cmd, &out)); /* another plan: refused */
    CHECK(out && strstr(out, "another run"));
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' profile '%s'%s --ctx 16 -t 2 --quiet --resume -o '%s' 2>&1",
             cli, model, classes_arg, res);
    CHECK_INT(0, mp_test_run(cmd, &out));
    free(out);
    CHECK(access(res, F_OK) == 0 && access(part, F_OK) != 0);
    mp_stats *ra = NULL, *rb = NULL;
    CHECK_STATUS(MP_OK, mp_stats_load(&ra, full, &err), &err);
    CHECK_STATUS(MP_OK, mp_stats_load(&rb, res, &err), &err);
    for (int64_t c = 0; ra && rb && c < ra->n_class; c++) {
        int64_t d = mp_stats_find_class(rb, ra->classes[c]);
        CHECK(d >= 0 && ra->class_tokens[c] == rb->class_tokens[d]);
        for (int64_t l = 0; d >= 0 && l < ra->n_layer; l++) {
            const mp_stats_cell *x = mp_stats_cell_at(ra, l, c), *y = mp_stats_cell_at(rb, l, d);
            for (int64_t i = 0; i < ra->n_expert[l] * ra->n_expert_used; i++)
                CHECK(x->count[i] == y->count[i]);
            for (int64_t e = 0; e < ra->n_expert[l]; e++)
                CHECK_NEAR(x->contrib[e], y->contrib[e], 1e-9 * (1 + x->contrib[e]));
        }
    }
    mp_stats_free(ra);
    mp_stats_free(rb);

    /* two-phase: the model answers each prompt, only the answers count;
     * the same seed gives the same statistics */
    char pj[600], g1[600], g2[600];
    snprintf(pj, sizeof pj, "%s/prompts.jsonl", dir);
    snprintf(g1, sizeof g1, "%s/g1.stats", dir);
    snprintf(g2, sizeof g2, "%s/g2.stats", dir);
    const char *prompts = "{\"text\": \"What is 17 * 23?\", \"class\": \"math\"}\n"
                          "{\"text\": \"Write a haiku about rain.\", \"class\": \"creative\"}\n";
    mp_test_write_file(pj, prompts, strlen(prompts));
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd,
                 "'%s' profile '%s' '%s' --generate 8 --ctx 128 --seed 7 --quiet -o '%s' 2>&1", cli,
                 model, pj, i ? g2 : g1);
        CHECK_INT(0, mp_test_run(cmd, &out));
        free(out);
    }
    CHECK_STATUS(MP_OK, mp_stats_load(&ra, g1, &err), &err);
    CHECK_STATUS(MP_OK, mp_stats_load(&rb, g2, &err), &err);
    if (ra && rb) {
        check_consistent(ra);
        CHECK_INT(2, ra->n_class);
        for (int64_t c = 0; c < ra->n_class; c++)
            CHECK(ra->class_tokens[c] >= 1 && ra->class_tokens[c] <= 8);
        for (int64_t l = 0; l < ra->n_layer; l++)
            for (int64_t c = 0; c < ra->n_class; c++)
                CHECK(!memcmp(mp_stats_cell_at(ra, l, c)->contrib,
                              mp_stats_cell_at(rb, l, c)->contrib,
                              (size_t)ra->n_expert[l] * sizeof(double)));
    }
    mp_stats_free(ra);
    mp_stats_free(rb);

    /* classes: --class NAME=PATH for a folder, JSONL lines with their own class */
    char sub[600], txt[700], jl[700], st[600];
    snprintf(sub, sizeof sub, "%s/corpus", dir);
    snprintf(txt, sizeof txt, "%s/a.txt", sub);
    snprintf(jl, sizeof jl, "%s/b.jsonl", dir);
    snprintf(st, sizeof st, "%s/c.stats", dir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", sub);
    CHECK_INT(0, mp_test_run(cmd, &out));
    free(out);
    const char *prose = "The river bends twice before it reaches the sea.\n";
    mp_test_write_file(txt, prose, strlen(prose));
    const char *lines =
        "{\"text\": \"2 + 2 = 4, and 3 * 3 = 9.\", \"class\": \"math\"}\n"
        "\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi!\"}, "
        "{\"role\": \"assistant\", \"content\": \"Hello.\"}], \"class\": \"chat\"}\n";
    mp_test_write_file(jl, lines, strlen(lines));
    snprintf(cmd, sizeof cmd, "'%s' profile '%s' --class prose='%s' '%s' --quiet -o '%s' 2>&1", cli,
             model, sub, jl, st);
    CHECK_INT(0, mp_test_run(cmd, &out));
    free(out);
    mp_stats *cs = NULL;
    CHECK_STATUS(MP_OK, mp_stats_load(&cs, st, &err), &err);
    if (cs) {
        CHECK_INT(3, cs->n_class);
        CHECK(mp_stats_find_class(cs, "prose") >= 0 && mp_stats_find_class(cs, "math") >= 0 &&
              mp_stats_find_class(cs, "chat") >= 0);
        check_consistent(cs);
    }
    mp_stats_free(cs);

    /* the built-in set with a token budget: its five classes, exactly 80 tokens */
    snprintf(cmd, sizeof cmd, "'%s' profile '%s' --max-tokens 80 --ctx 32 --quiet -o '%s' -f 2>&1",
             cli, model, st);
    CHECK_INT(0, mp_test_run(cmd, &out));
    free(out);
    CHECK_STATUS(MP_OK, mp_stats_load(&cs, st, &err), &err);
    if (cs) {
        double tok = 0;
        for (int64_t c = 0; c < cs->n_class; c++) tok += cs->class_tokens[c];
        CHECK_INT(5, cs->n_class);
        CHECK(tok == 80 && mp_stats_find_class(cs, "creative") >= 0);
        check_consistent(cs);
    }
    mp_stats_free(cs);
    cs = NULL;

    /* bad inputs: clear errors naming the file, no output */
    struct {
        const char *name, *data;
        size_t n;
        const char *needle;
    } bad[] = {
        {"empty.txt", "", 0, "empty file"},
        {"latin1.txt", "caf\xe9 au lait", 12, "not UTF-8"},
        {"garbage.bin",
         "\x7f"
         "ELF\x02\x01\x01\x00\x00",
         9, "not UTF-8"},
        {"bad.jsonl", "{\"text\": 3}\n", 12, "bad.jsonl:1"},
        {"notjson.jsonl", "hello\n", 6, "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", dir, bad[i].name);
        mp_test_write_file(p, bad[i].data, bad[i].n);
        snprintf(cmd, sizeof cmd, "'%s' profile '%s' '%s' --quiet -o '%s/never.stats' 2>&1", cli,
                 model, p, dir);
        CHECK_INT(1, mp_test_run(cmd, &out));
        CHECK_MSG(out && strstr(out, bad[i].needle) && strstr(out, bad[i].name), "%s: %s",
                  bad[i].name, out ? out : "");
        free(out);
        unlink(p);
    }
    snprintf(cmd, sizeof cmd, "test -e '%s/never.stats'", dir);
    CHECK(mp_test_run(cmd, &out) != 0);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' profile '%s' --shard 2/2 -o x 2>&1", cli, model);
    CHECK_INT(2, mp_test_run(cmd, &out));
    free(out);

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK_INT(0, mp_test_run(cmd, &out));
    free(out);
    return mp_test_end("test_profile_cli");
}

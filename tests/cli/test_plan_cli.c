/* test_plan_cli.c — `moeprune plan`, `stats show` and `stats merge` from the
 * outside: the map the CLI writes equals the library's, the JSON report and
 * `stats show --json` carry the documented fields, merge equals the library
 * merge, and bad requests exit 1 (failure) or 2 (usage). argv[1] = moeprune. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <unistd.h>

#include "testutil.h"
#include "util/util.h"

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *cli = argv[1];
    uint64_t rng = 7;
    mp_err err = {0};
    char dir[256], sa[512], sb[512], sc[512], map[512], cmd[2048], *out = NULL;
    CHECK(mp_test_tmpdir(dir, sizeof dir, "plancli") != NULL);
    snprintf(sa, sizeof sa, "%s/a.stats", dir);
    snprintf(sb, sizeof sb, "%s/b.stats", dir);
    snprintf(sc, sizeof sc, "%s/c.stats", dir);
    snprintf(map, sizeof map, "%s/map.json", dir);
    const int64_t ne[2] = {16, 16};
    const char *classes[2] = {"math", "code"};
    mp_stats *a = NULL, *b = NULL;
    mp_stats_create(&a, "gemma4", 2, ne, 4, classes, 2, &err);
    mp_stats_create(&b, "gemma4", 2, ne, 4, classes, 2, &err);
    CHECK(a && b);
    if (!a || !b) return mp_test_end("test_plan_cli");
    mp_stats *ss[2] = {a, b};
    for (int i = 0; i < 2; i++)
        for (int l = 0; l < 2; l++)
            for (int c = 0; c < 2; c++) {
                const mp_stats_cell *cell = mp_stats_cell_at(ss[i], l, c);
                for (int j = 0; j < 64; j++) {
                    cell->count[j] = (double)(mp_test_rand(&rng) % 50);
                    cell->weight_sum[j] = cell->count[j] * 0.3;
                }
                for (int e = 0; e < 16; e++)
                    cell->contrib[e] = 1 + (double)(mp_test_rand(&rng) % 100);
                ss[i]->class_tokens[c] = 500;
            }
    CHECK_STATUS(MP_OK, mp_stats_save(a, sa, false, &err), &err);
    CHECK_STATUS(MP_OK, mp_stats_save(b, sb, false, &err), &err);

    /* plan: the CLI's map equals the library's */
    snprintf(cmd, sizeof cmd, "'%s' plan '%s' --method contribution --retain 0.9 -o '%s' --json",
             cli, sa, map);
    CHECK_INT(0, mp_test_run(cmd, &out));
    cJSON *rep = out ? cJSON_Parse(out) : NULL;
    CHECK(rep && cJSON_GetArraySize(cJSON_GetObjectItem(rep, "layers")) == 2);
    const cJSON *l0 = rep ? cJSON_GetArrayItem(cJSON_GetObjectItem(rep, "layers"), 0) : NULL;
    CHECK(l0 && cJSON_GetObjectItem(l0, "retained_contribution")->valuedouble >= 0.9);
    CHECK(l0 && cJSON_IsNumber(cJSON_GetObjectItem(l0, "retained_selections")));
    cJSON_Delete(rep);
    free(out);
    mp_dropmap *got = NULL, *want = NULL;
    CHECK_STATUS(MP_OK, mp_dropmap_load(&got, map, &err), &err);
    mp_plan_params p = {.method = MP_PLAN_CONTRIBUTION, .budget = MP_BUDGET_RETAIN, .retain = 0.9};
    CHECK_STATUS(MP_OK, mp_plan_make(a, &p, &want, &err), &err);
    for (int64_t i = 0; got && want && i < 2; i++) {
        CHECK_INT(want->layers[i].n_keep, got->layers[i].n_keep);
        CHECK(!memcmp(want->layers[i].keep, got->layers[i].keep,
                      (size_t)want->layers[i].n_keep * sizeof(int32_t)));
    }
    CHECK(got && !strcmp(got->method, "contribution"));
    mp_dropmap_free(got);
    mp_dropmap_free(want);

    /* --compare shows the overlap; an existing map is not replaced without -f */
    snprintf(cmd, sizeof cmd,
             "'%s' plan '%s' --method utility --keep 8 --compare frequency -o '%s'"
             " 2>&1",
             cli, sa, map);
    CHECK_INT(1, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "exists"));
    free(out);
    snprintf(cmd, sizeof cmd,
             "'%s' plan '%s' --method utility --keep 8 --compare frequency -o '%s'"
             " -f",
             cli, sa, map);
    CHECK_INT(0, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "overlap with frequency") && strstr(out, "kept 16 of 32"));
    free(out);

    /* impossible requests */
    snprintf(cmd, sizeof cmd, "'%s' plan '%s' --method reap --keep 17 -o '%s' -f 2>&1", cli, sa,
             map);
    CHECK_INT(1, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "cannot keep 17"));
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' plan '%s' --keep 8 -o '%s' -f 2>&1", cli, sa, map);
    CHECK_INT(2, mp_test_run(cmd, &out));
    free(out);
    snprintf(cmd, sizeof cmd,
             "'%s' plan '%s' --method frequency --keep 8 --classes poetry -o '%s' -f"
             " 2>&1",
             cli, sa, map);
    CHECK_INT(1, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "poetry"));
    free(out);

    /* --model: stats from another layout are refused, a matching model is fine */
    char fx2[512];
    snprintf(cmd, sizeof cmd, "'%s' plan '%s' --method reap --keep 8 --model '%s' -o '%s' -f 2>&1",
             cli, sa, mp_test_data(fx2, sizeof fx2, "gemma4-tiny-a/tiny-a-q8_0.gguf"), map);
    CHECK_INT(1, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "2-layer gemma4") && strstr(out, "4-layer gemma4"));
    free(out);

    /* stats show --json */
    snprintf(cmd, sizeof cmd, "'%s' stats show '%s' --json", cli, sa);
    CHECK_INT(0, mp_test_run(cmd, &out));
    cJSON *j = out ? cJSON_Parse(out) : NULL;
    CHECK(j && cJSON_GetObjectItem(j, "n_tokens")->valuedouble == 1000);
    CHECK(j && cJSON_GetArraySize(cJSON_GetObjectItem(j, "classes")) == 2);
    const cJSON *jl = j ? cJSON_GetArrayItem(cJSON_GetObjectItem(j, "layers"), 1) : NULL;
    CHECK(jl && cJSON_GetArraySize(cJSON_GetObjectItem(jl, "count")) == 16 &&
          cJSON_GetArraySize(cJSON_GetObjectItem(jl, "reap")) == 16);
    double c3 = 0;
    for (int r = 0; r < 4; r++)
        c3 += mp_stats_cell_at(a, 1, 0)->count[r * 16 + 3] +
              mp_stats_cell_at(a, 1, 1)->count[r * 16 + 3];
    CHECK(jl && cJSON_GetArrayItem(cJSON_GetObjectItem(jl, "count"), 3)->valuedouble == c3);
    CHECK(j && cJSON_GetObjectItem(cJSON_GetObjectItem(j, "per_class"), "code") != NULL);
    cJSON_Delete(j);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' stats show '%s'", cli, sa);
    CHECK_INT(0, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "top-32 overlap") && strstr(out, "gini"));
    free(out);

    /* stats merge equals the library's merge */
    snprintf(cmd, sizeof cmd, "'%s' stats merge '%s' '%s' -o '%s'", cli, sa, sb, sc);
    CHECK_INT(0, mp_test_run(cmd, &out));
    free(out);
    mp_stats *merged = NULL;
    CHECK_STATUS(MP_OK, mp_stats_load(&merged, sc, &err), &err);
    CHECK_STATUS(MP_OK, mp_stats_merge(a, b, &err), &err);
    for (int l = 0; merged && l < 2; l++)
        for (int c = 0; c < 2; c++)
            CHECK(!memcmp(mp_stats_cell_at(merged, l, c)->count, mp_stats_cell_at(a, l, c)->count,
                          64 * sizeof(double)));
    mp_stats_free(merged);
    char fx[512];
    snprintf(cmd, sizeof cmd, "'%s' stats merge '%s' '%s' -o '%s' -f 2>&1", cli, sa,
             mp_test_data(fx, sizeof fx, "gemma4-tiny-a/tiny-a-q8_0.gguf"), sc);
    CHECK_INT(1, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "not a moeprune stats file"));
    free(out);

    unlink(sa);
    unlink(sb);
    unlink(sc);
    unlink(map);
    rmdir(dir);
    mp_stats_free(a);
    mp_stats_free(b);
    return mp_test_end("test_plan_cli");
}

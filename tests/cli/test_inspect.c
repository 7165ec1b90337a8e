/* test_inspect.c — `moeprune inspect --json` on every fixture lists the same
 * tensor names, types and shapes as the fixture's manifest.json, with offsets
 * and byte sizes that tile the data section; its metadata object holds every
 * key; the human output has the MoE summary; bad files and usage errors exit
 * 1 and 2 with a message. argv[1] is the path of the moeprune binary. */
#include <cjson/cJSON.h>
#include <stdlib.h>

#include "testutil.h"
#include "util/util.h"

static void check_variant(const char *cli, const cJSON *variant, const char *dir) {
    const char *file = cJSON_GetObjectItem(variant, "file")->valuestring;
    const cJSON *want = cJSON_GetObjectItem(variant, "tensors");
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' inspect --json '%s/%s'", cli, dir, file);
    CHECK_INT(0, mp_test_run(cmd, &out));
    cJSON *j = out ? cJSON_Parse(out) : NULL;
    CHECK_MSG(j != NULL, "%s: inspect --json is not valid JSON", file);
    if (j) {
        const cJSON *got = cJSON_GetObjectItem(j, "tensors");
        CHECK_INT(cJSON_GetArraySize(want), cJSON_GetArraySize(got));
        double next = 0;
        for (int i = 0; i < cJSON_GetArraySize(want) && i < cJSON_GetArraySize(got); i++) {
            const cJSON *w = cJSON_GetArrayItem(want, i), *g = cJSON_GetArrayItem(got, i);
            const char *wn = cJSON_GetObjectItem(w, "name")->valuestring;
            const cJSON *gn = cJSON_GetObjectItem(g, "name"), *gt = cJSON_GetObjectItem(g, "type");
            CHECK_MSG(cJSON_IsString(gn) && !strcmp(gn->valuestring, wn), "%s: tensor %d", file, i);
            CHECK_MSG(cJSON_IsString(gt) && !strcmp(gt->valuestring,
                      cJSON_GetObjectItem(w, "type")->valuestring), "%s: %s type", file, wn);
            const cJSON *wne = cJSON_GetObjectItem(w, "ne"), *gne = cJSON_GetObjectItem(g, "ne");
            CHECK_INT(cJSON_GetArraySize(wne), cJSON_GetArraySize(gne));
            for (int d = 0; d < cJSON_GetArraySize(wne); d++)
                CHECK_INT(cJSON_GetArrayItem(wne, d)->valueint,
                          cJSON_GetArrayItem(gne, d) ? cJSON_GetArrayItem(gne, d)->valueint : -1);
            /* offsets are sequential with 32-byte padding, as ggml writes them */
            double off = cJSON_GetObjectItem(g, "offset")->valuedouble;
            double bytes = cJSON_GetObjectItem(g, "bytes")->valuedouble;
            CHECK_NEAR(next, off, 0);
            next = off + bytes + (32 - (long long)bytes % 32) % 32;
        }
        const cJSON *md = cJSON_GetObjectItem(j, "metadata");
        CHECK(cJSON_IsString(cJSON_GetObjectItem(md, "general.architecture")));
        CHECK_INT(4, cJSON_GetObjectItem(md, "gemma4.block_count")->valueint);
        const cJSON *toks = cJSON_GetObjectItem(md, "tokenizer.ggml.tokens");
        CHECK(cJSON_IsObject(toks) &&
              cJSON_GetObjectItem(toks, "length")->valueint == 1024 &&
              !strcmp(cJSON_GetObjectItem(toks, "element_type")->valuestring, "STRING"));
        const cJSON *moe = cJSON_GetObjectItem(j, "moe");
        CHECK_INT(4, cJSON_GetObjectItem(moe, "n_moe_layers")->valueint);
        CHECK_INT(16, cJSON_GetObjectItem(moe, "n_expert")->valueint);
        CHECK_INT(4, cJSON_GetObjectItem(moe, "n_expert_used")->valueint);
    }
    cJSON_Delete(j);
    free(out);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_inspect PATH_TO_MOEPRUNE\n");
        return 2;
    }
    const char *cli = argv[1];
    char buf[512], dir[512], cmd[1024], *out = NULL;
    size_t n;
    char *mtext = mp_test_read_file(mp_test_data(buf, sizeof buf, "gemma4-tiny-a/manifest.json"), &n);
    cJSON *manifest = mtext ? cJSON_Parse(mtext) : NULL;
    CHECK(manifest != NULL);
    mp_test_data(dir, sizeof dir, "gemma4-tiny-a");
    const cJSON *v;
    int count = 0;
    cJSON_ArrayForEach(v, cJSON_GetObjectItem(manifest, "variants")) {
        check_variant(cli, v, dir);
        count++;
    }
    CHECK_INT(16, count);
    cJSON_Delete(manifest);
    free(mtext);

    /* human output */
    snprintf(cmd, sizeof cmd, "'%s' inspect '%s/tiny-a-q4_k_m.gguf'", cli, dir);
    CHECK_INT(0, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "MoE layers:            4 of 4"));
    CHECK(out && strstr(out, "experts per layer:     16"));
    CHECK(out && strstr(out, "blk.3.ffn_down_exps.weight"));
    CHECK(out && strstr(out, "K = 8"));
    free(out);

    /* failures: exit 1 with the file in the message; usage errors exit 2 */
    snprintf(cmd, sizeof cmd, "'%s' inspect '%s/manifest.json' 2>&1", cli, dir);
    CHECK_INT(1, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "manifest.json") && strstr(out, "magic"));
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' inspect /nonexistent/x.gguf 2>&1", cli);
    CHECK_INT(1, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "/nonexistent/x.gguf"));
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' inspect 2>&1", cli);
    CHECK_INT(2, mp_test_run(cmd, &out));
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' inspect --help", cli);
    CHECK_INT(0, mp_test_run(cmd, &out));
    CHECK(out && strstr(out, "example"));
    free(out);
    return mp_test_end("test_inspect");
}

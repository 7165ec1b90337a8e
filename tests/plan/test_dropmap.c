/* test_dropmap.c — drop map parsing, serialising and checking against a
 * model: a table of broken maps, each refused with a message naming the
 * field; a valid map survives a JSON round trip unchanged. */
#include <stdlib.h>
#include <unistd.h>

#include "testutil.h"

#define HEAD                                                                                       \
    "{\"format\":\"moeprune.dropmap/1\",\"model\":{\"arch\":\"gemma4\",\"n_layer\":4,"             \
    "\"n_expert\":16,\"n_expert_used\":4},"
#define L4                                                                                         \
    "\"layers\":[{\"layer\":0,\"keep\":[0,1,2,3]},{\"layer\":1,\"keep\":[4,5,6,7]},"               \
    "{\"layer\":2,\"keep\":[8,9,10,11]},{\"layer\":3,\"keep\":[12,13,14,15]}]}"

typedef struct bad_case {
    const char *json;
    mp_status parse_status; /* from mp_dropmap_parse */
    mp_status check_status; /* from mp_dropmap_check against tiny-a (when parse is OK) */
    const char *needle;     /* must appear in the message */
} bad_case;

static const bad_case cases[] = {
    {"not json", MP_ERR_FORMAT, MP_OK, "not valid JSON"},
    {"{\"format\":\"other/1\"}", MP_ERR_FORMAT, MP_OK, "format"},
    {"{\"format\":\"moeprune.dropmap/1\"}", MP_ERR_FORMAT, MP_OK, "\"model\""},
    {HEAD "\"layers\":7}", MP_ERR_FORMAT, MP_OK, "\"layers\""},
    {HEAD "\"layers\":[{\"keep\":[1]}]}", MP_ERR_FORMAT, MP_OK, "\"layer\""},
    {HEAD "\"layers\":[{\"layer\":0,\"keep\":[0,1,2,16]}]}", MP_ERR_FORMAT, MP_OK, "0..15"},
    {HEAD "\"layers\":[{\"layer\":0,\"keep\":[0,1,-2,3]}]}", MP_ERR_FORMAT, MP_OK, "0..15"},
    {HEAD "\"layers\":[{\"layer\":0,\"keep\":[0,1,1,3]}]}", MP_ERR_FORMAT, MP_OK, "duplicate"},
    {HEAD "\"layers\":[{\"layer\":0,\"keep\":[0,2,1,3]}]}", MP_ERR_FORMAT, MP_OK, "ascending"},
    {HEAD "\"layers\":[{\"layer\":0,\"keep\":[0,1.5]}]}", MP_ERR_FORMAT, MP_OK, "keep"},
    {HEAD "\"layers\":[{\"layer\":0,\"keep\":[0,1,2,3],\"drop\":[4]}]}", MP_ERR_FORMAT, MP_OK,
     "!= n_expert"},
    {HEAD "\"layers\":[{\"layer\":0,\"keep\":[0,1,2,3],\"drop\":[3,4,5,6,7,8,9,10,11,12,13,14]}]}",
     MP_ERR_FORMAT, MP_OK, "both kept and dropped"},
    {HEAD "\"layers\":[{\"layer\":9,\"keep\":[0,1,2,3]}]}", MP_ERR_FORMAT, MP_OK, "out of range"},
    {HEAD "\"layers\":[{\"layer\":1,\"keep\":[0,1,2,3]},{\"layer\":1,\"keep\":[0,1,2,3]}]}",
     MP_ERR_FORMAT, MP_OK, "twice"},
    /* parse fine, but do not fit tiny-a */
    {HEAD "\"layers\":[{\"layer\":0,\"keep\":[0,1,2,3]}]}", MP_OK, MP_ERR_CHECK, "no entry"},
    {HEAD "\"layers\":[{\"layer\":0,\"keep\":[0,1,2]},{\"layer\":1,\"keep\":[4,5,6,7]},"
          "{\"layer\":2,\"keep\":[8,9,10,11]},{\"layer\":3,\"keep\":[12,13,14,15]}]}",
     MP_OK, MP_ERR_CHECK, "fewer than the 4 used"},
    {"{\"format\":\"moeprune.dropmap/1\",\"model\":{\"arch\":\"qwen3moe\",\"n_layer\":4,"
     "\"n_expert\":16,\"n_expert_used\":4}," L4,
     MP_OK, MP_ERR_CHECK, "qwen3moe"},
    {"{\"format\":\"moeprune.dropmap/1\",\"model\":{\"arch\":\"gemma4\",\"n_layer\":5,"
     "\"n_expert\":16,\"n_expert_used\":4}," L4,
     MP_OK, MP_ERR_CHECK, "5 layers"},
    {"{\"format\":\"moeprune.dropmap/1\",\"model\":{\"arch\":\"gemma4\",\"n_layer\":4,"
     "\"n_expert\":32,\"n_expert_used\":4}," L4,
     MP_OK, MP_ERR_CHECK, "covers 32"},
    {HEAD L4, MP_OK, MP_OK, NULL},
};

int main(void) {
    char buf[512];
    mp_err err = {0};
    mp_gguf *g = NULL;
    CHECK_STATUS(
        MP_OK,
        mp_gguf_open(&g, mp_test_data(buf, sizeof buf, "gemma4-tiny-a/tiny-a-q8_0.gguf"), &err),
        &err);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_case *c = &cases[i];
        mp_dropmap *m = NULL;
        mp_status s = mp_dropmap_parse(&m, c->json, strlen(c->json), "map.json", &err);
        CHECK_MSG(s == c->parse_status, "case %zu: parse gave %s (%s)", i, mp_status_name(s),
                  err.msg);
        if (s == MP_OK && g) {
            s = mp_dropmap_check(m, g, &err);
            CHECK_MSG(s == c->check_status, "case %zu: check gave %s (%s)", i, mp_status_name(s),
                      err.msg);
        }
        if (c->needle)
            CHECK_MSG(strstr(err.msg, c->needle) != NULL, "case %zu: '%s' not in: %s", i, c->needle,
                      err.msg);
        if (s != MP_OK && c->parse_status != MP_OK)
            CHECK_MSG(strstr(err.msg, "map.json") != NULL, "case %zu: no file name: %s", i,
                      err.msg);
        mp_dropmap_free(m);
    }

    /* round trip: parse -> JSON -> parse gives the same map; drop is derived */
    const char *full = HEAD "\"method\":{\"name\":\"frequency\",\"params\":{\"keep\":4}}," L4;
    mp_dropmap *a = NULL, *b = NULL;
    CHECK_STATUS(MP_OK, mp_dropmap_parse(&a, full, strlen(full), "a", &err), &err);
    char *txt = a ? mp_dropmap_to_json(a, true) : NULL;
    CHECK(txt != NULL);
    if (txt) CHECK_STATUS(MP_OK, mp_dropmap_parse(&b, txt, strlen(txt), "b", &err), &err);
    if (a && b) {
        CHECK_INT(a->n_layers, b->n_layers);
        CHECK(!strcmp(b->method, "frequency") && strstr(b->method_params, "\"keep\":4"));
        for (int64_t l = 0; l < a->n_layers && l < b->n_layers; l++) {
            CHECK_INT(4, b->layers[l].n_keep);
            CHECK_INT(12, b->layers[l].n_drop);
            CHECK(!memcmp(a->layers[l].keep, b->layers[l].keep, 4 * sizeof(int32_t)));
            CHECK(!memcmp(a->layers[l].drop, b->layers[l].drop, 12 * sizeof(int32_t)));
        }
        CHECK_INT(0, b->layers[1].drop[0]);
        CHECK_INT(8, b->layers[1].drop[4]);
    }
    /* save/load through a file, refusing to overwrite */
    char dir[256], path[512];
    CHECK(mp_test_tmpdir(dir, sizeof dir, "dropmap") != NULL);
    snprintf(path, sizeof path, "%s/m.json", dir);
    mp_dropmap *c = NULL;
    if (a) {
        CHECK_STATUS(MP_OK, mp_dropmap_save(a, path, false, &err), &err);
        CHECK_STATUS(MP_ERR_ARG, mp_dropmap_save(a, path, false, &err), &err);
        CHECK_STATUS(MP_OK, mp_dropmap_load(&c, path, &err), &err);
        CHECK(c && c->n_layers == 4 && c->layers[3].keep[0] == 12);
    }
    CHECK_STATUS(MP_ERR_IO, mp_dropmap_load(&c, "/nonexistent/m.json", &err), &err);
    unlink(path);
    rmdir(dir);
    mp_dropmap_free(a);
    mp_dropmap_free(b);
    mp_dropmap_free(c);
    mp_free(txt);
    mp_gguf_free(g);
    return mp_test_end("test_dropmap");
}

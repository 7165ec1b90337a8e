/* gen_seeds.c — writes the seed corpus of fuzz_gguf: small valid GGUF files
 * (every metadata value type, one tensor of every type the table knows, odd
 * alignment) and the headers of the fixtures (parsed in header-only mode).
 * Usage: gen_seeds OUT_DIR FIXTURE.gguf... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moeprune.h"

static int small_files(const char *dir) {
    mp_err err = {0};
    char path[1024];
    for (int variant = 0; variant < 2; variant++) {
        snprintf(path, sizeof path, "%s/seed-all-types-%d.gguf", dir, variant);
        mp_gguf_writer *w;
        if (mp_gguf_writer_open(&w, path, true, &err)) goto fail;
        uint8_t u8s[3] = {1, 2, 3};
        const char *strs[2] = {"x", "yz"};
        mp_gguf_writer_kv_str(w, "general.architecture", "gemma4", &err);
        if (variant) mp_gguf_writer_kv_u32(w, "general.alignment", 64, &err);
        mp_gguf_writer_kv_u32(w, "gemma4.block_count", 1, &err);
        mp_gguf_writer_kv_i32(w, "k.i32", -1, &err);
        mp_gguf_writer_kv_u64(w, "k.u64", 5, &err);
        mp_gguf_writer_kv_f32(w, "k.f32", 1.5f, &err);
        mp_gguf_writer_kv_bool(w, "k.b", true, &err);
        mp_gguf_writer_kv_arr(w, "k.u8s", MP_GGUF_UINT8, u8s, 3, &err);
        mp_gguf_writer_kv_arr_str(w, "k.strs", strs, 2, &err);
        int n = 0;
        for (int t = 0; t < MP_TYPE_COUNT; t++) {
            const mp_type_traits *tr = mp_type_info(t);
            if (!tr) continue;
            char name[32];
            snprintf(name, sizeof name, "blk.0.t%d", t);
            int64_t ne[2] = {tr->blck_size, 2};
            if (mp_gguf_writer_add_tensor(w, name, t, 2, ne, &err)) goto fail_w;
            n++;
        }
        for (int t = 0; t < MP_TYPE_COUNT; t++) {
            const mp_type_traits *tr = mp_type_info(t);
            if (!tr) continue;
            uint8_t buf[1024];
            for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i * 37 + (size_t)t);
            if (mp_gguf_writer_write_data(w, buf, 2 * tr->type_size, &err)) goto fail_w;
        }
        if (mp_gguf_writer_finish(w, &err)) goto fail_w;
        mp_gguf_writer_free(w);
        printf("%s: %d tensors\n", path, n);
        continue;
    fail_w:
        mp_gguf_writer_free(w);
        goto fail;
    }
    return 0;
fail:
    fprintf(stderr, "gen_seeds: %s\n", err.msg);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: gen_seeds OUT_DIR FIXTURE.gguf...\n");
        return 2;
    }
    if (small_files(argv[1])) return 1;
    for (int i = 2; i < argc; i++) {
        mp_gguf *g;
        mp_err err;
        if (mp_gguf_open(&g, argv[i], &err)) {
            fprintf(stderr, "gen_seeds: %s\n", err.msg);
            return 1;
        }
        const char *base = strrchr(argv[i], '/');
        char path[1024];
        snprintf(path, sizeof path, "%s/header-%s", argv[1], base ? base + 1 : argv[i]);
        FILE *f = fopen(path, "wb");
        size_t n = (size_t)mp_gguf_data_offset(g);
        if (!f || fwrite(mp_gguf_base(g), 1, n, f) != n) return 1;
        fclose(f);
        mp_gguf_free(g);
        printf("%s: %zu header bytes\n", path, n);
    }
    return 0;
}

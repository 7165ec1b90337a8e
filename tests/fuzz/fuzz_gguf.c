/* fuzz_gguf.c — libFuzzer target for the GGUF reader.
 *
 * Parses the input as a whole file; when it parses, reads every metadata
 * value through the typed getters and dequantizes the first rows of every
 * tensor whose type has a decoder, so the fuzzer also reaches the accessors
 * and block decoders with hostile shapes. Built as a libFuzzer binary with
 * -DMP_FUZZ=ON (clang) and as a replay program that CTest runs over the saved
 * corpus in tests/fuzz/corpus/fuzz_gguf. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moeprune.h"

/* Most values decoded per tensor: bounds the work per input. */
#define FUZZ_MAX_ELEMS 4096

static void touch_kv(const mp_gguf *g, int64_t i) {
    mp_gguf_vtype t = mp_gguf_kv_type(g, i);
    uint64_t n = t == MP_GGUF_ARRAY ? mp_gguf_arr_len(g, i) : 1;
    if (n > 64) n = 64;
    for (uint64_t j = 0; j < n; j++) {
        int64_t iv;
        uint64_t uv;
        double fv;
        bool bv;
        const char *s;
        size_t len;
        mp_gguf_get_int(g, i, j, &iv, NULL);
        mp_gguf_get_uint(g, i, j, &uv, NULL);
        mp_gguf_get_float(g, i, j, &fv, NULL);
        mp_gguf_get_bool(g, i, j, &bv, NULL);
        if (mp_gguf_get_str(g, i, j, &s, &len, NULL) == MP_OK && len > 0)
            (void)*(volatile const char *)(s + len - 1);
    }
    mp_gguf_find_key(g, mp_gguf_key(g, i));
}

static void touch_tensor(const mp_gguf_tensor *t) {
    const mp_type_traits *tr = mp_type_info(t->type);
    if (!tr || !tr->can_dequant || !t->data || t->ne[0] == 0) return;
    int64_t n = t->ne[0];
    if (n > FUZZ_MAX_ELEMS) n = FUZZ_MAX_ELEMS / tr->blck_size * tr->blck_size;
    if (n == 0) return;
    size_t row;
    if (mp_type_row_bytes(t->type, n, &row, NULL) != MP_OK || row > t->nbytes) return;
    float *out = malloc((size_t)n * sizeof *out);
    if (out) mp_dequantize_row(t->type, t->data, out, n, NULL);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mp_gguf *g = NULL;
    mp_err err;
    /* header-only mode first: a file cut after its tensor table still parses */
    if (mp_gguf_parse(&g, data, size, "fuzz", (mp_gguf_params){.header_only = true}, &err) ==
        MP_OK) {
        for (int64_t i = 0; i < mp_gguf_n_kv(g); i++) touch_kv(g, i);
        mp_gguf_free(g);
        g = NULL;
    }
    if (mp_gguf_parse(&g, data, size, "fuzz", (mp_gguf_params){0}, &err) != MP_OK) return 0;
    for (int64_t i = 0; i < mp_gguf_n_kv(g); i++) touch_kv(g, i);
    for (int64_t i = 0; i < mp_gguf_n_tensors(g); i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(g, i);
        mp_gguf_find_tensor(g, t->name);
        touch_tensor(t);
    }
    mp_gguf_free(g);
    return 0;
}

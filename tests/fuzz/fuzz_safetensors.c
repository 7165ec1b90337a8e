/* fuzz_safetensors.c — libFuzzer target for the safetensors reader: parses
 * the input as a whole file and, when it parses, walks every tensor and
 * metadata pair and looks each tensor up by name. Built with -DMP_FUZZ=ON;
 * CTest replays the saved corpus (tests/fuzz/corpus/fuzz_safetensors). */
#include <stdint.h>
#include <string.h>

#include "moeprune.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mp_st *f = NULL;
    mp_err err;
    if (mp_st_parse(&f, data, size, "fuzz", &err) != MP_OK) return 0;
    for (int64_t i = 0; i < mp_st_n_tensors(f); i++) {
        const mp_st_tensor *t = mp_st_tensor_at(f, i);
        if (t) mp_st_find_tensor(f, t->name);
    }
    for (int64_t i = 0; i < mp_st_n_meta(f); i++) {
        (void)strlen(mp_st_meta_key(f, i));
        (void)strlen(mp_st_meta_value(f, i));
        mp_st_meta_get(f, mp_st_meta_key(f, i));
    }
    mp_st_free(f);
    return 0;
}

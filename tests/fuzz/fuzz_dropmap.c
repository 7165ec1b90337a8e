/* fuzz_dropmap.c — libFuzzer target for the drop-map parser: parses the
 * input as JSON text; when it parses, serialises it and parses the result
 * again, which must succeed and give the same layers. Built with -DMP_FUZZ=ON;
 * CTest replays the saved corpus (tests/fuzz/corpus/fuzz_dropmap). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moeprune.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mp_dropmap *m = NULL, *again = NULL;
    mp_err err;
    if (mp_dropmap_parse(&m, (const char *)data, size, "fuzz", &err) != MP_OK) return 0;
    char *txt = mp_dropmap_to_json(m, false);
    if (txt && mp_dropmap_parse(&again, txt, strlen(txt), "again", &err) == MP_OK) {
        if (again->n_layers != m->n_layers) abort(); /* a round trip must keep the map */
        for (int64_t i = 0; i < m->n_layers; i++)
            if (again->layers[i].n_keep != m->layers[i].n_keep ||
                memcmp(again->layers[i].keep, m->layers[i].keep,
                       (size_t)m->layers[i].n_keep * sizeof(int32_t)))
                abort();
    } else if (txt) {
        abort();
    }
    mp_free(txt);
    mp_dropmap_free(again);
    mp_dropmap_free(m);
    return 0;
}

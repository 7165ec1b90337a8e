/* st.h — internals shared by the safetensors reader, writer and checkpoint
 * code (reader.c, writer.c, checkpoint.c). The public API is in
 * include/moeprune.h, section "Safetensors and grafting". Format: an 8-byte little-endian header
 * length N, N bytes of JSON (tensor name -> {dtype, shape, data_offsets},
 * plus an optional "__metadata__" object of strings), then the data section,
 * which the tensors cover exactly, without gaps or overlaps, as the reference
 * implementation (huggingface/safetensors) requires. */
#ifndef MP_ST_INTERNAL_H
#define MP_ST_INTERNAL_H

#include "util/util.h"

/* The reference implementation refuses headers over 100 MB; so do we. */
#define MP_ST_MAX_HEADER 100000000ull
/* cJSON spends ~64 bytes per JSON value, so a header of tiny values could
 * cost 32 times its size: cap the value count (a real 100k-tensor header has
 * about 1M values). */
#define MP_ST_MAX_JSON_VALUES (2ll << 20)
/* JSON numbers are doubles: integers above 2^53 are not exact. */
#define MP_ST_MAX_INT 9007199254740992.0
/* Small JSON files beside the weights (config, index) are read whole, up to this. */
#define MP_ST_MAX_JSON_FILE ((size_t)64 << 20)

/* Reads a whole small file (config.json, an index) into a NUL-terminated
 * buffer; refuses files over MP_ST_MAX_JSON_FILE. Free with mp_free. */
mp_status mp_st_read_small(const char *path, char **out, size_t *len, mp_err *err);

/* Counts the JSON values text[0..len) could hold (commas, colons and opening
 * brackets outside strings, plus one): an upper bound, cheap to compute
 * before handing the text to cJSON. */
int64_t mp_st_json_values(const char *text, size_t len);

#endif

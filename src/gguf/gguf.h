/* gguf.h — internals shared by the GGUF reader and writer (gguf.c, write.c).
 * The public API is in include/moeprune.h; the format is described in
 * gemma4-gguf-spec.md section 1. */
#ifndef MP_GGUF_INTERNAL_H
#define MP_GGUF_INTERNAL_H

#include "util/util.h"

/* "GGUF" read as a little-endian u32. */
#define MP_GGUF_MAGIC 0x46554747u
#define MP_GGUF_VERSION 3

/* ggml refuses strings over 1 GiB; we do the same so a hostile length cannot
 * make a caller allocate gigabytes for one key. */
#define MP_GGUF_MAX_STRING (1ull << 30)

/* Encoded size of a fixed-size value type; 0 for STRING/ARRAY/invalid. */
size_t mp_gguf_vtype_size(int vtype);

#endif

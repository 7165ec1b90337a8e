/* util.h — internal helpers shared by every component: error formatting,
 * checked arithmetic, little-endian loads and stores, file helpers. */
#ifndef MP_UTIL_H
#define MP_UTIL_H

#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "moeprune.h"

#define MP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static inline uint16_t mp_load_u16(const void *p) {
    const uint8_t *b = p;
    return (uint16_t)(b[0] | (b[1] << 8));
}
static inline uint32_t mp_load_u32(const void *p) {
    const uint8_t *b = p;
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) |
           ((uint32_t)b[3] << 24);
}
static inline uint64_t mp_load_u64(const void *p) {
    const uint8_t *b = p;
    return (uint64_t)mp_load_u32(b) | ((uint64_t)mp_load_u32(b + 4) << 32);
}
static inline float mp_load_f32(const void *p) {
    uint32_t u = mp_load_u32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline void mp_store_u16(void *p, uint16_t v) {
    uint8_t *b = p;
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
}
static inline void mp_store_u32(void *p, uint32_t v) {
    uint8_t *b = p;
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
}
static inline void mp_store_u64(void *p, uint64_t v) {
    uint8_t *b = p;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
}

/* a + b without wrapping; false on overflow. */
static inline bool mp_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a > UINT64_MAX - b) return false;
    *out = a + b;
    return true;
}
static inline bool mp_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return false;
    *out = a * b;
    return true;
}
static inline uint64_t mp_align_up(uint64_t x, uint64_t a) {
    return (x + a - 1) / a * a;
}

/* strdup through mp_malloc; NULL on allocation failure. */
char *mp_strdup(const char *s);
char *mp_strndup(const char *s, size_t n);

/* A growable byte buffer (metadata serialization, JSON assembly). */
typedef struct mp_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} mp_buf;
bool mp_buf_reserve(mp_buf *b, size_t extra);
bool mp_buf_append(mp_buf *b, const void *data, size_t len);
void mp_buf_free(mp_buf *b);

/* Writes len bytes to path atomically: a temporary file in the same folder,
 * fsync, rename. Refuses an existing path unless overwrite. */
mp_status mp_file_write_atomic(const char *path, const void *data, size_t len, bool overwrite,
                               mp_err *err);

/* Maps `path` read-only: *data (NULL for an empty file) and *size. Unmap with
 * mp_file_unmap. Refuses anything but a regular file. */
mp_status mp_file_map(const char *path, const uint8_t **data, size_t *size, mp_err *err);
void mp_file_unmap(const uint8_t *data, size_t size);

/* Registry of temporary outputs (tempfiles.c): register returns a slot (or -1),
 * unregister frees it once the file is renamed or removed; remove_all is
 * async-signal-safe and meant for the CLI's SIGINT/SIGTERM handler. */
int mp_tempfile_register(const char *path);
void mp_tempfile_unregister(int slot);
void mp_tempfiles_remove_all(void);
/* Creates ".NAME.XXXXXX" (mode 0644) in the folder of `path` and registers it:
 * *tmp_path (free with mp_free), *fd and the registry *slot on success. */
mp_status mp_tempfile_create(const char *path, char **tmp_path, int *fd, int *slot, mp_err *err);

/* An output file written under a temporary name in its folder (registered
 * for removal on a signal) and renamed into place only when complete: the
 * shared part of the GGUF and safetensors writers. */
typedef struct mp_outfile {
    char *path;     /* the final name */
    char *tmp_path; /* NULL once published */
    int tmp_slot;   /* registry slot, -1: none */
    FILE *f;        /* open until mp_outfile_sync */
} mp_outfile;
/* Refuses an existing path unless overwrite; on failure *o holds nothing. */
mp_status mp_outfile_open(mp_outfile *o, const char *path, bool overwrite, mp_err *err);
/* Flushes, fsyncs and closes the temporary; `what` failed is in the error. */
mp_status mp_outfile_sync(mp_outfile *o, mp_err *err);
/* Renames the temporary onto the final name. */
mp_status mp_outfile_publish(mp_outfile *o, mp_err *err);
/* Closes and removes whatever is left of the temporary; frees the names. */
void mp_outfile_discard(mp_outfile *o);

/* SHA-256, streaming (sha256.c). */
typedef struct mp_sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t fill;
} mp_sha256;
void mp_sha256_init(mp_sha256 *s);
void mp_sha256_update(mp_sha256 *s, const void *data, size_t n);
/* Finishes and writes 64 hex digits + NUL. */
void mp_sha256_hex(mp_sha256 *s, char out[65]);
/* The compression function over n 64-byte blocks: plain C, and with the x86
 * SHA extensions (false, doing nothing, where the CPU or build lacks them).
 * mp_sha256_update uses the fast one unless MOEPRUNE_CPU=ref. */
void mp_sha256_blocks_ref(uint32_t h[8], const uint8_t *p, size_t n);
extern const uint32_t mp_sha256_k[64]; /* the round constants */
bool mp_sha256_blocks_shani(uint32_t h[8], const uint8_t *p, size_t n);

/* Copies the text of errno into a message-friendly string. */
const char *mp_errno_str(int e);

#endif

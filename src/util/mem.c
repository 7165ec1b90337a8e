/* mem.c — the one allocation entry point, with failure injection for tests.
 * The countdown is process-wide test instrumentation, not library state that
 * changes results: with it disabled (the default) these are plain wrappers. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

static atomic_long fail_countdown; /* 0: never fail */

void mp_malloc_fail_at(long n) {
    atomic_store(&fail_countdown, n);
}

static bool should_fail(void) {
    long c = atomic_load(&fail_countdown);
    if (c <= 0) return false;
    c = atomic_fetch_sub(&fail_countdown, 1);
    return c == 1;
}

void *mp_malloc(size_t size) {
    if (should_fail()) return NULL;
    return malloc(size ? size : 1);
}

void *mp_calloc(size_t n, size_t size) {
    size_t total;
    if (!mp_mul_size(n, size, &total)) return NULL;
    if (should_fail()) return NULL;
    return calloc(total ? total : 1, 1);
}

void *mp_realloc(void *p, size_t size) {
    if (should_fail()) return NULL;
    return realloc(p, size ? size : 1);
}

void mp_free(void *p) {
    free(p);
}

bool mp_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}

char *mp_strndup(const char *s, size_t n) {
    char *d = mp_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *mp_strdup(const char *s) {
    return mp_strndup(s, strlen(s));
}

bool mp_buf_reserve(mp_buf *b, size_t extra) {
    if (extra <= b->cap - b->len) return true;
    if (extra > SIZE_MAX / 2 - b->len) return false;
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    uint8_t *d = mp_realloc(b->data, cap);
    if (!d) return false;
    b->data = d;
    b->cap = cap;
    return true;
}

bool mp_buf_append(mp_buf *b, const void *data, size_t len) {
    if (!mp_buf_reserve(b, len)) return false;
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    return true;
}

void mp_buf_free(mp_buf *b) {
    mp_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

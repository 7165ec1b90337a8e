/* testutil.c — helpers shared by the test programs (see testutil.h). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

int mp_test_checks;
int mp_test_failures;

const char *const mp_test_tiny_variants[] = {
    "f32",  "f16",  "bf16", "q8_0",   "q4_0",   "q4_1",   "q5_0",   "q5_1",      "q4_k_m",
    "q5_k_m", "q6_k", "q3_k_m", "q2_k", "iq4_xs", "iq4_nl", "mxfp4_moe", NULL};

int mp_test_end(const char *name) {
    printf("%s: %d checks, %d failed\n", name, mp_test_checks, mp_test_failures);
    return mp_test_failures ? 1 : 0;
}

const char *mp_test_data(char *buf, size_t n, const char *rel) {
    snprintf(buf, n, "%s/%s", MP_TEST_DATA, rel);
    return buf;
}

void *mp_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return NULL; }
    long sz = ftell(f);
    if (sz < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return NULL; }
    void *buf = malloc((size_t)sz + 1);
    if (!buf) { fclose(f); return NULL; }
    if (fread(buf, 1, (size_t)sz, f) != (size_t)sz) { free(buf); fclose(f); return NULL; }
    fclose(f);
    ((char *)buf)[sz] = 0;
    *len = (size_t)sz;
    return buf;
}

bool mp_test_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(data, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = false;
    CHECK_MSG(ok, "cannot write %s", path);
    return ok;
}

int64_t mp_test_read_ids(const char *path, mp_token *ids, int64_t cap) {
    size_t len;
    char *text = mp_test_read_file(path, &len);
    int64_t n = 0;
    for (char *p = text, *end; text && n < cap; p = end) {
        long v = strtol(p, &end, 10);
        if (end == p) break;
        ids[n++] = (mp_token)v;
    }
    free(text);
    return n;
}

bool mp_test_imatrix_seen(const mp_imatrix_entry *e) {
    for (int64_t s = 0; s < e->n_slab; s++)
        if (e->count[s] > 0) return true;
    return false;
}

bool mp_test_imatrix_same(const mp_imatrix *a, const mp_imatrix *b, double rel) {
    int64_t na = 0, nb = 0;
    for (int64_t i = 0; i < a->n_entry; i++) na += mp_test_imatrix_seen(&a->entries[i]);
    for (int64_t i = 0; i < b->n_entry; i++) nb += mp_test_imatrix_seen(&b->entries[i]);
    if (na != nb || na == 0) return false;
    for (int64_t i = 0; i < a->n_entry; i++) {
        const mp_imatrix_entry *x = &a->entries[i], *y = mp_imatrix_find(b, x->name);
        if (!mp_test_imatrix_seen(x)) continue;
        if (!y || x->n_in != y->n_in || x->n_slab != y->n_slab) return false;
        for (int64_t s = 0; s < x->n_slab; s++)
            if (x->count[s] != y->count[s]) return false;
        for (int64_t j = 0; j < x->n_in * x->n_slab; j++)
            if (rel == 0 ? x->sum2[j] != y->sum2[j]
                         : !(fabs(x->sum2[j] - y->sum2[j]) <= rel * fabs(x->sum2[j])))
                return false;
    }
    return true;
}

const char *mp_test_tmpdir(char *buf, size_t n, const char *tag) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    snprintf(buf, n, "%s/mp-%s-XXXXXX", base, tag);
    if (!mkdtemp(buf)) return NULL;
    return buf;
}

uint64_t mp_test_rand(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

float mp_test_randf(uint64_t *s) {
    return (float)((mp_test_rand(s) >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

uint64_t mp_test_seed(int argc, char **argv) {
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : (uint64_t)time(NULL);
    if (seed == 0) seed = 1;
    printf("seed %" PRIu64 " (pass it as the first argument to repeat)\n", seed);
    return seed;
}

int mp_test_run(const char *cmd, char **out) {
    FILE *p = popen(cmd, "r");
    *out = NULL;
    if (!p) return -1;
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    for (size_t n; buf && (n = fread(buf + len, 1, cap - len - 1, p)) > 0;) {
        len += n;
        if (cap - len < 2) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
            } else {
                buf = nb;
            }
        }
    }
    int st = pclose(p);
    if (buf) buf[len] = 0;
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

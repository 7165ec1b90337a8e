/* testutil.c — helpers shared by the test programs (see testutil.h). */
#include "testutil.h"

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

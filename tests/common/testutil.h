/* testutil.h — tiny check macros for moeprune's test programs.
 * Each failed check prints file, line, expected and actual, and counts; a test
 * returns mp_test_end() which is non-zero when anything failed. */
#ifndef MP_TESTUTIL_H
#define MP_TESTUTIL_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "moeprune.h"

extern int mp_test_checks;
extern int mp_test_failures;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        mp_test_checks++;                                                            \
        if (!(cond)) {                                                               \
            mp_test_failures++;                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

#define CHECK_MSG(cond, ...)                                                         \
    do {                                                                             \
        mp_test_checks++;                                                            \
        if (!(cond)) {                                                               \
            mp_test_failures++;                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                            \
            fputc('\n', stderr);                                                     \
        }                                                                            \
    } while (0)

#define CHECK_INT(exp, act)                                                          \
    do {                                                                             \
        long long e_ = (long long)(exp), a_ = (long long)(act);                      \
        mp_test_checks++;                                                            \
        if (e_ != a_) {                                                              \
            mp_test_failures++;                                                      \
            fprintf(stderr, "%s:%d: %s: expected %lld, got %lld\n", __FILE__, __LINE__, \
                    #act, e_, a_);                                                   \
        }                                                                            \
    } while (0)

#define CHECK_STATUS(exp, act, err)                                                  \
    do {                                                                             \
        mp_status e_ = (exp), a_ = (act);                                            \
        mp_test_checks++;                                                            \
        if (e_ != a_) {                                                              \
            mp_test_failures++;                                                      \
            fprintf(stderr, "%s:%d: %s: expected %s, got %s (%s)\n", __FILE__, __LINE__, \
                    #act, mp_status_name(e_), mp_status_name(a_), (err)->msg);       \
        }                                                                            \
    } while (0)

#define CHECK_NEAR(exp, act, tol)                                                    \
    do {                                                                             \
        double e_ = (double)(exp), a_ = (double)(act), t_ = (double)(tol);           \
        mp_test_checks++;                                                            \
        if (!(e_ - a_ <= t_ && a_ - e_ <= t_)) {                                     \
            mp_test_failures++;                                                      \
            fprintf(stderr, "%s:%d: %s: expected %.9g +- %.3g, got %.9g\n", __FILE__, \
                    __LINE__, #act, e_, t_, a_);                                     \
        }                                                                            \
    } while (0)

/* Prints the summary line and returns the process exit code. */
int mp_test_end(const char *name);

/* Path of a file under tests/data (static buffer per call site is not used:
 * writes into buf). */
const char *mp_test_data(char *buf, size_t n, const char *rel);

/* Reads a whole file; caller frees with free(). NULL on error. */
void *mp_test_read_file(const char *path, size_t *len);
/* Writes n bytes to path (created or truncated); a failure is a failed check. */
bool mp_test_write_file(const char *path, const void *data, size_t n);
/* Space-separated token ids (the fixtures' *.tokens.txt format), at most
 * cap of them; returns the count, 0 when the file cannot be read. */
int64_t mp_test_read_ids(const char *path, mp_token *ids, int64_t cap);

/* The entry saw rows (a slab with count > 0). */
bool mp_test_imatrix_seen(const mp_imatrix_entry *e);
/* Two importance matrices agree: the entries that saw rows are the same in
 * both, with the same shapes and counts, and sums within relative rel (0: bit
 * for bit); an empty one agrees with nothing. */
bool mp_test_imatrix_same(const mp_imatrix *a, const mp_imatrix *b, double rel);

/* A fresh temporary directory for this test (removed by the caller if wanted). */
const char *mp_test_tmpdir(char *buf, size_t n, const char *tag);

/* Deterministic RNG for tests (xorshift64*); seed printed by callers. */
uint64_t mp_test_rand(uint64_t *state);
float mp_test_randf(uint64_t *state); /* uniform in [-1, 1) */
/* Seed from argv[1] if given, else from time; prints it. */
uint64_t mp_test_seed(int argc, char **argv);

/* Runs a shell command and captures its stdout (NUL-terminated, free() it);
 * returns the exit status, -1 if it did not exit normally. */
int mp_test_run(const char *cmd, char **out);

/* Fixture variants in tests/data/gemma4-tiny-a, NULL-terminated. */
extern const char *const mp_test_tiny_variants[];

#endif

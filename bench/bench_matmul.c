/* bench_matmul.c — one weight type's matmul kernel alone, on a weight
 * matrix larger than the caches, with the engine's row split over threads:
 * GB/s of weights streamed for a GEMV (one token, the generation case) and
 * G multiply-adds/s for a batch (prompt processing), next to the machine's
 * plain streaming-read bandwidth measured the same way.
 *
 *   bench_matmul [--type Q6_K] [--mb 1024] [--threads 2] [--tokens 1]
 *                [--reps 5] [--level avx512]
 *
 * Weights are random valid blocks; rows are 4096 values wide unless the
 * type needs another multiple. Reports the median of --reps timed runs after
 * one warmup. Not a test: results go to bench/RESULTS.md. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/kernels.h"
#include "util/util.h"

#define ROW_VALUES 4096
#define CHUNK_ROWS 16 /* rows per claimed task, as the engine's default */

typedef struct job {
    const mp_kernels *k;
    int type;
    const uint8_t *w;
    size_t row_bytes;
    int64_t n_rows, n_tok;
    const uint8_t *act;
    size_t act_stride;
    float *y;
    bool stream_only; /* just read the weights */
    atomic_llong next;
    double sink[64];
} job;

typedef struct targ {
    job *j;
    int id;
} targ;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *worker(void *v) {
    targ *a = v;
    job *j = a->j;
    uint64_t acc = 0;
    for (;;) {
        const int64_t r0 = (int64_t)atomic_fetch_add(&j->next, CHUNK_ROWS);
        if (r0 >= j->n_rows) break;
        const int64_t nr = j->n_rows - r0 < CHUNK_ROWS ? j->n_rows - r0 : CHUNK_ROWS;
        const uint8_t *w = j->w + (size_t)r0 * j->row_bytes;
        if (j->stream_only) {
            const uint64_t *p = (const uint64_t *)(const void *)w;
            const size_t n = (size_t)nr * j->row_bytes / 8;
            for (size_t i = 0; i < n; i += 8) acc += p[i] ^ p[i + 1] ^ p[i + 2] ^ p[i + 3] ^ p[i + 4] ^ p[i + 5] ^ p[i + 6] ^ p[i + 7];
        } else {
            j->k->gemm[j->type](ROW_VALUES, w, j->row_bytes, nr, j->act, j->act_stride, j->n_tok,
                                j->y + r0, j->n_rows);
        }
    }
    j->sink[a->id] = (double)acc;
    return NULL;
}

static double run(job *j, int threads) {
    pthread_t t[64];
    targ a[64];
    atomic_store(&j->next, 0);
    const double t0 = now();
    for (int i = 0; i < threads; i++) {
        a[i] = (targ){.j = j, .id = i};
        pthread_create(&t[i], NULL, worker, &a[i]);
    }
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    return now() - t0;
}

static int cmp_d(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_run(job *j, int threads, int reps) {
    double t[64];
    run(j, threads); /* warmup */
    for (int r = 0; r < reps; r++) t[r] = run(j, threads);
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    return t[reps / 2];
}

int main(int argc, char **argv) {
    const char *type_name = "Q6_K", *level = NULL;
    long mb = 1024, threads = 2, tokens = 1, reps = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--type")) type_name = argv[i + 1];
        else if (!strcmp(argv[i], "--mb")) mb = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--tokens")) tokens = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--level")) level = argv[i + 1];
        else {
            fprintf(stderr, "bench_matmul: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (mb < 1 || threads < 1 || threads > 64 || tokens < 1 || tokens > 4096 || reps < 1 ||
        reps > 64) {
        fprintf(stderr, "bench_matmul: --mb >= 1, --threads 1..64, --tokens 1..4096, --reps 1..64\n");
        return 2;
    }
    int type = -1;
    for (int t = 0; t < MP_TYPE_COUNT; t++)
        if (mp_type_info(t) && !strcmp(mp_type_name(t), type_name)) type = t;
    const mp_kernels *k = level ? mp_kernels_by_name(level) : mp_kernels_select();
    if (type < 0 || !k || !k->gemm[type]) {
        fprintf(stderr, "bench_matmul: no kernel for type '%s' at level '%s'\n", type_name,
                level ? level : "auto");
        return 2;
    }
    const mp_type_traits *tt = mp_type_info(type);
    const size_t row_bytes = (size_t)(ROW_VALUES / tt->blck_size) * tt->type_size;
    const int64_t n_rows = (int64_t)((size_t)mb * 1024 * 1024 / row_bytes);
    uint8_t *w = malloc(row_bytes * (size_t)n_rows);
    const mp_act_fmt f = k->act[type];
    const size_t as = mp_act_row_bytes(f, ROW_VALUES);
    uint8_t *act = malloc(as * (size_t)tokens);
    float *x = malloc(sizeof(float) * ROW_VALUES), *y = malloc(sizeof(float) * (size_t)(n_rows * tokens));
    if (!w || !act || !x || !y) {
        fprintf(stderr, "bench_matmul: out of memory\n");
        return 1;
    }
    /* random bytes, then a small finite f16 at every block's first two bytes
     * (the scale of most types; K-quants keep it elsewhere, where random
     * bytes may give large or NaN scales: the timing does not care) */
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < row_bytes * (size_t)n_rows; i += 8) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        memcpy(w + i, &s, row_bytes * (size_t)n_rows - i < 8 ? row_bytes * (size_t)n_rows - i : 8);
    }
    for (int64_t i = 0; i < ROW_VALUES; i++) x[i] = sinf((float)i);
    for (long t = 0; t < tokens; t++) k->quant[f](x, ROW_VALUES, act + (size_t)t * as);
    job j = {.k = k, .type = type, .w = w, .row_bytes = row_bytes, .n_rows = n_rows,
             .n_tok = tokens, .act = act, .act_stride = as, .y = y};
    const double bytes = (double)row_bytes * (double)n_rows;
    const double tk = median_run(&j, (int)threads, (int)reps);
    j.stream_only = true;
    const double ts = median_run(&j, (int)threads, (int)reps);
    printf("%s %s: %ld MiB of weights, %lld rows x %d, %ld token(s), %ld thread(s), median of %ld\n",
           k->name, tt->name, mb, (long long)n_rows, ROW_VALUES, tokens, threads, reps);
    printf("  kernel: %.3f s  %.2f GB/s of weights  %.1f G multiply-adds/s\n", tk, bytes / tk / 1e9,
           (double)n_rows * ROW_VALUES * (double)tokens / tk / 1e9);
    printf("  plain read of the same bytes: %.3f s  %.2f GB/s  (kernel/read %.2f)\n", ts,
           bytes / ts / 1e9, ts / tk);
    free(w);
    free(act);
    free(x);
    free(y);
    return 0;
}

/* matmul.c — y = W x over many tokens: choosing the kernel level at run
 * time, converting activations once per input, and splitting the work into
 * fixed row chunks over the pool (mp_matmul).
 *
 * A job's activations are converted into the weight type's format
 * (kernels.h) once, shared by every job of the call that reads the same
 * input in the same format (q/k/v; gate/up). Each pool task then computes a
 * chunk of MP_MM_CHUNK_ROWS output rows for all the job's tokens, walking the
 * tokens in tiles that keep the chunk's weights and the tile's activations in
 * cache. Types without a tile kernel dequantize one weight row at a time into
 * the thread's scratch and dot it with every token (the reference path). */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

/* ---------------------------------------------------------- the levels */

enum { LEVEL_EXACT, LEVEL_REF, LEVEL_AVX2, LEVEL_AVX512, LEVEL_NEON, LEVEL_COUNT };
static const char *const level_names[LEVEL_COUNT] = {"exact", "ref", "avx2", "avx512", "neon"};
static mp_kernels levels[LEVEL_COUNT];
static bool level_ok[LEVEL_COUNT];
static const mp_kernels *selected;
static pthread_once_t levels_once = PTHREAD_ONCE_INIT;

/* "exact": quantized weights dequantized row by row and dotted with float
 * activations, no 8-bit rounding of the activations (llama.cpp's "exact"
 * fixtures are made the same way). Slow; for checking the forward pass. */
static bool exact_fill(mp_kernels *k) {
    k->name = "exact";
    for (int t = 0; t < MP_TYPE_COUNT; t++)
        if (k->act[t] != MP_ACT_F32) k->gemm[t] = NULL;
    return true;
}

static void init_levels(void) {
    mp_kern_ref_fill(&levels[LEVEL_REF]);
    level_ok[LEVEL_REF] = true;
    bool (*const fill[LEVEL_COUNT])(mp_kernels *) = {exact_fill, NULL, mp_kern_avx2_fill,
                                                    mp_kern_avx512_fill, mp_kern_neon_fill};
    int best = LEVEL_REF;
    for (int l = 0; l < LEVEL_COUNT; l++) {
        if (l == LEVEL_REF) continue;
        mp_kern_ref_fill(&levels[l]);
        level_ok[l] = fill[l](&levels[l]);
        if (level_ok[l] && l > best) best = l;
    }
    selected = &levels[best];
    const char *want = getenv("MOEPRUNE_CPU");
    if (!want || !*want || !strcmp(want, "auto")) return;
    for (int l = 0; l < LEVEL_COUNT; l++) {
        if (strcmp(want, level_names[l])) continue;
        if (level_ok[l]) selected = &levels[l];
        else
            fprintf(stderr, "moeprune: MOEPRUNE_CPU=%s: this CPU or build lacks it; using %s\n",
                    want, selected->name);
        return;
    }
    fprintf(stderr, "moeprune: MOEPRUNE_CPU=%s is not one of exact, ref, avx2, avx512, neon, auto; "
            "using %s\n", want, selected->name);
}

const mp_kernels *mp_kernels_select(void) {
    pthread_once(&levels_once, init_levels);
    return selected;
}

const mp_kernels *mp_kernels_ref(void) {
    pthread_once(&levels_once, init_levels);
    return &levels[LEVEL_REF];
}

const mp_kernels *mp_kernels_by_name(const char *name) {
    pthread_once(&levels_once, init_levels);
    for (int l = 0; l < LEVEL_COUNT; l++)
        if (!strcmp(name, level_names[l])) return level_ok[l] ? &levels[l] : NULL;
    return NULL;
}

const char *mp_cpu_kernels(void) {
    return mp_kernels_select()->name;
}

float mp_dot_f32(const float *a, const float *b, int64_t n) {
    return mp_dot_f32_ref(a, b, n);
}

/* ------------------------------------------------------------- the split */

/* Tokens per kernel call inside a task: a chunk's weights (16 rows) stay in
 * L1/L2 while the tile's activation rows stream past them. */
#define MM_TOKEN_TILE 64

/* One distinct (input, format) pair of a call, converted into act[]. */
struct mp_mm_input {
    const float *x;
    int64_t ldx, n_in, n_tok;
    mp_act_fmt fmt;
    uint8_t *a;      /* converted rows */
    size_t stride;   /* bytes per converted row */
    int64_t first;   /* index of its first row among all converted rows */
};
typedef struct mp_mm_input mm_input;

typedef struct mm_run {
    const mp_kernels *k;
    mp_mm_job *jobs;
    int64_t n_jobs;
    const mp_mm_scratch *sc;
    mm_input *in;
    int64_t n_in;
    int *job_in; /* [n_jobs] input index, -1: reference path */
} mm_run;

/* The index of the last of n records (each `size` bytes, with an int64 at
 * `off` giving its first task, ascending) whose first task is <= task. */
static int64_t owner(const void *base, size_t size, size_t off, int64_t n, int64_t task) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        const int64_t mid = (lo + hi + 1) / 2;
        int64_t first;
        memcpy(&first, (const char *)base + (size_t)mid * size + off, sizeof first);
        if (first <= task) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

static void quant_task(void *arg, int64_t task, int thread) {
    (void)thread;
    const mm_run *m = arg;
    const mm_input *in = &m->in[owner(m->in, sizeof *m->in, offsetof(mm_input, first), m->n_in,
                                      task)];
    const int64_t t = task - in->first;
    m->k->quant[in->fmt](in->x + t * in->ldx, in->n_in, in->a + (size_t)t * in->stride);
}

/* Rows per task: MP_MM_CHUNK_ROWS, or more for a single token on a tall
 * matrix (the output head), so each thread streams long runs of weights.
 * The results do not depend on it: every output element is one kernel dot
 * over its whole row. */
static int64_t chunk_rows(const mp_mm_job *job) {
    return job->n_tok == 1 && job->w.ne[1] >= 8 * MP_MM_CHUNK_ROWS ? 4 * MP_MM_CHUNK_ROWS
                                                                    : MP_MM_CHUNK_ROWS;
}

static void mm_task(void *arg, int64_t task, int thread) {
    const mm_run *m = arg;
    const int64_t lo = owner(m->jobs, sizeof *m->jobs, offsetof(mp_mm_job, first_task),
                             m->n_jobs, task);
    const mp_mm_job *job = &m->jobs[lo];
    const mp_weight *w = &job->w;
    const int64_t n_in = w->ne[0];
    const int64_t rows = chunk_rows(job);
    const int64_t r0 = (task - job->first_task) * rows;
    const int64_t r1 = r0 + rows < w->ne[1] ? r0 + rows : w->ne[1];
    const int ii = m->job_in[lo];
    if (ii >= 0 || (m->k->gemm[w->type] && m->k->act[w->type] == MP_ACT_F32)) {
        const uint8_t *a = ii >= 0 ? m->in[ii].a : (const uint8_t *)job->x;
        const size_t as = ii >= 0 ? m->in[ii].stride : (size_t)job->ldx * sizeof(float);
        for (int64_t t0 = 0; t0 < job->n_tok; t0 += MM_TOKEN_TILE) {
            const int64_t nt = job->n_tok - t0 < MM_TOKEN_TILE ? job->n_tok - t0 : MM_TOKEN_TILE;
            m->k->gemm[w->type](n_in, w->data + (size_t)r0 * w->row_bytes, w->row_bytes,
                                r1 - r0, a + (size_t)t0 * as, as, nt,
                                job->y + t0 * job->ldy + r0, job->ldy);
        }
    } else {
        float *row = m->sc->row + (size_t)thread * (size_t)m->sc->row_stride;
        for (int64_t r = r0; r < r1; r++) {
            /* types were checked at load (mp_arch_bind), so this cannot fail */
            (void)mp_dequantize_row(w->type, w->data + (size_t)r * w->row_bytes, row, n_in,
                                    NULL);
            for (int64_t t = 0; t < job->n_tok; t++)
                job->y[t * job->ldy + r] = m->k->dot_f32(row, job->x + t * job->ldx, n_in);
        }
    }
    if (w->scale != 1.0f)
        for (int64_t t = 0; t < job->n_tok; t++)
            for (int64_t r = r0; r < r1; r++) job->y[t * job->ldy + r] *= w->scale;
}

/* The block size a quantized format needs n_in to be a multiple of. */
static int64_t fmt_block(mp_act_fmt f) {
    return f == MP_ACT_Q8_32 ? 32 : f == MP_ACT_Q8_K ? MP_QK_K : 1;
}

void mp_matmul(mp_pool *pool, const mp_kernels *k, mp_mm_job *jobs, int64_t n_jobs,
               const mp_mm_scratch *sc) {
    mm_input *in = sc->in;
    int *job_in = sc->job_in;
    int64_t n_in = 0, rows = 0;
    size_t used = 0;
    for (int64_t j = 0; j < n_jobs; j++) {
        const mp_weight *w = &jobs[j].w;
        job_in[j] = -1;
        if (!k->gemm[w->type] || k->act[w->type] == MP_ACT_F32 || jobs[j].n_tok == 0) continue;
        const mp_act_fmt f = k->act[w->type];
        if (w->ne[0] % fmt_block(f)) continue;
        int64_t i = 0;
        while (i < n_in && !(in[i].x == jobs[j].x && in[i].ldx == jobs[j].ldx &&
                             in[i].n_in == w->ne[0] && in[i].n_tok == jobs[j].n_tok &&
                             in[i].fmt == f))
            i++;
        if (i == n_in) {
            const size_t stride = mp_act_row_bytes(f, w->ne[0]);
            const size_t bytes = stride * (size_t)jobs[j].n_tok;
            if (bytes > sc->act_bytes - used) continue; /* the reference path then */
            in[n_in] = (mm_input){.x = jobs[j].x, .ldx = jobs[j].ldx, .n_in = w->ne[0],
                                  .n_tok = jobs[j].n_tok, .fmt = f, .a = sc->act + used,
                                  .stride = stride, .first = rows};
            used += bytes;
            rows += jobs[j].n_tok;
            n_in++;
        }
        job_in[j] = (int)i;
    }
    mm_run m = {.k = k, .jobs = jobs, .n_jobs = n_jobs, .sc = sc, .in = in, .n_in = n_in,
                .job_in = job_in};
    mp_pool_run(pool, rows, quant_task, &m);
    int64_t n_tasks = 0;
    for (int64_t j = 0; j < n_jobs; j++) {
        jobs[j].first_task = n_tasks;
        if (jobs[j].n_tok > 0)
            n_tasks += (jobs[j].w.ne[1] + chunk_rows(&jobs[j]) - 1) / chunk_rows(&jobs[j]);
    }
    mp_pool_run(pool, n_tasks, mm_task, &m);
}

size_t mp_mm_input_size(void) {
    return sizeof(mm_input);
}

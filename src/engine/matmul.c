/* matmul.c — y = W x over many tokens: the split into fixed row chunks over
 * the pool (mp_matmul), the scalar reference kernel, and the kernel table.
 *
 * The reference keeps activations in float and dequantizes one weight row at
 * a time into the thread's scratch (never a whole tensor), then dots it with
 * every token of the job: with a batch of n tokens each weight byte is read
 * once per call, not n times. It is the obvious-correct baseline that int8
 * activation and SIMD kernels will be checked against; it is deliberately
 * not fast. */
#include <stdlib.h>

#include "engine/engine.h"

/* Eight independent partial sums in a fixed order: deterministic, and a
 * shape the compiler can vectorise without reassociating. */
#define DOT_LANES 8

float mp_dot_f32(const float *a, const float *b, int64_t n) {
    float acc[DOT_LANES] = {0};
    int64_t i = 0;
    for (; i + DOT_LANES <= n; i += DOT_LANES)
        for (int k = 0; k < DOT_LANES; k++) acc[k] += a[i + k] * b[i + k];
    for (int k = 0; i < n; i++, k++) acc[k] += a[i] * b[i];
    float s01 = acc[0] + acc[1], s23 = acc[2] + acc[3];
    float s45 = acc[4] + acc[5], s67 = acc[6] + acc[7];
    return (s01 + s23) + (s45 + s67);
}

static void matmul_rows_ref(const mp_mm_job *job, int64_t r0, int64_t r1, float *row) {
    const mp_weight *w = &job->w;
    const int64_t n_in = w->ne[0];
    for (int64_t r = r0; r < r1; r++) {
        /* types were checked at load (mp_arch_bind), so this cannot fail */
        (void)mp_dequantize_row(w->type, w->data + (size_t)r * w->row_bytes, row, n_in, NULL);
        for (int64_t t = 0; t < job->n_tok; t++)
            job->y[t * job->ldy + r] = mp_dot_f32(row, job->x + t * job->ldx, n_in);
    }
}

static const mp_kernels kernels_ref = {.name = "ref", .matmul_rows = matmul_rows_ref};

const mp_kernels *mp_kernels_ref(void) {
    return &kernels_ref;
}

const mp_kernels *mp_kernels_select(void) {
    /* MOEPRUNE_CPU=ref will matter once SIMD variants exist beside the
     * reference; today every CPU gets the reference */
    return &kernels_ref;
}

/* ------------------------------------------------------------- the split */

typedef struct mm_run {
    const mp_kernels *k;
    mp_mm_job *jobs;
    int64_t n_jobs;
    float *scratch;
    int64_t stride;
} mm_run;

static void mm_task(void *arg, int64_t task, int thread) {
    const mm_run *m = arg;
    /* the job whose task range holds `task` (jobs sorted by first_task) */
    int64_t lo = 0, hi = m->n_jobs - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (m->jobs[mid].first_task <= task) lo = mid;
        else hi = mid - 1;
    }
    const mp_mm_job *job = &m->jobs[lo];
    int64_t r0 = (task - job->first_task) * MP_MM_CHUNK_ROWS;
    int64_t r1 = r0 + MP_MM_CHUNK_ROWS < job->w.ne[1] ? r0 + MP_MM_CHUNK_ROWS : job->w.ne[1];
    m->k->matmul_rows(job, r0, r1, m->scratch + (size_t)thread * (size_t)m->stride);
    if (job->w.scale != 1.0f)
        for (int64_t t = 0; t < job->n_tok; t++)
            for (int64_t r = r0; r < r1; r++) job->y[t * job->ldy + r] *= job->w.scale;
}

void mp_matmul(mp_pool *pool, const mp_kernels *k, mp_mm_job *jobs, int64_t n_jobs,
               float *scratch, int64_t scratch_stride) {
    int64_t n_tasks = 0;
    for (int64_t j = 0; j < n_jobs; j++) {
        jobs[j].first_task = n_tasks;
        if (jobs[j].n_tok > 0)
            n_tasks += (jobs[j].w.ne[1] + MP_MM_CHUNK_ROWS - 1) / MP_MM_CHUNK_ROWS;
    }
    mm_run m = {.k = k, .jobs = jobs, .n_jobs = n_jobs, .scratch = scratch,
                .stride = scratch_stride};
    mp_pool_run(pool, n_tasks, mm_task, &m);
}

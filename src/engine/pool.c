/* pool.c — the engine's thread pool (pthreads) and the scratch arena.
 *
 * One pool per context, workers created once. A job is a task count and a
 * function; tasks are claimed with an atomic counter, so the split is dynamic
 * but every task writes only its own outputs (see engine.h): the thread count
 * never changes a result. The calling thread works too, so a pool of 1 has no
 * workers and runs everything inline. Does not support nested jobs or
 * cancellation.
 *
 * A forward pass runs a few hundred jobs per token, so hand-offs must cost
 * well under a microsecond: workers spin on the job generation for a while
 * (POOL_SPINS pauses, ~1 ms) before they sleep on a condition variable, and
 * the caller spins until the workers are done. The sleep is race-free because
 * a worker re-checks the generation under the mutex after announcing itself
 * in `sleepers`, and the caller, after publishing a generation, broadcasts
 * under the mutex whenever anyone has announced it (both sides use
 * sequentially consistent atomics, so one of them sees the other). */
#include <pthread.h>
#include <sched.h>

#include "engine/engine.h"

#define POOL_SPINS (1 << 15)

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

struct mp_pool {
    int n_threads;        /* including the caller */
    pthread_t *workers;   /* [n_threads - 1] */
    int n_started;
    pthread_mutex_t mu;
    pthread_cond_t start; /* a new generation (or stop) */
    atomic_ullong generation;
    atomic_int busy;      /* workers still in the current generation */
    atomic_int sleepers;  /* workers waiting (or about to) on `start` */
    atomic_bool stop;
    mp_pool_fn fn;
    void *arg;
    int64_t n_tasks;
    atomic_llong next;    /* next unclaimed task */
};

typedef struct worker_arg {
    mp_pool *pool;
    int index;
} worker_arg;

static void run_tasks(mp_pool *p, int thread) {
    for (;;) {
        int64_t t = (int64_t)atomic_fetch_add(&p->next, 1);
        if (t >= p->n_tasks) break;
        p->fn(p->arg, t, thread);
    }
}

/* Waits until the generation moves past `seen` or the pool stops. */
static void wait_generation(mp_pool *p, unsigned long long seen) {
    for (int i = 0; i < POOL_SPINS; i++) {
        if (atomic_load(&p->generation) != seen || atomic_load(&p->stop)) return;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleepers, 1);
    while (atomic_load(&p->generation) == seen && !atomic_load(&p->stop))
        pthread_cond_wait(&p->start, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
}

static void *worker_main(void *v) {
    mp_pool *p = ((worker_arg *)v)->pool;
    int index = ((worker_arg *)v)->index;
    mp_free(v);
    unsigned long long seen = 0;
    for (;;) {
        wait_generation(p, seen);
        if (atomic_load(&p->stop)) break;
        seen = atomic_load(&p->generation);
        run_tasks(p, index);
        atomic_fetch_sub(&p->busy, 1);
    }
    return NULL;
}

mp_status mp_pool_init(mp_pool **out, int n_threads, mp_err *err) {
    if (n_threads < 1 || n_threads > 4096)
        return mp_err_set(err, MP_ERR_ARG, "thread pool: %d threads is not in 1..4096",
                          n_threads);
    mp_pool *p = mp_calloc(1, sizeof *p);
    if (!p) return mp_err_set(err, MP_ERR_NOMEM, "thread pool: out of memory");
    p->n_threads = n_threads;
    atomic_init(&p->next, 0);
    atomic_init(&p->generation, 0);
    atomic_init(&p->busy, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->stop, false);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    if (n_threads > 1 && !(p->workers = mp_calloc((size_t)n_threads - 1, sizeof *p->workers))) {
        mp_pool_free(p);
        return mp_err_set(err, MP_ERR_NOMEM, "thread pool: out of memory");
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *a = mp_malloc(sizeof *a);
        int rc = a ? 0 : 1;
        if (a) {
            a->pool = p;
            a->index = i;
            rc = pthread_create(&p->workers[i - 1], NULL, worker_main, a);
            if (rc) mp_free(a);
        }
        if (rc) {
            mp_pool_free(p);
            return mp_err_set(err, a ? MP_ERR_IO : MP_ERR_NOMEM,
                              "thread pool: cannot start thread %d of %d", i + 1, n_threads);
        }
        p->n_started++;
    }
    *out = p;
    return MP_OK;
}

void mp_pool_free(mp_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++) pthread_join(p->workers[i], NULL);
    pthread_cond_destroy(&p->start);
    pthread_mutex_destroy(&p->mu);
    mp_free(p->workers);
    mp_free(p);
}

int mp_pool_n_threads(const mp_pool *p) {
    return p->n_threads;
}

void mp_pool_run(mp_pool *p, int64_t n_tasks, mp_pool_fn fn, void *arg) {
    if (n_tasks <= 0) return;
    if (p->n_threads == 1 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; t++) fn(arg, t, 0);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->n_tasks = n_tasks;
    atomic_store(&p->next, 0);
    atomic_store(&p->busy, p->n_threads - 1);
    atomic_fetch_add(&p->generation, 1); /* publishes fn, arg, n_tasks */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->start);
        pthread_mutex_unlock(&p->mu);
    }
    run_tasks(p, 0);
    while (atomic_load(&p->busy) > 0) cpu_relax();
}

/* ----------------------------------------------------------------- arena */

void *mp_arena_take(mp_arena *a, size_t count, size_t size) {
    size_t n;
    if (!mp_mul_size(count, size, &n) || a->used > SIZE_MAX - MP_ARENA_ALIGN - n) {
        a->overflow = true;
        return NULL;
    }
    size_t start = (size_t)mp_align_up(a->used, MP_ARENA_ALIGN);
    a->used = start + n;
    return a->base ? a->base + start : NULL;
}

/* gen.c — the values of synthetic tensors and the pipeline that streams them
 * into a GGUF writer.
 *
 * Element i of a tensor is a pure function of (tensor key, i): pair i/2 is
 * hashed with splitmix64's output function and each half of the 64-bit result
 * gives one element (12 bits pick a bin of a normal quantile table, 20 bits
 * the place inside it; or 32 bits of a uniform). So output never depends on
 * chunking or thread count, and nothing is stored per tensor.
 *
 * Pipeline: the data is cut into chunks of whole rows (about 1 MB of f32 per
 * chunk); worker threads generate and quantize chunks into a ring of slots,
 * the calling thread writes the slots in chunk order. Memory is the ring plus
 * one row of f32 per worker, whatever the model size. For Q8_0 most of the
 * time goes to quantizing (mp_quantize_row), then hashing, then the disk. */
#include <math.h>
#include <pthread.h>
#include <unistd.h>

#include "synth/synth.h"
#include "util/util.h"

#define GEN_CHUNK_ELEMS (1 << 18) /* f32 elements per chunk (1 MiB) */
#define GEN_MAX_THREADS 8
#define GEN_SLOTS_PER_THREAD 2 /* so one slot fills while the other waits */
#define GEN_GOLDEN 0x9e3779b97f4a7c15ull

#define GEN_QBITS 12 /* bits of a 32-bit word that pick the quantile bin */
#define GEN_QBINS (1 << GEN_QBITS)

/* Piecewise-linear inverse normal CDF with unit variance: bin i covers
 * [gen_q[i], gen_q[i] + gen_dq[i]). Computed once per process (a constant
 * that is cheaper to compute than to type). */
static float gen_q[GEN_QBINS], gen_dq[GEN_QBINS];
static pthread_once_t gen_q_once = PTHREAD_ONCE_INIT;

static double normal_cdf(double x) {
    return 0.5 * erfc(-x / sqrt(2.0));
}

/* Inverse of normal_cdf by bisection: slow but obviously right. */
static double normal_quantile(double p) {
    double lo = -10.0, hi = 10.0;
    for (int i = 0; i < 60; i++) {
        double mid = 0.5 * (lo + hi);
        if (normal_cdf(mid) < p) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

/* Bin edges at the quantiles j/N; the outer edges at probability 1/(64 N)
 * (about 4.5 sigma, like the fixture's extremes); linear inside a bin; then
 * scaled to exactly unit variance (the flattened tails lose a little). */
static void gen_q_build(void) {
    enum { N = GEN_QBINS };
    static double edge[N + 1];
    edge[0] = normal_quantile(1.0 / (64.0 * N));
    for (int j = 1; j < N / 2; j++) edge[j] = normal_quantile((double)j / N);
    edge[N / 2] = 0.0;
    for (int j = 0; j < N / 2; j++) edge[N - j] = -edge[j];
    double var = 0.0;
    for (int j = 0; j < N; j++)
        var += (edge[j] * edge[j] + edge[j] * edge[j + 1] + edge[j + 1] * edge[j + 1]) / 3.0;
    double s = 1.0 / sqrt(var / N);
    for (int j = 0; j < N; j++) {
        gen_q[j] = (float)(edge[j] * s);
        gen_dq[j] = (float)((edge[j + 1] - edge[j]) * s);
    }
}

static inline uint64_t gen_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline float gen_normal(uint32_t r) {
    uint32_t bin = r >> (32 - GEN_QBITS);
    float f = (float)(r & ((1u << (32 - GEN_QBITS)) - 1)) * (1.0f / (1u << (32 - GEN_QBITS)));
    return gen_q[bin] + f * gen_dq[bin];
}

/* Draws n elements from 32-bit words; DRAW(r) maps one word to a value. */
#define GEN_LOOP(DRAW)                                                        \
    do {                                                                      \
        uint64_t i = start, end = start + (uint64_t)n;                        \
        float *o = dst;                                                       \
        if (i < end && (i & 1)) {                                             \
            uint64_t h = gen_mix(t->key + (i >> 1) * GEN_GOLDEN);             \
            *o++ = DRAW((uint32_t)(h >> 32));                                 \
            i++;                                                              \
        }                                                                     \
        for (; i + 1 < end; i += 2, o += 2) {                                 \
            uint64_t h = gen_mix(t->key + (i >> 1) * GEN_GOLDEN);             \
            o[0] = DRAW((uint32_t)h);                                         \
            o[1] = DRAW((uint32_t)(h >> 32));                                 \
        }                                                                     \
        if (i < end) {                                                        \
            uint64_t h = gen_mix(t->key + (i >> 1) * GEN_GOLDEN);             \
            *o = DRAW((uint32_t)h);                                           \
        }                                                                     \
    } while (0)

void mp_synth_fill(const mp_synth_plan *plan, int64_t ti, uint64_t start, int64_t n, float *dst) {
    const mp_synth_tensor *t = &plan->tensors[ti];
    const float a = t->a, b = t->b, w = t->b - t->a;
    pthread_once(&gen_q_once, gen_q_build);
    switch (t->init) {
    case MP_SYNTH_NORMAL:
#define DRAW_NORMAL(r) (a + b * gen_normal(r))
        GEN_LOOP(DRAW_NORMAL);
#undef DRAW_NORMAL
        break;
    case MP_SYNTH_UNIFORM:
#define DRAW_UNIFORM(r) (a + w * ((float)((r) >> 8) * (1.0f / 16777216.0f)))
        GEN_LOOP(DRAW_UNIFORM);
#undef DRAW_UNIFORM
        break;
    case MP_SYNTH_ROPE_FREQS:
    default:
        for (int64_t k = 0; k < n; k++)
            dst[k] = (double)(start + (uint64_t)k) < (double)a ? 1.0f : MP_SYNTH_ROPE_NO_ROTATION;
        break;
    }
}

/* Shared state of one write. Chunk c covers rows [row0, row0 + rows) of the
 * tensor whose chunk range holds it; it is built in slot c % n_slots. */
typedef struct gen_job {
    const mp_synth_plan *plan;
    int64_t *first_chunk; /* per tensor, plus the total at [n_tensors] */
    int64_t *chunk_rows;  /* rows per chunk, per tensor */
    size_t *row_bytes;    /* per tensor */
    int64_t n_chunks;
    int n_slots;
    uint8_t **slot;
    size_t *slot_len;
    int64_t *slot_chunk;  /* chunk held by the slot, -1 when free */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t next;     /* next chunk a worker takes */
    int64_t consumed; /* chunks written so far */
    bool stop;
    mp_status status; /* first worker failure */
    mp_err err;
} gen_job;

typedef struct gen_worker {
    gen_job *job;
    float *row;
    pthread_t thread;
} gen_worker;

/* Generates and quantizes chunk c into slot `slot`. */
static mp_status gen_chunk(gen_job *j, int64_t c, int slot, float *row, mp_err *err) {
    const mp_synth_plan *p = j->plan;
    int64_t lo = 0, hi = p->n_tensors - 1; /* last tensor with first_chunk <= c */
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (j->first_chunk[mid] <= c) lo = mid;
        else hi = mid - 1;
    }
    const mp_synth_tensor *t = &p->tensors[lo];
    int64_t ne0 = t->ne[0], rows = t->ne[1] * t->ne[2] * t->ne[3];
    int64_t row0 = (c - j->first_chunk[lo]) * j->chunk_rows[lo];
    int64_t nrows = rows - row0 < j->chunk_rows[lo] ? rows - row0 : j->chunk_rows[lo];
    uint8_t *out = j->slot[slot];
    for (int64_t r = 0; r < nrows; r++) {
        mp_synth_fill(p, lo, (uint64_t)((row0 + r) * ne0), ne0, row);
        mp_status s = mp_quantize_row(t->type, row, out + (size_t)r * j->row_bytes[lo], ne0, err);
        if (s) return s;
    }
    j->slot_len[slot] = (size_t)nrows * j->row_bytes[lo];
    return MP_OK;
}

static void *gen_worker_main(void *arg) {
    gen_worker *wk = arg;
    gen_job *j = wk->job;
    mp_err err = {0};
    for (;;) {
        pthread_mutex_lock(&j->mu);
        int64_t c = j->next++;
        while (!j->stop && c < j->n_chunks && c >= j->consumed + j->n_slots)
            pthread_cond_wait(&j->cv, &j->mu);
        bool quit = j->stop || c >= j->n_chunks;
        pthread_mutex_unlock(&j->mu);
        if (quit) break;
        int slot = (int)(c % j->n_slots);
        mp_status s = gen_chunk(j, c, slot, wk->row, &err);
        pthread_mutex_lock(&j->mu);
        if (s) {
            if (!j->status) {
                j->status = s;
                j->err = err;
            }
            j->stop = true;
        } else {
            j->slot_chunk[slot] = c;
        }
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
        if (s) break;
    }
    return NULL;
}

static int default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > GEN_MAX_THREADS ? GEN_MAX_THREADS : (int)n;
}

/* Writes every chunk in order: from the workers' slots, or generated here
 * when no worker runs. */
static mp_status gen_drain(gen_job *j, mp_gguf_writer *w, int n_workers, float *row,
                           mp_err *err) {
    for (int64_t c = 0; c < j->n_chunks; c++) {
        int slot = (int)(c % j->n_slots);
        if (n_workers == 0) {
            mp_status s = gen_chunk(j, c, slot, row, err);
            if (s) return s;
        } else {
            pthread_mutex_lock(&j->mu);
            while (!j->stop && j->slot_chunk[slot] != c) pthread_cond_wait(&j->cv, &j->mu);
            bool stopped = j->slot_chunk[slot] != c;
            pthread_mutex_unlock(&j->mu);
            if (stopped) return MP_OK; /* a worker failed: j->status says why */
        }
        mp_status s = mp_gguf_writer_write_data(w, j->slot[slot], j->slot_len[slot], err);
        if (s) return s;
        if (n_workers > 0) {
            pthread_mutex_lock(&j->mu);
            j->slot_chunk[slot] = -1;
            j->consumed = c + 1;
            pthread_cond_broadcast(&j->cv);
            pthread_mutex_unlock(&j->mu);
        }
    }
    return MP_OK;
}

mp_status mp_synth_write_data(const mp_synth_plan *plan, mp_gguf_writer *w, int n_threads,
                              mp_err *err) {
    if (n_threads <= 0) n_threads = default_threads();
    if (n_threads > GEN_MAX_THREADS) n_threads = GEN_MAX_THREADS;
    int64_t nt = plan->n_tensors;
    gen_job j = {0};
    gen_worker wk[GEN_MAX_THREADS] = {{0}};
    float *row = NULL;
    int n_started = 0;
    mp_status s = MP_OK;
    j.plan = plan;
    j.n_slots = GEN_SLOTS_PER_THREAD * n_threads;
    j.first_chunk = mp_calloc((size_t)nt + 1, sizeof *j.first_chunk);
    j.chunk_rows = mp_calloc((size_t)nt + 1, sizeof *j.chunk_rows);
    j.row_bytes = mp_calloc((size_t)nt + 1, sizeof *j.row_bytes);
    j.slot = mp_calloc((size_t)j.n_slots, sizeof *j.slot);
    j.slot_len = mp_calloc((size_t)j.n_slots, sizeof *j.slot_len);
    j.slot_chunk = mp_calloc((size_t)j.n_slots, sizeof *j.slot_chunk);
    if (!j.first_chunk || !j.chunk_rows || !j.row_bytes || !j.slot || !j.slot_len ||
        !j.slot_chunk) {
        s = mp_err_set(err, MP_ERR_NOMEM, "synth: out of memory");
        goto fail;
    }
    /* Chunk layout and the largest slot and row needed. */
    size_t slot_bytes = 0;
    int64_t max_ne0 = 1;
    for (int64_t i = 0; i < nt; i++) {
        const mp_synth_tensor *t = &plan->tensors[i];
        int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
        if ((s = mp_type_row_bytes(t->type, t->ne[0], &j.row_bytes[i], err))) goto fail;
        j.chunk_rows[i] = t->ne[0] >= GEN_CHUNK_ELEMS ? 1 : GEN_CHUNK_ELEMS / t->ne[0];
        if (j.chunk_rows[i] > rows) j.chunk_rows[i] = rows;
        j.first_chunk[i + 1] = j.first_chunk[i] + (rows + j.chunk_rows[i] - 1) / j.chunk_rows[i];
        size_t b = (size_t)j.chunk_rows[i] * j.row_bytes[i];
        if (b > slot_bytes) slot_bytes = b;
        if (t->ne[0] > max_ne0) max_ne0 = t->ne[0];
    }
    j.n_chunks = j.first_chunk[nt];
    for (int i = 0; i < j.n_slots; i++) {
        j.slot_chunk[i] = -1;
        if (!(j.slot[i] = mp_malloc(slot_bytes))) {
            s = mp_err_set(err, MP_ERR_NOMEM, "synth: out of memory");
            goto fail;
        }
    }
    if (!(row = mp_calloc((size_t)max_ne0, sizeof *row))) {
        s = mp_err_set(err, MP_ERR_NOMEM, "synth: out of memory");
        goto fail;
    }
    for (int i = 0; i < n_threads; i++) {
        wk[i].job = &j;
        if (!(wk[i].row = mp_calloc((size_t)max_ne0, sizeof *row))) {
            s = mp_err_set(err, MP_ERR_NOMEM, "synth: out of memory");
            goto fail;
        }
    }
    pthread_mutex_init(&j.mu, NULL);
    pthread_cond_init(&j.cv, NULL);
    /* One thread does not need workers; if some fail to start, fewer run. */
    if (n_threads > 1)
        while (n_started < n_threads &&
               pthread_create(&wk[n_started].thread, NULL, gen_worker_main, &wk[n_started]) == 0)
            n_started++;
    s = gen_drain(&j, w, n_started, row, err);
    pthread_mutex_lock(&j.mu);
    j.stop = true;
    pthread_cond_broadcast(&j.cv);
    pthread_mutex_unlock(&j.mu);
    for (int i = 0; i < n_started; i++) pthread_join(wk[i].thread, NULL);
    if (!s && j.status) {
        s = j.status;
        if (err) *err = j.err;
    }
    pthread_cond_destroy(&j.cv);
    pthread_mutex_destroy(&j.mu);
fail:
    for (int i = 0; i < n_threads; i++) mp_free(wk[i].row);
    for (int i = 0; j.slot && i < j.n_slots; i++) mp_free(j.slot[i]);
    mp_free(row);
    mp_free(j.slot);
    mp_free(j.slot_len);
    mp_free(j.slot_chunk);
    mp_free(j.first_chunk);
    mp_free(j.chunk_rows);
    mp_free(j.row_bytes);
    return s;
}

/* sample.c — picking the next token from logits.
 *
 * The steps are pure functions over a candidate array (id, logit, p), in the
 * spirit of llama.cpp's llama_token_data_array, and mp_sampler chains them in
 * llama.cpp's default order: repetition penalty, top-k, top-p, min-p,
 * temperature, then a draw (or the argmax when temperature <= 0). Ties
 * between equal logits always go to the lower id, so every step and every
 * draw is a function of (logits, history, seed) alone. The RNG is explicit
 * state (xoshiro256**, seeded through splitmix64).
 *
 * Where the time goes: a Gemma 4 vocabulary has 262,144 candidates, and a full
 * sort per token costs milliseconds. top-k selects with a k-element heap
 * (one compare per candidate in the common case); top-p grows a sorted prefix
 * (256, 2048, ... candidates) only until it holds the requested mass. Nothing
 * allocates after mp_sampler_init. Stop strings, EOG and budgets live in
 * gen.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

/* ------------------------------------------------------------------------ */
/* RNG                                                                      */
/* ------------------------------------------------------------------------ */

static uint64_t rng_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void mp_rng_seed(mp_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = rng_splitmix64(&seed);
}

static uint64_t rng_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t mp_rng_next(mp_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rng_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rng_rotl(s[3], 45);
    return out;
}

double mp_rng_uniform(mp_rng *r) {
    return (double)(mp_rng_next(r) >> 11) * 0x1.0p-53; /* 53 random mantissa bits */
}

/* ------------------------------------------------------------------------ */
/* Ordering helpers                                                         */
/* ------------------------------------------------------------------------ */

/* a comes before b: higher logit, then lower id */
static inline bool better(const mp_cand *a, const mp_cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cmp_cand(const void *a, const void *b) {
    const mp_cand *x = a, *y = b;
    return better(x, y) ? -1 : better(y, x) ? 1 : 0;
}

/* Sift-down in a heap whose root is the worst element of h[0..n). */
static void sift_worst(mp_cand *h, size_t n, size_t i) {
    mp_cand x = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && better(&h[c], &h[c + 1])) c++;
        if (!better(&x, &h[c])) break; /* x is the worst here: it stays */
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* Puts the k best candidates, in order, at data[0..k); the others stay in
 * data[k..n) in some order. O(n log k). */
static void partial_sort(mp_cands *c, size_t k) {
    mp_cand *d = c->data;
    if (k >= c->n) {
        qsort(d, c->n, sizeof *d, cmp_cand);
        return;
    }
    if (k == 0) return;
    for (size_t i = k / 2; i-- > 0;) sift_worst(d, k, i);
    for (size_t i = k; i < c->n; i++) {
        if (!better(&d[i], &d[0])) continue;
        mp_cand t = d[0];
        d[0] = d[i];
        d[i] = t;
        sift_worst(d, k, 0);
    }
    qsort(d, k, sizeof *d, cmp_cand);
}

static float max_logit(const mp_cands *c) {
    if (c->sorted) return c->data[0].logit;
    float m = -INFINITY;
    for (size_t i = 0; i < c->n; i++)
        if (c->data[i].logit > m) m = c->data[i].logit;
    return m;
}

/* ------------------------------------------------------------------------ */
/* Steps                                                                    */
/* ------------------------------------------------------------------------ */

void mp_cands_init(mp_cands *c, mp_cand *storage, const float *logits, int32_t n_vocab) {
    for (int32_t i = 0; i < n_vocab; i++) {
        float l = logits[i];
        /* a NaN would break every ordering: it reads as "never" */
        storage[i] = (mp_cand){i, isnan(l) ? -INFINITY : l, 0.0f};
    }
    c->data = storage;
    c->n = n_vocab > 0 ? (size_t)n_vocab : 0;
    c->sorted = false;
}

void mp_sample_repeat_penalty(mp_cands *c, const mp_token *last, size_t n_last, float penalty) {
    if (penalty == 1.0f || n_last == 0 || c->n == 0) return;
    /* p is scratch here (it is only meaningful after a softmax): it marks
     * candidates already penalised, so a repeated id counts once */
    for (size_t i = 0; i < n_last; i++) {
        mp_token id = last[i];
        mp_cand *x = NULL;
        if (id >= 0 && (size_t)id < c->n && c->data[id].id == id) {
            x = &c->data[id]; /* still in id order: the usual case */
        } else {
            for (size_t j = 0; j < c->n && !x; j++)
                if (c->data[j].id == id) x = &c->data[j];
        }
        if (!x || x->p < 0) continue;
        x->logit = x->logit > 0 ? x->logit / penalty : x->logit * penalty;
        x->p = -1.0f;
    }
    for (size_t i = 0; i < c->n; i++)
        if (c->data[i].p < 0) c->data[i].p = 0;
    c->sorted = false;
}

void mp_sample_top_k(mp_cands *c, int32_t k) {
    if (k <= 0 || (size_t)k >= c->n) return;
    if (!c->sorted) partial_sort(c, (size_t)k);
    c->n = (size_t)k;
    c->sorted = true;
}

void mp_sample_softmax(mp_cands *c) {
    if (c->n == 0) return;
    if (!c->sorted) {
        qsort(c->data, c->n, sizeof *c->data, cmp_cand);
        c->sorted = true;
    }
    float m = c->data[0].logit;
    if (m == -INFINITY) { /* nothing is possible: call it uniform rather than NaN */
        for (size_t i = 0; i < c->n; i++) c->data[i].p = 1.0f / (float)c->n;
        return;
    }
    double z = 0;
    for (size_t i = 0; i < c->n; i++) z += c->data[i].p = expf(c->data[i].logit - m);
    for (size_t i = 0; i < c->n; i++) c->data[i].p = (float)(c->data[i].p / z);
}

void mp_sample_top_p(mp_cands *c, float top_p, size_t min_keep) {
    if (top_p >= 1.0f || c->n <= 1) return;
    float m = max_logit(c);
    if (m == -INFINITY) return; /* nothing is possible: leave it to the draw */
    double z = 0;
    for (size_t i = 0; i < c->n; i++) z += exp((double)c->data[i].logit - m);
    /* grow a sorted prefix until it holds the mass */
    size_t k = c->n;
    if (!c->sorted) {
        for (k = 256;; k *= 8) {
            if (k >= c->n) k = c->n;
            partial_sort(c, k);
            double mass = 0;
            for (size_t i = 0; i < k; i++) mass += exp((double)c->data[i].logit - m);
            if (mass / z >= top_p || k == c->n) break;
        }
    }
    double cum = 0;
    size_t keep = k;
    for (size_t i = 0; i < k; i++) {
        cum += exp((double)c->data[i].logit - m) / z;
        if (cum >= top_p && i + 1 >= min_keep) {
            keep = i + 1;
            break;
        }
    }
    c->n = keep;
    c->sorted = true;
    for (size_t i = 0; i < keep; i++)
        c->data[i].p = (float)(exp((double)c->data[i].logit - m) / z / cum);
}

void mp_sample_min_p(mp_cands *c, float min_p, size_t min_keep) {
    if (min_p <= 0.0f || c->n <= 1) return;
    float m = max_logit(c);
    if (m == -INFINITY) return;
    /* p_i >= min_p * p_max  <=>  logit_i >= max + log(min_p) */
    float cut = m + logf(min_p);
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++)
        if (c->data[i].logit >= cut) n++;
    if (n < min_keep) {
        partial_sort(c, min_keep);
        c->n = min_keep < c->n ? min_keep : c->n;
        c->sorted = true;
        return;
    }
    size_t o = 0; /* keeps the order, so a sorted array stays sorted */
    for (size_t i = 0; i < c->n; i++)
        if (c->data[i].logit >= cut) c->data[o++] = c->data[i];
    c->n = o;
}

void mp_sample_temperature(mp_cands *c, float t) {
    if (!(t > 0.0f)) return;
    for (size_t i = 0; i < c->n; i++) c->data[i].logit /= t;
}

mp_token mp_sample_greedy(const mp_cands *c) {
    if (c->n == 0) return MP_TOKEN_NULL;
    if (c->sorted) return c->data[0].id;
    const mp_cand *b = &c->data[0];
    for (size_t i = 1; i < c->n; i++)
        if (better(&c->data[i], b)) b = &c->data[i];
    return b->id;
}

mp_token mp_sample_dist(mp_cands *c, mp_rng *rng) {
    if (c->n == 0) return MP_TOKEN_NULL;
    double u = mp_rng_uniform(rng);
    float m = max_logit(c);
    if (m == -INFINITY) return mp_sample_greedy(c);
    double z = 0;
    for (size_t i = 0; i < c->n; i++) z += exp((double)c->data[i].logit - m);
    double target = u * z, cum = 0;
    for (size_t i = 0; i < c->n; i++) {
        double w = exp((double)c->data[i].logit - m);
        cum += w;
        if (target < cum && w > 0) return c->data[i].id;
    }
    /* rounding left target at the very top: the last possible candidate */
    for (size_t i = c->n; i-- > 0;)
        if (c->data[i].logit > -INFINITY) return c->data[i].id;
    return c->data[0].id;
}

/* ------------------------------------------------------------------------ */
/* The chain                                                                */
/* ------------------------------------------------------------------------ */

struct mp_sampler {
    mp_sampler_params p;
    int32_t n_vocab;
    mp_cand *cands;  /* [n_vocab] */
    mp_token *ring;  /* [repeat_last_n] history, oldest overwritten first */
    mp_token *last;  /* [repeat_last_n] the history in order, for the penalty */
    size_t n_hist, pos;
    mp_rng rng;
};

mp_sampler_params mp_sampler_default_params(void) {
    return (mp_sampler_params){.temperature = 0.8f,
                               .top_k = 40,
                               .top_p = 0.95f,
                               .min_p = 0.05f,
                               .repeat_penalty = 1.0f,
                               .repeat_last_n = 64,
                               .seed = 0};
}

mp_status mp_sampler_init(mp_sampler **out, int32_t n_vocab, const mp_sampler_params *p,
                          mp_err *err) {
    if (n_vocab <= 0)
        return mp_err_set(err, MP_ERR_ARG, "sampler: vocabulary size %d", n_vocab);
    if (p->repeat_last_n < 0 || isnan(p->temperature) || isnan(p->top_p) ||
        isnan(p->min_p) || !(p->repeat_penalty > 0))
        return mp_err_set(err, MP_ERR_ARG, "sampler: invalid parameters (repeat_last_n %d, "
                          "repeat_penalty %g, temperature %g, top_p %g, min_p %g)",
                          p->repeat_last_n, (double)p->repeat_penalty, (double)p->temperature,
                          (double)p->top_p, (double)p->min_p);
    mp_sampler *s = mp_calloc(1, sizeof *s);
    size_t nh = p->repeat_last_n ? (size_t)p->repeat_last_n : 1;
    if (!s || !(s->cands = mp_calloc((size_t)n_vocab, sizeof *s->cands)) ||
        !(s->ring = mp_calloc(nh, sizeof *s->ring)) ||
        !(s->last = mp_calloc(nh, sizeof *s->last))) {
        mp_sampler_free(s);
        return mp_err_set(err, MP_ERR_NOMEM, "sampler: out of memory (%d candidates)", n_vocab);
    }
    s->p = *p;
    s->n_vocab = n_vocab;
    mp_rng_seed(&s->rng, p->seed);
    *out = s;
    return MP_OK;
}

void mp_sampler_free(mp_sampler *s) {
    if (!s) return;
    mp_free(s->cands);
    mp_free(s->ring);
    mp_free(s->last);
    mp_free(s);
}

void mp_sampler_accept(mp_sampler *s, mp_token id) {
    size_t cap = (size_t)s->p.repeat_last_n;
    if (!cap) return;
    s->ring[s->pos] = id;
    s->pos = (s->pos + 1) % cap;
    if (s->n_hist < cap) s->n_hist++;
}

void mp_sampler_reset(mp_sampler *s) {
    s->n_hist = s->pos = 0;
    mp_rng_seed(&s->rng, s->p.seed);
}

mp_token mp_sampler_sample(mp_sampler *s, const float *logits) {
    mp_cands c;
    mp_cands_init(&c, s->cands, logits, s->n_vocab);
    if (s->n_hist) {
        size_t cap = (size_t)s->p.repeat_last_n, first = (s->pos + cap - s->n_hist) % cap;
        for (size_t i = 0; i < s->n_hist; i++) s->last[i] = s->ring[(first + i) % cap];
        mp_sample_repeat_penalty(&c, s->last, s->n_hist, s->p.repeat_penalty);
    }
    if (!(s->p.temperature > 0.0f)) return mp_sample_greedy(&c);
    mp_sample_top_k(&c, s->p.top_k);
    mp_sample_top_p(&c, s->p.top_p, 1);
    mp_sample_min_p(&c, s->p.min_p, 1);
    mp_sample_temperature(&c, s->p.temperature);
    return mp_sample_dist(&c, &s->rng);
}

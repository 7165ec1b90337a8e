/* kld.c — KL divergence, Δp and top-1 agreement of a candidate against a
 * base model, with the percentiles llama-perplexity's KL mode reports. */
#include <math.h>
#include <stdlib.h>

#include "eval/eval.h"

/* Appends one scored position's numbers to the accumulator. */
static mp_status record(mp_kld_acc *a, double kl, double dp, bool same_top, const float *cand_lp,
                        mp_token next, mp_err *err) {
    if (kl < 0) kl = 0; /* rounding on identical distributions */
    if (a->n == a->cap) {
        int64_t cap = a->cap ? 2 * a->cap : 4096;
        double *k = mp_realloc(a->kld, (size_t)cap * sizeof *k);
        if (!k) return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
        a->kld = k;
        a->cap = cap;
    }
    a->kld[a->n++] = kl;
    a->sum += kl;
    a->sum2 += kl * kl;
    a->dp_sum += dp;
    a->dp_sum2 += dp * dp;
    a->same_top += same_top;
    mp_eval_acc_ppl(&a->ppl, cand_lp, next);
    return MP_OK;
}

mp_status mp_kld_add(mp_kld_acc *a, const float *base_lp, const float *cand_lp, int64_t V,
                     mp_token next, mp_err *err) {
    double kl = 0;
    int64_t top_b = 0, top_c = 0;
    for (int64_t i = 0; i < V; i++) {
        double pb = exp((double)base_lp[i]);
        kl += pb * ((double)base_lp[i] - (double)cand_lp[i]);
        if (base_lp[i] > base_lp[top_b]) top_b = i;
        if (cand_lp[i] > cand_lp[top_c]) top_c = i;
    }
    double dp = exp((double)cand_lp[next]) - exp((double)base_lp[next]);
    return record(a, kl, dp, top_b == top_c, cand_lp, next, err);
}

void mp_kld_free(mp_kld_acc *a) {
    mp_free(a->kld);
    a->kld = NULL;
    a->n = a->cap = 0;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* Value at quantile q of sorted v[n] (nearest rank, as llama.cpp). */
static double quantile(const double *v, int64_t n, double q) {
    int64_t i = (int64_t)floor(q * (double)(n - 1) + 0.5);
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

void mp_kld_summarise(mp_kld_acc *a, mp_kld_summary *s) {
    double nll;
    memset(s, 0, sizeof *s);
    s->n = a->n;
    mp_eval_ppl_finish(&a->ppl, &s->ppl, &s->ppl_err, &nll);
    if (a->n == 0) return;
    double n = (double)a->n;
    s->mean = a->sum / n;
    double var = a->sum2 / n - s->mean * s->mean;
    s->mean_err = var > 0 && a->n > 1 ? sqrt(var / (n - 1)) : 0;
    s->dp_mean = a->dp_sum / n;
    s->dp_rms = sqrt(a->dp_sum2 / n);
    s->same_top = (double)a->same_top / n;
    qsort(a->kld, (size_t)a->n, sizeof *a->kld, cmp_double);
    s->min = a->kld[0];
    s->max = a->kld[a->n - 1];
    s->p999 = quantile(a->kld, a->n, 0.999);
    s->p99 = quantile(a->kld, a->n, 0.99);
    s->p90 = quantile(a->kld, a->n, 0.90);
    s->median = quantile(a->kld, a->n, 0.5);
    s->p10 = quantile(a->kld, a->n, 0.10);
    s->p5 = quantile(a->kld, a->n, 0.05);
    s->p1 = quantile(a->kld, a->n, 0.01);
}

/* ------------------------------------------------------------------------ */
/* Against saved base log-probabilities (top K + remainder)                  */
/* ------------------------------------------------------------------------ */

/* The K largest entries of lp (descending; ties to the lower id). */
void mp_kld_topk(const float *lp, int64_t V, int64_t K, int32_t *ids, float *vals) {
    int64_t n = 0;
    for (int64_t i = 0; i < V; i++) {
        if (n == K && lp[i] <= vals[K - 1]) continue;
        int64_t j = n < K ? n++ : K - 1;
        while (j > 0 && vals[j - 1] < lp[i]) {
            ids[j] = ids[j - 1];
            vals[j] = vals[j - 1];
            j--;
        }
        ids[j] = (int32_t)i;
        vals[j] = lp[i];
    }
}

mp_status mp_kld_add_topk(mp_kld_acc *a, const int32_t *ids, const float *base_logp, int64_t K,
                          float p_next, const float *cand_lp, int64_t V, mp_token next,
                          mp_err *err) {
    double kl = 0, pb_top = 0, qc_top = 0;
    int64_t top_c = 0;
    for (int64_t i = 0; i < K; i++) {
        double pb = exp((double)base_logp[i]);
        kl += pb * ((double)base_logp[i] - (double)cand_lp[ids[i]]);
        pb_top += pb;
        qc_top += exp((double)cand_lp[ids[i]]);
    }
    /* the rest of the vocabulary as one event: exact when K == V */
    double pr = 1 - pb_top, qr = 1 - qc_top;
    if (pr > 1e-12) kl += pr * (log(pr) - log(qr > 1e-30 ? qr : 1e-30));
    for (int64_t i = 1; i < V; i++)
        if (cand_lp[i] > cand_lp[top_c]) top_c = i;
    double dp = exp((double)cand_lp[next]) - (double)p_next;
    return record(a, kl, dp, ids[0] == top_c, cand_lp, next, err);
}

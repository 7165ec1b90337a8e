/* eval.c — perplexity and KL divergence against a base model, the way
 * llama.cpp's perplexity tool measures them, so the numbers compare.
 *
 * Windows: the token stream (BOS first) is cut into n_chunk = n / n_ctx
 * non-overlapping windows of n_ctx tokens; each window's first token is
 * replaced by BOS and the window runs from an empty cache; the logits at
 * positions n_ctx/2 .. n_ctx-2 are scored against the next token (the first
 * half only gives context). PPL = exp(mean NLL), its error
 * PPL * sqrt(var(NLL) / (count - 1)) — llama-perplexity's formulas.
 * KL divergence: KL(base || candidate) of the softmaxes at each scored
 * position, in nats; Δp is the candidate's probability of the correct token
 * minus the base's; "same top p" is top-1 agreement. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "eval/eval.h"

mp_status mp_eval_windows(int64_t n_tokens, const mp_eval_params *p, int64_t *n_chunk,
                          mp_err *err) {
    if (p->n_ctx < 4)
        return mp_err_set(err, MP_ERR_ARG, "context %lld is too small (at least 4)",
                          (long long)p->n_ctx);
    if (n_tokens < 2 * p->n_ctx)
        return mp_err_set(
            err, MP_ERR_ARG,
            "the text has %lld tokens: at least %lld (two windows of %lld) are needed",
            (long long)n_tokens, (long long)(2 * p->n_ctx), (long long)p->n_ctx);
    int64_t n = n_tokens / p->n_ctx;
    if (p->n_chunks > 0 && p->n_chunks < n) n = p->n_chunks;
    *n_chunk = n;
    return MP_OK;
}

/* log-softmax of one logit row into out (double precision accumulation). */
void mp_eval_log_softmax(const float *logits, int64_t V, float *out) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    double z = 0;
    for (int64_t i = 0; i < V; i++) z += exp((double)logits[i] - mx);
    double lz = log(z) + mx;
    for (int64_t i = 0; i < V; i++) out[i] = (float)((double)logits[i] - lz);
}

mp_status mp_eval_chunk(mp_context *c, const mp_token *tokens, const mp_eval_params *p,
                        int64_t chunk, mp_token bos, float *logits, mp_token *window, mp_err *err) {
    const mp_token *src = tokens + chunk * p->n_ctx;
    for (int64_t i = 0; i < p->n_ctx; i++) window[i] = src[i];
    if (bos >= 0) window[0] = bos;
    mp_context_truncate(c, 0);
    return mp_context_eval(c, window, p->n_ctx, MP_LOGITS_ALL, logits, err);
}

void mp_eval_acc_ppl(mp_eval_acc *a, const float *logprobs_row, mp_token next) {
    double nll = -(double)logprobs_row[next];
    a->nll += nll;
    a->nll2 += nll * nll;
    a->count++;
}

void mp_eval_ppl_finish(const mp_eval_acc *a, double *ppl, double *ppl_err, double *nll) {
    double mean = a->count ? a->nll / (double)a->count : 0;
    double var = a->count ? a->nll2 / (double)a->count - mean * mean : 0;
    *nll = mean;
    *ppl = exp(mean);
    *ppl_err = var > 0 && a->count > 1 ? *ppl * sqrt(var / (double)(a->count - 1)) : 0;
}

mp_status mp_eval_tokenize_file(const mp_vocab *v, const char *path, mp_token **tokens, int64_t *n,
                                mp_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return mp_err_set(err, MP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    mp_buf b = {0};
    char chunk[65536];
    size_t k;
    bool ok = true;
    while (ok && (k = fread(chunk, 1, sizeof chunk, f)) > 0) ok = mp_buf_append(&b, chunk, k);
    fclose(f);
    if (!ok) {
        mp_buf_free(&b);
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t nt = 0;
    mp_tokenize_params tp = {.add_bos = mp_vocab_specials(v)->add_bos};
    mp_status s = mp_tokenize(v, b.data ? (const char *)b.data : "", b.len, tp, tokens, &nt, err);
    mp_buf_free(&b);
    if (!s) *n = (int64_t)nt;
    return s;
}

int64_t mp_eval_rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
        fclose(f);
    }
    return (int64_t)rss * sysconf(_SC_PAGESIZE);
}

int64_t mp_eval_mapped_resident(const mp_gguf *g) {
    const uint8_t *base = mp_gguf_base(g);
    uint64_t size = mp_gguf_file_size(g);
    long page = sysconf(_SC_PAGESIZE);
    if (!base || size == 0 || page <= 0) return 0;
    uintptr_t start = (uintptr_t)base / (uintptr_t)page * (uintptr_t)page;
    size_t len = (size_t)((uintptr_t)base + size - start);
    size_t n_pages = (len + (size_t)page - 1) / (size_t)page;
    unsigned char *vec = mp_malloc(n_pages);
    if (!vec) return 0;
    int64_t resident = 0;
    if (mincore((void *)start, len, vec) == 0)
        for (size_t i = 0; i < n_pages; i++) resident += vec[i] & 1;
    mp_free(vec);
    return resident * page;
}

/* eval.h — perplexity and KL-divergence measurement (eval.c, kld.c): the
 * windows llama-perplexity uses, and accumulators for its statistics. */
#ifndef MP_EVAL_H
#define MP_EVAL_H

#include "util/util.h"

typedef struct mp_eval_params {
    int64_t n_ctx;    /* window length */
    int64_t n_chunks; /* windows to use, 0: all that fit */
} mp_eval_params;

/* Number of windows for n_tokens; MP_ERR_ARG when fewer than two fit. */
mp_status mp_eval_windows(int64_t n_tokens, const mp_eval_params *p, int64_t *n_chunk, mp_err *err);
/* Runs window `chunk` (first token replaced by `bos` when bos >= 0) from an
 * empty cache; logits [n_ctx][V], window [n_ctx] scratch. */
mp_status mp_eval_chunk(mp_context *c, const mp_token *tokens, const mp_eval_params *p,
                        int64_t chunk, mp_token bos, float *logits, mp_token *window, mp_err *err);
void mp_eval_log_softmax(const float *logits, int64_t V, float *out);
/* Reads and tokenizes a text file (BOS first, special tokens not parsed, as
 * llama-perplexity does). *tokens: free with mp_free. */
mp_status mp_eval_tokenize_file(const mp_vocab *v, const char *path, mp_token **tokens, int64_t *n,
                                mp_err *err);
/* Resident memory of this process now (0 if unknown). */
int64_t mp_eval_rss_bytes(void);
/* Bytes of a mapped model file that are in memory now (mincore): what running
 * it made resident, shared page cache included. */
int64_t mp_eval_mapped_resident(const mp_gguf *g);

/* Negative log-likelihood sums. */
typedef struct mp_eval_acc {
    double nll, nll2;
    int64_t count;
} mp_eval_acc;
void mp_eval_acc_ppl(mp_eval_acc *a, const float *logprobs_row, mp_token next);
void mp_eval_ppl_finish(const mp_eval_acc *a, double *ppl, double *ppl_err, double *nll);

/* KL divergence of a candidate against the base, position by position. */
typedef struct mp_kld_acc {
    mp_eval_acc ppl; /* the candidate's own perplexity */
    double *kld;     /* per scored position (for percentiles) */
    int64_t n, cap;
    double sum, sum2;       /* of kld */
    double dp_sum, dp_sum2; /* of p_candidate(correct) - p_base(correct) */
    int64_t same_top;       /* positions whose argmax agrees */
} mp_kld_acc;

/* Adds one position: base and candidate log-probabilities over V tokens. */
mp_status mp_kld_add(mp_kld_acc *a, const float *base_lp, const float *cand_lp, int64_t V,
                     mp_token next, mp_err *err);
void mp_kld_free(mp_kld_acc *a);
/* The K largest log-probabilities of a row, descending (ties: lower id). */
void mp_kld_topk(const float *lp, int64_t V, int64_t K, int32_t *ids, float *vals);
/* mp_kld_add against a saved base position: its top-K ids and log-probs
 * (descending) and its probability of the correct token; the rest of the
 * vocabulary counts as one event (exact when K equals the vocabulary). */
mp_status mp_kld_add_topk(mp_kld_acc *a, const int32_t *ids, const float *base_logp, int64_t K,
                          float p_next, const float *cand_lp, int64_t V, mp_token next,
                          mp_err *err);

typedef struct mp_kld_summary {
    double ppl, ppl_err, mean, mean_err, max, p999, p99, p90, median, p10, p5, p1, min;
    double dp_mean, dp_rms, same_top; /* same_top as a share in [0, 1] */
    int64_t n;
} mp_kld_summary;
void mp_kld_summarise(mp_kld_acc *a, mp_kld_summary *s);

/* One multiple-choice question (bench-mc). */
typedef struct mp_mc_item {
    const char *question;
    const char *const *choices;
    int n_choices;
    int answer; /* index into choices */
} mp_mc_item;

/* The built-in smoke set (mc_builtin.c). */
const mp_mc_item *mp_mc_builtin(size_t *n);

/* The first choice letter (A.. within n_choices) standing alone in s: "B",
 * "(B)", "B.", "the answer is B"; -1 when none. */
int mp_mc_extract_letter(const char *s, int n_choices);
/* Letter mode: the question with lettered choices ("A. ..."), then up to
 * max_new greedy tokens; *pred is the first choice letter standing alone in
 * the answer (-1: none), *answer the text (free with mp_free). */
mp_status mp_mc_letter(mp_context *c, const mp_vocab *v, int64_t V, const mp_mc_item *it,
                       int max_new, int *pred, char **answer, mp_err *err);

/* Log-likelihood of each choice after "Question: Q\nAnswer:" (ll[n_choices],
 * summed over the choice's tokens), and the predictions by raw and by
 * length-normalised (per byte) log-likelihood. `logits` holds [n_ctx][V]. */
mp_status mp_mc_score(mp_context *c, const mp_vocab *v, int64_t V, const mp_mc_item *it,
                      float *logits, double *ll, int *pred, int *pred_norm, mp_err *err);

#endif

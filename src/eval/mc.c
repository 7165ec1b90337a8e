/* mc.c — multiple-choice scoring by log-likelihood, as lm-eval's "acc" and
 * "acc_norm": the question is run once, then each choice continues it from
 * the cached prompt; a choice's score is the sum of the log-probabilities of
 * its tokens (acc), or that sum per byte of the choice (acc_norm). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "eval/eval.h"

/* log p(tok) under a logit row, without materialising the softmax. */
static double log_prob(const float *row, int64_t V, mp_token tok) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; i++) mx = row[i] > mx ? row[i] : mx;
    double z = 0;
    for (int64_t i = 0; i < V; i++) z += exp((double)row[i] - mx);
    return (double)row[tok] - mx - log(z);
}

mp_status mp_mc_score(mp_context *c, const mp_vocab *v, int64_t V, const mp_mc_item *it,
                      float *logits, double *ll, int *pred, int *pred_norm, mp_err *err) {
    char *prompt = NULL;
    mp_token *pt = NULL, *ct = NULL;
    size_t np = 0, nc = 0;
    mp_status s = MP_OK;
    size_t plen = strlen(it->question) + 32;
    float *last = mp_malloc((size_t)V * sizeof *last);
    if (!(prompt = mp_malloc(plen)) || !last) {
        s = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
        goto done;
    }
    snprintf(prompt, plen, "Question: %s\nAnswer:", it->question);
    mp_tokenize_params tp = {.add_bos = mp_vocab_specials(v)->add_bos};
    if ((s = mp_tokenize(v, prompt, strlen(prompt), tp, &pt, &np, err))) goto done;
    mp_context_truncate(c, 0);
    if ((s = mp_context_eval(c, pt, (int64_t)np, MP_LOGITS_LAST, last, err))) goto done;
    double best = -INFINITY, best_n = -INFINITY;
    for (int j = 0; j < it->n_choices; j++) {
        char cont[1024];
        snprintf(cont, sizeof cont, " %s", it->choices[j]);
        mp_tokenize_params cp = {0};
        mp_free(ct);
        ct = NULL;
        if ((s = mp_tokenize(v, cont, strlen(cont), cp, &ct, &nc, err))) goto done;
        if (nc == 0) {
            s = mp_err_set(err, MP_ERR_ARG, "choice %d of \"%s\" is empty", j, it->question);
            goto done;
        }
        mp_context_truncate(c, (int64_t)np);
        if ((s = mp_context_eval(c, ct, (int64_t)nc, MP_LOGITS_ALL, logits, err))) goto done;
        double sum = log_prob(last, V, ct[0]);
        for (size_t t = 1; t < nc; t++) sum += log_prob(logits + (t - 1) * V, V, ct[t]);
        ll[j] = sum;
        double norm = sum / (double)strlen(cont);
        if (sum > best) best = sum, *pred = j;
        if (norm > best_n) best_n = norm, *pred_norm = j;
    }
done:
    mp_free(prompt);
    mp_free(last);
    mp_free(pt);
    mp_free(ct);
    return s;
}

/* mc.c — multiple-choice scoring by log-likelihood, as lm-eval's "acc" and
 * "acc_norm": the question is run once, then each choice continues it from
 * the cached prompt; a choice's score is the sum of the log-probabilities of
 * its tokens (acc), or that sum per byte of the choice (acc_norm). */
#include <ctype.h>
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

/* The first letter A.. of the choices that stands alone in s ("B", "(B)",
 * "B.", "answer is B"), or -1. */
int mp_mc_extract_letter(const char *s, int n_choices) {
    for (size_t i = 0; s[i]; i++) {
        int c = (unsigned char)s[i];
        if (c < 'A' || c >= 'A' + n_choices) continue;
        bool before = i == 0 || !isalnum((unsigned char)s[i - 1]);
        bool after = !isalnum((unsigned char)s[i + 1]);
        if (before && after) return c - 'A';
    }
    return -1;
}

mp_status mp_mc_letter(mp_context *c, const mp_vocab *v, int64_t V, const mp_mc_item *it,
                       int max_new, int *pred, char **answer, mp_err *err) {
    mp_buf prompt = {0};
    mp_token *pt = NULL, gen[256];
    size_t np = 0;
    int n_gen = 0;
    char *text = NULL, line[1100];
    size_t tlen = 0;
    float *row = mp_malloc((size_t)V * sizeof *row);
    mp_status s = row ? MP_OK : mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    snprintf(line, sizeof line, "Question: %s\n", it->question);
    bool ok = !s && mp_buf_append(&prompt, line, strlen(line));
    for (int j = 0; ok && j < it->n_choices; j++) {
        snprintf(line, sizeof line, "%c. %s\n", 'A' + j, it->choices[j]);
        ok = mp_buf_append(&prompt, line, strlen(line));
    }
    ok = ok && mp_buf_append(&prompt, "Answer:", 7);
    if (!s && !ok) s = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    mp_tokenize_params tp = {.add_bos = mp_vocab_specials(v)->add_bos};
    if (!s) s = mp_tokenize(v, (const char *)prompt.data, prompt.len, tp, &pt, &np, err);
    if (!s) {
        mp_context_truncate(c, 0);
        s = mp_context_eval(c, pt, (int64_t)np, MP_LOGITS_LAST, row, err);
    }
    if (max_new > (int)(sizeof gen / sizeof gen[0])) max_new = (int)(sizeof gen / sizeof gen[0]);
    while (!s && n_gen < max_new) { /* greedy */
        mp_token best = 0;
        for (int64_t i = 1; i < V; i++)
            if (row[i] > row[best]) best = (mp_token)i;
        if (mp_vocab_is_eog(v, best)) break;
        gen[n_gen++] = best;
        s = mp_context_eval(c, &best, 1, MP_LOGITS_LAST, row, err);
    }
    if (!s) s = mp_detokenize(v, gen, (size_t)n_gen, false, &text, &tlen, err);
    if (!s) {
        *pred = mp_mc_extract_letter(text, it->n_choices);
        *answer = text;
        text = NULL;
    }
    mp_free(text);
    mp_free(pt);
    mp_free(row);
    mp_buf_free(&prompt);
    return s;
}

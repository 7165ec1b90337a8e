/* gen.c — generation control: when to stop, what text to show, and when the
 * reasoning budget forces the thinking block closed.
 *
 * Per generated token: an end-of-generation token stops at once and shows
 * nothing; otherwise its text goes through the streaming UTF-8 decoder
 * (decode.c) and then a hold-back buffer for stop strings: text that could
 * still be the start of a stop string waits until the next token tells, so
 * a stop string split across tokens is caught and never shown. Thinking is
 * tracked by token ids (the family's open and close markers); after
 * reasoning_budget tokens inside a block, mp_gen_forced names the close
 * marker and the caller feeds it instead of sampling, so the answer follows
 * (the spirit of llama.cpp's --reasoning-budget). Separating thinking from
 * the answer in the text is the chat splitter's job (tokenizer/chat.c). */
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "util/util.h"

struct mp_gen {
    const mp_vocab *v;
    mp_gen_params p;  /* p.stop points at our copies */
    char **stop;      /* [n_stop] NUL-terminated copies */
    size_t *stop_len; /* [n_stop] */
    size_t max_stop;
    mp_detok *detok;
    char *hold;       /* decoded text that may begin a stop string */
    size_t n_hold, cap_hold;
    char *out;        /* what the last call returned */
    size_t n_out, cap_out;
    int32_t n_tokens, n_thinking;
    bool thinking;
    mp_gen_status done; /* CONTINUE until a stop */
};

const char *mp_gen_status_name(int status) {
    static const char *const names[MP_GEN_STATUS_COUNT] = {"continue", "eog", "stop-string",
                                                           "max-tokens"};
    return status >= 0 && status < MP_GEN_STATUS_COUNT ? names[status] : "?";
}

mp_status mp_gen_init(mp_gen **out, const mp_vocab *v, const mp_gen_params *p, mp_err *err) {
    mp_gen *g = mp_calloc(1, sizeof *g);
    if (!g) return mp_err_set(err, MP_ERR_NOMEM, "generation: out of memory");
    mp_status s = MP_OK;
    if (p->n_stop && !p->stop) {
        s = mp_err_set(err, MP_ERR_ARG, "generation: %zu stop strings but no array", p->n_stop);
        goto fail;
    }
    g->v = v;
    g->p = *p;
    if (p->n_stop && (!(g->stop = mp_calloc(p->n_stop, sizeof *g->stop)) ||
                      !(g->stop_len = mp_calloc(p->n_stop, sizeof *g->stop_len))))
        goto nomem;
    for (size_t i = 0; i < p->n_stop; i++) {
        if (!p->stop[i] || !p->stop[i][0]) {
            s = mp_err_set(err, MP_ERR_ARG, "generation: stop string %zu is empty", i);
            goto fail;
        }
        if (!(g->stop[i] = mp_strdup(p->stop[i]))) goto nomem;
        g->stop_len[i] = strlen(g->stop[i]);
        if (g->stop_len[i] > g->max_stop) g->max_stop = g->stop_len[i];
    }
    g->p.stop = (const char *const *)g->stop;
    if ((s = mp_detok_init(&g->detok, v, p->special, false, err))) goto fail;
    /* hold: at most a stop-string prefix plus one token's text (decoded
     * text per push is bounded by mp_detok_init's own buffer) */
    size_t piece_max = 3 * ((size_t)v->max_piece + 4) + 16;
    g->cap_hold = g->cap_out = piece_max + g->max_stop;
    if (!(g->hold = mp_malloc(g->cap_hold)) || !(g->out = mp_malloc(g->cap_out))) goto nomem;
    g->thinking = p->in_thinking && p->think_close != MP_TOKEN_NULL;
    *out = g;
    return MP_OK;
nomem:
    s = mp_err_set(err, MP_ERR_NOMEM, "generation: out of memory");
fail:
    mp_gen_free(g);
    return s;
}

void mp_gen_free(mp_gen *g) {
    if (!g) return;
    for (size_t i = 0; g->stop && i < g->p.n_stop; i++) mp_free(g->stop[i]);
    mp_free(g->stop);
    mp_free(g->stop_len);
    mp_detok_free(g->detok);
    mp_free(g->hold);
    mp_free(g->out);
    mp_free(g);
}

mp_token mp_gen_forced(const mp_gen *g) {
    if (g->done != MP_GEN_CONTINUE || !g->thinking || g->p.reasoning_budget < 0)
        return MP_TOKEN_NULL;
    return g->n_thinking >= g->p.reasoning_budget ? g->p.think_close : MP_TOKEN_NULL;
}

int32_t mp_gen_n_tokens(const mp_gen *g) { return g->n_tokens; }
int32_t mp_gen_n_thinking(const mp_gen *g) { return g->n_thinking; }
bool mp_gen_thinking(const mp_gen *g) { return g->thinking; }

static void out_append(mp_gen *g, const char *p, size_t n) {
    memcpy(g->out + g->n_out, p, n);
    g->n_out += n;
}

/* Length of the longest proper suffix of hold that begins some stop string. */
static size_t held_prefix(const mp_gen *g) {
    size_t best = 0;
    for (size_t i = 0; i < g->p.n_stop; i++) {
        size_t m = g->stop_len[i] - 1;
        if (m > g->n_hold) m = g->n_hold;
        for (size_t k = m; k > best; k--)
            if (!memcmp(g->hold + g->n_hold - k, g->stop[i], k)) {
                best = k;
                break;
            }
    }
    return best;
}

/* Earliest stop string in hold: its position, or SIZE_MAX. */
static size_t find_stop(const mp_gen *g) {
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < g->p.n_stop; i++) {
        size_t m = g->stop_len[i];
        for (size_t at = 0; at + m <= g->n_hold && at < best; at++)
            if (g->hold[at] == g->stop[i][0] && !memcmp(g->hold + at, g->stop[i], m)) {
                best = at;
                break;
            }
    }
    return best;
}

/* Moves decoded text through the stop-string filter into out. */
static mp_gen_status filter(mp_gen *g, const char *text, size_t len) {
    memcpy(g->hold + g->n_hold, text, len);
    g->n_hold += len;
    size_t at = find_stop(g);
    if (at != SIZE_MAX) {
        out_append(g, g->hold, at);
        g->n_hold = 0;
        return MP_GEN_STOP_STRING;
    }
    size_t keep = held_prefix(g);
    out_append(g, g->hold, g->n_hold - keep);
    memmove(g->hold, g->hold + g->n_hold - keep, keep);
    g->n_hold = keep;
    return MP_GEN_CONTINUE;
}

mp_gen_status mp_gen_push(mp_gen *g, mp_token id, const char **text, size_t *len) {
    g->n_out = 0;
    *text = g->out;
    *len = 0;
    if (g->done != MP_GEN_CONTINUE) return g->done;
    g->n_tokens++;
    const char *piece;
    size_t n;
    if (mp_vocab_is_eog(g->v, id) || mp_detok_push(g->detok, id, &piece, &n, NULL))
        return g->done = MP_GEN_EOG;
    if (id == g->p.think_open && id != MP_TOKEN_NULL)
        g->thinking = true;
    else if (id == g->p.think_close && id != MP_TOKEN_NULL)
        g->thinking = false;
    else if (g->thinking)
        g->n_thinking++;
    mp_gen_status st = filter(g, piece, n);
    *len = g->n_out;
    if (st != MP_GEN_CONTINUE) return g->done = st;
    if (g->p.max_tokens > 0 && g->n_tokens >= g->p.max_tokens) return g->done = MP_GEN_MAX_TOKENS;
    return MP_GEN_CONTINUE;
}

void mp_gen_flush(mp_gen *g, const char **text, size_t *len) {
    g->n_out = 0;
    if (g->done != MP_GEN_STOP_STRING) {
        const char *tail;
        size_t n;
        mp_detok_flush(g->detok, &tail, &n);
        out_append(g, g->hold, g->n_hold);
        out_append(g, tail, n);
    }
    g->n_hold = 0;
    *text = g->out;
    *len = g->n_out;
}

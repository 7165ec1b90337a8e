/* decode.c — tokens back to text: one token's piece, a whole sequence, and a
 * streaming decoder that only ever gives out whole UTF-8 characters.
 *
 * Pieces are precomputed at load (vocab.c, build_pieces), so decoding is a
 * copy. Unlike llama.cpp's llama_detokenize we never "clean up" spaces
 * before punctuation: the pieces of a tokenization concatenate to the text
 * that was tokenized. Byte tokens can split a character across tokens (an
 * emoji the vocabulary lacks is four <0xHH> tokens), which is why streaming
 * output goes through mp_detok. */
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "util/util.h"

/* U+FFFD REPLACEMENT CHARACTER */
static const char k_replacement[] = "\xEF\xBF\xBD";

int mp_utf8_scan(const uint8_t *s, size_t n) {
    uint8_t c = s[0], lo = 0x80, hi = 0xBF;
    int need;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c == 0xE0) need = 3, lo = 0xA0;          /* no overlongs */
    else if (c >= 0xE1 && c <= 0xEF) need = 3, hi = c == 0xED ? 0x9F : 0xBF; /* no surrogates */
    else if (c == 0xF0) need = 4, lo = 0x90;          /* no overlongs */
    else if (c >= 0xF1 && c <= 0xF3) need = 4;
    else if (c == 0xF4) need = 4, hi = 0x8F;          /* nothing past U+10FFFF */
    else return -1;                                   /* 80..C1, F5..FF never start one */
    for (int k = 1; k < need; k++) {
        if ((size_t)k >= n) return 0;
        uint8_t b = s[k];
        if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return -k;
    }
    return need;
}

size_t mp_utf8_char_len(const uint8_t *s, size_t n) {
    int r = mp_utf8_scan(s, n);
    return r > 0 ? (size_t)r : 0;
}

const char *mp_vocab_piece(const mp_vocab *v, mp_token id, bool special, size_t *len) {
    if (id < 0 || id >= v->n_tokens) return NULL;
    if (!special && (v->attr[id] & (MP_ATTR_CONTROL | MP_ATTR_UNKNOWN))) {
        *len = 0;
        return "";
    }
    *len = v->piece_off[id + 1] - v->piece_off[id];
    return v->piece + v->piece_off[id];
}

mp_status mp_detokenize(const mp_vocab *v, const mp_token *ids, size_t n, bool special,
                        char **out, size_t *len, mp_err *err) {
    size_t total = 0, k;
    for (size_t i = 0; i < n; i++) {
        if (!mp_vocab_piece(v, ids[i], special, &k))
            return mp_err_set(err, MP_ERR_ARG, "detokenize: token %zu is id %d, outside the "
                              "vocabulary (0..%d)", i, ids[i], v->n_tokens - 1);
        total += k;
    }
    char *s = mp_malloc(total + 1);
    if (!s) return mp_err_set(err, MP_ERR_NOMEM, "detokenize: out of memory (%zu bytes)", total);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = mp_vocab_piece(v, ids[i], special, &k);
        memcpy(s + o, p, k);
        o += k;
    }
    s[o] = 0;
    *out = s;
    *len = o;
    return MP_OK;
}

/* ------------------------------------------------------------------------ */
/* Streaming                                                                */
/* ------------------------------------------------------------------------ */

struct mp_detok {
    const mp_vocab *v;
    bool special, replace_invalid;
    uint8_t pend[4]; /* start of a character still missing bytes */
    size_t n_pend;
    char *out;       /* text given out by the last call */
    size_t n_out, cap_out;
};

mp_status mp_detok_init(mp_detok **out, const mp_vocab *v, bool special, bool replace_invalid,
                        mp_err *err) {
    mp_detok *d = mp_calloc(1, sizeof *d);
    /* worst case per push: every byte of the held bytes and the piece is
     * invalid and becomes a 3-byte U+FFFD */
    size_t cap = 3 * (v->max_piece + sizeof d->pend) + 16;
    if (!d || !(d->out = mp_malloc(cap))) {
        mp_free(d);
        return mp_err_set(err, MP_ERR_NOMEM, "detokenizer: out of memory");
    }
    d->v = v;
    d->special = special;
    d->replace_invalid = replace_invalid;
    d->cap_out = cap;
    *out = d;
    return MP_OK;
}

void mp_detok_free(mp_detok *d) {
    if (!d) return;
    mp_free(d->out);
    mp_free(d);
}

void mp_detok_reset(mp_detok *d) {
    d->n_pend = 0;
    d->n_out = 0;
}

static void detok_emit(mp_detok *d, const void *p, size_t n) {
    memcpy(d->out + d->n_out, p, n);
    d->n_out += n;
}

/* Gives out the first k held bytes as an invalid unit and keeps the rest. */
static void emit_invalid(mp_detok *d, size_t k) {
    if (d->replace_invalid)
        detok_emit(d, k_replacement, 3);
    else
        detok_emit(d, d->pend, k);
    memmove(d->pend, d->pend + k, d->n_pend - k);
    d->n_pend -= k;
}

/* Resolves the held bytes as far as they can be: whole characters and
 * invalid units go out; a valid incomplete start stays. */
static void settle(mp_detok *d) {
    while (d->n_pend) {
        int r = mp_utf8_scan(d->pend, d->n_pend);
        if (r == 0) return;
        if (r > 0) {
            detok_emit(d, d->pend, (size_t)r);
            memmove(d->pend, d->pend + r, d->n_pend - (size_t)r);
            d->n_pend -= (size_t)r;
        } else {
            emit_invalid(d, (size_t)-r);
        }
    }
}

mp_status mp_detok_push(mp_detok *d, mp_token id, const char **text, size_t *len, mp_err *err) {
    size_t n;
    const uint8_t *p = (const uint8_t *)mp_vocab_piece(d->v, id, d->special, &n);
    if (!p)
        return mp_err_set(err, MP_ERR_ARG, "detokenizer: id %d outside the vocabulary (0..%d)",
                          id, d->v->n_tokens - 1);
    d->n_out = 0;
    size_t i = 0;
    while (i < n) {
        if (!d->n_pend) {
            /* fast path: copy the run of complete characters as it is */
            size_t j = i;
            int r;
            while (j < n && (r = mp_utf8_scan(p + j, n - j)) > 0) j += (size_t)r;
            detok_emit(d, p + i, j - i);
            i = j;
            if (i == n) break;
        }
        d->pend[d->n_pend++] = p[i++];
        settle(d);
    }
    *text = d->out;
    *len = d->n_out;
    return MP_OK;
}

void mp_detok_flush(mp_detok *d, const char **text, size_t *len) {
    d->n_out = 0;
    while (d->n_pend) {
        int r = mp_utf8_scan(d->pend, d->n_pend);
        /* a start still waiting for bytes is, at the end, all the unit there is */
        emit_invalid(d, r < 0 ? (size_t)-r : d->n_pend);
        settle(d);
    }
    *text = d->out;
    *len = d->n_out;
}

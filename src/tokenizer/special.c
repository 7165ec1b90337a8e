/* special.c — splits special tokens out of text before BPE runs.
 *
 * llama.cpp (tokenizer_st_partition) walks its special tokens from the
 * longest text to the shortest and, for each, cuts every non-overlapping
 * occurrence out of the text fragments still raw. Doing that literally costs
 * one pass over the text per special token (Gemma 4 has 6,250), so here one
 * pass over the text with a byte trie finds every occurrence of every
 * special token, and the occurrences are then accepted in llama.cpp's order
 * — longer text first, then by id, then left to right — skipping any that
 * overlaps one already accepted. That is the same result: an occurrence is
 * taken exactly when it lies inside a fragment that is still raw when its
 * token's turn comes. (llama.cpp's order among equal-length tokens is that of
 * an unstable sort; it matters only if two such tokens overlap in the text.)
 *
 * CONTROL and UNKNOWN tokens take part only with parse_special; USER_DEFINED
 * ones always do. The lstrip/rstrip attributes llama.cpp sets for a few
 * model families (Phi-3, some BERTs) do not apply to the vocabularies here. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "util/util.h"

static int32_t new_node(mp_special *s, uint8_t byte) {
    if (s->n_nodes == s->cap_nodes) {
        int32_t cap = s->cap_nodes ? s->cap_nodes * 2 : 1024;
        mp_trie_node *n = mp_realloc(s->nodes, (size_t)cap * sizeof *n);
        if (!n) return -1;
        s->nodes = n;
        s->cap_nodes = cap;
    }
    mp_trie_node *n = &s->nodes[s->n_nodes];
    n->child = n->sibling = n->token = -1;
    n->byte = byte;
    return s->n_nodes++;
}

static int32_t find_child(const mp_special *s, int32_t node, uint8_t byte) {
    for (int32_t c = s->nodes[node].child; c >= 0; c = s->nodes[c].sibling)
        if (s->nodes[c].byte == byte) return c;
    return -1;
}

static bool trie_add(mp_special *s, const uint8_t *text, size_t n, mp_token id) {
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = find_child(s, node, text[i]);
        if (c < 0) {
            if ((c = new_node(s, text[i])) < 0) return false;
            s->nodes[c].sibling = s->nodes[node].child;
            s->nodes[node].child = c;
        }
        node = c;
    }
    /* a repeated text keeps the lowest id, which is first in our order */
    if (s->nodes[node].token < 0) s->nodes[node].token = id;
    return true;
}

mp_status mp_special_build(mp_vocab *v, mp_err *err) {
    mp_special *s = &v->special;
    if (new_node(s, 0) < 0) return mp_err_set(err, MP_ERR_NOMEM, "special tokens: out of memory");
    for (mp_token id = 0; id < v->n_tokens; id++) {
        if (!(v->attr[id] & (MP_ATTR_CONTROL | MP_ATTR_USER_DEFINED | MP_ATTR_UNKNOWN))) continue;
        size_t n;
        const uint8_t *t = (const uint8_t *)mp_vocab_text(v, id, &n);
        if (n == 0) continue; /* an empty text can never be found */
        if (!trie_add(s, t, n, id))
            return mp_err_set(err, MP_ERR_NOMEM, "special tokens: out of memory");
        s->first[t[0] >> 3] |= (uint8_t)(1u << (t[0] & 7));
        s->n_tokens++;
    }
    return MP_OK;
}

void mp_special_free(mp_special *s) {
    if (!s) return;
    mp_free(s->nodes);
    memset(s, 0, sizeof *s);
}

/* One occurrence of a special token in the text. */
typedef struct occurrence {
    size_t pos, len;
    mp_token id;
} occurrence;

static int cmp_priority(const void *a, const void *b) {
    const occurrence *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static int cmp_pos(const void *a, const void *b) {
    const occurrence *x = a, *y = b;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static bool allowed(const mp_vocab *v, mp_token id, bool parse_special) {
    return parse_special || !(v->attr[id] & (MP_ATTR_CONTROL | MP_ATTR_UNKNOWN));
}

/* Every occurrence of every allowed special token. */
static bool find_all(const mp_vocab *v, const uint8_t *t, size_t len, bool parse_special,
                     occurrence **occ, size_t *n_occ) {
    const mp_special *s = &v->special;
    size_t n = 0, cap = 0;
    occurrence *o = NULL;
    for (size_t i = 0; i < len; i++) {
        if (!(s->first[t[i] >> 3] & (1u << (t[i] & 7)))) continue;
        int32_t node = 0;
        for (size_t j = i; j < len && (node = find_child(s, node, t[j])) >= 0; j++) {
            mp_token id = s->nodes[node].token;
            if (id < 0 || !allowed(v, id, parse_special)) continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                occurrence *g = mp_realloc(o, cap * sizeof *g);
                if (!g) {
                    mp_free(o);
                    return false;
                }
                o = g;
            }
            o[n++] = (occurrence){i, j - i + 1, id};
        }
    }
    *occ = o;
    *n_occ = n;
    return true;
}

mp_status mp_special_split(const mp_vocab *v, const char *text, size_t len, bool parse_special,
                           mp_fragment **out, size_t *n_out, mp_err *err) {
    occurrence *occ = NULL;
    size_t n_occ = 0, n_acc = 0;
    uint8_t *taken = NULL;
    mp_fragment *f = NULL;
    if (!find_all(v, (const uint8_t *)text, len, parse_special, &occ, &n_occ)) goto nomem;
    if (n_occ) {
        if (!(taken = mp_calloc(len, 1))) goto nomem;
        qsort(occ, n_occ, sizeof *occ, cmp_priority);
        for (size_t i = 0; i < n_occ; i++) {
            /* an occurrence is free when neither end overlaps a taken span:
             * taken spans are at least as long, so one cannot sit inside it */
            const occurrence *o = &occ[i];
            if (taken[o->pos] || taken[o->pos + o->len - 1]) continue;
            memset(taken + o->pos, 1, o->len);
            occ[n_acc++] = *o;
        }
        qsort(occ, n_acc, sizeof *occ, cmp_pos);
    }
    if (!(f = mp_calloc(2 * n_acc + 1, sizeof *f))) goto nomem;
    size_t nf = 0, at = 0;
    for (size_t i = 0; i < n_acc; i++) {
        if (occ[i].pos > at) f[nf++] = (mp_fragment){at, occ[i].pos - at, MP_TOKEN_NULL};
        f[nf++] = (mp_fragment){occ[i].pos, occ[i].len, occ[i].id};
        at = occ[i].pos + occ[i].len;
    }
    if (len > at) f[nf++] = (mp_fragment){at, len - at, MP_TOKEN_NULL};
    mp_free(occ);
    mp_free(taken);
    *out = f;
    *n_out = nf;
    return MP_OK;
nomem:
    mp_free(occ);
    mp_free(taken);
    return mp_err_set(err, MP_ERR_NOMEM, "tokenize: out of memory splitting special tokens "
                      "(%zu bytes of text)", len);
}

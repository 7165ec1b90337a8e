/* spm_bpe.c — the Gemma 4 BPE: SentencePiece-style symbols (raw UTF-8, a
 * space is U+2581) merged by rank, with byte fallback.
 *
 * One raw-text fragment (special tokens already split out) is cut into runs
 * of '\n' and runs of everything else (llama.cpp's "[^\n]+|[\n]+"). A run of
 * newlines that is itself a token becomes that token (llama.cpp PR 21343).
 * Any other run starts as one symbol per UTF-8 character; the adjacent pair
 * with the lowest merge rank (leftmost on ties) merges, repeatedly, until no
 * adjacent pair has a rank. Each final symbol is its token, or when its text
 * is not a token, one <0xHH> token per byte (llama.cpp's llm_tokenizer_bpe_
 * session::tokenize with byte_encode off). Spec: ../docs/gemma4-gguf-spec.md
 * section 6.2.
 *
 * Where the time goes, and the one liberty taken. llama.cpp runs BPE over a
 * whole line at once (there is no word pre-split for Gemma 4), so each merge
 * looks up a pair in a table far larger than the CPU caches. Here a run is
 * cut into words before every space that follows a non-space — except after
 * a character that some merge joins to a following U+2581 (in Gemma 4's
 * 514,906 merges that is only ">", from "> ▁</"). Such a cut can never
 * separate two symbols that would have merged, and merges on either side of
 * it do not interact (each side's pairs keep their relative (rank, position)
 * order), so the ids are exactly those of the whole-run BPE. Words repeat, so
 * each mp_tokenize call keeps a cache from word text to ids, and most words
 * cost one hash lookup. A word not in the cache runs the real BPE: symbols
 * carry string-table ids, so a merge lookup is one hash probe on a pair of
 * integers; pending merges sit in a binary heap keyed by (rank, left
 * position); a stale entry is recognised in O(1) because symbol lengths only
 * grow.
 *
 * Deliberate difference: llama.cpp turns each byte that is not valid UTF-8
 * into U+FFFD before BPE (lossy); here such a byte is its own symbol and
 * becomes its <0xHH> token, so decoding gives the input back. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "util/util.h"

/* Word cache limits: longer words are rare and cheap to recompute relative
 * to their length; the byte and entry caps bound a call's memory (the cache
 * stops growing, it is never wrong). */
#define CACHE_MAX_WORD 256
#define CACHE_MAX_ENTRIES (1u << 18)
#define CACHE_MIN_SLOTS 1024
/* Merge-answer memo: direct-mapped, 2^memo_bits entries of 16 bytes, sized
 * by the text: 2 K entries (32 KiB) for a prompt, up to 64 K (1 MiB) for
 * megabytes, where it answers ~88% of lookups on English markdown. It stays
 * in L2 while the merge table itself (16 MiB for Gemma 4) does not. */
#define MEMO_BITS_MIN 11
#define MEMO_BITS_MAX 16
/* Words of up to this many symbols merge by linear scan (merge_small). */
#define SMALL_WORD 24

/* One symbol of the word being merged; a merged-away symbol has len 0. */
typedef struct bpe_sym {
    int32_t sid;    /* string-table id of its text, -1 if the text is in no table */
    uint32_t start; /* raw bytes of the word it covers (a ' ' stands for U+2581) */
    uint32_t len;
    int32_t prev, next; /* neighbours in the word, -1 at the ends */
} bpe_sym;

/* A pending merge of symbols left and left's right neighbour. */
typedef struct bpe_pair {
    int32_t rank;
    int32_t left, right;
    uint32_t size;   /* raw length of left + right when queued: detects stale entries */
    int32_t result;  /* sid of the merged text */
} bpe_pair;

/* A cached word: its text at bytes[off..off+len), its ids at toks[tok..tok+n_tok). */
typedef struct word_entry {
    uint32_t hash, off, len, tok, n_tok;
} word_entry;

/* A remembered merge-table answer (rank -1: the pair does not merge). */
typedef struct pair_memo {
    uint64_t key; /* left << 32 | right; UINT64_MAX = empty */
    int32_t rank, result;
} pair_memo;

struct mp_bpe_scratch {
    bpe_sym *syms;
    size_t cap_syms;
    bpe_pair *heap;
    size_t n_heap, cap_heap;
    pair_memo *memo; /* [1 << memo_bits] */
    unsigned memo_bits;
    /* word cache (open addressing; len 0 = empty slot) */
    word_entry *slots;
    uint32_t mask, n_words;
    mp_buf bytes;   /* word texts */
    mp_tokbuf toks; /* their ids */
};

mp_bpe_scratch *mp_bpe_scratch_new(size_t text_len) {
    mp_bpe_scratch *s = mp_calloc(1, sizeof *s);
    if (!s) return NULL;
    /* about one entry per 8 bytes of text (pairs repeat), within the bounds */
    s->memo_bits = MEMO_BITS_MIN;
    while (s->memo_bits < MEMO_BITS_MAX && ((size_t)1 << s->memo_bits) * 8 < text_len)
        s->memo_bits++;
    return s;
}

void mp_bpe_scratch_free(mp_bpe_scratch *s) {
    if (!s) return;
    mp_free(s->syms);
    mp_free(s->heap);
    mp_free(s->slots);
    mp_free(s->memo);
    mp_buf_free(&s->bytes);
    mp_free(s->toks.ids);
    mp_free(s);
}

bool mp_tokbuf_push(mp_tokbuf *b, mp_token id) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        mp_token *ids = mp_realloc(b->ids, cap * sizeof *ids);
        if (!ids) return false;
        b->ids = ids;
        b->cap = cap;
    }
    b->ids[b->n++] = id;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Characters                                                               */
/* ------------------------------------------------------------------------ */

/* Length of the symbol unit at t[0..n): a UTF-8 character, or one byte that
 * does not start one. */
static inline uint32_t unit_len(const uint8_t *t, size_t n) {
    if (t[0] < 0x80) return 1;
    size_t len = mp_utf8_char_len(t, n);
    return len ? (uint32_t)len : 1;
}

/* A unit's bytes packed into 32 bits (units are at most 4 bytes). */
static inline uint32_t pack_unit(const uint8_t *t, uint32_t len) {
    uint32_t x = 0;
    for (uint32_t i = 0; i < len; i++) x = x << 8 | t[i];
    return x; /* distinct lengths cannot collide: lead bytes of longer units are >= 0xC2 */
}

static inline bool is_mark(const uint8_t *t, uint32_t len) {
    return (len == 1 && t[0] == ' ') ||
           (len == 3 && t[0] == 0xE2 && t[1] == 0x96 && t[2] == 0x81);
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

bool mp_spm_bpe_prepare(mp_vocab *v) {
    size_t n = 0, cap = 0;
    uint32_t *list = NULL;
    for (uint64_t i = 0; i <= v->merges.mask; i++) {
        const mp_merge_slot *m = &v->merges.slots[i];
        if (m->key == UINT64_MAX) continue;
        int32_t l = (int32_t)(m->key >> 32), r = (int32_t)(uint32_t)m->key;
        const uint8_t *ls = (const uint8_t *)mp_strtab_str(&v->strs, l);
        const uint8_t *rs = (const uint8_t *)mp_strtab_str(&v->strs, r);
        uint32_t ln = v->strs.len[l], rn = v->strs.len[r];
        if (!ln || !rn || !is_mark(rs, unit_len(rs, rn))) continue;
        /* the last unit of the left part, cut the way the encoder cuts */
        uint32_t at = 0, last = 0, ulen = 0;
        while (at < ln) {
            last = at;
            ulen = unit_len(ls + at, ln - at);
            at += ulen;
        }
        if (is_mark(ls + last, ulen)) continue; /* a space-space join: never cut there */
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            uint32_t *g = mp_realloc(list, cap * sizeof *g);
            if (!g) {
                mp_free(list);
                return false;
            }
            list = g;
        }
        list[n++] = pack_unit(ls + last, ulen);
    }
    if (n) qsort(list, n, sizeof *list, cmp_u32);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!k || list[k - 1] != list[i]) list[k++] = list[i];
    v->nosplit = list;
    v->n_nosplit = k;
    return true;
}

static bool nosplit_after(const mp_vocab *v, const uint8_t *t, uint32_t len) {
    uint32_t key = pack_unit(t, len);
    size_t lo = 0, hi = v->n_nosplit;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v->nosplit[mid] < key) lo = mid + 1;
        else hi = mid;
    }
    return lo < v->n_nosplit && v->nosplit[lo] == key;
}

/* ------------------------------------------------------------------------ */
/* BPE on one word                                                          */
/* ------------------------------------------------------------------------ */

/* Room for a word of n bytes: n symbols and at most 3n queued pairs (n - 1
 * to start, two per merge, at most n - 1 merges). */
static bool bpe_reserve(mp_bpe_scratch *s, size_t n) {
    if (!s->memo) {
        size_t bytes = ((size_t)1 << s->memo_bits) * sizeof *s->memo;
        if (!(s->memo = mp_malloc(bytes))) return false;
        memset(s->memo, 0xFF, bytes); /* all keys empty */
    }
    if (n > s->cap_syms) {
        size_t cap = n < 256 ? 256 : n;
        size_t bs, bh;
        if (!mp_mul_size(cap, sizeof(bpe_sym), &bs) ||
            !mp_mul_size(cap, 3 * sizeof(bpe_pair), &bh))
            return false;
        bpe_sym *syms = mp_malloc(bs);
        bpe_pair *heap = mp_malloc(bh);
        if (!syms || !heap) {
            mp_free(syms);
            mp_free(heap);
            return false;
        }
        mp_free(s->syms);
        mp_free(s->heap);
        s->syms = syms;
        s->heap = heap;
        s->cap_syms = cap;
        s->cap_heap = 3 * cap;
    }
    s->n_heap = 0;
    return true;
}

static inline bool pair_before(const bpe_pair *a, const bpe_pair *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(mp_bpe_scratch *s, bpe_pair p) {
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_before(&p, &s->heap[up])) break;
        s->heap[i] = s->heap[up];
        i = up;
    }
    s->heap[i] = p;
}

static bpe_pair heap_pop(mp_bpe_scratch *s) {
    bpe_pair top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pair_before(&s->heap[c + 1], &s->heap[c])) c++;
        if (!pair_before(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

/* The merge of string ids l and r (both >= 0); rank -1 when there is none. */
static inline const pair_memo *lookup_pair(const mp_vocab *v, mp_bpe_scratch *s, int32_t l,
                                           int32_t r) {
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    pair_memo *pm = &s->memo[(key * 0x9E3779B97F4A7C15ull) >> (64 - s->memo_bits)];
    if (pm->key != key) {
        const mp_merge_slot *m = mp_merges_find(&v->merges, l, r);
        *pm = (pair_memo){key, m ? m->rank : -1, m ? m->result : -1};
    }
    return pm;
}

/* Queues the merge of symbols l and r when the pair has a rank. */
static void try_pair(const mp_vocab *v, mp_bpe_scratch *s, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const bpe_sym *a = &s->syms[l], *b = &s->syms[r];
    if (a->sid < 0 || b->sid < 0) return;
    const pair_memo *pm = lookup_pair(v, s, a->sid, b->sid);
    if (pm->rank < 0) return;
    heap_push(s, (bpe_pair){pm->rank, l, r, a->len + b->len, pm->result});
}

/* Appends the byte tokens of raw text t[0..n) with ' ' written as U+2581;
 * a byte without a <0xHH> token is dropped, as llama.cpp does. */
static bool push_bytes(const mp_vocab *v, const uint8_t *t, size_t n, mp_tokbuf *out) {
    static const uint8_t mark[3] = {0xE2, 0x96, 0x81};
    for (size_t i = 0; i < n; i++) {
        const uint8_t *b = t[i] == ' ' ? mark : &t[i];
        for (size_t k = 0; k < (t[i] == ' ' ? 3u : 1u); k++)
            if (v->byte_tok[b[k]] >= 0 && !mp_tokbuf_push(out, v->byte_tok[b[k]])) return false;
    }
    return true;
}

/* Rank and result of the pair (i, the symbol after i) into rank[i], res[i]. */
static void small_pair(const mp_vocab *v, mp_bpe_scratch *s, int32_t i, int32_t *rank,
                       int32_t *res) {
    const bpe_sym *a = &s->syms[i];
    rank[i] = -1;
    if (a->next < 0 || a->sid < 0 || s->syms[a->next].sid < 0) return;
    const pair_memo *pm = lookup_pair(v, s, a->sid, s->syms[a->next].sid);
    rank[i] = pm->rank;
    res[i] = pm->result;
}

/* The heap loop's merges for a word of at most SMALL_WORD symbols: each
 * round scans the live pairs for the lowest rank, leftmost first. Most
 * words are this short, and the scan costs less than keeping a heap. */
static void merge_small(const mp_vocab *v, mp_bpe_scratch *s, int32_t ns) {
    int32_t rank[SMALL_WORD], res[SMALL_WORD];
    for (int32_t i = 0; i < ns; i++) small_pair(v, s, i, rank, res);
    for (;;) {
        int32_t best = -1;
        for (int32_t i = 0; i >= 0; i = s->syms[i].next)
            if (rank[i] >= 0 && (best < 0 || rank[i] < rank[best])) best = i;
        if (best < 0) return;
        bpe_sym *l = &s->syms[best], *r = &s->syms[l->next];
        l->sid = res[best];
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) s->syms[r->next].prev = best;
        small_pair(v, s, best, rank, res);
        if (l->prev >= 0) small_pair(v, s, l->prev, rank, res);
    }
}

static bool bpe_word(const mp_vocab *v, mp_bpe_scratch *s, const uint8_t *t, size_t n,
                     mp_tokbuf *out) {
    if (!bpe_reserve(s, n)) return false;
    int32_t ns = 0;
    for (size_t i = 0; i < n;) {
        bpe_sym *y = &s->syms[ns];
        y->start = (uint32_t)i;
        y->len = unit_len(t + i, n - i);
        y->sid = t[i] < 0x80 ? v->sid_ascii[t[i]]
                             : mp_strtab_find(&v->strs, (const char *)t + i, y->len);
        y->prev = ns - 1;
        i += y->len;
        y->next = i < n ? ns + 1 : -1;
        ns++;
    }
    if (ns <= SMALL_WORD)
        merge_small(v, s, ns);
    else
        for (int32_t i = 1; i < ns; i++) try_pair(v, s, i - 1, i);
    while (s->n_heap) {
        bpe_pair p = heap_pop(s);
        bpe_sym *l = &s->syms[p.left], *r = &s->syms[p.right];
        /* stale: one side was merged away or has grown since it was queued */
        if (!l->len || !r->len || l->len + r->len != p.size) continue;
        l->sid = p.result;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) s->syms[r->next].prev = p.left;
        try_pair(v, s, l->prev, p.left);
        try_pair(v, s, p.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = s->syms[i].next) {
        const bpe_sym *y = &s->syms[i];
        mp_token id = y->sid >= 0 ? v->sid_tok[y->sid] : MP_TOKEN_NULL;
        if (id != MP_TOKEN_NULL) {
            if (!mp_tokbuf_push(out, id)) return false;
        } else if (!push_bytes(v, t + y->start, y->len, out)) {
            return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Word cache                                                               */
/* ------------------------------------------------------------------------ */

static word_entry *cache_find(mp_bpe_scratch *s, const uint8_t *t, size_t n, uint32_t h) {
    if (!s->slots) return NULL;
    for (uint32_t i = h & s->mask;; i = (i + 1) & s->mask) {
        word_entry *e = &s->slots[i];
        if (!e->len) return e; /* empty: where it would go */
        if (e->hash == h && e->len == n && !memcmp(s->bytes.data + e->off, t, n)) return e;
    }
}

static void cache_grow(mp_bpe_scratch *s) {
    uint32_t nslots = s->slots ? (s->mask + 1) * 2 : CACHE_MIN_SLOTS;
    word_entry *slots = mp_calloc(nslots, sizeof *slots);
    if (!slots) return; /* the cache just stays smaller */
    for (uint32_t i = 0; s->slots && i <= s->mask; i++) {
        if (!s->slots[i].len) continue;
        uint32_t j = s->slots[i].hash & (nslots - 1);
        while (slots[j].len) j = (j + 1) & (nslots - 1);
        slots[j] = s->slots[i];
    }
    mp_free(s->slots);
    s->slots = slots;
    s->mask = nslots - 1;
}

/* Remembers the ids out->ids[from..out->n) for word t[0..n). Failing to
 * allocate only means the word is not remembered. */
static void cache_add(mp_bpe_scratch *s, const uint8_t *t, size_t n, uint32_t h,
                      const mp_tokbuf *out, size_t from) {
    if (s->n_words >= CACHE_MAX_ENTRIES) return;
    if (!s->slots || (s->n_words + 1) * 2 > s->mask + 1) cache_grow(s);
    if (!s->slots || (s->n_words + 1) * 2 > s->mask + 1) return;
    word_entry *e = cache_find(s, t, n, h);
    size_t n_tok = out->n - from;
    if (e->len || s->bytes.len + n > UINT32_MAX || s->toks.n + n_tok > UINT32_MAX) return;
    uint32_t off = (uint32_t)s->bytes.len, tok = (uint32_t)s->toks.n;
    if (!mp_buf_append(&s->bytes, t, n)) return;
    for (size_t i = from; i < out->n; i++)
        if (!mp_tokbuf_push(&s->toks, out->ids[i])) {
            s->toks.n = tok;
            return;
        }
    *e = (word_entry){h, off, (uint32_t)n, tok, (uint32_t)n_tok};
    s->n_words++;
}

static bool encode_word(const mp_vocab *v, mp_bpe_scratch *s, const uint8_t *t, size_t n,
                        mp_tokbuf *out) {
    if (n > CACHE_MAX_WORD) return bpe_word(v, s, t, n, out);
    uint32_t h = mp_tok_hash((const char *)t, n);
    word_entry *e = cache_find(s, t, n, h);
    if (e && e->len) {
        for (uint32_t i = 0; i < e->n_tok; i++)
            if (!mp_tokbuf_push(out, s->toks.ids[e->tok + i])) return false;
        return true;
    }
    size_t from = out->n;
    if (!bpe_word(v, s, t, n, out)) return false;
    cache_add(s, t, n, h, out, from);
    return true;
}

/* ------------------------------------------------------------------------ */
/* Runs                                                                     */
/* ------------------------------------------------------------------------ */

static bool encode_run(const mp_vocab *v, mp_bpe_scratch *s, const uint8_t *t, size_t n,
                       mp_tokbuf *out) {
    if (t[0] == '\n') { /* a newline run that is a token is taken whole */
        mp_token id = mp_vocab_find(v, (const char *)t, n);
        if (id != MP_TOKEN_NULL) return mp_tokbuf_push(out, id);
        return bpe_word(v, s, t, n, out);
    }
    size_t word = 0, prev = 0;
    uint32_t prev_len = 0;
    bool prev_mark = true; /* no cut at the very start */
    for (size_t i = 0; i < n;) {
        uint32_t len = unit_len(t + i, n - i);
        bool mark = is_mark(t + i, len);
        if (mark && !prev_mark && !(v->n_nosplit && nosplit_after(v, t + prev, prev_len))) {
            if (!encode_word(v, s, t + word, i - word, out)) return false;
            word = i;
        }
        prev = i;
        prev_len = len;
        prev_mark = mark;
        i += len;
    }
    return encode_word(v, s, t + word, n - word, out);
}

bool mp_spm_bpe_encode(const mp_vocab *v, mp_bpe_scratch *s, const char *text, size_t len,
                       mp_tokbuf *out) {
    const uint8_t *t = (const uint8_t *)text;
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        if (t[i] == '\n') {
            while (j < len && t[j] == '\n') j++;
        } else {
            const uint8_t *nl = memchr(t + i, '\n', len - i);
            j = nl ? (size_t)(nl - t) : len;
        }
        if (!encode_run(v, s, t + i, j - i, out)) return false;
        i = j;
    }
    return true;
}

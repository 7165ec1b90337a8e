/* strtab.c — the two hash tables behind BPE: strings to dense ids, and pairs
 * of ids to merge ranks. Both use open addressing with linear probing at a
 * load factor of at most one half, sized once from the counts the GGUF
 * announces, so loading 262k tokens and 515k merges is a few passes over
 * memory rather than a tree of allocations. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "util/util.h"

/* 64-bit multiply-mix over 8-byte words, finished with the splitmix64
 * avalanche. Token texts are short (median ~6 bytes), so the per-call
 * constant matters more than the per-byte rate. */
uint32_t mp_tok_hash(const char *s, size_t n) {
    const uint64_t k = 0x9E3779B97F4A7C15ull;
    uint64_t h = (uint64_t)n * k;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * k;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, s, n);
        h = (h ^ w) * k;
    }
    h ^= h >> 30;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 27;
    h *= 0x94D049BB133111EBull;
    h ^= h >> 31;
    return (uint32_t)h;
}

/* Smallest power of two >= 2 * n (load factor <= 1/2), at least 16. */
static uint64_t table_size(uint64_t n) {
    uint64_t s = 16;
    while (s < 2 * n) s <<= 1;
    return s;
}

mp_status mp_strtab_init(mp_strtab *t, uint32_t expect, size_t expect_bytes, mp_err *err) {
    memset(t, 0, sizeof *t);
    uint64_t nslots = table_size(expect);
    if (expect > (1u << 30) || nslots > (1ull << 31))
        return mp_err_set(err, MP_ERR_ARG, "string table: %u strings is too many", expect);
    t->cap = expect < 16 ? 16 : expect;
    t->cap_bytes = expect_bytes < 64 ? 64 : expect_bytes;
    t->mask = (uint32_t)(nslots - 1);
    t->bytes = mp_malloc(t->cap_bytes);
    t->off = mp_calloc(t->cap, sizeof *t->off);
    t->len = mp_calloc(t->cap, sizeof *t->len);
    t->hash = mp_calloc(t->cap, sizeof *t->hash);
    t->slots = mp_calloc((size_t)nslots, sizeof *t->slots);
    if (!t->bytes || !t->off || !t->len || !t->hash || !t->slots) {
        mp_strtab_free(t);
        return mp_err_set(err, MP_ERR_NOMEM, "string table: out of memory (%u strings)", expect);
    }
    return MP_OK;
}

void mp_strtab_free(mp_strtab *t) {
    if (!t) return;
    mp_free(t->bytes);
    mp_free(t->off);
    mp_free(t->len);
    mp_free(t->hash);
    mp_free(t->slots);
    memset(t, 0, sizeof *t);
}

/* Slot index holding s, or the empty slot where it would go. */
static uint32_t strtab_probe(const mp_strtab *t, const char *s, size_t n, uint32_t h) {
    uint32_t i = h & t->mask;
    for (;;) {
        uint32_t e = t->slots[i];
        if (!e) return i;
        uint32_t sid = e - 1;
        if (t->hash[sid] == h && t->len[sid] == n && !memcmp(t->bytes + t->off[sid], s, n))
            return i;
        i = (i + 1) & t->mask;
    }
}

int32_t mp_strtab_find(const mp_strtab *t, const char *s, size_t n) {
    if (!t->slots) return -1;
    uint32_t e = t->slots[strtab_probe(t, s, n, mp_tok_hash(s, n))];
    return e ? (int32_t)(e - 1) : -1;
}

/* Doubles the slot array and re-places every sid. */
static bool grow_slots(mp_strtab *t) {
    uint64_t nslots = ((uint64_t)t->mask + 1) * 2;
    if (nslots > (1ull << 31)) return false;
    uint32_t *slots = mp_calloc((size_t)nslots, sizeof *slots);
    if (!slots) return false;
    mp_free(t->slots);
    t->slots = slots;
    t->mask = (uint32_t)(nslots - 1);
    for (uint32_t sid = 0; sid < t->n; sid++) {
        uint32_t i = t->hash[sid] & t->mask;
        while (t->slots[i]) i = (i + 1) & t->mask;
        t->slots[i] = sid + 1;
    }
    return true;
}

static bool grow_arrays(mp_strtab *t) {
    if (t->cap >= (1u << 30)) return false;
    uint32_t cap = t->cap * 2;
    uint32_t *off = mp_realloc(t->off, (size_t)cap * sizeof *off);
    if (!off) return false;
    t->off = off;
    uint32_t *len = mp_realloc(t->len, (size_t)cap * sizeof *len);
    if (!len) return false;
    t->len = len;
    uint32_t *hash = mp_realloc(t->hash, (size_t)cap * sizeof *hash);
    if (!hash) return false;
    t->hash = hash;
    t->cap = cap;
    return true;
}

int32_t mp_strtab_intern(mp_strtab *t, const char *s, size_t n) {
    uint32_t h = mp_tok_hash(s, n);
    uint32_t i = strtab_probe(t, s, n, h);
    if (t->slots[i]) return (int32_t)(t->slots[i] - 1);
    if ((uint64_t)(t->n + 1) * 2 > (uint64_t)t->mask + 1) {
        if (!grow_slots(t)) return -1;
        i = strtab_probe(t, s, n, h);
    }
    if (n > UINT32_MAX - t->n_bytes) return -1; /* offsets are 32-bit */
    if (t->n == t->cap && !grow_arrays(t)) return -1;
    if (t->n_bytes + n > t->cap_bytes) {
        size_t cap = t->cap_bytes;
        while (cap < t->n_bytes + n) cap *= 2;
        char *b = mp_realloc(t->bytes, cap);
        if (!b) return -1;
        t->bytes = b;
        t->cap_bytes = cap;
    }
    uint32_t sid = t->n++;
    memcpy(t->bytes + t->n_bytes, s, n);
    t->off[sid] = (uint32_t)t->n_bytes;
    t->len[sid] = (uint32_t)n;
    t->hash[sid] = h;
    t->n_bytes += n;
    t->slots[i] = sid + 1;
    return (int32_t)sid;
}

/* ------------------------------------------------------------------------ */
/* Merge table                                                              */
/* ------------------------------------------------------------------------ */

static uint64_t pair_key(int32_t left, int32_t right) {
    return ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
}

static uint64_t pair_hash(uint64_t key) {
    key ^= key >> 33;
    key *= 0xFF51AFD7ED558CCDull;
    key ^= key >> 33;
    return key;
}

mp_status mp_merges_init(mp_merges *m, size_t expect, mp_err *err) {
    memset(m, 0, sizeof *m);
    uint64_t nslots = table_size(expect);
    size_t bytes;
    if (!mp_mul_size((size_t)nslots, sizeof *m->slots, &bytes))
        return mp_err_set(err, MP_ERR_ARG, "merge table: %zu merges is too many", expect);
    m->slots = mp_malloc(bytes);
    if (!m->slots)
        return mp_err_set(err, MP_ERR_NOMEM, "merge table: out of memory (%zu merges)", expect);
    memset(m->slots, 0xFF, bytes); /* key UINT64_MAX = empty */
    m->mask = nslots - 1;
    return MP_OK;
}

void mp_merges_free(mp_merges *m) {
    if (!m) return;
    mp_free(m->slots);
    memset(m, 0, sizeof *m);
}

void mp_merges_add(mp_merges *m, int32_t left, int32_t right, int32_t rank, int32_t result) {
    uint64_t key = pair_key(left, right);
    uint64_t i = pair_hash(key) & m->mask;
    while (m->slots[i].key != UINT64_MAX) {
        if (m->slots[i].key == key) return;
        i = (i + 1) & m->mask;
    }
    m->slots[i].key = key;
    m->slots[i].rank = rank;
    m->slots[i].result = result;
    m->n++;
}

const mp_merge_slot *mp_merges_find(const mp_merges *m, int32_t left, int32_t right) {
    uint64_t key = pair_key(left, right);
    uint64_t i = pair_hash(key) & m->mask;
    for (;;) {
        const mp_merge_slot *s = &m->slots[i];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) return NULL;
        i = (i + 1) & m->mask;
    }
}

/* tokenizer.h — internals shared by the tokenizer's files: the vocabulary
 * struct, the string table that BPE symbols live in, the merge table, the
 * special-token trie, and small UTF-8 helpers.
 *
 * Files: vocab.c (loading, lookups, EOG set), strtab.c (hash tables),
 * special.c (splitting special tokens out of text), spm_bpe.c (the Gemma 4
 * BPE), encode.c (mp_tokenize: dispatch per vocabulary kind), decode.c
 * (pieces, detokenize, streaming UTF-8), chat.c (chat format, thinking
 * splitter). A second algorithm (GPT-2 byte-level BPE) adds one file beside
 * spm_bpe.c and one case in encode.c's switch. */
#ifndef MP_TOKENIZER_H
#define MP_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moeprune.h"

/* Token attributes, as llama.cpp derives them from the file's token types
 * (a bit set: an end-of-generation token that the file calls USER_DEFINED
 * also becomes CONTROL, which changes when it is parsed and rendered). */
enum {
    MP_ATTR_NORMAL = 1 << 0,
    MP_ATTR_UNKNOWN = 1 << 1,
    MP_ATTR_CONTROL = 1 << 2,
    MP_ATTR_USER_DEFINED = 1 << 3,
    MP_ATTR_UNUSED = 1 << 4,
    MP_ATTR_BYTE = 1 << 5,
};

/* ------------------------------------------------------------------------ */
/* String table: every distinct string BPE can produce gets a small id (sid) */
/* ------------------------------------------------------------------------ */

/* Strings live in one byte block; sids are dense 0..n-1. Token texts come
 * first; merge parts and merge results that are not tokens follow. */
typedef struct mp_strtab {
    char *bytes;      /* all strings, back to back (not NUL-terminated) */
    size_t n_bytes, cap_bytes;
    uint32_t *off;    /* [n] start of string sid in bytes */
    uint32_t *len;    /* [n] its length */
    uint32_t *hash;   /* [n] its hash (speeds up probing) */
    uint32_t n, cap;
    uint32_t *slots;  /* open addressing: sid + 1, 0 = empty */
    uint32_t mask;    /* slots has mask + 1 entries, a power of two */
} mp_strtab;

mp_status mp_strtab_init(mp_strtab *t, uint32_t expect, size_t expect_bytes, mp_err *err);
void mp_strtab_free(mp_strtab *t);
/* sid of s[0..n), or -1. */
int32_t mp_strtab_find(const mp_strtab *t, const char *s, size_t n);
/* sid of s[0..n), inserting it when absent; -1 on allocation failure or when
 * the table would pass 2^31 strings or 4 GiB. */
int32_t mp_strtab_intern(mp_strtab *t, const char *s, size_t n);
static inline const char *mp_strtab_str(const mp_strtab *t, int32_t sid) {
    return t->bytes + t->off[sid];
}

/* Merge table: (left sid, right sid) -> (rank, sid of the concatenation). */
typedef struct mp_merge_slot {
    uint64_t key;   /* left << 32 | right; UINT64_MAX = empty */
    int32_t rank;   /* lower merges first */
    int32_t result; /* sid of left + right */
} mp_merge_slot;

typedef struct mp_merges {
    mp_merge_slot *slots;
    uint64_t mask;
    size_t n;
} mp_merges;

mp_status mp_merges_init(mp_merges *m, size_t expect, mp_err *err);
void mp_merges_free(mp_merges *m);
/* Adds a pair unless present (the first rank of a repeated pair wins, as in
 * llama.cpp's map). */
void mp_merges_add(mp_merges *m, int32_t left, int32_t right, int32_t rank, int32_t result);
/* The slot of a pair, or NULL. */
const mp_merge_slot *mp_merges_find(const mp_merges *m, int32_t left, int32_t right);

/* ------------------------------------------------------------------------ */
/* Special tokens                                                           */
/* ------------------------------------------------------------------------ */

/* A byte trie over the texts of CONTROL / USER_DEFINED / UNKNOWN tokens. */
typedef struct mp_trie_node {
    int32_t child;   /* first child, -1 none */
    int32_t sibling; /* next sibling, -1 none */
    int32_t token;   /* token ending here, -1 none */
    uint8_t byte;
} mp_trie_node;

typedef struct mp_special {
    mp_trie_node *nodes; /* nodes[0] is the root */
    int32_t n_nodes, cap_nodes;
    uint8_t first[32];   /* bit set: bytes that start some special token */
    int32_t n_tokens;
} mp_special;

/* A piece of text after special tokens are split out: raw text
 * [start, start + len) when token < 0, else a token id. */
typedef struct mp_fragment {
    size_t start, len;
    mp_token token;
} mp_fragment;

/* ------------------------------------------------------------------------ */
/* The vocabulary                                                           */
/* ------------------------------------------------------------------------ */

struct mp_vocab {
    mp_vocab_kind kind;
    int32_t n_tokens;
    mp_vocab_special sp;

    mp_strtab strs;      /* token texts and BPE intermediates */
    int32_t *tok_sid;    /* [n_tokens] sid of each token's text */
    int32_t *sid_tok;    /* [strs.cap] token of each sid, -1 when not a token
                            (the last id wins for repeated texts, as in llama.cpp) */
    uint8_t *type;       /* [n_tokens] mp_token_type from the file */
    uint8_t *attr;       /* [n_tokens] MP_ATTR_* */
    float *score;        /* [n_tokens] tokenizer.ggml.scores (0 when absent) */

    char *piece;         /* rendered text of every token, back to back */
    uint32_t *piece_off; /* [n_tokens + 1] */
    size_t max_piece;    /* longest piece with special = true */

    mp_merges merges;
    uint32_t *nosplit;   /* sorted: last characters c of merge lefts that can join a
                            right starting with U+2581 (packed bytes, see spm_bpe.c);
                            a word boundary is never put between c and a space */
    size_t n_nosplit;
    int32_t sid_ascii[128]; /* sid of each one-byte string (' ' maps to U+2581), -1 absent */
    mp_token byte_tok[256]; /* the <0xHH> token of each byte, -1 absent */

    mp_special special;
    mp_token *eog;       /* ascending */
    size_t n_eog;
    char *chat_template; /* NULL when absent */
};

/* Builds v->special from v->attr (vocab.c calls it once). */
mp_status mp_special_build(mp_vocab *v, mp_err *err);
void mp_special_free(mp_special *s);
/* Splits text into raw-text and token fragments as llama.cpp does: special
 * tokens are taken longest text first, each at its every non-overlapping
 * occurrence that does not overlap one already taken. CONTROL and UNKNOWN
 * tokens only with parse_special. *out is allocated (mp_free). */
mp_status mp_special_split(const mp_vocab *v, const char *text, size_t len, bool parse_special,
                           mp_fragment **out, size_t *n_out, mp_err *err);

/* Growable token list used by the encoders. */
typedef struct mp_tokbuf {
    mp_token *ids;
    size_t n, cap;
} mp_tokbuf;
bool mp_tokbuf_push(mp_tokbuf *b, mp_token id);

/* Reusable scratch of the SPM-BPE encoder (one per mp_tokenize call). */
typedef struct mp_bpe_scratch mp_bpe_scratch;
mp_bpe_scratch *mp_bpe_scratch_new(size_t text_len);
void mp_bpe_scratch_free(mp_bpe_scratch *s);
/* Encodes one raw-text fragment (no special tokens in it) with the Gemma 4
 * rules; appends to out. false on allocation failure. */
bool mp_spm_bpe_encode(const mp_vocab *v, mp_bpe_scratch *s, const char *text, size_t len,
                       mp_tokbuf *out);
/* Load-time analysis of the merges for mp_spm_bpe_encode's word split (fills
 * v->nosplit). false on allocation failure. */
bool mp_spm_bpe_prepare(mp_vocab *v);

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                    */
/* ------------------------------------------------------------------------ */

/* Length of the well-formed UTF-8 character at s[0..n) (RFC 3629: no
 * overlongs, no surrogates, nothing past U+10FFFF), or 0 when s does not
 * start one (including a character cut short by the end of the buffer). */
size_t mp_utf8_char_len(const uint8_t *s, size_t n);
/* Classifies the bytes s[0..n), n >= 1, as the start of a UTF-8 character:
 * k > 0 when s starts with a complete character of k bytes; 0 when all n
 * bytes are a proper prefix of some character (more bytes may complete it);
 * -k when it can never be one: the first k bytes are the "maximal subpart"
 * (Unicode 3.9) to report as one invalid unit. */
int mp_utf8_scan(const uint8_t *s, size_t n);

/* Hash of a byte string (used by the string table). */
uint32_t mp_tok_hash(const char *s, size_t n);

#endif

/* vocab.c — builds an mp_vocab from a GGUF's tokenizer.* metadata and
 * answers lookups (text, type, id by text, end-of-generation set).
 *
 * What llama.cpp does at load time and we mirror (src/llama-vocab.cpp,
 * llama_vocab::impl::load): token types become attribute bits; end-of-
 * generation tokens are found by their text and get the CONTROL bit when the
 * file did not give it; Gemma 4 always adds BOS; merges are "left right"
 * split at the first space after position 0, the first rank of a repeated
 * pair winning. The spec is ../docs/gemma4-gguf-spec.md, section 6.
 * Encoding is in encode.c/spm_bpe.c, decoding in decode.c. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "util/util.h"

#define KEY_MODEL "tokenizer.ggml.model"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_TYPES "tokenizer.ggml.token_type"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_MERGES "tokenizer.ggml.merges"
#define KEY_ADD_BOS "tokenizer.ggml.add_bos_token"
#define KEY_TEMPLATE "tokenizer.chat_template"

/* U+2581 LOWER ONE EIGHTH BLOCK: SentencePiece's visible space. */
static const char k_space_mark[] = "\xE2\x96\x81";

/* Token type -> attribute bits (UNDEFINED has none: never parsed, never rendered). */
static const uint8_t k_attr_of_type[MP_TOKEN_TYPE_COUNT] = {
    0, MP_ATTR_NORMAL, MP_ATTR_UNKNOWN, MP_ATTR_CONTROL, MP_ATTR_USER_DEFINED, MP_ATTR_UNUSED,
    MP_ATTR_BYTE};

const char *mp_vocab_kind_name(int kind) {
    switch (kind) {
    case MP_VOCAB_SPM_BPE: return "spm-bpe";
    case MP_VOCAB_GPT2_BPE: return "gpt2-bpe";
    default: return "?";
    }
}

const char *mp_token_type_name(int type) {
    static const char *const names[MP_TOKEN_TYPE_COUNT] = {
        "UNDEFINED", "NORMAL", "UNKNOWN", "CONTROL", "USER_DEFINED", "UNUSED", "BYTE"};
    return type >= 0 && type < MP_TOKEN_TYPE_COUNT ? names[type] : "?";
}

/* ------------------------------------------------------------------------ */
/* Metadata helpers                                                         */
/* ------------------------------------------------------------------------ */

/* Index of an array key of element type `want` (STRING, or any integer /
 * float type when want is UINT8 / FLOAT32), with at least min_len elements.
 * -1 with MP_OK when absent and optional. */
static mp_status find_array(const mp_gguf *g, const char *key, mp_gguf_vtype want,
                            uint64_t min_len, bool required, int64_t *idx, mp_err *err) {
    *idx = mp_gguf_find_key(g, key);
    if (*idx < 0)
        return required ? mp_err_set(err, MP_ERR_NOT_FOUND, "%s: metadata key '%s' is missing",
                                     mp_gguf_path(g), key)
                        : MP_OK;
    mp_gguf_vtype t = mp_gguf_kv_type(g, *idx), et = mp_gguf_arr_type(g, *idx);
    bool ok = t == MP_GGUF_ARRAY;
    if (ok && want == MP_GGUF_STRING) ok = et == MP_GGUF_STRING;
    if (ok && want == MP_GGUF_UINT8)
        ok = et <= MP_GGUF_INT32 || et == MP_GGUF_UINT64 || et == MP_GGUF_INT64;
    if (ok && want == MP_GGUF_FLOAT32) ok = et == MP_GGUF_FLOAT32 || et == MP_GGUF_FLOAT64;
    if (!ok)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: metadata key '%s' has type %s of %s, "
                          "expected an array of %s", mp_gguf_path(g), key,
                          mp_gguf_vtype_name(t), mp_gguf_vtype_name(et),
                          want == MP_GGUF_STRING ? "STRING"
                          : want == MP_GGUF_UINT8 ? "integers" : "floats");
    uint64_t n = mp_gguf_arr_len(g, *idx);
    if (n < min_len)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: metadata key '%s' has %llu elements, "
                          "expected %llu (one per token)", mp_gguf_path(g), key,
                          (unsigned long long)n, (unsigned long long)min_len);
    return MP_OK;
}

/* Reads an optional token id key into *id (left alone when absent). */
static mp_status read_token_id(const mp_gguf *g, const char *key, int32_t n_tokens,
                               mp_token *id, mp_err *err) {
    int64_t i = mp_gguf_find_key(g, key);
    if (i < 0) return MP_OK;
    int64_t v;
    mp_status s = mp_gguf_get_int(g, i, 0, &v, err);
    if (s) return s;
    if (v < 0 || v >= n_tokens)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: metadata key '%s' = %lld is not a token "
                          "id (vocabulary of %d tokens)", mp_gguf_path(g), key, (long long)v,
                          n_tokens);
    *id = (mp_token)v;
    return MP_OK;
}

static mp_status read_kind(const mp_gguf *g, mp_vocab_kind *kind, mp_err *err) {
    int64_t i = mp_gguf_find_key(g, KEY_MODEL);
    if (i < 0)
        return mp_err_set(err, MP_ERR_NOT_FOUND, "%s: no tokenizer: metadata key '%s' is "
                          "missing", mp_gguf_path(g), KEY_MODEL);
    const char *s;
    size_t n;
    mp_status st = mp_gguf_get_str(g, i, 0, &s, &n, err);
    if (st) return st;
    if (n == 6 && !memcmp(s, "gemma4", 6)) {
        *kind = MP_VOCAB_SPM_BPE;
        return MP_OK;
    }
    if (n == 4 && !memcmp(s, "gpt2", 4))
        return mp_err_set(err, MP_ERR_UNSUPPORTED, "%s: %s = \"gpt2\": byte-level BPE "
                          "vocabularies (Qwen and others) are not implemented yet; "
                          "supported: \"gemma4\"", mp_gguf_path(g), KEY_MODEL);
    return mp_err_set(err, MP_ERR_UNSUPPORTED, "%s: %s = \"%.*s\" is not a supported "
                      "vocabulary (supported: \"gemma4\")", mp_gguf_path(g), KEY_MODEL,
                      (int)(n > 64 ? 64 : n), s);
}

/* ------------------------------------------------------------------------ */
/* Loading steps                                                            */
/* ------------------------------------------------------------------------ */

static mp_status load_tokens(mp_vocab *v, const mp_gguf *g, mp_err *err) {
    int64_t kt, kty, ksc;
    mp_status s = find_array(g, KEY_TOKENS, MP_GGUF_STRING, 1, true, &kt, err);
    if (s) return s;
    uint64_t n = mp_gguf_arr_len(g, kt);
    if (n > INT32_MAX)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: %s has %llu tokens, more than ids can "
                          "hold", mp_gguf_path(g), KEY_TOKENS, (unsigned long long)n);
    v->n_tokens = (int32_t)n;
    if ((s = find_array(g, KEY_TYPES, MP_GGUF_UINT8, n, false, &kty, err)) ||
        (s = find_array(g, KEY_SCORES, MP_GGUF_FLOAT32, n, false, &ksc, err)))
        return s;

    size_t bytes = 0;
    for (uint64_t j = 0; j < n; j++) {
        const char *str;
        size_t len;
        if ((s = mp_gguf_get_str(g, kt, j, &str, &len, err))) return s;
        bytes += len;
    }
    /* merges add a few strings that are not tokens: leave room for them */
    if ((s = mp_strtab_init(&v->strs, (uint32_t)(n + n / 4 + 64), bytes + bytes / 4 + 64, err)))
        return s;
    v->tok_sid = mp_calloc(n, sizeof *v->tok_sid);
    v->type = mp_calloc(n, 1);
    v->attr = mp_calloc(n, 1);
    v->score = mp_calloc(n, sizeof *v->score);
    if (!v->tok_sid || !v->type || !v->attr || !v->score)
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory for %llu tokens",
                          mp_gguf_path(g), (unsigned long long)n);
    for (uint64_t j = 0; j < n; j++) {
        const char *str;
        size_t len;
        mp_gguf_get_str(g, kt, j, &str, &len, NULL); /* checked above */
        int32_t sid = mp_strtab_intern(&v->strs, str, len);
        if (sid < 0)
            return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory for token texts",
                              mp_gguf_path(g));
        v->tok_sid[j] = sid;
        int64_t t = MP_TOKEN_TYPE_NORMAL;
        if (kty >= 0 && (s = mp_gguf_get_int(g, kty, j, &t, err))) return s;
        if (t < 0 || t >= MP_TOKEN_TYPE_COUNT) t = MP_TOKEN_TYPE_UNDEFINED; /* as llama.cpp */
        v->type[j] = (uint8_t)t;
        v->attr[j] = k_attr_of_type[t];
        double sc = 0;
        if (ksc >= 0 && (s = mp_gguf_get_float(g, ksc, j, &sc, err))) return s;
        v->score[j] = (float)sc;
    }
    return MP_OK;
}

/* Interns the parts and result of every merge and fills the pair table. */
static mp_status load_merges(mp_vocab *v, const mp_gguf *g, mp_err *err) {
    int64_t km;
    mp_status s = find_array(g, KEY_MERGES, MP_GGUF_STRING, 0, true, &km, err);
    if (s) return s;
    uint64_t n = mp_gguf_arr_len(g, km);
    if (n > INT32_MAX)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: %s has %llu entries, more than ranks can "
                          "hold", mp_gguf_path(g), KEY_MERGES, (unsigned long long)n);
    if ((s = mp_merges_init(&v->merges, (size_t)n, err))) return s;
    char *cat = NULL; /* left + right, grown as needed */
    size_t cat_cap = 0;
    for (uint64_t j = 0; j < n; j++) {
        const char *str;
        size_t len;
        if ((s = mp_gguf_get_str(g, km, j, &str, &len, err))) goto done;
        /* llama.cpp: word.find(' ', 1); an entry without one can never match */
        const char *sp = len > 1 ? memchr(str + 1, ' ', len - 1) : NULL;
        if (!sp) continue;
        size_t nl = (size_t)(sp - str), nr = len - nl - 1;
        if (nl + nr > cat_cap) {
            size_t cap = (nl + nr) * 2 + 64;
            char *c = mp_realloc(cat, cap);
            if (!c) {
                s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", mp_gguf_path(g));
                goto done;
            }
            cat = c;
            cat_cap = cap;
        }
        memcpy(cat, str, nl);
        memcpy(cat + nl, sp + 1, nr);
        int32_t l = mp_strtab_intern(&v->strs, str, nl);
        int32_t r = l < 0 ? -1 : mp_strtab_intern(&v->strs, sp + 1, nr);
        int32_t res = r < 0 ? -1 : mp_strtab_intern(&v->strs, cat, nl + nr);
        if (res < 0) {
            s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory for merge strings",
                           mp_gguf_path(g));
            goto done;
        }
        mp_merges_add(&v->merges, l, r, (int32_t)j, res);
    }
done:
    mp_free(cat);
    return s;
}

/* sid -> token (the last id of a repeated text wins, as llama.cpp's map
 * assignment does), one-byte strings, and byte-fallback tokens. */
static mp_status index_strings(mp_vocab *v, mp_err *err) {
    v->sid_tok = mp_calloc(v->strs.n, sizeof *v->sid_tok);
    if (!v->sid_tok) return mp_err_set(err, MP_ERR_NOMEM, "vocabulary: out of memory");
    for (uint32_t i = 0; i < v->strs.n; i++) v->sid_tok[i] = MP_TOKEN_NULL;
    for (int32_t id = 0; id < v->n_tokens; id++) v->sid_tok[v->tok_sid[id]] = id;
    for (int c = 0; c < 128; c++) {
        char ch = (char)c;
        v->sid_ascii[c] = c == ' ' ? mp_strtab_find(&v->strs, k_space_mark, 3)
                                   : mp_strtab_find(&v->strs, &ch, 1);
    }
    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        char name[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
        v->byte_tok[b] = mp_vocab_find(v, name, 6);
    }
    return MP_OK;
}

/* Parses "<0xHH>" (either case of hex digit); -1 when text is not one. */
static int parse_byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* The rendered text of every token (what llama.cpp's token_to_piece gives
 * with special = true), in one block. */
static mp_status build_pieces(mp_vocab *v, mp_err *err) {
    size_t total = 0;
    for (int32_t id = 0; id < v->n_tokens; id++) total += v->strs.len[v->tok_sid[id]];
    v->piece = mp_malloc(total + 1);
    v->piece_off = mp_calloc((size_t)v->n_tokens + 1, sizeof *v->piece_off);
    if (!v->piece || !v->piece_off)
        return mp_err_set(err, MP_ERR_NOMEM, "vocabulary: out of memory for pieces");
    size_t o = 0;
    for (int32_t id = 0; id < v->n_tokens; id++) {
        size_t n;
        const char *t = mp_vocab_text(v, id, &n);
        uint8_t a = v->attr[id];
        v->piece_off[id] = (uint32_t)o;
        int byte;
        if (a & (MP_ATTR_UNKNOWN | MP_ATTR_CONTROL | MP_ATTR_USER_DEFINED)) {
            memcpy(v->piece + o, t, n);
            o += n;
        } else if (a & MP_ATTR_NORMAL) {
            for (size_t i = 0; i < n;) {
                if (i + 3 <= n && !memcmp(t + i, k_space_mark, 3)) {
                    v->piece[o++] = ' ';
                    i += 3;
                } else {
                    v->piece[o++] = t[i++];
                }
            }
        } else if ((a & MP_ATTR_BYTE) && (byte = parse_byte_token(t, n)) >= 0) {
            v->piece[o++] = (char)byte;
        } else if (a & MP_ATTR_BYTE) {
            memcpy(v->piece + o, t, n); /* a BYTE token that is not <0xHH>: its text */
            o += n;
        }
        if (o - v->piece_off[id] > v->max_piece) v->max_piece = o - v->piece_off[id];
    }
    v->piece_off[v->n_tokens] = (uint32_t)o;
    return MP_OK;
}

/* Texts that end generation, from llama.cpp's list (the entries that apply
 * to the vocabularies we read; "</s>" is left out, as llama.cpp removes it
 * from Gemma 4's set). */
static const char *const k_eog_texts[] = {
    "<eos>", "<turn|>", "<|tool_response>", "<end_of_turn>", "<|im_end|>",
    "<|endoftext|>", "<|eot_id|>", "<|eom_id|>",
};

static int cmp_token(const void *a, const void *b) {
    mp_token x = *(const mp_token *)a, y = *(const mp_token *)b;
    return (x > y) - (x < y);
}

static mp_status build_eog(mp_vocab *v, mp_err *err) {
    v->eog = mp_calloc(MP_ARRAY_LEN(k_eog_texts) + 1, sizeof *v->eog);
    if (!v->eog) return mp_err_set(err, MP_ERR_NOMEM, "vocabulary: out of memory");
    for (size_t i = 0; i < MP_ARRAY_LEN(k_eog_texts); i++) {
        mp_token id = mp_vocab_find(v, k_eog_texts[i], strlen(k_eog_texts[i]));
        if (id == MP_TOKEN_NULL) continue;
        v->attr[id] |= MP_ATTR_CONTROL; /* llama.cpp: an EOG token is a control token */
        v->eog[v->n_eog++] = id;
    }
    mp_token eos = v->sp.eos;
    bool have = false;
    for (size_t i = 0; i < v->n_eog; i++) have |= v->eog[i] == eos;
    if (eos != MP_TOKEN_NULL && !have) v->eog[v->n_eog++] = eos;
    qsort(v->eog, v->n_eog, sizeof *v->eog, cmp_token);
    size_t k = 0; /* two texts can name one id */
    for (size_t i = 0; i < v->n_eog; i++)
        if (!k || v->eog[k - 1] != v->eog[i]) v->eog[k++] = v->eog[i];
    v->n_eog = k;
    return MP_OK;
}

static mp_status load_specials(mp_vocab *v, const mp_gguf *g, mp_err *err) {
    v->sp.bos = v->sp.eos = v->sp.unk = v->sp.pad = MP_TOKEN_NULL;
    mp_status s;
    if ((s = read_token_id(g, "tokenizer.ggml.bos_token_id", v->n_tokens, &v->sp.bos, err)) ||
        (s = read_token_id(g, "tokenizer.ggml.eos_token_id", v->n_tokens, &v->sp.eos, err)) ||
        (s = read_token_id(g, "tokenizer.ggml.unknown_token_id", v->n_tokens, &v->sp.unk, err)) ||
        (s = read_token_id(g, "tokenizer.ggml.padding_token_id", v->n_tokens, &v->sp.pad, err)))
        return s;
    bool add_bos = true;
    int64_t i = mp_gguf_find_key(g, KEY_ADD_BOS);
    if (i >= 0 && (s = mp_gguf_get_bool(g, i, 0, &add_bos, err))) return s;
    /* llama.cpp forces add_bos for Gemma 4 (PR 21500): its files may say false */
    if (v->kind == MP_VOCAB_SPM_BPE) add_bos = true;
    if (add_bos && v->sp.bos == MP_TOKEN_NULL)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: prompts start with BOS but "
                          "tokenizer.ggml.bos_token_id is missing", mp_gguf_path(g));
    v->sp.add_bos = add_bos;
    i = mp_gguf_find_key(g, KEY_TEMPLATE);
    if (i >= 0) {
        const char *str;
        size_t n;
        if ((s = mp_gguf_get_str(g, i, 0, &str, &n, err))) return s;
        if (!(v->chat_template = mp_strndup(str, n)))
            return mp_err_set(err, MP_ERR_NOMEM, "vocabulary: out of memory");
    }
    return MP_OK;
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */
/* ------------------------------------------------------------------------ */

mp_status mp_vocab_load(mp_vocab **out, const mp_gguf *g, mp_err *err) {
    mp_vocab *v = mp_calloc(1, sizeof *v);
    if (!v) return mp_err_set(err, MP_ERR_NOMEM, "vocabulary: out of memory");
    mp_status s;
    if ((s = read_kind(g, &v->kind, err)) || (s = load_tokens(v, g, err))) goto fail;
    switch (v->kind) {
    case MP_VOCAB_SPM_BPE:
        if (!(s = load_merges(v, g, err)) && !mp_spm_bpe_prepare(v))
            s = mp_err_set(err, MP_ERR_NOMEM, "vocabulary: out of memory");
        break;
    default: s = mp_err_set(err, MP_ERR_UNSUPPORTED, "vocabulary kind %s",
                            mp_vocab_kind_name(v->kind));
    }
    if (s || (s = index_strings(v, err)) || (s = load_specials(v, g, err)) ||
        (s = build_eog(v, err)) || (s = build_pieces(v, err)) ||
        (s = mp_special_build(v, err)))
        goto fail;
    *out = v;
    return MP_OK;
fail:
    mp_vocab_free(v);
    return s;
}

mp_status mp_vocab_open(mp_vocab **out, const char *path, mp_err *err) {
    mp_gguf *g;
    mp_status s = mp_gguf_open(&g, path, err);
    if (s) return s;
    s = mp_vocab_load(out, g, err);
    mp_gguf_free(g);
    return s;
}

void mp_vocab_free(mp_vocab *v) {
    if (!v) return;
    mp_strtab_free(&v->strs);
    mp_merges_free(&v->merges);
    mp_free(v->nosplit);
    mp_special_free(&v->special);
    mp_free(v->tok_sid);
    mp_free(v->sid_tok);
    mp_free(v->type);
    mp_free(v->attr);
    mp_free(v->score);
    mp_free(v->piece);
    mp_free(v->piece_off);
    mp_free(v->eog);
    mp_free(v->chat_template);
    mp_free(v);
}

mp_vocab_kind mp_vocab_get_kind(const mp_vocab *v) { return v->kind; }
int32_t mp_vocab_n_tokens(const mp_vocab *v) { return v->n_tokens; }
const mp_vocab_special *mp_vocab_specials(const mp_vocab *v) { return &v->sp; }
const char *mp_vocab_chat_template(const mp_vocab *v) { return v->chat_template; }

const char *mp_vocab_text(const mp_vocab *v, mp_token id, size_t *len) {
    if (id < 0 || id >= v->n_tokens) return NULL;
    int32_t sid = v->tok_sid[id];
    *len = v->strs.len[sid];
    return mp_strtab_str(&v->strs, sid);
}

mp_token_type mp_vocab_token_type(const mp_vocab *v, mp_token id) {
    return id < 0 || id >= v->n_tokens ? MP_TOKEN_TYPE_UNDEFINED : (mp_token_type)v->type[id];
}

mp_token mp_vocab_find(const mp_vocab *v, const char *text, size_t len) {
    int32_t sid = mp_strtab_find(&v->strs, text, len);
    return sid < 0 ? MP_TOKEN_NULL : v->sid_tok[sid];
}

bool mp_vocab_is_eog(const mp_vocab *v, mp_token id) {
    for (size_t i = 0; i < v->n_eog; i++)
        if (v->eog[i] == id) return true;
    return false;
}

size_t mp_vocab_eog_ids(const mp_vocab *v, const mp_token **ids) {
    *ids = v->eog;
    return v->n_eog;
}

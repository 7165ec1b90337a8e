/* encode.c — mp_tokenize: BOS, special tokens, then the vocabulary's own
 * algorithm on each raw fragment. The switch on the vocabulary kind is where
 * a second algorithm (GPT-2 byte-level BPE) plugs in; everything around it
 * (special-token splitting, BOS) is shared, as in llama.cpp. */
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "util/util.h"

/* Offsets inside a fragment are 32-bit (spm_bpe.c's symbols). */
#define MP_TOKENIZE_MAX_BYTES ((size_t)1 << 31)

mp_status mp_tokenize(const mp_vocab *v, const char *text, size_t len, mp_tokenize_params p,
                      mp_token **ids, size_t *n_ids, mp_err *err) {
    if (len && !text) return mp_err_set(err, MP_ERR_ARG, "tokenize: text is NULL");
    if (len > MP_TOKENIZE_MAX_BYTES)
        return mp_err_set(err, MP_ERR_ARG, "tokenize: %zu bytes of text is more than the "
                          "%zu bytes one call takes", len, MP_TOKENIZE_MAX_BYTES);
    mp_tokbuf out = {0};
    mp_fragment *frag = NULL;
    size_t n_frag = 0;
    mp_bpe_scratch *scratch = NULL;
    mp_status s = MP_OK;
    /* a result of at least one element, so *ids is never NULL */
    if (!mp_tokbuf_push(&out, 0)) goto nomem;
    out.n = 0;
    if (p.add_bos && v->sp.bos != MP_TOKEN_NULL && !mp_tokbuf_push(&out, v->sp.bos)) goto nomem;
    if (len && (s = mp_special_split(v, text, len, p.parse_special, &frag, &n_frag, err)))
        goto fail;
    if (v->kind == MP_VOCAB_SPM_BPE && !(scratch = mp_bpe_scratch_new(len))) goto nomem;
    for (size_t i = 0; i < n_frag; i++) {
        const mp_fragment *f = &frag[i];
        if (f->token != MP_TOKEN_NULL) {
            if (!mp_tokbuf_push(&out, f->token)) goto nomem;
            continue;
        }
        switch (v->kind) {
        case MP_VOCAB_SPM_BPE:
            if (!mp_spm_bpe_encode(v, scratch, text + f->start, f->len, &out)) goto nomem;
            break;
        default:
            s = mp_err_set(err, MP_ERR_UNSUPPORTED, "tokenize: vocabulary kind %s",
                           mp_vocab_kind_name(v->kind));
            goto fail;
        }
    }
    mp_free(frag);
    mp_bpe_scratch_free(scratch);
    *ids = out.ids;
    *n_ids = out.n;
    return MP_OK;
nomem:
    s = mp_err_set(err, MP_ERR_NOMEM, "tokenize: out of memory (%zu bytes of text)", len);
fail:
    mp_free(frag);
    mp_bpe_scratch_free(scratch);
    mp_free(out.ids);
    return s;
}

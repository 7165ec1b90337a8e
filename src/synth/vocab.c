/* vocab.c — vocabulary-only GGUF files: general.architecture, the <arch>.*
 * hyper-parameters and every tokenizer.* key of a model, no tensors. synth
 * copies the tokenizer.* keys of such a file into the models it writes; the
 * hyper-parameters travel along so the file says where it came from.
 * KV pairs are copied raw, byte for byte, in the source's order. */
#include "util/util.h"

mp_status mp_vocab_extract(const mp_gguf *src, const char *path, bool overwrite, mp_err *err) {
    if (!src || !path) return mp_err_set(err, MP_ERR_ARG, "vocab: NULL argument");
    const char *in = mp_gguf_path(src);
    char *arch = NULL;
    mp_status s = mp_gguf_key_strdup(src, "general.architecture", &arch, err);
    if (s) return s;
    mp_gguf_writer *w = NULL;
    if (mp_gguf_find_key(src, "tokenizer.ggml.tokens") < 0) {
        s = mp_err_set(err, MP_ERR_NOT_FOUND, "%s: no tokenizer.ggml.tokens key: no vocabulary",
                       in);
        goto fail;
    }
    if (mp_file_same(in, path)) {
        s = mp_err_set(err, MP_ERR_ARG, "%s: output is the input file", path);
        goto fail;
    }
    if ((s = mp_gguf_writer_open(&w, path, overwrite, err)) ||
        (s = mp_gguf_writer_kv_str(w, "general.architecture", arch, err)))
        goto fail;
    size_t alen = strlen(arch);
    /* hyper-parameters first, then the tokenizer, as converters order them */
    for (int pass = 0; pass < 2; pass++) {
        for (int64_t i = 0; i < mp_gguf_n_kv(src); i++) {
            const char *k = mp_gguf_key(src, i);
            bool take = pass == 0 ? !strncmp(k, arch, alen) && k[alen] == '.'
                                  : !strncmp(k, "tokenizer.", 10);
            if (take && (s = mp_gguf_writer_kv_copy(w, src, i, err))) goto fail;
        }
    }
    s = mp_gguf_writer_finish(w, err);
fail:
    mp_gguf_writer_free(w);
    mp_free(arch);
    return s;
}

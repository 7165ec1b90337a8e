/* model.c — mp_model: a GGUF bound by its architecture descriptor (arch.h)
 * plus what every context of it needs and can share: the largest per-layer
 * sizes (for scratch) and the RoPE frequencies of each layer. Read-only once
 * built. Weights stay in the mapping. */
#include <inttypes.h>
#include <math.h>

#include "engine/engine.h"

#define MAX(a, b) ((a) > (b) ? (a) : (b))

static void note_rows(int64_t *max_n_in, const mp_weight *w) {
    if (mp_weight_present(w)) *max_n_in = MAX(*max_n_in, w->ne[0]);
}

static void compute_sizes(mp_model *m) {
    const mp_hparams *hp = m->hp;
    m->max_n_in = hp->n_embd;
    note_rows(&m->max_n_in, &m->am->output);
    for (int64_t l = 0; l < hp->n_layer; l++) {
        const mp_layer_hparams *lh = &hp->layers[l];
        const mp_layer_weights *w = &m->am->layers[l];
        m->max_q = MAX(m->max_q, lh->n_head * lh->head_dim);
        m->max_kv = MAX(m->max_kv, lh->n_head_kv * lh->head_dim);
        m->max_ff = MAX(m->max_ff, lh->n_ff);
        m->max_ff_exp = MAX(m->max_ff_exp, lh->n_ff_exp);
        m->max_expert = MAX(m->max_expert, lh->n_expert);
        m->max_rot = MAX(m->max_rot, lh->n_rot);
        const mp_weight *all[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->ffn_gate, &w->ffn_up,
                                  &w->ffn_down, &w->router, &w->gate_up_exps, &w->gate_exps,
                                  &w->up_exps, &w->down_exps};
        for (size_t i = 0; i < MP_ARRAY_LEN(all); i++) note_rows(&m->max_n_in, all[i]);
    }
}

/* theta_j(p) = p * base^(-2j/n_rot) / freq_factor[j] (spec 4), kept in
 * double so the angle is exact to float precision at any position. */
static mp_status compute_rope(mp_model *m, mp_err *err) {
    const mp_hparams *hp = m->hp;
    int64_t total = 0;
    m->inv_freq_off = mp_calloc((size_t)hp->n_layer, sizeof *m->inv_freq_off);
    if (!m->inv_freq_off) return mp_err_set(err, MP_ERR_NOMEM, "engine: out of memory");
    for (int64_t l = 0; l < hp->n_layer; l++) {
        m->inv_freq_off[l] = total;
        total += hp->layers[l].n_rot / 2;
    }
    m->inv_freq = mp_calloc(total > 0 ? (size_t)total : 1, sizeof *m->inv_freq);
    if (!m->inv_freq) return mp_err_set(err, MP_ERR_NOMEM, "engine: out of memory");
    for (int64_t l = 0; l < hp->n_layer; l++) {
        const mp_layer_hparams *lh = &hp->layers[l];
        const float *ff = m->am->layers[l].rope_freqs;
        double *f = m->inv_freq + m->inv_freq_off[l];
        for (int64_t j = 0; j < lh->n_rot / 2; j++) {
            f[j] = pow((double)lh->rope_base, -2.0 * (double)j / (double)lh->n_rot);
            if (ff) f[j] /= (double)ff[j];
        }
    }
    return MP_OK;
}

mp_status mp_model_from_gguf(mp_model **out, const mp_gguf *g, mp_err *err) {
    mp_model *m = mp_calloc(1, sizeof *m);
    if (!m) return mp_err_set(err, MP_ERR_NOMEM, "engine: out of memory");
    mp_status s = mp_arch_model_load(g, &m->am, err);
    if (s) {
        mp_free(m);
        return s;
    }
    m->hp = &m->am->hp;
    compute_sizes(m);
    if ((s = compute_rope(m, err))) {
        mp_model_free(m);
        return s;
    }
    *out = m;
    return MP_OK;
}

mp_status mp_model_load(mp_model **out, const char *path, mp_err *err) {
    mp_gguf *g;
    mp_status s = mp_gguf_open(&g, path, err);
    if (s) return s;
    mp_model *m;
    if ((s = mp_model_from_gguf(&m, g, err))) {
        mp_gguf_free(g);
        return s;
    }
    m->owned = g;
    *out = m;
    return MP_OK;
}

void mp_model_free(mp_model *m) {
    if (!m) return;
    mp_arch_model_free(m->am);
    mp_free(m->inv_freq);
    mp_free(m->inv_freq_off);
    mp_gguf_free(m->owned);
    mp_free(m);
}

const char *mp_model_arch(const mp_model *m) {
    return m->am->desc->name;
}
int64_t mp_model_n_vocab(const mp_model *m) {
    return m->hp->n_vocab;
}
int64_t mp_model_n_embd(const mp_model *m) {
    return m->hp->n_embd;
}
int64_t mp_model_n_layer(const mp_model *m) {
    return m->hp->n_layer;
}
int64_t mp_model_n_expert_used(const mp_model *m) {
    return m->hp->n_expert_used;
}
int64_t mp_model_n_expert(const mp_model *m, int64_t layer) {
    return layer >= 0 && layer < m->hp->n_layer ? m->hp->layers[layer].n_expert : 0;
}

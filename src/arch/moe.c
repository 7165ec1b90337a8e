/* moe.c — finds routers and expert tensors by name and shape (see arch.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "arch/arch.h"

int64_t mp_tensor_layer(const char *name, const char **rest) {
    if (strncmp(name, "blk.", 4) != 0) return -1;
    const char *p = name + 4;
    if (*p < '0' || *p > '9') return -1;
    int64_t n = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > 1000000) return -1; /* no model has a million layers */
        n = n * 10 + (*p - '0');
    }
    if (*p != '.') return -1;
    if (rest) *rest = p + 1;
    return n;
}

static bool is_expert_tensor(const char *rest) {
    return strstr(rest, "_exps") != NULL;
}

static int64_t key_int(const mp_gguf *g, const char *arch, const char *suffix) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint64_t v;
    if (mp_gguf_key_uint(g, key, &v, NULL) != MP_OK || v > (uint64_t)INT32_MAX) return 0;
    return (int64_t)v;
}

mp_status mp_moe_scan(const mp_gguf *g, mp_moe_info **out, mp_err *err) {
    const char *path = mp_gguf_path(g);
    mp_moe_info *m = mp_calloc(1, sizeof *m);
    if (!m) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
    mp_status s = MP_OK;
    mp_err aerr = {0};
    mp_status as = mp_gguf_key_strdup(g, "general.architecture", &m->arch, &aerr);
    if (as == MP_ERR_NOMEM || (as != MP_OK && !(m->arch = mp_strdup("")))) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    m->n_layer = key_int(g, m->arch, "block_count");
    m->n_expert = key_int(g, m->arch, "expert_count");
    m->n_expert_used = key_int(g, m->arch, "expert_used_count");
    int64_t nt = mp_gguf_n_tensors(g);
    for (int64_t i = 0; i < nt; i++) {
        int64_t l = mp_tensor_layer(mp_gguf_tensor_at(g, i)->name, NULL);
        if (l >= m->n_layer) m->n_layer = l + 1;
    }
    if (m->n_layer > 0 && !(m->layers = mp_calloc((size_t)m->n_layer, sizeof *m->layers))) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    /* routers first: they define each layer's expert count */
    for (int64_t i = 0; i < nt; i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(g, i);
        const char *rest;
        int64_t l = mp_tensor_layer(t->name, &rest);
        if (l < 0 || strcmp(rest, "ffn_gate_inp.weight") != 0) continue;
        if (t->n_dims != 2) {
            s = mp_err_set(err, MP_ERR_FORMAT, "%s: router '%s' has %" PRIu32
                           " dimensions, expected 2 {n_embd, n_expert}", path, t->name, t->n_dims);
            goto fail;
        }
        m->layers[l].router = t;
        m->layers[l].n_expert = t->ne[1];
    }
    for (int64_t i = 0; i < nt; i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(g, i);
        const char *rest;
        int64_t l = mp_tensor_layer(t->name, &rest);
        if (l < 0 || !is_expert_tensor(rest)) {
            if (l >= 0 && m->layers[l].router == t)
                m->bytes_router += t->nbytes;
            else
                m->bytes_other += t->nbytes;
            continue;
        }
        mp_moe_layer *L = &m->layers[l];
        int64_t ne_last = t->ne[t->n_dims - 1];
        if (L->n_expert == 0) L->n_expert = ne_last; /* expert tensors without a router */
        if (ne_last != L->n_expert) {
            s = mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s' has %" PRId64
                           " experts on its last axis but layer %" PRId64 " has %" PRId64,
                           path, t->name, ne_last, l, L->n_expert);
            goto fail;
        }
        if (L->n_exp_tensors == MP_MOE_MAX_EXP_TENSORS) {
            s = mp_err_set(err, MP_ERR_FORMAT, "%s: layer %" PRId64
                           " has more than %d expert tensors", path, l, MP_MOE_MAX_EXP_TENSORS);
            goto fail;
        }
        L->exp_tensors[L->n_exp_tensors++] = t;
        m->bytes_experts += t->nbytes;
    }
    m->uniform = true;
    int64_t first = -1;
    for (int64_t l = 0; l < m->n_layer; l++) {
        if (m->layers[l].n_expert == 0) continue;
        m->n_moe_layers++;
        if (first < 0) first = m->layers[l].n_expert;
        if (m->layers[l].n_expert != first) m->uniform = false;
    }
    *out = m;
    return MP_OK;
fail:
    mp_moe_info_free(m);
    return s;
}

void mp_moe_info_free(mp_moe_info *m) {
    if (!m) return;
    mp_free(m->arch);
    mp_free(m->layers);
    mp_free(m);
}

uint64_t mp_moe_bytes_keeping(const mp_moe_info *m, int64_t k) {
    uint64_t total = m->bytes_other;
    for (int64_t l = 0; l < m->n_layer; l++) {
        const mp_moe_layer *L = &m->layers[l];
        if (L->n_expert == 0) continue;
        int64_t keep = k < L->n_expert ? k : L->n_expert;
        for (int j = 0; j < L->n_exp_tensors; j++)
            total += L->exp_tensors[j]->nbytes / (uint64_t)L->n_expert * (uint64_t)keep;
        if (L->router) total += L->router->nbytes / (uint64_t)L->n_expert * (uint64_t)keep;
    }
    return total;
}

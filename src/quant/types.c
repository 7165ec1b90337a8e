/* types.c — the ggml tensor-type table: names, block sizes, bytes per block,
 * and whether this library can decode / encode each type. Ids are the on-disk
 * values of GGUF tensor infos; removed ids (4, 5, 31-33, 36-38) have no entry.
 * Facts from the shared docs, gemma4-gguf-spec.md section 2.1. */
#include <inttypes.h>
#include <math.h>

#include "quant/quant.h"
#include "util/util.h"

/* can_dequant / can_quant must match the dispatch in dequant_ref.c and
 * quant_ref.c; tests/quant checks both directions. */
static const mp_type_traits type_table[MP_TYPE_COUNT] = {
    [MP_TYPE_F32] = {"F32", 1, 4, true, true},
    [MP_TYPE_F16] = {"F16", 1, 2, true, true},
    [MP_TYPE_Q4_0] = {"Q4_0", MP_QK4_0, MP_Q4_0_BYTES, true, false},
    [MP_TYPE_Q4_1] = {"Q4_1", MP_QK4_0, MP_Q4_1_BYTES, true, false},
    [MP_TYPE_Q5_0] = {"Q5_0", MP_QK4_0, MP_Q5_0_BYTES, true, false},
    [MP_TYPE_Q5_1] = {"Q5_1", MP_QK4_0, MP_Q5_1_BYTES, true, false},
    [MP_TYPE_Q8_0] = {"Q8_0", MP_QK4_0, MP_Q8_0_BYTES, true, true},
    [MP_TYPE_Q8_1] = {"Q8_1", MP_QK4_0, MP_Q8_1_BYTES, true, false},
    [MP_TYPE_Q2_K] = {"Q2_K", MP_QK_K, MP_Q2_K_BYTES, true, false},
    [MP_TYPE_Q3_K] = {"Q3_K", MP_QK_K, MP_Q3_K_BYTES, true, false},
    [MP_TYPE_Q4_K] = {"Q4_K", MP_QK_K, MP_Q4_K_BYTES, true, false},
    [MP_TYPE_Q5_K] = {"Q5_K", MP_QK_K, MP_Q5_K_BYTES, true, false},
    [MP_TYPE_Q6_K] = {"Q6_K", MP_QK_K, MP_Q6_K_BYTES, true, false},
    [MP_TYPE_Q8_K] = {"Q8_K", MP_QK_K, MP_Q8_K_BYTES, true, false},
    [MP_TYPE_IQ2_XXS] = {"IQ2_XXS", MP_QK_K, MP_IQ2_XXS_BYTES, false, false},
    [MP_TYPE_IQ2_XS] = {"IQ2_XS", MP_QK_K, MP_IQ2_XS_BYTES, false, false},
    [MP_TYPE_IQ3_XXS] = {"IQ3_XXS", MP_QK_K, MP_IQ3_XXS_BYTES, false, false},
    [MP_TYPE_IQ1_S] = {"IQ1_S", MP_QK_K, MP_IQ1_S_BYTES, false, false},
    [MP_TYPE_IQ4_NL] = {"IQ4_NL", MP_QK4_NL, MP_IQ4_NL_BYTES, true, false},
    [MP_TYPE_IQ3_S] = {"IQ3_S", MP_QK_K, MP_IQ3_S_BYTES, false, false},
    [MP_TYPE_IQ2_S] = {"IQ2_S", MP_QK_K, MP_IQ2_S_BYTES, false, false},
    [MP_TYPE_IQ4_XS] = {"IQ4_XS", MP_QK_K, MP_IQ4_XS_BYTES, true, false},
    [MP_TYPE_I8] = {"I8", 1, 1, true, false},
    [MP_TYPE_I16] = {"I16", 1, 2, true, false},
    [MP_TYPE_I32] = {"I32", 1, 4, true, false},
    [MP_TYPE_I64] = {"I64", 1, 8, true, false},
    [MP_TYPE_F64] = {"F64", 1, 8, true, false},
    [MP_TYPE_IQ1_M] = {"IQ1_M", MP_QK_K, MP_IQ1_M_BYTES, false, false},
    [MP_TYPE_BF16] = {"BF16", 1, 2, true, true},
    [MP_TYPE_TQ1_0] = {"TQ1_0", MP_QK_K, MP_TQ1_0_BYTES, true, false},
    [MP_TYPE_TQ2_0] = {"TQ2_0", MP_QK_K, MP_TQ2_0_BYTES, true, false},
    [MP_TYPE_MXFP4] = {"MXFP4", MP_QK_MXFP4, MP_MXFP4_BYTES, true, false},
    [MP_TYPE_NVFP4] = {"NVFP4", MP_QK_NVFP4, MP_NVFP4_BYTES, true, false},
    [MP_TYPE_Q1_0] = {"Q1_0", MP_QK1_0, MP_Q1_0_BYTES, true, false},
    [MP_TYPE_Q2_0] = {"Q2_0", MP_QK2_0, MP_Q2_0_BYTES, true, false},
};

const mp_type_traits *mp_type_info(int id) {
    if (id < 0 || id >= MP_TYPE_COUNT) return NULL;
    const mp_type_traits *t = &type_table[id];
    return t->name ? t : NULL; /* removed ids are the zero-filled gaps */
}

const char *mp_type_name(int id) {
    const mp_type_traits *t = mp_type_info(id);
    return t ? t->name : "?";
}

/* ASCII-only case folding: type names are ASCII and the locale must not matter. */
static int ascii_lower(int c) {
    return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

static bool name_equal_nocase(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (ascii_lower((unsigned char)*a) != ascii_lower((unsigned char)*b)) return false;
    return *a == *b;
}

int mp_type_from_name(const char *name) {
    if (!name) return -1;
    for (int id = 0; id < MP_TYPE_COUNT; id++) {
        const mp_type_traits *t = mp_type_info(id);
        if (t && name_equal_nocase(t->name, name)) return id;
    }
    return -1;
}

mp_status mp_type_row_bytes(int type, int64_t n, size_t *out, mp_err *err) {
    const mp_type_traits *t = mp_type_info(type);
    if (!t) return mp_err_set(err, MP_ERR_ARG, "tensor type id %d is not a valid ggml type", type);
    if (n < 0)
        return mp_err_set(err, MP_ERR_ARG, "tensor type %s: negative element count %" PRId64,
                          t->name, n);
    if (n % t->blck_size != 0)
        return mp_err_set(err, MP_ERR_ARG,
                          "tensor type %s: %" PRId64 " elements is not a multiple of the "
                          "block size %" PRId64, t->name, n, t->blck_size);
    uint64_t bytes;
    if (!mp_mul_u64((uint64_t)(n / t->blck_size), t->type_size, &bytes) ||
        (uint64_t)(size_t)bytes != bytes) /* 32-bit size_t */
        return mp_err_set(err, MP_ERR_ARG,
                          "tensor type %s: a row of %" PRId64 " elements overflows size_t",
                          t->name, n);
    *out = (size_t)bytes;
    return MP_OK;
}

mp_status mp_check_finite(int type, const void *data, int64_t n, const char *path,
                          const char *tensor, mp_err *err) {
    if (type != MP_TYPE_F32 && type != MP_TYPE_F16 && type != MP_TYPE_BF16) return MP_OK;
    const size_t es = type == MP_TYPE_F32 ? 4 : 2;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *p = (const uint8_t *)data + (size_t)i * es;
        const float x = type == MP_TYPE_F32   ? mp_load_f32(p)
                        : type == MP_TYPE_F16 ? mp_f16_to_f32(mp_load_u16(p))
                                              : mp_bf16_to_f32(mp_load_u16(p));
        if (!isfinite(x))
            return mp_err_set(err, MP_ERR_CHECK,
                              "%s: tensor '%s': element %" PRId64 " is not finite (%g)", path,
                              tensor, i, x);
    }
    return MP_OK;
}

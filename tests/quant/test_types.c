/* test_types.c — the type table against the spec's summary table (section 2.1
 * of gemma4-gguf-spec.md, transcribed here independently of quant.h), name
 * lookups, and mp_type_row_bytes' argument checks. */
#include <stdint.h>

#include "testutil.h"

typedef struct expect_type {
    int id;
    const char *name;
    int64_t blck;
    size_t bytes;
} expect_type;

/* Spec 2.1, row by row. */
static const expect_type spec_table[] = {
    {0, "F32", 1, 4},         {1, "F16", 1, 2},        {2, "Q4_0", 32, 18},
    {3, "Q4_1", 32, 20},      {6, "Q5_0", 32, 22},     {7, "Q5_1", 32, 24},
    {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 36},     {10, "Q2_K", 256, 84},
    {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},  {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},  {16, "IQ2_XXS", 256, 66},
    {17, "IQ2_XS", 256, 74},  {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},
    {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110}, {22, "IQ2_S", 256, 82},
    {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},        {25, "I16", 1, 2},
    {26, "I32", 1, 4},        {27, "I64", 1, 8},       {28, "F64", 1, 8},
    {29, "IQ1_M", 256, 56},   {30, "BF16", 1, 2},      {34, "TQ1_0", 256, 54},
    {35, "TQ2_0", 256, 66},   {39, "MXFP4", 32, 17},   {40, "NVFP4", 64, 36},
    {41, "Q1_0", 128, 18},    {42, "Q2_0", 64, 18},
};

static const int removed_ids[] = {4, 5, 31, 32, 33, 36, 37, 38};

/* Types the brief requires to decode / encode (everything but IQ1/IQ2/IQ3
 * decodes; F32, F16, BF16, Q8_0 encode). */
static bool expect_dequant(int id) {
    switch (id) {
    case 16: case 17: case 18: case 19: case 21: case 22: case 29: return false;
    default: return true;
    }
}

static bool expect_quant(int id) {
    return id == 0 || id == 1 || id == 30 || id == 8;
}

static void check_table(void) {
    int n_valid = 0;
    for (size_t i = 0; i < sizeof spec_table / sizeof spec_table[0]; i++) {
        const expect_type *e = &spec_table[i];
        const mp_type_traits *t = mp_type_info(e->id);
        CHECK_MSG(t != NULL, "id %d", e->id);
        if (!t) continue;
        CHECK_MSG(strcmp(t->name, e->name) == 0, "id %d: name %s, expected %s", e->id, t->name,
                  e->name);
        CHECK_MSG(strcmp(mp_type_name(e->id), e->name) == 0, "id %d", e->id);
        CHECK_INT(e->blck, t->blck_size);
        CHECK_INT(e->bytes, t->type_size);
        CHECK_MSG(t->can_dequant == expect_dequant(e->id), "%s can_dequant", e->name);
        CHECK_MSG(t->can_quant == expect_quant(e->id), "%s can_quant", e->name);
    }
    for (int id = -5; id < MP_TYPE_COUNT + 5; id++)
        if (mp_type_info(id)) n_valid++;
    CHECK_INT(35, n_valid); /* 43 ids minus the 8 removed ones */
    CHECK_INT(sizeof spec_table / sizeof spec_table[0], n_valid);
    for (size_t i = 0; i < sizeof removed_ids / sizeof removed_ids[0]; i++) {
        CHECK_MSG(mp_type_info(removed_ids[i]) == NULL, "removed id %d", removed_ids[i]);
        CHECK(strcmp(mp_type_name(removed_ids[i]), "?") == 0);
    }
    CHECK(mp_type_info(-1) == NULL);
    CHECK(mp_type_info(MP_TYPE_COUNT) == NULL);
    CHECK(mp_type_info(1000) == NULL);
    CHECK(strcmp(mp_type_name(-1), "?") == 0);
    CHECK(strcmp(mp_type_name(43), "?") == 0);
}

static void check_names(void) {
    for (size_t i = 0; i < sizeof spec_table / sizeof spec_table[0]; i++) {
        const expect_type *e = &spec_table[i];
        char lower[16];
        size_t k = 0;
        for (; e->name[k] && k + 1 < sizeof lower; k++)
            lower[k] = (char)(e->name[k] >= 'A' && e->name[k] <= 'Z' ? e->name[k] + 32
                                                                     : e->name[k]);
        lower[k] = 0;
        CHECK_INT(e->id, mp_type_from_name(e->name));
        CHECK_INT(e->id, mp_type_from_name(lower));
    }
    CHECK_INT(MP_TYPE_Q8_0, mp_type_from_name("q8_0"));
    CHECK_INT(MP_TYPE_IQ4_XS, mp_type_from_name("Iq4_Xs"));
    CHECK_INT(MP_TYPE_MXFP4, mp_type_from_name("mxfp4"));
    CHECK_INT(-1, mp_type_from_name("Q4_2")); /* removed, never named */
    CHECK_INT(-1, mp_type_from_name("Q8_"));  /* prefix only */
    CHECK_INT(-1, mp_type_from_name("Q8_00"));
    CHECK_INT(-1, mp_type_from_name("F32 "));
    CHECK_INT(-1, mp_type_from_name(""));
    CHECK_INT(-1, mp_type_from_name("?"));
    CHECK_INT(-1, mp_type_from_name(NULL));
}

static void check_row_bytes(void) {
    mp_err err = {0};
    size_t out = 0;
    CHECK_STATUS(MP_OK, mp_type_row_bytes(MP_TYPE_F32, 10, &out, &err), &err);
    CHECK_INT(40, out);
    CHECK_STATUS(MP_OK, mp_type_row_bytes(MP_TYPE_Q4_K, 512, &out, &err), &err);
    CHECK_INT(288, out);
    CHECK_STATUS(MP_OK, mp_type_row_bytes(MP_TYPE_Q8_0, 32 * 37, &out, &err), &err);
    CHECK_INT(34 * 37, out);
    CHECK_STATUS(MP_OK, mp_type_row_bytes(MP_TYPE_NVFP4, 128, &out, &err), &err);
    CHECK_INT(72, out);
    CHECK_STATUS(MP_OK, mp_type_row_bytes(MP_TYPE_IQ2_XXS, 256, &out, &err), &err);
    CHECK_INT(66, out); /* sizes are known even where decoding is not */
    CHECK_STATUS(MP_OK, mp_type_row_bytes(MP_TYPE_Q6_K, 0, &out, &err), &err);
    CHECK_INT(0, out);

    /* failures leave *out alone and name the problem */
    out = 12345;
    CHECK_STATUS(MP_ERR_ARG, mp_type_row_bytes(MP_TYPE_Q4_K, 100, &out, &err), &err);
    CHECK(strstr(err.msg, "Q4_K") && strstr(err.msg, "100") && strstr(err.msg, "256"));
    CHECK_STATUS(MP_ERR_ARG, mp_type_row_bytes(MP_TYPE_Q8_0, 33, &out, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_type_row_bytes(MP_TYPE_F32, -1, &out, &err), &err);
    /* for 1-byte types a negative count would not even overflow */
    CHECK_STATUS(MP_ERR_ARG, mp_type_row_bytes(MP_TYPE_I8, -1, &out, &err), &err);
    CHECK(strstr(err.msg, "negative") != NULL);
    CHECK_STATUS(MP_ERR_ARG, mp_type_row_bytes(MP_TYPE_Q8_0, -32, &out, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_type_row_bytes(4, 32, &out, &err), &err);
    CHECK(strstr(err.msg, "4") != NULL);
    CHECK_STATUS(MP_ERR_ARG, mp_type_row_bytes(-1, 32, &out, &err), &err);
    CHECK_STATUS(MP_ERR_ARG, mp_type_row_bytes(MP_TYPE_COUNT, 32, &out, &err), &err);
    /* INT64_MAX elements of 8 bytes cannot be counted in a 64-bit size_t */
    CHECK_STATUS(MP_ERR_ARG, mp_type_row_bytes(MP_TYPE_F64, INT64_MAX, &out, &err), &err);
    CHECK(strstr(err.msg, "overflow") != NULL);
    CHECK_STATUS(MP_ERR_ARG, mp_type_row_bytes(MP_TYPE_F32, INT64_MAX / 2 + 1, &out, &err),
                 &err);
    CHECK_INT(12345, out);
    /* err is optional */
    CHECK_INT(MP_ERR_ARG, mp_type_row_bytes(MP_TYPE_Q4_0, 31, &out, NULL));
#if SIZE_MAX >= INT64_MAX
    /* the largest row that still fits: blocks * 1 byte = INT64_MAX for I8 */
    CHECK_STATUS(MP_OK, mp_type_row_bytes(MP_TYPE_I8, INT64_MAX, &out, &err), &err);
    CHECK(out == (size_t)INT64_MAX);
#endif
}

int main(void) {
    check_table();
    check_names();
    check_row_bytes();
    return mp_test_end("test_types");
}

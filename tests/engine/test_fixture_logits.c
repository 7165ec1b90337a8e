/* test_fixture_logits.c — the engine against llama.cpp on every variant of
 * tests/data/gemma4-tiny-a (16 tensor types, 3 prompts each).
 *
 * The rule is the fixtures README's: for each variant and prompt, compare all
 * positions' logits with the closer (by RMS) of logits.f32 (llama.cpp native)
 * and logits-exact.f32 (llama.cpp on the weights dequantized to F32):
 * RMS <= tolerance.rms, p99 of |diff| <= tolerance.p99 (both from
 * manifest.json), argmax agreement >= top1_agreement_min; and 16 greedy
 * tokens equal greedy.txt or greedy-exact.txt. F32 KV cache, as the
 * references used. Prints one table row per variant and prompt. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>

#include "testutil.h"

#define FIXTURE_DIR "gemma4-tiny-a"
#define N_PROMPTS 3
#define N_GREEDY 16
#define FIXTURE_N_CTX 512 /* the references ran with context 512 */
#define TEST_THREADS 2

typedef struct tol {
    double rms, p99, top1;
} tol;

typedef struct diff_stats {
    double rms, p99, max_abs, top1;
} diff_stats;

/* Rearranges a[0..n) so that a[k] holds the k-th smallest value, with no
 * larger value before it and no smaller one after (quickselect, middle
 * pivot): the percentile without sorting 10^5 values per prompt. */
static void select_kth(double *a, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        const double pivot = a[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) {
                double t = a[i];
                a[i++] = a[j];
                a[j--] = t;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return;
    }
}

static int64_t argmax_f(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* RMS, p99 (linear interpolation between order statistics, as numpy's
 * percentile), max |diff| and argmax agreement of two [n][V] arrays. */
static diff_stats compare(const float *a, const float *ref, int64_t n, int64_t V, double *tmp) {
    diff_stats d = {0};
    double ss = 0;
    int64_t agree = 0;
    for (int64_t i = 0; i < n * V; i++) {
        double e = fabs((double)a[i] - (double)ref[i]);
        tmp[i] = e;
        ss += e * e;
        if (e > d.max_abs) d.max_abs = e;
    }
    for (int64_t t = 0; t < n; t++) agree += argmax_f(a + t * V, V) == argmax_f(ref + t * V, V);
    const int64_t N = n * V;
    const double pos = 0.99 * (double)(N - 1);
    const int64_t lo = (int64_t)pos;
    select_kth(tmp, N, lo);
    double next = tmp[lo];
    for (int64_t i = lo + 1; i < N; i++)
        if (i == lo + 1 || tmp[i] < next) next = tmp[i];
    d.p99 = tmp[lo] + (pos - (double)lo) * (next - tmp[lo]);
    d.rms = sqrt(ss / (double)(n * V));
    d.top1 = (double)agree / (double)n;
    return d;
}

static float *read_f32(const char *path, int64_t want) {
    size_t len;
    float *f = mp_test_read_file(path, &len);
    if (f && len != (size_t)want * sizeof(float)) {
        fprintf(stderr, "%s: %zu bytes, expected %lld\n", path, len, (long long)want * 4);
        free(f);
        return NULL;
    }
    return f;
}

static bool get_tol(const cJSON *manifest, const char *variant, int prompt, tol *t) {
    char key[64];
    snprintf(key, sizeof key, "tiny-a-%s", variant);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(manifest, "variants"), key);
    const cJSON *p = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(v, "prompts"), prompt);
    const cJSON *tt = cJSON_GetObjectItemCaseSensitive(p, "tolerance");
    const cJSON *rms = cJSON_GetObjectItemCaseSensitive(tt, "rms");
    const cJSON *p99 = cJSON_GetObjectItemCaseSensitive(tt, "p99");
    const cJSON *top1 = cJSON_GetObjectItemCaseSensitive(tt, "top1_agreement_min");
    if (!cJSON_IsNumber(rms) || !cJSON_IsNumber(p99) || !cJSON_IsNumber(top1)) return false;
    *t = (tol){rms->valuedouble, p99->valuedouble, top1->valuedouble};
    return true;
}

/* Greedy continuation: argmax of the prompt's last logits, then one eval per
 * token. */
static void greedy(mp_context *ctx, const float *last, int64_t V, mp_token *out, float *buf) {
    memcpy(buf, last, (size_t)V * sizeof *buf);
    mp_err err = {0};
    for (int i = 0; i < N_GREEDY; i++) {
        out[i] = (mp_token)argmax_f(buf, V);
        if (i + 1 < N_GREEDY) {
            mp_status s = mp_context_eval(ctx, &out[i], 1, MP_LOGITS_LAST, buf, &err);
            CHECK_STATUS(MP_OK, s, &err);
            if (s) return;
        }
    }
}

static bool same_ids(const mp_token *a, const char *path) {
    mp_token ref[N_GREEDY + 1];
    if (mp_test_read_ids(path, ref, N_GREEDY + 1) != N_GREEDY) return false;
    return memcmp(a, ref, sizeof(mp_token) * N_GREEDY) == 0;
}

static void run_prompt(mp_context *ctx, const cJSON *manifest, const char *variant, int prompt,
                       int64_t V) {
    char dir[512], path[640];
    snprintf(path, sizeof path, "%s/tiny-a-%s.ref", FIXTURE_DIR, variant);
    mp_test_data(dir, sizeof dir, path);
    mp_token ids[FIXTURE_N_CTX];
    snprintf(path, sizeof path, "%s/prompt%d.tokens.txt", dir, prompt);
    int64_t n = mp_test_read_ids(path, ids, FIXTURE_N_CTX - N_GREEDY);
    CHECK_MSG(n > 0, "%s: no tokens", path);
    tol t;
    bool have_tol = get_tol(manifest, variant, prompt, &t);
    CHECK_MSG(have_tol, "manifest: no tolerance for %s prompt %d", variant, prompt);
    if (n <= 0 || !have_tol) return;
    float *logits = malloc((size_t)(n * V) * sizeof *logits);
    float *buf = malloc((size_t)V * sizeof *buf);
    double *tmp = malloc((size_t)(n * V) * sizeof *tmp);
    snprintf(path, sizeof path, "%s/prompt%d.logits.f32", dir, prompt);
    float *native = read_f32(path, n * V);
    snprintf(path, sizeof path, "%s/prompt%d.logits-exact.f32", dir, prompt);
    float *exact = read_f32(path, n * V); /* absent for F32: native is exact */
    CHECK_MSG(native != NULL, "%s/prompt%d.logits.f32 missing or wrong size", dir, prompt);
    mp_err err = {0};
    mp_context_truncate(ctx, 0);
    mp_status s = mp_context_eval(ctx, ids, n, MP_LOGITS_ALL, logits, &err);
    CHECK_STATUS(MP_OK, s, &err);
    if (!s && native) {
        diff_stats dn = compare(logits, native, n, V, tmp), d = dn;
        const char *which = "native";
        if (exact) {
            diff_stats de = compare(logits, exact, n, V, tmp);
            if (de.rms < dn.rms) {
                d = de;
                which = "exact";
            }
        }
        mp_token gen[N_GREEDY];
        greedy(ctx, logits + (n - 1) * V, V, gen, buf);
        snprintf(path, sizeof path, "%s/prompt%d.greedy.txt", dir, prompt);
        bool g_ok = same_ids(gen, path);
        snprintf(path, sizeof path, "%s/prompt%d.greedy-exact.txt", dir, prompt);
        g_ok = g_ok || same_ids(gen, path);
        printf("%-10s %d %4lld  %-6s %9.2e %9.2e %9.2e %9.2e %9.2e %6.1f%%  %s\n", variant,
               prompt, (long long)n, which, d.max_abs, d.rms, t.rms, d.p99, t.p99,
               100 * d.top1, g_ok ? "same" : "DIFFERENT");
        CHECK_MSG(d.rms <= t.rms, "%s prompt %d: RMS %.3g > %.3g", variant, prompt, d.rms,
                  t.rms);
        CHECK_MSG(d.p99 <= t.p99, "%s prompt %d: p99 %.3g > %.3g", variant, prompt, d.p99,
                  t.p99);
        CHECK_MSG(d.top1 >= t.top1, "%s prompt %d: argmax agreement %.3f < %.3f", variant,
                  prompt, d.top1, t.top1);
        CHECK_MSG(g_ok, "%s prompt %d: greedy tokens differ from both references", variant,
                  prompt);
    }
    free(native);
    free(exact);
    free(tmp);
    free(buf);
    free(logits);
}

int main(void) {
    char path[512];
    size_t len;
    char *json = mp_test_read_file(mp_test_data(path, sizeof path, FIXTURE_DIR "/manifest.json"),
                                   &len);
    cJSON *manifest = json ? cJSON_Parse(json) : NULL;
    free(json);
    CHECK_MSG(manifest != NULL, "cannot read %s", path);
    if (!manifest) return mp_test_end("test_fixture_logits");
    printf("%-10s %s %4s  %-6s %9s %9s %9s %9s %9s %7s  %s\n", "variant", "p", "n", "ref",
           "max-abs", "rms", "tol-rms", "p99", "tol-p99", "argmax", "greedy");
    for (const char *const *v = mp_test_tiny_variants; *v; v++) {
        char rel[128];
        snprintf(rel, sizeof rel, FIXTURE_DIR "/tiny-a-%s.gguf", *v);
        mp_err err = {0};
        mp_model *m = NULL;
        mp_status s = mp_model_load(&m, mp_test_data(path, sizeof path, rel), &err);
        CHECK_STATUS(MP_OK, s, &err);
        if (s) continue;
        mp_context_params p = mp_context_default_params();
        p.n_ctx = FIXTURE_N_CTX;
        p.n_threads = TEST_THREADS;
        p.kv_type = MP_KV_F32;
        mp_context *ctx = NULL;
        s = mp_context_init(&ctx, m, p, &err);
        CHECK_STATUS(MP_OK, s, &err);
        for (int i = 0; !s && i < N_PROMPTS; i++)
            run_prompt(ctx, manifest, *v, i, mp_model_n_vocab(m));
        mp_context_free(ctx);
        mp_model_free(m);
    }
    cJSON_Delete(manifest);
    return mp_test_end("test_fixture_logits");
}

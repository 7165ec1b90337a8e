/* cmd_bench.c — `moeprune bench MODEL [-p 512] [-n 128] [-r 5] [-t N] [--json]`:
 * prompt-processing (pp) and generation (tg) speed, measured the way
 * llama.cpp's llama-bench measures them (tools/llama-bench/llama-bench.cpp:
 * test_prompt, test_gen and the warmup/repetition loop), so the two tables
 * can be read side by side:
 *
 *   - one context per run, steps of 512 tokens (llama-bench's n_ubatch);
 *   - pp: the cache cleared, P tokens (BOS first when the vocabulary adds
 *     one, then random ids) in one eval with the last token's logits only;
 *   - tg: the cache cleared, N evals of one token each (BOS, then random ids);
 *   - one untimed warmup (the whole prompt for pp, one token for tg), then
 *     -r timed repetitions; tokens/s per repetition, reported as mean and
 *     sample standard deviation (llama-bench's avg_ts and stddev_ts).
 *
 * Unlike llama-bench the random ids are drawn before the clock starts, only
 * from NORMAL tokens (no control or byte tokens), with a fixed seed, so two
 * runs feed the same ids. Does not check what the model computes (`logits`
 * and the engine tests do). */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "arch/arch.h"
#include "cli/cli.h"

#define CMD "bench"

/* llama-bench's default n_ubatch: tokens per forward step. A longer prompt
 * is split into steps of this many tokens by mp_context_eval. */
#define BENCH_N_BATCH 512
/* The token ids are random but the same on every run (a run is repeatable). */
#define BENCH_SEED 0x6d6f6570u
/* Most tokens per test: the engine's context limit (CTX_MAX_N_CTX). */
#define BENCH_MAX_TOKENS (1 << 24)
#define BENCH_MAX_REPS 100000

static const char *const help =
    "usage: moeprune bench MODEL [-p 512] [-n 128] [-r 5] [-t N] [--json] [options]\n"
    "\n"
    "Speed of MODEL on this CPU, measured as llama.cpp's llama-bench measures it so\n"
    "the numbers compare: pp = a prompt of P random tokens in one eval from an empty\n"
    "cache (steps of 512 tokens); tg = N tokens generated one eval at a time from an\n"
    "empty cache. One untimed warmup, then R timed repetitions; tokens/s is\n"
    "reported as mean +/- sample standard deviation. Also prints the peak resident\n"
    "memory of the process and the KV cache size.\n"
    "\n"
    "  -p, --n-prompt P     prompt tokens for the pp test, 0 skips it (default 512)\n"
    "  -n, --n-gen N        generated tokens for the tg test, 0 skips it (default 128)\n"
    "  -r, --repetitions R  timed runs of each test (default 5)\n"
    "  -t, --threads N      worker threads (default 0: all online CPUs)\n"
    "      --kv TYPE        KV cache type f16 or f32 (default f16, as llama-bench)\n"
    "      --experts-used K route each token to K experts instead of the file's top-k\n"
    "      --no-warmup      skip the untimed warmup runs\n"
    "      --moe-hook       install a MoE hook that only counts calls, as profiling\n"
    "                       does: every token then runs through every layer (without\n"
    "                       it the last layer's FFN skips rows no logits are asked for)\n"
    "      --json           one JSON object: {\"model\", \"threads\", \"pp_tokens_per_s\",\n"
    "                       \"tg_tokens_per_s\", \"peak_rss_bytes\", \"pp_stddev\", ...};\n"
    "                       a skipped test's values are null\n"
    "  -h, --help           this text\n"
    "\n"
    "example (and the llama.cpp run it compares with):\n"
    "  moeprune bench gemma-64e.gguf -p 512 -n 128 -t 16\n"
    "  llama-bench -m gemma-64e.gguf -p 512 -n 128 -t 16\n";

typedef struct bench_opts {
    const char *model;
    long long n_prompt, n_gen; /* tokens of the pp and tg tests; 0 skips the test */
    long long reps, threads, experts_used;
    mp_kv_type kv;
    bool json, warmup, moe_hook;
} bench_opts;

/* Where the fed token ids come from. */
typedef struct token_source {
    mp_token *ids;   /* [n_ids] NORMAL token ids below n_vocab; NULL: any id below n_vocab */
    int64_t n_ids;
    int64_t n_vocab; /* the model's (rows of token_embd) */
    mp_token bos;    /* first token of a sequence; MP_TOKEN_NULL when none is added */
    mp_rng rng;
} token_source;

/* One test's result over the repetitions. */
typedef struct bench_result {
    bool ran;
    double mean, stddev; /* tokens/s */
} bench_result;

/* ------------------------------------------------------------------ options */

static int parse_args(int argc, char **argv, bench_opts *o) {
    enum { OPT_KV = 256, OPT_EXPERTS, OPT_NO_WARMUP, OPT_JSON, OPT_MOE_HOOK };
    static const struct option opts[] = {
        {"n-prompt", required_argument, NULL, 'p'},
        {"n-gen", required_argument, NULL, 'n'},
        {"repetitions", required_argument, NULL, 'r'},
        {"threads", required_argument, NULL, 't'},
        {"kv", required_argument, NULL, OPT_KV},
        {"experts-used", required_argument, NULL, OPT_EXPERTS},
        {"no-warmup", no_argument, NULL, OPT_NO_WARMUP},
        {"moe-hook", no_argument, NULL, OPT_MOE_HOOK},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "p:n:r:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            if (!cli_parse_int(CMD, "-p", optarg, 0, BENCH_MAX_TOKENS, &o->n_prompt))
                return MP_EXIT_USAGE;
            break;
        case 'n':
            if (!cli_parse_int(CMD, "-n", optarg, 0, BENCH_MAX_TOKENS, &o->n_gen))
                return MP_EXIT_USAGE;
            break;
        case 'r':
            if (!cli_parse_int(CMD, "-r", optarg, 1, BENCH_MAX_REPS, &o->reps))
                return MP_EXIT_USAGE;
            break;
        case 't':
            if (!cli_parse_int(CMD, "--threads", optarg, 0, 4096, &o->threads))
                return MP_EXIT_USAGE;
            break;
        case OPT_EXPERTS:
            if (!cli_parse_int(CMD, "--experts-used", optarg, 1, 1 << 16, &o->experts_used))
                return MP_EXIT_USAGE;
            break;
        case OPT_KV:
            if (!strcasecmp(optarg, "f16")) o->kv = MP_KV_F16;
            else if (!strcasecmp(optarg, "f32")) o->kv = MP_KV_F32;
            else return cli_usage_error(CMD, "--kv: '%s' is not f16 or f32", optarg);
            break;
        case OPT_NO_WARMUP: o->warmup = false; break;
        case OPT_MOE_HOOK: o->moe_hook = true; break;
        case OPT_JSON: o->json = true; break;
        case 'h': fputs(help, stdout); return -1;
        default: return cli_usage_error(CMD, "unknown option");
        }
    }
    if (optind + 1 != argc)
        return optind >= argc ? cli_usage_error(CMD, "MODEL is required")
                              : cli_usage_error(CMD, "unexpected argument '%s'", argv[optind + 1]);
    o->model = argv[optind];
    if (o->n_prompt == 0 && o->n_gen == 0)
        return cli_usage_error(CMD, "-p 0 and -n 0: nothing to measure");
    if (o->n_prompt + o->n_gen > BENCH_MAX_TOKENS)
        return cli_usage_error(CMD, "-p %lld + -n %lld tokens exceed the engine's context limit "
                               "of %d", o->n_prompt, o->n_gen, BENCH_MAX_TOKENS);
    return 0;
}

/* ------------------------------------------------------------ model facts */

/* Bytes per cached position and the trained context length (0: the file does
 * not say). The KV cache holds a K and a V row of n_head_kv * head_dim
 * elements per layer that computes its own K/V, for all n_ctx positions
 * (alloc_kv in src/engine/context.c; sliding-window layers keep all n_ctx). */
static mp_status model_facts(const mp_model *m, mp_kv_type kv, int64_t *kv_per_pos,
                             int64_t *n_ctx_train, mp_err *err) {
    mp_arch_model *am = NULL;
    mp_status s = mp_arch_model_load(mp_model_gguf(m), &am, err);
    if (s) return s;
    const int64_t elem = kv == MP_KV_F16 ? 2 : 4;
    int64_t bytes = 0;
    for (int64_t l = 0; l < am->hp.n_layer; l++) {
        const mp_layer_hparams *lh = &am->hp.layers[l];
        if (lh->has_kv) bytes += 2 * lh->n_head_kv * lh->head_dim * elem;
    }
    *kv_per_pos = bytes;
    *n_ctx_train = am->hp.n_ctx_train;
    mp_arch_model_free(am);
    return MP_OK;
}

/* Collects the NORMAL token ids below n_vocab and the BOS the vocabulary adds.
 * A file whose vocabulary cannot be loaded is still measured, with any id
 * below n_vocab and no BOS (the speed does not depend on the tokenizer). */
static mp_status token_source_init(token_source *ts, const mp_model *m, mp_err *err) {
    *ts = (token_source){.n_vocab = mp_model_n_vocab(m), .bos = MP_TOKEN_NULL};
    mp_rng_seed(&ts->rng, BENCH_SEED);
    mp_err verr = {0};
    mp_vocab *v = NULL;
    if (mp_vocab_load(&v, mp_model_gguf(m), &verr)) {
        fprintf(stderr, "moeprune %s: note: no usable vocabulary (%s): feeding any token id\n",
                CMD, verr.msg);
        return MP_OK;
    }
    const int64_t n = mp_vocab_n_tokens(v) < ts->n_vocab ? mp_vocab_n_tokens(v) : ts->n_vocab;
    if (!(ts->ids = mp_malloc((size_t)(n > 0 ? n : 1) * sizeof *ts->ids))) {
        mp_vocab_free(v);
        return mp_err_set(err, MP_ERR_NOMEM, "out of memory for %" PRId64 " token ids", n);
    }
    for (int64_t i = 0; i < n; i++)
        if (mp_vocab_token_type(v, (mp_token)i) == MP_TOKEN_TYPE_NORMAL)
            ts->ids[ts->n_ids++] = (mp_token)i;
    const mp_vocab_special *sp = mp_vocab_specials(v);
    if (sp->add_bos && sp->bos >= 0 && sp->bos < ts->n_vocab) ts->bos = sp->bos;
    mp_vocab_free(v);
    return MP_OK;
}

static void token_source_free(token_source *ts) {
    mp_free(ts->ids);
}

/* Fills out[0..n): BOS first when the vocabulary adds one, then random ids. */
static void token_source_draw(token_source *ts, mp_token *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = mp_rng_next(&ts->rng);
        out[i] = i == 0 && ts->bos != MP_TOKEN_NULL ? ts->bos
                 : ts->n_ids > 0 ? ts->ids[r % (uint64_t)ts->n_ids]
                                 : (mp_token)(r % (uint64_t)ts->n_vocab);
    }
}

/* -------------------------------------------------------------- measuring */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One run from an empty cache: n fresh ids fed `step` tokens per eval (n for
 * a prompt, 1 for generation), the last token's logits each time. The ids
 * are drawn and the cache cleared before the clock starts. */
static mp_status run_once(mp_context *ctx, token_source *ts, mp_token *ids, float *logits,
                          int64_t n, int64_t step, double *secs, mp_err *err) {
    token_source_draw(ts, ids, n);
    mp_context_truncate(ctx, 0);
    double t0 = now_s();
    for (int64_t i = 0; i < n; i += step) {
        mp_status s = mp_context_eval(ctx, ids + i, n - i < step ? n - i : step, MP_LOGITS_LAST,
                                      logits, err);
        if (s) return s;
    }
    *secs = now_s() - t0;
    return MP_OK;
}

/* Mean and sample standard deviation (Bessel's n - 1, as llama-bench's
 * stdev); 0 for a single sample. */
static void mean_stddev(const double *x, int64_t n, double *mean, double *sd) {
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; i++) sum += x[i];
    *mean = sum / (double)n;
    for (int64_t i = 0; i < n; i++) sq += (x[i] - *mean) * (x[i] - *mean);
    *sd = n > 1 ? sqrt(sq / (double)(n - 1)) : 0;
}

/* The warmup, then o->reps timed runs of one test; `samples` holds o->reps. */
static mp_status run_test(mp_context *ctx, token_source *ts, const bench_opts *o,
                          const char *name, int64_t n, int64_t step, int64_t warmup_n,
                          mp_token *ids, float *logits, double *samples, bench_result *res,
                          mp_err *err) {
    const bool progress = !o->json && isatty(2);
    double secs;
    mp_status s;
    if (o->warmup && (s = run_once(ctx, ts, ids, logits, warmup_n, step, &secs, err))) return s;
    for (long long r = 0; r < o->reps; r++) {
        if (progress) fprintf(stderr, "\r%s: run %lld/%lld", name, r + 1, o->reps);
        if ((s = run_once(ctx, ts, ids, logits, n, step, &secs, err))) return s;
        /* a clock that did not move would give infinite tokens/s; 1 ns is its resolution */
        samples[r] = (double)n / (secs > 1e-9 ? secs : 1e-9);
    }
    if (progress) fprintf(stderr, "\r%*s\r", 40, "");
    res->ran = true;
    mean_stddev(samples, o->reps, &res->mean, &res->stddev);
    return MP_OK;
}

/* Largest resident set of this process so far, in bytes (ru_maxrss is KiB on
 * Linux); the mapped model's touched pages count, as they do for llama.cpp. */
static int64_t peak_rss_bytes(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (int64_t)ru.ru_maxrss * 1024 : 0;
}

/* ----------------------------------------------------------------- output */

typedef struct bench_report {
    const bench_opts *o;
    int threads;
    int64_t n_ctx, experts_used, file_bytes, kv_bytes, peak_rss;
    bench_result pp, tg;
} bench_report;

static void add_result(cJSON *root, const char *mean_key, const char *sd_key,
                       const bench_result *r) {
    if (r->ran) {
        cJSON_AddNumberToObject(root, mean_key, r->mean);
        cJSON_AddNumberToObject(root, sd_key, r->stddev);
    } else {
        cJSON_AddNullToObject(root, mean_key);
        cJSON_AddNullToObject(root, sd_key);
    }
}

static int print_json(const bench_report *b) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return MP_EXIT_FAIL;
    cJSON_AddStringToObject(root, "model", b->o->model);
    cJSON_AddNumberToObject(root, "threads", b->threads);
    add_result(root, "pp_tokens_per_s", "pp_stddev", &b->pp);
    add_result(root, "tg_tokens_per_s", "tg_stddev", &b->tg);
    cJSON_AddNumberToObject(root, "peak_rss_bytes", (double)b->peak_rss);
    cJSON_AddNumberToObject(root, "n_prompt", (double)b->o->n_prompt);
    cJSON_AddNumberToObject(root, "n_gen", (double)b->o->n_gen);
    cJSON_AddNumberToObject(root, "reps", (double)b->o->reps);
    cJSON_AddNumberToObject(root, "file_bytes", (double)b->file_bytes);
    cJSON_AddNumberToObject(root, "kv_cache_bytes", (double)b->kv_bytes);
    cJSON_AddStringToObject(root, "kv_type", mp_kv_type_name(b->o->kv));
    cJSON_AddStringToObject(root, "kernels", mp_cpu_kernels());
    cJSON_AddNumberToObject(root, "n_ctx", (double)b->n_ctx);
    cJSON_AddNumberToObject(root, "n_batch", BENCH_N_BATCH);
    cJSON_AddNumberToObject(root, "experts_used", (double)b->experts_used);
    cJSON_AddBoolToObject(root, "warmup", b->o->warmup);
    cJSON_AddBoolToObject(root, "moe_hook", b->o->moe_hook);
    return cli_print_json(CMD, root);
}

/* "5.53 MiB", "14.87 GiB": llama-bench prints GiB; small files read better in MiB. */
static void fmt_size(char *buf, size_t len, int64_t bytes) {
    if (bytes >= (int64_t)1 << 30) snprintf(buf, len, "%.2f GiB", (double)bytes / (1 << 30));
    else snprintf(buf, len, "%.2f MiB", (double)bytes / (1 << 20));
}

/* llama-bench's markdown table (model, size, threads, test, t/s) and a line
 * with the memory figures. */
static void print_table(const bench_report *b) {
    const char *name = strrchr(b->o->model, '/') ? strrchr(b->o->model, '/') + 1 : b->o->model;
    int w = (int)strlen(name) > 5 ? (int)strlen(name) : 5;
    char size[32], rss[32], kv[32], dashes[256];
    fmt_size(size, sizeof size, b->file_bytes);
    int nd = w < (int)sizeof dashes - 1 ? w : (int)sizeof dashes - 1;
    memset(dashes, '-', (size_t)nd);
    dashes[nd] = 0;
    printf("| %-*s | %10s | %7s | %-3s | %8s | %20s |\n", w, "model", "size", "threads", "kv",
           "test", "t/s");
    printf("| %s | ---------: | ------: | --- | -------: | -------------------: |\n", dashes);
    const bench_result *rs[2] = {&b->pp, &b->tg};
    const long long ns[2] = {b->o->n_prompt, b->o->n_gen};
    for (int i = 0; i < 2; i++) {
        if (!rs[i]->ran) continue;
        char test[32], ts[48];
        snprintf(test, sizeof test, "%s%lld", i == 0 ? "pp" : "tg", ns[i]);
        snprintf(ts, sizeof ts, "%.2f ± %.2f", rs[i]->mean, rs[i]->stddev);
        /* "±" is two bytes in UTF-8 but one column: pad one more */
        printf("| %-*s | %10s | %7d | %-3s | %8s | %21s |\n", w, name, size, b->threads,
               mp_kv_type_name(b->o->kv), test, ts);
    }
    fmt_size(rss, sizeof rss, b->peak_rss);
    fmt_size(kv, sizeof kv, b->kv_bytes);
    printf("\npeak RSS %s (%" PRId64 " bytes); file %s (%" PRId64 " bytes); KV cache %s "
           "(%" PRId64 " positions, %s); %" PRId64 " experts per token; kernels %s; "
           "%lld repetition%s%s\n",
           rss, b->peak_rss, size, b->file_bytes, kv, b->n_ctx, mp_kv_type_name(b->o->kv),
           b->experts_used, mp_cpu_kernels(), b->o->reps, b->o->reps == 1 ? "" : "s",
           b->o->warmup ? "" : ", no warmup");
}

/* ------------------------------------------------------------------- main */

/* The --moe-hook hook: counts its calls and nothing else. */
static mp_status count_call(const mp_moe_hook_data *d, void *user) {
    (void)d;
    (*(int64_t *)user)++;
    return MP_OK;
}

static int run(const bench_opts *o) {
    mp_err err = {0};
    mp_model *m = NULL;
    mp_context *ctx = NULL;
    token_source ts = {0};
    mp_token *ids = NULL;
    float *logits = NULL;
    double *samples = NULL;
    int rc = MP_EXIT_FAIL;
    bench_report b = {.o = o, .n_ctx = o->n_prompt + o->n_gen};
    int64_t kv_per_pos, n_ctx_train;
    if (mp_model_load(&m, o->model, &err) ||
        model_facts(m, o->kv, &kv_per_pos, &n_ctx_train, &err))
        goto done;
    if (n_ctx_train > 0 && b.n_ctx > n_ctx_train) {
        rc = cli_usage_error(CMD, "-p %lld + -n %lld = %" PRId64 " tokens exceed %s's context "
                             "length of %" PRId64, o->n_prompt, o->n_gen, b.n_ctx, o->model,
                             n_ctx_train);
        goto done;
    }
    mp_context_params cp = mp_context_default_params();
    cp.n_ctx = b.n_ctx;
    cp.n_batch = BENCH_N_BATCH;
    cp.n_threads = (int)o->threads;
    cp.kv_type = o->kv;
    int64_t hook_calls = 0;
    const mp_moe_hook hook = {.fn = count_call, .user = &hook_calls};
    if (token_source_init(&ts, m, &err) || mp_context_init(&ctx, m, cp, &err) ||
        (o->experts_used && mp_context_set_experts_used(ctx, o->experts_used, &err)) ||
        (o->moe_hook && mp_context_set_moe_hook(ctx, &hook, &err)) ||
        mp_context_apply_file_mask(ctx, m, &err))
        goto done;
    const int64_t V = mp_model_n_vocab(m);
    const int64_t n_ids = o->n_prompt > o->n_gen ? o->n_prompt : o->n_gen;
    ids = mp_malloc((size_t)n_ids * sizeof *ids);
    logits = mp_malloc((size_t)V * sizeof *logits);
    samples = mp_malloc((size_t)o->reps * sizeof *samples);
    if (!ids || !logits || !samples) {
        mp_err_set(&err, MP_ERR_NOMEM, "out of memory");
        goto done;
    }
    /* warmups as llama-bench: the whole prompt for pp, a single token for tg */
    if ((o->n_prompt > 0 &&
         run_test(ctx, &ts, o, "pp", o->n_prompt, o->n_prompt, o->n_prompt, ids, logits, samples,
                  &b.pp, &err)) ||
        (o->n_gen > 0 &&
         run_test(ctx, &ts, o, "tg", o->n_gen, 1, 1, ids, logits, samples, &b.tg, &err)))
        goto done;
    b.peak_rss = peak_rss_bytes();
    b.threads = mp_context_params_of(ctx)->n_threads;
    b.experts_used = mp_context_experts_used(ctx);
    b.file_bytes = (int64_t)mp_gguf_file_size(mp_model_gguf(m));
    b.kv_bytes = kv_per_pos * b.n_ctx;
    if (o->json) rc = print_json(&b);
    else {
        print_table(&b);
        rc = MP_EXIT_OK;
    }
    if (rc) mp_err_set(&err, MP_ERR_NOMEM, "out of memory for the JSON output");
done:
    if (rc == MP_EXIT_FAIL) cli_fail(CMD, &err);
    mp_free(samples);
    mp_free(logits);
    mp_free(ids);
    token_source_free(&ts);
    mp_context_free(ctx);
    mp_model_free(m);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    bench_opts o = {.n_prompt = 512, .n_gen = 128, .reps = 5, .kv = MP_KV_F16, .warmup = true};
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc < 0 ? MP_EXIT_OK : rc;
    return run(&o);
}

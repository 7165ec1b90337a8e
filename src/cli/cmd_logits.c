/* cmd_logits.c — `moeprune logits MODEL --tokens IDS.txt -o OUT.f32`: runs a
 * token sequence through the engine as one prompt and writes every
 * position's logits (little-endian float32, row-major [n_tokens][n_vocab]);
 * with --greedy N it then generates N tokens greedily, one eval per token on
 * the KV cache, and writes their ids. The way tests, scripts and other tools
 * check the engine from outside. With --dropmap the map's dropped experts are
 * masked (the logits then equal those of the pruned file); a file pruned with
 * --mode zero gets its recorded mask applied always. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/cli.h"
#include "util/util.h"

#define CMD "logits"

static void logits_help(FILE *f) {
    fputs("usage: moeprune logits MODEL --tokens IDS.txt -o OUT.f32 [options]\n"
          "\n"
          "Runs the token ids in IDS.txt (space-separated, as the fixtures' *.tokens.txt)\n"
          "through MODEL as one prompt and writes the logits of every position as\n"
          "little-endian float32, row-major [n_tokens][n_vocab].\n"
          "\n"
          "      --tokens FILE      token ids to run (required)\n"
          "  -o, --output FILE      logits output (required)\n"
          "      --greedy N         then generate N tokens greedily (argmax, KV cache)\n"
          "      --greedy-out FILE  where the N generated ids go (required with --greedy)\n"
          "  -t, --threads N        worker threads (default: all online CPUs)\n"
          "      --ctx N            context length (default: prompt + N generated)\n"
          "      --batch N          tokens per forward step (default 256)\n"
          "      --experts-used K   route each token to K experts instead of the file's\n"
          "                         top-k (1..top-k)\n"
          "      --kv TYPE          KV cache type f32 or f16 (default f32)\n"
          "      --dropmap MAP.json mask the experts the drop map drops\n"
          "  -f, --force            replace existing output files\n"
          "  -h, --help             this text\n"
          "\n"
          "Results do not depend on the thread count. Outputs appear complete or not at\n"
          "all (temp file + rename).\n"
          "\n"
          "example:\n"
          "  moeprune logits tiny-a-q8_0.gguf --tokens prompt0.tokens.txt -o p0.f32 \\\n"
          "      --greedy 16 --greedy-out p0.greedy.txt -t 2\n",
          f);
}

typedef struct logits_opts {
    const char *model, *tokens, *out, *greedy_out, *dropmap;
    long long greedy, threads, ctx, batch, experts_used;
    mp_kv_type kv;
    bool force;
} logits_opts;

/* Reads whitespace-separated non-negative integers (token ids). */
static mp_status read_tokens(const char *path, mp_token **out, int64_t *n, mp_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return mp_err_set(err, MP_ERR_IO, "%s: %s", path, mp_errno_str(errno));
    int64_t cap = 256, len = 0;
    mp_token *ids = mp_malloc((size_t)cap * sizeof *ids);
    mp_status s = MP_OK;
    if (!ids) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (;;) {
        char word[32];
        int rc = fscanf(f, "%31s", word);
        if (rc != 1) break;
        char *end;
        errno = 0;
        long long v = strtoll(word, &end, 10);
        if (errno || *end || end == word || v < 0 || v > INT32_MAX) {
            s = mp_err_set(err, MP_ERR_FORMAT, "%s: token %" PRId64 ": '%s' is not a token id",
                           path, len + 1, word);
            goto done;
        }
        if (len == cap) {
            mp_token *nids = cap < INT32_MAX / 2 ? mp_realloc(ids, (size_t)cap * 2 * sizeof *ids)
                                                 : NULL;
            if (!nids) {
                s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
                goto done;
            }
            ids = nids;
            cap *= 2;
        }
        ids[len++] = (mp_token)v;
    }
    if (ferror(f)) s = mp_err_set(err, MP_ERR_IO, "%s: read error", path);
    else if (len == 0) s = mp_err_set(err, MP_ERR_FORMAT, "%s: no token ids", path);
done:
    fclose(f);
    if (s) {
        mp_free(ids);
        return s;
    }
    *out = ids;
    *n = len;
    return MP_OK;
}

static int parse_args(int argc, char **argv, logits_opts *o) {
    enum { OPT_TOKENS = 256, OPT_GREEDY, OPT_GREEDY_OUT, OPT_CTX, OPT_BATCH, OPT_EXPERTS, OPT_KV, OPT_DROPMAP };
    static const struct option opts[] = {
        {"tokens", required_argument, NULL, OPT_TOKENS},
        {"output", required_argument, NULL, 'o'},
        {"greedy", required_argument, NULL, OPT_GREEDY},
        {"greedy-out", required_argument, NULL, OPT_GREEDY_OUT},
        {"threads", required_argument, NULL, 't'},
        {"ctx", required_argument, NULL, OPT_CTX},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"experts-used", required_argument, NULL, OPT_EXPERTS},
        {"kv", required_argument, NULL, OPT_KV},
        {"dropmap", required_argument, NULL, OPT_DROPMAP},
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:t:fh", opts, NULL)) != -1) {
        switch (c) {
        case OPT_TOKENS: o->tokens = optarg; break;
        case 'o': o->out = optarg; break;
        case OPT_GREEDY_OUT: o->greedy_out = optarg; break;
        case OPT_GREEDY:
            if (!cli_parse_int(CMD, "--greedy", optarg, 0, 1 << 24, &o->greedy))
                return MP_EXIT_USAGE;
            break;
        case 't':
            if (!cli_parse_int(CMD, "--threads", optarg, 0, 4096, &o->threads))
                return MP_EXIT_USAGE;
            break;
        case OPT_CTX:
            if (!cli_parse_int(CMD, "--ctx", optarg, 1, 1 << 24, &o->ctx)) return MP_EXIT_USAGE;
            break;
        case OPT_BATCH:
            if (!cli_parse_int(CMD, "--batch", optarg, 1, 1 << 16, &o->batch))
                return MP_EXIT_USAGE;
            break;
        case OPT_EXPERTS:
            if (!cli_parse_int(CMD, "--experts-used", optarg, 1, 1 << 16, &o->experts_used))
                return MP_EXIT_USAGE;
            break;
        case OPT_DROPMAP: o->dropmap = optarg; break;
        case OPT_KV:
            if (!strcasecmp(optarg, "f32")) o->kv = MP_KV_F32;
            else if (!strcasecmp(optarg, "f16")) o->kv = MP_KV_F16;
            else return cli_usage_error(CMD, "--kv: '%s' is not f32 or f16", optarg);
            break;
        case 'f': o->force = true; break;
        case 'h': logits_help(stdout); return -1;
        default: return cli_usage_error(CMD, "unknown option");
        }
    }
    if (optind + 1 != argc)
        return optind >= argc ? cli_usage_error(CMD, "MODEL is required")
                              : cli_usage_error(CMD, "unexpected argument '%s'", argv[optind + 1]);
    o->model = argv[optind];
    if (!o->tokens || !o->out)
        return cli_usage_error(CMD, "%s is required", !o->tokens ? "--tokens" : "-o/--output");
    if ((o->greedy > 0) != (o->greedy_out != NULL))
        return cli_usage_error(CMD, "--greedy N and --greedy-out FILE go together");
    return 0;
}

/* Refuses outputs that exist (without --force) or that are an input. */
static int check_output(const logits_opts *o, const char *path) {
    struct stat st;
    if (!path) return 0;
    if (mp_file_same(path, o->model) || mp_file_same(path, o->tokens)) {
        fprintf(stderr, "moeprune %s: output %s is an input file\n", CMD, path);
        return MP_EXIT_FAIL;
    }
    if (!o->force && stat(path, &st) == 0) {
        fprintf(stderr, "moeprune %s: %s exists (use --force to replace it)\n", CMD, path);
        return MP_EXIT_FAIL;
    }
    return 0;
}

static mp_token argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (mp_token)best;
}

/* Generates n tokens after the prompt whose last logits are `last`, writes
 * their ids as text. `last` is reused for each step's logits. */
static mp_status greedy(mp_context *ctx, float *last, int64_t n_vocab, const logits_opts *o,
                        mp_err *err) {
    mp_buf text = {0};
    mp_status s = MP_OK;
    for (int64_t i = 0; i < o->greedy; i++) {
        mp_token tok = argmax(last, n_vocab);
        char word[16];
        int len = snprintf(word, sizeof word, "%s%" PRId32, i ? " " : "", tok);
        if (!mp_buf_append(&text, word, (size_t)len)) {
            s = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
            break;
        }
        if (i + 1 < o->greedy && (s = mp_context_eval(ctx, &tok, 1, MP_LOGITS_LAST, last, err)))
            break;
    }
    if (!s && !mp_buf_append(&text, "\n", 1)) s = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    if (!s) s = mp_file_write_atomic(o->greedy_out, text.data, text.len, o->force, err);
    mp_buf_free(&text);
    return s;
}

static int run(const logits_opts *o) {
    mp_err err = {0};
    mp_token *ids = NULL;
    int64_t n = 0;
    mp_model *model = NULL;
    mp_context *ctx = NULL;
    mp_dropmap *map = NULL;
    float *logits = NULL;
    int rc = MP_EXIT_FAIL;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (read_tokens(o->tokens, &ids, &n, &err) || mp_model_load(&model, o->model, &err))
        goto fail;
    const int64_t V = mp_model_n_vocab(model);
    mp_context_params p = mp_context_default_params();
    p.n_ctx = o->ctx ? o->ctx : n + o->greedy;
    p.n_threads = (int)o->threads;
    p.kv_type = o->kv;
    if (o->batch) p.n_batch = o->batch;
    size_t bytes;
    if (mp_context_init(&ctx, model, p, &err) ||
        (o->experts_used && mp_context_set_experts_used(ctx, o->experts_used, &err)) ||
        mp_context_apply_file_mask(ctx, model, &err) ||
        (o->dropmap && (mp_dropmap_load(&map, o->dropmap, &err) ||
                        mp_context_apply_dropmap(ctx, model, map, &err))))
        goto fail;
    if (!mp_mul_size((size_t)n, (size_t)V, &bytes) || !mp_mul_size(bytes, 4, &bytes) ||
        !(logits = mp_malloc(bytes))) {
        mp_err_set(&err, MP_ERR_NOMEM, "%" PRId64 " x %" PRId64 " logits do not fit in memory",
                   n, V);
        goto fail;
    }
    if (mp_context_eval(ctx, ids, n, MP_LOGITS_ALL, logits, &err)) goto fail;
    /* the file is little-endian float32 whatever the host's byte order */
    float *last = mp_malloc((size_t)V * sizeof *last);
    if (!last) {
        mp_err_set(&err, MP_ERR_NOMEM, "out of memory");
        goto fail;
    }
    memcpy(last, logits + (n - 1) * V, (size_t)V * sizeof *last);
    for (size_t i = 0; i < (size_t)(n * V); i++) {
        uint32_t u;
        memcpy(&u, &logits[i], 4);
        mp_store_u32(&logits[i], u);
    }
    mp_status s = mp_file_write_atomic(o->out, logits, bytes, o->force, &err);
    if (!s && o->greedy > 0) s = greedy(ctx, last, V, o, &err);
    mp_free(last);
    if (s) goto fail;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("%s: %" PRId64 " positions x %" PRId64 " logits", o->out, n, V);
    if (o->greedy > 0) printf(", %lld greedy tokens to %s", o->greedy, o->greedy_out);
    const int nt = mp_context_params_of(ctx)->n_threads;
    printf(" (%d thread%s, %.2f s)\n", nt, nt == 1 ? "" : "s", secs);
    rc = MP_EXIT_OK;
fail:
    if (rc != MP_EXIT_OK) cli_fail(CMD, &err);
    mp_free(logits);
    mp_dropmap_free(map);
    mp_context_free(ctx);
    mp_model_free(model);
    mp_free(ids);
    return rc;
}

int cmd_logits(int argc, char **argv) {
    logits_opts o = {.kv = MP_KV_F32};
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc < 0 ? MP_EXIT_OK : rc;
    if ((rc = check_output(&o, o.out)) || (rc = check_output(&o, o.greedy_out))) return rc;
    if (o.greedy_out && !strcmp(o.out, o.greedy_out))
        return cli_usage_error(CMD, "-o and --greedy-out name the same file");
    return run(&o);
}

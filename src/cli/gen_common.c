/* gen_common.c — the options and the generation session that `run` and
 * `generate` share (see gen_common.h). The generation loop is the one
 * written out above mp_gen in moeprune.h: forced token or sample, accept,
 * mp_gen_push for the text and the stop decision, then feed the token.
 * Nothing here prints except gen_stats_print. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/gen_common.h"
#include "util/util.h"

const char gen_options_help[] =
    "sampling (defaults are llama.cpp's):\n"
    "      --temp T             temperature; 0 is greedy (default 0.8)\n"
    "      --top-k K            keep the K likeliest tokens; 0: off (default 40)\n"
    "      --top-p P            keep the smallest set with probability >= P; 1: off\n"
    "                           (default 0.95)\n"
    "      --min-p P            drop tokens below P x the likeliest's; 0: off\n"
    "                           (default 0.05)\n"
    "      --repeat-penalty R   penalise tokens of the last N; 1: off (default 1)\n"
    "      --repeat-last-n N    how many tokens the penalty looks back (default 64)\n"
    "      --seed S             random seed (default: a random one, shown by --stats)\n"
    "limits:\n"
    "  -n, --max-tokens N       stop after N tokens (default: end of generation or a\n"
    "                           full context)\n"
    "      --stop S             stop when S appears (not shown); repeatable\n"
    "      --reasoning-budget N at most N thinking tokens, then the thinking block is\n"
    "                           closed and the answer follows (default: unlimited)\n"
    "engine:\n"
    "  -t, --threads N          worker threads (default: all online CPUs)\n"
    "      --ctx N              context length in tokens\n"
    "      --batch N            prompt tokens per forward step (default 256)\n"
    "      --experts-used K     route each token to K experts instead of the file's\n"
    "      --dropmap MAP.json   mask the experts the drop map drops (as if pruned)\n"
    "      --stats              print token counts and speeds to stderr at the end\n";

void gen_opts_init(gen_opts *o) {
    memset(o, 0, sizeof *o);
    o->sampling = mp_sampler_default_params();
    o->reasoning_budget = -1;
}

void gen_opts_finish(gen_opts *o) {
    if (o->seed_given) return;
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    /* splitmix64's finaliser spreads time and pid over all bits */
    uint64_t z =
        (uint64_t)t.tv_sec * 1000000007u ^ (uint64_t)t.tv_nsec ^ ((uint64_t)getpid() << 32);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    o->sampling.seed = (z ^ (z >> 31)) & 0xffffffffu; /* short enough to retype */
}

static int parse_float(const char *cmd, const char *opt, const char *val, double min, double max,
                       float *out) {
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    if (errno || end == val || *end || !(v >= min && v <= max)) {
        cli_usage_error(cmd, "%s: '%s' is not a number in %g..%g", opt, val, min, max);
        return -1;
    }
    *out = (float)v;
    return 1;
}

static int parse_int(const char *cmd, const char *opt, const char *val, long long min,
                     long long max, long long *out) {
    return cli_parse_int(cmd, opt, val, min, max, out) ? 1 : -1;
}

int gen_opts_parse(gen_opts *o, const char *cmd, int c, const char *arg) {
    long long v;
    int r;
    mp_sampler_params *sp = &o->sampling;
    switch (c) {
    case GEN_OPT_TEMP: return parse_float(cmd, "--temp", arg, 0, 100, &sp->temperature);
    case GEN_OPT_TOP_P: return parse_float(cmd, "--top-p", arg, 0, 1, &sp->top_p);
    case GEN_OPT_MIN_P: return parse_float(cmd, "--min-p", arg, 0, 1, &sp->min_p);
    case GEN_OPT_REPEAT_PENALTY:
        return parse_float(cmd, "--repeat-penalty", arg, 1e-3, 100, &sp->repeat_penalty);
    case GEN_OPT_TOP_K:
        if ((r = parse_int(cmd, "--top-k", arg, 0, INT32_MAX, &v)) > 0) sp->top_k = (int32_t)v;
        return r;
    case GEN_OPT_REPEAT_LAST_N:
        if ((r = parse_int(cmd, "--repeat-last-n", arg, 0, 1 << 20, &v)) > 0)
            sp->repeat_last_n = (int32_t)v;
        return r;
    case GEN_OPT_SEED: {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(arg, &end, 0);
        if (errno || end == arg || *end || arg[0] == '-') {
            cli_usage_error(cmd, "--seed: '%s' is not a non-negative integer", arg);
            return -1;
        }
        sp->seed = s;
        o->seed_given = true;
        return 1;
    }
    case GEN_OPT_REASONING_BUDGET:
        return parse_int(cmd, "--reasoning-budget", arg, -1, INT32_MAX, &o->reasoning_budget);
    case GEN_OPT_STOP:
        if (!arg[0]) {
            cli_usage_error(cmd, "--stop: the stop string is empty");
            return -1;
        }
        if (o->n_stop == GEN_MAX_STOP) {
            cli_usage_error(cmd, "--stop: at most %d stop strings", GEN_MAX_STOP);
            return -1;
        }
        o->stop[o->n_stop++] = arg;
        return 1;
    case 'n': return parse_int(cmd, "--max-tokens", arg, 0, INT32_MAX, &o->max_tokens);
    case 't': return parse_int(cmd, "--threads", arg, 0, 4096, &o->threads);
    case GEN_OPT_CTX: return parse_int(cmd, "--ctx", arg, 1, 1 << 24, &o->ctx);
    case GEN_OPT_BATCH: return parse_int(cmd, "--batch", arg, 1, 1 << 16, &o->batch);
    case GEN_OPT_EXPERTS_USED:
        return parse_int(cmd, "--experts-used", arg, 1, 1 << 16, &o->experts_used);
    case GEN_OPT_DROPMAP: o->dropmap = arg; return 1;
    case GEN_OPT_STATS: o->stats = true; return 1;
    default: return 0;
    }
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ------------------------------------------------------------------------ */
/* Session                                                                  */
/* ------------------------------------------------------------------------ */

mp_status gen_session_load(gen_session *s, const gen_opts *o, mp_err *err) {
    memset(s, 0, sizeof *s);
    mp_status st = mp_model_load(&s->model, o->model, err);
    if (!st) st = mp_vocab_load(&s->vocab, mp_model_gguf(s->model), err);
    if (!st) s->n_vocab = mp_model_n_vocab(s->model);
    if (!st && mp_vocab_n_tokens(s->vocab) > s->n_vocab)
        st = mp_err_set(err, MP_ERR_FORMAT, "%s: the vocabulary has %d tokens, the model %" PRId64,
                        o->model, mp_vocab_n_tokens(s->vocab), s->n_vocab);
    return st;
}

mp_status gen_session_start(gen_session *s, const gen_opts *o, int64_t n_ctx, mp_err *err) {
    mp_context_params cp = mp_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = (int)o->threads;
    if (o->batch) cp.n_batch = o->batch;
    mp_status st = mp_context_init(&s->ctx, s->model, cp, err);
    if (!st && o->experts_used) st = mp_context_set_experts_used(s->ctx, o->experts_used, err);
    if (!st) st = mp_context_apply_file_mask(s->ctx, s->model, err);
    if (!st && o->dropmap && !(st = mp_dropmap_load(&s->map, o->dropmap, err)))
        st = mp_context_apply_dropmap(s->ctx, s->model, s->map, err);
    if (!st) st = mp_sampler_init(&s->sampler, (int32_t)s->n_vocab, &o->sampling, err);
    if (st) return st;
    s->n_ctx = n_ctx;
    s->repeat_last_n = o->sampling.repeat_last_n;
    s->seed = o->sampling.seed;
    s->logits = mp_calloc((size_t)s->n_vocab, sizeof *s->logits);
    s->cache = mp_calloc((size_t)n_ctx, sizeof *s->cache);
    if (!s->logits || !s->cache)
        return mp_err_set(err, MP_ERR_NOMEM, "out of memory (context of %" PRId64 " tokens)",
                          n_ctx);
    return MP_OK;
}

void gen_session_close(gen_session *s) {
    mp_free(s->cache);
    mp_free(s->logits);
    mp_sampler_free(s->sampler);
    mp_dropmap_free(s->map);
    mp_context_free(s->ctx);
    mp_vocab_free(s->vocab);
    mp_model_free(s->model);
    memset(s, 0, sizeof *s);
}

mp_status gen_session_prefill(gen_session *s, const mp_token *toks, int64_t n,
                              const volatile sig_atomic_t *cancel, mp_err *err) {
    if (n < 1) return mp_err_set(err, MP_ERR_ARG, "the prompt is empty");
    if (n > s->n_ctx)
        return mp_err_set(err, MP_ERR_ARG,
                          "the prompt (%" PRId64 " tokens) does not fit the context (--ctx %" PRId64
                          ")",
                          n, s->n_ctx);
    int64_t keep = 0;
    while (keep < s->n_cache && keep < n && s->cache[keep] == toks[keep]) keep++;
    if (keep == n) keep--; /* the last position is evaluated again for its logits */
    mp_context_truncate(s->ctx, keep);
    s->n_cache = keep;
    s->stats = (gen_stats){.prompt_tokens = n, .cached_tokens = keep};
    const int64_t batch = mp_context_params_of(s->ctx)->n_batch;
    double t0 = now_s();
    /* batch by batch so that Ctrl-C is seen during a long prompt */
    for (int64_t i = keep; i < n; i += batch) {
        if (cancel && *cancel) {
            s->stats.interrupted = true;
            return mp_err_set(err, MP_ERR_CHECK, "interrupted");
        }
        int64_t m = n - i < batch ? n - i : batch;
        bool last = i + m == n;
        mp_status st = mp_context_eval(s->ctx, toks + i, m, last ? MP_LOGITS_LAST : MP_LOGITS_NONE,
                                       last ? s->logits : NULL, err);
        if (st) return st;
        memcpy(s->cache + i, toks + i, (size_t)m * sizeof *toks);
        s->n_cache = i + m;
    }
    s->stats.prompt_s = now_s() - t0;
    /* the repetition history: the last repeat_last_n tokens of the prompt
     * (the sampler's ring holds only that many, so older turns drop out) */
    for (int64_t i = n > s->repeat_last_n ? n - s->repeat_last_n : 0; i < n; i++)
        mp_sampler_accept(s->sampler, toks[i]);
    return MP_OK;
}

mp_status gen_session_generate(gen_session *s, const mp_gen_params *gp, gen_token_fn fn, void *user,
                               const volatile sig_atomic_t *cancel, mp_err *err) {
    mp_gen *g = NULL;
    mp_status st = mp_gen_init(&g, s->vocab, gp, err);
    if (st) return st;
    const char *text;
    size_t len;
    double t0 = now_s();
    mp_gen_status gs = MP_GEN_CONTINUE;
    while (gs == MP_GEN_CONTINUE) {
        if (cancel && *cancel) {
            s->stats.interrupted = true;
            break;
        }
        mp_token t = mp_gen_forced(g);
        if (t == MP_TOKEN_NULL) t = mp_sampler_sample(s->sampler, s->logits);
        mp_sampler_accept(s->sampler, t);
        gs = mp_gen_push(g, t, &text, &len);
        s->stats.gen_tokens++;
        fn(user, t, text, len);
        if (gs != MP_GEN_CONTINUE) break;
        if (s->n_cache == s->n_ctx) {
            s->stats.ctx_full = true;
            break;
        }
        if ((st = mp_context_eval(s->ctx, &t, 1, MP_LOGITS_LAST, s->logits, err))) break;
        s->cache[s->n_cache++] = t;
    }
    mp_gen_flush(g, &text, &len);
    fn(user, MP_TOKEN_NULL, text, len);
    s->stats.gen_s = now_s() - t0;
    s->stats.stop = gs;
    mp_gen_free(g);
    return st;
}

mp_gen_params gen_params(const gen_opts *o) {
    return (mp_gen_params){
        .max_tokens = (int32_t)o->max_tokens,
        .stop = o->n_stop ? o->stop : NULL,
        .n_stop = o->n_stop,
        .reasoning_budget = (int32_t)o->reasoning_budget,
        .think_open = MP_TOKEN_NULL,
        .think_close = MP_TOKEN_NULL,
    };
}

bool gen_in_thinking(const mp_token *toks, int64_t n, const mp_chat_think *m) {
    for (int64_t i = n; i-- > 0;) {
        if (toks[i] == m->close_id && m->close_id != MP_TOKEN_NULL) return false;
        if (toks[i] == m->open_id && m->open_id != MP_TOKEN_NULL) return true;
    }
    return false;
}

static double rate(int64_t n, double secs) {
    return secs > 0 ? (double)n / secs : 0;
}

void gen_stats_print(FILE *f, const gen_session *s) {
    const gen_stats *t = &s->stats;
    int64_t evaluated = t->prompt_tokens - t->cached_tokens;
    const char *why = t->interrupted ? "interrupted"
                      : t->ctx_full  ? "context full"
                                     : mp_gen_status_name(t->stop);
    fprintf(f,
            "prompt: %" PRId64 " tokens (%" PRId64 " cached), %.1f tokens/s | generation: %" PRId64
            " tokens, %.1f tokens/s | stop: %s | context %" PRId64 "/%" PRId64 " | seed %" PRIu64
            "\n",
            t->prompt_tokens, t->cached_tokens, rate(evaluated, t->prompt_s), t->gen_tokens,
            rate(t->gen_tokens, t->gen_s), why, s->n_cache, s->n_ctx, s->seed);
    fflush(f);
}

/* ------------------------------------------------------------------------ */
/* Input files                                                              */
/* ------------------------------------------------------------------------ */

char *gen_read_file(const char *path, size_t *len, mp_err *err) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        mp_err_set(err, MP_ERR_IO, "%s: cannot open: %s", path, mp_errno_str(errno));
        return NULL;
    }
    mp_buf b = {0};
    char chunk[65536];
    size_t n;
    bool ok = true;
    while (ok && (n = fread(chunk, 1, sizeof chunk, f)) > 0) ok = mp_buf_append(&b, chunk, n);
    bool rerr = ferror(f);
    if (f != stdin) fclose(f);
    if (ok) ok = mp_buf_append(&b, "", 1); /* the NUL */
    if (!ok || rerr) {
        mp_err_set(err, rerr ? MP_ERR_IO : MP_ERR_NOMEM, "%s: %s", path,
                   rerr ? "read error" : "out of memory");
        mp_buf_free(&b);
        return NULL;
    }
    *len = b.len - 1;
    return (char *)b.data;
}

mp_status gen_read_token_file(const char *path, mp_token **ids, int64_t *n, mp_err *err) {
    size_t len;
    char *text = gen_read_file(path, &len, err);
    if (!text) return err ? err->status : MP_ERR_IO;
    mp_status st = MP_OK;
    mp_token *out = mp_calloc(len / 2 + 1, sizeof *out); /* a digit and a space per id at most */
    int64_t count = 0;
    if (!out) st = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
    for (char *p = text; !st;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (errno || end == p || v < 0 || v > INT32_MAX ||
            (*end && *end != ' ' && *end != '\t' && *end != '\n' && *end != '\r')) {
            int w = 0;
            while (p[w] && p[w] != ' ' && p[w] != '\n' && w < 32) w++;
            st = mp_err_set(err, MP_ERR_FORMAT, "%s: token %" PRId64 ": '%.*s' is not a token id",
                            path, count + 1, w, p);
            break;
        }
        out[count++] = (mp_token)v;
        p = end;
    }
    if (!st && count == 0) st = mp_err_set(err, MP_ERR_FORMAT, "%s: no token ids", path);
    mp_free(text);
    if (st) {
        mp_free(out);
        return st;
    }
    *ids = out;
    *n = count;
    return MP_OK;
}

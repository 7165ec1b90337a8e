/* gen_common.h — what `moeprune run` and `moeprune generate` share: the
 * sampling, limit and engine options (parsed the same way for both), and a
 * generation session (model, vocabulary, context, sampler) that evaluates a
 * prompt on the KV cache, reusing the longest prefix it already holds, then
 * samples tokens and streams their text to a callback. The chat itself
 * (turns, thinking display, the REPL) is cmd_run.c's; raw completion and the
 * --ids/--tokens forms are cmd_generate.c's. */
#ifndef MP_CLI_GEN_COMMON_H
#define MP_CLI_GEN_COMMON_H

#include <getopt.h>
#include <signal.h>
#include <stdio.h>

#include "moeprune.h"

/* Stop strings one command line may give (--stop, repeatable). */
#define GEN_MAX_STOP 32

/* getopt_long values of the shared options, above any single character and
 * above the values a command numbers its own long options with. */
enum {
    GEN_OPT_TEMP = 0x1000,
    GEN_OPT_TOP_K,
    GEN_OPT_TOP_P,
    GEN_OPT_MIN_P,
    GEN_OPT_REPEAT_PENALTY,
    GEN_OPT_REPEAT_LAST_N,
    GEN_OPT_SEED,
    GEN_OPT_REASONING_BUDGET,
    GEN_OPT_STOP,
    GEN_OPT_CTX,
    GEN_OPT_BATCH,
    GEN_OPT_DROPMAP,
    GEN_OPT_EXPERTS_USED,
    GEN_OPT_STATS,
};

/* The shared rows of a command's `struct option` table; -n/--max-tokens and
 * -t/--threads are short options too ("n:t:" in the command's optstring). */
/* clang-format off */
#define GEN_LONG_OPTIONS                                                         \
    {"temp", required_argument, NULL, GEN_OPT_TEMP},                             \
    {"top-k", required_argument, NULL, GEN_OPT_TOP_K},                           \
    {"top-p", required_argument, NULL, GEN_OPT_TOP_P},                           \
    {"min-p", required_argument, NULL, GEN_OPT_MIN_P},                           \
    {"repeat-penalty", required_argument, NULL, GEN_OPT_REPEAT_PENALTY},         \
    {"repeat-last-n", required_argument, NULL, GEN_OPT_REPEAT_LAST_N},           \
    {"seed", required_argument, NULL, GEN_OPT_SEED},                             \
    {"reasoning-budget", required_argument, NULL, GEN_OPT_REASONING_BUDGET},     \
    {"stop", required_argument, NULL, GEN_OPT_STOP},                             \
    {"max-tokens", required_argument, NULL, 'n'},                                \
    {"threads", required_argument, NULL, 't'},                                   \
    {"ctx", required_argument, NULL, GEN_OPT_CTX},                               \
    {"batch", required_argument, NULL, GEN_OPT_BATCH},                           \
    {"dropmap", required_argument, NULL, GEN_OPT_DROPMAP},                       \
    {"experts-used", required_argument, NULL, GEN_OPT_EXPERTS_USED},             \
    {"stats", no_argument, NULL, GEN_OPT_STATS}
/* clang-format on */

/* --help lines of the shared options. */
extern const char gen_options_help[];

typedef struct gen_opts {
    const char *model;
    mp_sampler_params sampling;
    bool seed_given;            /* else a random seed (reported by --stats) */
    long long max_tokens;       /* 0: until end of generation or a full context */
    long long reasoning_budget; /* -1: unlimited */
    const char *stop[GEN_MAX_STOP];
    size_t n_stop;
    long long threads, ctx, batch, experts_used; /* 0: defaults */
    const char *dropmap;
    bool stats;
} gen_opts;

/* Defaults: llama.cpp's sampling (mp_sampler_default_params), no limits. */
void gen_opts_init(gen_opts *o);
/* Handles one getopt_long result `c` if it is a shared option: 1 when
 * handled, 0 when not a shared option, -1 after a usage message. */
int gen_opts_parse(gen_opts *o, const char *cmd, int c, const char *arg);
/* Picks the random seed when none was given. */
void gen_opts_finish(gen_opts *o);

/* Numbers of the last prefill and generation. */
typedef struct gen_stats {
    int64_t prompt_tokens; /* the prompt's length */
    int64_t cached_tokens; /* of which reused from the KV cache */
    double prompt_s;       /* evaluating the rest */
    int64_t gen_tokens;    /* tokens sampled (or forced) */
    double gen_s;
    mp_gen_status stop; /* why generation ended (CONTINUE: see the flags) */
    bool ctx_full;      /* the context filled up */
    bool interrupted;   /* the cancel flag was raised */
} gen_stats;

/* A model ready to generate. The mirror `cache` holds the ids at the KV
 * cache's positions, so the next prompt evaluates only what differs. */
typedef struct gen_session {
    mp_model *model;
    mp_vocab *vocab;
    mp_context *ctx;
    mp_sampler *sampler;
    mp_dropmap *map;
    float *logits;   /* [n_vocab]: the last evaluated position's */
    mp_token *cache; /* [n_ctx] */
    int64_t n_cache, n_ctx, n_vocab;
    int64_t repeat_last_n; /* the sampler's history length */
    uint64_t seed;
    gen_stats stats;
} gen_session;

/* Loads the model and its vocabulary (no context yet). */
mp_status gen_session_load(gen_session *s, const gen_opts *o, mp_err *err);
/* Creates the context (n_ctx positions), applies --experts-used, the file's
 * own expert mask and --dropmap, and the sampler. */
mp_status gen_session_start(gen_session *s, const gen_opts *o, int64_t n_ctx, mp_err *err);
/* Frees everything; a zeroed session is fine. */
void gen_session_close(gen_session *s);

/* Makes the KV cache hold toks[0..n) (n >= 1): keeps the longest prefix it
 * already holds, evaluates the rest, leaves the last position's logits for
 * sampling and the last repeat_last_n tokens in the sampler's history.
 * MP_ERR_ARG when the prompt does not fit the context; a raised cancel flag
 * stops between batches with MP_ERR_CHECK ("interrupted"). */
mp_status gen_session_prefill(gen_session *s, const mp_token *toks, int64_t n,
                              const volatile sig_atomic_t *cancel, mp_err *err);

/* Receives each token (MP_TOKEN_NULL for the final flush) and the text to
 * show now (possibly empty). */
typedef void (*gen_token_fn)(void *user, mp_token id, const char *text, size_t len);

/* Samples after a prefill until mp_gen says stop, the context is full or
 * the cancel flag rises; each token except the last is fed to the model.
 * gp->max_tokens and gp->stop come from the caller (see gen_params). */
mp_status gen_session_generate(gen_session *s, const mp_gen_params *gp, gen_token_fn fn, void *user,
                               const volatile sig_atomic_t *cancel, mp_err *err);

/* mp_gen_params from the options, without thinking markers. */
mp_gen_params gen_params(const gen_opts *o);
/* True when the last thinking marker in toks[0..n) opens a block. */
bool gen_in_thinking(const mp_token *toks, int64_t n, const mp_chat_think *m);

/* "prompt: N tokens (C cached), X tokens/s | generation: ..." with a newline. */
void gen_stats_print(FILE *f, const gen_session *s);

/* Reads a whole file (or stdin for "-"); *len bytes plus a NUL. Free with
 * mp_free. */
char *gen_read_file(const char *path, size_t *len, mp_err *err);
/* Whitespace-separated token ids (the fixtures' *.tokens.txt format). */
mp_status gen_read_token_file(const char *path, mp_token **ids, int64_t *n, mp_err *err);

#endif
